"""Run the real ``workbench`` command in a subprocess, as a user or a CI gate would."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass


@dataclass
class Result:
    code: int
    out: str
    err: str


def wb(*args: str, env: dict | None = None, input: str | None = None, timeout: float = 300) -> Result:
    full_env = {**os.environ, **(env or {})}
    p = subprocess.run([sys.executable, "-m", "workbench", *map(str, args)], capture_output=True, text=True,
                       env=full_env, input=input, timeout=timeout)
    return Result(p.returncode, p.stdout, p.stderr)

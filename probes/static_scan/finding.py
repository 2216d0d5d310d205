"""One way for the non-pickle format readers to record a finding or an unparseable part.

Findings carry the scanner's usual keys (file, member, offset, opcode, module, name,
severity, rule, explanation) plus ``where`` (a path inside the format: a JSON pointer,
a graph node, a metadata key) and ``node`` (a short excerpt of the offending config or
graph node, shown by the TUI on Enter), so every format is located the same way.
"""

from __future__ import annotations

import json
from typing import Any

NODE_EXCERPT_CHARS = 2000


def excerpt(obj: Any, limit: int = NODE_EXCERPT_CHARS) -> str:
    """A readable, bounded rendering of a config/graph node (JSON when it can be)."""
    try:
        text = obj if isinstance(obj, str) else json.dumps(obj, indent=1, default=str)[:limit + 1]
    except (TypeError, ValueError, RecursionError):
        text = repr(obj)[:limit + 1]
    return text if len(text) <= limit else text[:limit] + " …"


def add(sc: Any, loc: Any, severity: str, rule: str, explanation: str, *, offset: int | None = None,
        module: str | None = None, name: str | None = None, opcode: str | None = None, where: str | None = None,
        node: Any = None) -> None:
    """Append one finding to the scanner ``sc`` at location ``loc`` (a scanner Loc)."""
    f: dict[str, Any] = {"file": loc.file, "member": loc.member, "offset": offset, "opcode": opcode,
                         "module": module, "name": name, "severity": severity, "rule": rule,
                         "explanation": explanation}
    if where:
        f["where"] = where
    if node is not None:
        f["node"] = excerpt(node)
    sc.findings.append(f)


def set_format(sc: Any, loc: Any, fmt: str) -> None:
    """Record the format of the file being scanned (only for the file itself, not for archive members)."""
    if getattr(sc, "_rec", None) is not None and loc.member is None:
        sc._rec.format = fmt

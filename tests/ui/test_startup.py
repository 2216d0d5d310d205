"""Starting the workbench must not import torch, transformers or any probe module."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_starting_the_tui_does_not_import_torch(tmp_path):
    """Checked in a fresh interpreter: the app paints a case without torch, transformers or the probes."""
    import ui_synthetic as synthetic

    info = synthetic.build(tmp_path / "case.db")
    code = textwrap.dedent(f"""
        import asyncio, json, sys
        from workbench.ui.app import WorkbenchApp
        async def main():
            app = WorkbenchApp({str(info['db'])!r}, subject_id={info['img']})
            async with app.run_test(size=(150, 45)) as pilot:
                await pilot.pause()
                await pilot.press("2")
                await pilot.pause()
        asyncio.run(main())
        print(json.dumps({{m: m in sys.modules for m in ("torch", "transformers", "probes.neural_cleanse")}}))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"torch": False, "transformers": False,
                                                               "probes.neural_cleanse": False}

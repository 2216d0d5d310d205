"""Time to the first paint of the TUI (target < 1 s), next to a bare Textual App's first paint.

Each measurement is a fresh interpreter: from spawning the process to the end of
the app's first screen refresh (headless driver), so imports, opening the case
file and building every pane are included. Prints medians and the ratio to the
bare app, so the figure means something however loaded the machine is; also
checks that torch was not imported.

    python benchmarks/tui_startup.py [RUNS]
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import sys, time, json
T0 = float(sys.argv[1])
kind = sys.argv[2]
if kind == "bare":
    from textual.app import App
    from textual.widgets import Footer, Header, Static

    class Bare(App):
        def compose(self):
            yield Header()
            yield Static("hello")
            yield Footer()
    app = Bare()
else:
    from workbench.ui.app import WorkbenchApp
    app = WorkbenchApp(sys.argv[3], subject_id=1)

def painted():
    print(json.dumps({"first_paint_s": time.time() - T0, "torch": "torch" in sys.modules}), flush=True)
    app.exit()

app.call_after_refresh(painted)
app.run(headless=True, size=(150, 45))
"""


def measure(kind: str, db: str, runs: int) -> tuple[float, bool]:
    times, torch = [], False
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", CHILD, repr(time.time()), kind, db], capture_output=True,
                             text=True, cwd=ROOT, check=True)
        rec = json.loads(out.stdout.strip().splitlines()[-1])
        times.append(rec["first_paint_s"])
        torch = torch or rec["torch"]
    return statistics.median(times), torch


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    sys.path.insert(0, str(ROOT / "tests" / "ui"))
    sys.path.insert(0, str(ROOT))
    import ui_synthetic as synthetic

    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "bench.db")
        synthetic.build(Path(db))
        base, _ = measure("bare", db, runs)
        wb, torch = measure("workbench", db, runs)
    print(f"bare Textual App (header, static, footer)  first paint {base * 1000:7.0f} ms (baseline, median of {runs})")
    print(f"workbench TUI on a 4-subject case          first paint {wb * 1000:7.0f} ms  ({wb / base:.2f}x baseline)"
          f"  target < 1000 ms: {'OK' if wb < 1.0 else 'MISSED'}")
    print(f"torch imported at start: {'YES (regression)' if torch else 'no'}")


if __name__ == "__main__":
    main()

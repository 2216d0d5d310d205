"""Regenerate docs/report-example.png and the README's figures from the exporter (run from the checkout root).

    WORKBENCH_THREADS=1 .venv/bin/python docs/make_report_example.py [--demo-db PATH]

Exports the demo case (``workbench demo``'s case file, on a copy) as HTML and as
a markdown folder, copies three of the figures the exporter drew into
docs/images/, and screenshots the HTML page in headless Chromium.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"]


def main() -> int:
    from casefiles import CaseStore
    from casefiles.report import export_case
    from workbench.paths import default_db_path

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--demo-db", type=Path, default=default_db_path().with_name("demo.db"))
    args = ap.parse_args()
    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("chromium is not installed (Debian package `chromium`)")
    work = Path(tempfile.mkdtemp(prefix="report-example-"))
    try:
        db = work / "demo.db"
        shutil.copy(args.demo_db, db)
        with CaseStore(db) as store:
            cid = store.list_cases()[-1]["id"]
            export_case(store, cid, "html", work / "report.html")
            out, _ = export_case(store, cid, "md", work / "report")
        images = sorted(f for f in out.files if f.startswith("images/"))
        for kind in ("trigger", "norms", "audit"):
            src = next(f for f in images if f.endswith(f"-{kind}.png"))
            shutil.copy(work / "report" / src, ROOT / "docs" / "images" / f"report-{kind}.png")
        profile = work / "profile"
        profile.mkdir()
        subprocess.run([chromium, *FLAGS, f"--user-data-dir={profile}", "--window-size=1000,1500",
                        f"--screenshot={ROOT / 'docs' / 'report-example.png'}", (work / "report.html").as_uri()],
                       check=True, capture_output=True, timeout=120)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

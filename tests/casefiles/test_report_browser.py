"""The HTML report in a real headless Chromium: every image decodes, the page is not blank, and it prints to PDF."""

from __future__ import annotations

import re
import shutil
import subprocess
import zlib
from pathlib import Path

import pytest

from casefiles.report import export_case
from tests.casefiles.test_report_export import build

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian package `chromium`; "
                                                          ".ci/run installs it)")

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--mute-audio", "--hide-scrollbars"]

# Appended to a copy of the page only (the report itself carries no script): after load, count the images that
# finished decoding with a real size.
PROBE = ("<script>window.addEventListener('load',()=>{const i=[...document.images];"
         "document.body.dataset.images=i.filter(x=>x.complete&&x.naturalWidth>0).length+'/'+i.length;});</script>")


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    profile.mkdir()
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, timeout=120)


def _png_pixels(png: bytes) -> bytes:
    """The decompressed scanlines of a PNG (enough to tell a blank page from a drawn one)."""
    pos, idat = 8, b""
    while pos < len(png):
        n = int.from_bytes(png[pos:pos + 4], "big")
        kind = png[pos + 4:pos + 8]
        if kind == b"IDAT":
            idat += png[pos + 8:pos + 8 + n]
        pos += 12 + n
    return zlib.decompress(idat)


@pytest.fixture
def page(tmp_path) -> Path:
    s, cid, _ = build(tmp_path)
    with s:
        export_case(s, cid, "html", tmp_path / "report.html")
    return tmp_path / "report.html"


def test_images_load_in_a_real_browser(page, tmp_path):
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    out = chromium(tmp_path, "--virtual-time-budget=10000", "--dump-dom", probe.as_uri())
    assert out.returncode == 0, out.stderr.decode()[-500:]
    found = re.search(r'data-images="(\d+)/(\d+)"', out.stdout.decode())
    assert found, "the load handler did not run"
    loaded, total = map(int, found.groups())
    assert total == 4 and loaded == total


def test_page_renders_and_prints(page, tmp_path):
    shot = tmp_path / "shot.png"
    out = chromium(tmp_path, f"--screenshot={shot}", "--window-size=1100,1400", page.as_uri())
    assert out.returncode == 0 and shot.exists(), out.stderr.decode()[-500:]
    pixels = _png_pixels(shot.read_bytes())
    assert len(set(pixels[::7])) > 20  # text and figures, not a blank page
    pdf = tmp_path / "report.pdf"
    out = chromium(tmp_path, f"--print-to-pdf={pdf}", "--no-pdf-header-footer", page.as_uri())
    assert out.returncode == 0 and pdf.exists(), out.stderr.decode()[-500:]
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF-") and b"%%EOF" in data[-1024:]
    assert len(re.findall(rb"/Type\s*/Page[^s]", data)) >= 2  # the whole report, over several pages
    assert len(re.findall(rb"/Subtype\s*/Image", data)) >= 4  # the figures made it onto paper

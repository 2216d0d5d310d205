"""``case export``: one case as html, a markdown folder, CycloneDX 1.6 or JSON lines.

Every format is rendered in memory from :meth:`CaseStore.case_bundle` first,
then written atomically (a temporary sibling renamed into place), so a bad
format or an unwritable destination is one line and nothing on disk changes.
Figures are drawn once per run and kept as hashed artifacts in the case file;
later exports reuse them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from casefiles import atlas
from casefiles.errors import CaseFileError
from casefiles.export import ReportImage, ReportOptions, render_markdown

FORMATS = ("html", "md", "cyclonedx", "jsonl")
SUFFIX = {"html": ".html", "md": "", "cyclonedx": ".cdx.json", "jsonl": ".jsonl"}
MAX_FIGURE_SUBJECTS = 25  # large cases: figures for this many flagged subjects, the rest text only


class ExportError(CaseFileError):
    """An export the workbench refuses before writing anything (bad format, unwritable destination)."""


@dataclass
class ExportOutcome:
    """What an export wrote."""

    format: str
    output: str  # a path, or "stdout"
    sha256: str
    size: int
    figures: int
    figures_drawn: int
    seconds: float
    files: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"format": self.format, "output": self.output, "sha256": self.sha256, "size": self.size,
                "figures": self.figures, "figures_drawn": self.figures_drawn, "seconds": round(self.seconds, 3),
                "files": self.files}


def default_output(case_id: int, fmt: str) -> Path:
    return Path(f"case-{case_id}-report{SUFFIX[fmt]}" if fmt == "md" else f"case-{case_id}{SUFFIX[fmt]}")


def check_destination(fmt: str, output: Path | None) -> None:
    """Refuse a format or destination that cannot work, before anything is rendered or written."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; use one of: {', '.join(FORMATS)}")
    if output is None:
        return
    parent = output.parent if str(output.parent) else Path(".")
    if fmt == "md" and _md_file(output):
        if output.is_dir():
            raise ExportError(f"cannot write {output}: it is a folder")
        if (parent / "images").exists() and not (parent / "images").is_dir():
            raise ExportError(f"cannot write {parent / 'images'}: a file is in the way of the images folder")
    elif fmt == "md":
        if output.exists() and not output.is_dir():
            raise ExportError(f"cannot write {output}: the markdown export is a folder and a file is in the way")
    elif output.is_dir():
        raise ExportError(f"cannot write {output}: it is a folder")
    if not parent.exists():
        raise ExportError(f"cannot write {output}: folder {parent} does not exist")
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ExportError(f"cannot write {output}: folder {parent} is not writable")
    if output.exists() and not os.access(output, os.W_OK):
        raise ExportError(f"cannot write {output}: permission denied")


# -- figures ----------------------------------------------------------------------------------
def _clean_inputs_loader():
    """Load a few clean inputs of a run's --data file when it is at hand and still has the recorded hash."""
    cache: dict[str, Any] = {}

    def load(run: dict[str, Any]):
        import numpy as np

        d = (run.get("params") or {}).get("data")
        if not isinstance(d, dict) or not d.get("source"):
            return None
        src = str(d["source"])
        if src not in cache:
            cache[src] = None
            try:
                raw = Path(src).read_bytes()
                if d.get("sha256") and hashlib.sha256(raw).hexdigest() != d["sha256"]:
                    return None
                import io

                with np.load(io.BytesIO(raw), allow_pickle=False) as z:
                    x = np.asarray(z["x"][:4], np.float64)
                cache[src] = x[:, None] if x.ndim == 3 else x
            except (OSError, ValueError, KeyError, EOFError):
                cache[src] = None
        return cache[src]

    return load


def figure_runs(bundle: dict[str, Any], large_case: int) -> list[dict[str, Any]]:
    """The runs whose figures the report shows (all finished runs; in a large case those of the first flagged
    subjects only)."""
    runs = [r for r in bundle["runs"] if r.get("status") == "done"]
    if len(bundle["subjects"]) <= large_case:
        return runs
    flagged = list(dict.fromkeys(r["subject_id"] for r in runs if r.get("verdict") in atlas.FLAGGED))
    keep = set(flagged[:MAX_FIGURE_SUBJECTS])
    return [r for r in runs if r["subject_id"] in keep]


def ensure_figures(store: Any, bundle: dict[str, Any], *, large_case: int) -> tuple[dict[int, list[tuple[str, str, bytes]]], int]:
    """Every figure of the shown runs (name, caption, png) by run id, drawing and storing the missing ones.

    Returns the figures and how many were drawn now. Captions are kept in a JSON artifact beside the PNGs.
    """
    from casefiles import figures as F

    out: dict[int, list[tuple[str, str, bytes]]] = {}
    drawn = 0
    loader = _clean_inputs_loader()
    names: dict[Any, set[str]] = {}
    for a in bundle.get("artifacts", []):
        names.setdefault(a.get("run_id"), set()).add(a["name"])
    index_name = f"{F.PREFIX}index.json"
    for run in figure_runs(bundle, large_case):
        rid = run["id"]
        have = names.get(rid, set())
        if index_name in have:
            index = json.loads((store.artifact_data(rid, index_name) or b"[]").decode("utf-8"))
            out[rid] = [(e["name"], e["caption"], store.artifact_data(rid, e["name"]) or b"") for e in index]
            out[rid] = [t for t in out[rid] if t[2]]
            continue
        def stored(name: str, rid: int = rid) -> bytes | None:
            return store.artifact_data(rid, name)

        figs = F.figures_for_run(run, stored, loader)
        if not figs:  # nothing to draw for this run (cheap to find out again next time; nothing stored)
            continue
        index = [{"name": f.name, "caption": f.caption, "sha256": hashlib.sha256(f.png).hexdigest()} for f in figs]
        if not getattr(store, "read_only", False):  # a read-only case file: drawn for this export, not stored
            store.add_artifacts(rid, {**{f.name: f.png for f in figs},
                                      index_name: json.dumps(index, sort_keys=True).encode()})
            drawn += len(figs)
        out[rid] = [(f.name, f.caption, f.png) for f in figs]
    return out, drawn


def _images(figs: dict[int, list[tuple[str, str, bytes]]], how: str) -> dict[int, list[ReportImage]]:
    """Image references: a path in the markdown folder, or (html) a placeholder swapped for a data: URI after the
    markdown is rendered (markdown-it is slow on 100 kB link destinations)."""
    out: dict[int, list[ReportImage]] = {}
    for rid, items in figs.items():
        for name, caption, _png in items:
            short = name.split("-", 2)[-1]
            src = f"images/run-{rid}-{short}" if how == "path" else f"twb-embed/run-{rid}-{short}"
            out.setdefault(rid, []).append(ReportImage(rid, name, caption, src))
    return out


def _embed(page: str, figs: dict[int, list[tuple[str, str, bytes]]]) -> str:
    for rid, items in figs.items():
        for name, _caption, png in items:
            uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
            page = page.replace(f'src="twb-embed/run-{rid}-{name.split("-", 2)[-1]}"', f'src="{uri}"')
    return page


# -- renderers --------------------------------------------------------------------------------
_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:62rem;margin:2rem auto;padding:0 1rem;
color:#1d2329;line-height:1.45}
h1{border-bottom:3px solid #c0392b;padding-bottom:.3rem}h2{border-bottom:1px solid #ccd;margin-top:2.2rem}
h3{margin-top:1.6rem}code{background:#f3f4f6;padding:0 .2rem;border-radius:3px;font-size:.88em;word-break:break-all}
table{border-collapse:collapse;margin:.6rem 0;font-size:.88em}th,td{border:1px solid #ccd;padding:.2rem .5rem;
text-align:left;vertical-align:top}th{background:#eef0f4}img{max-width:100%;height:auto;display:block;margin:.6rem 0}
em{color:#555}strong{color:#8e1b10}
@media print{body{max-width:none;margin:0;font-size:10pt}h2{break-before:auto}img,table,h3{break-inside:avoid}
h2,h3{break-after:avoid}a{color:inherit;text-decoration:none}}
"""


def render_html(markdown_text: str, title: str) -> str:
    """One self-contained HTML page (images are data: URIs; raw HTML in notes is escaped, not rendered)."""
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False}).enable("table")
    # Offline and inert: the only URLs the page may hold are its own embedded figures; any other link or image
    # (e.g. in an examiner's note) stays literal text, so opening the report never fetches anything.
    md.validateLink = lambda url: url.startswith("twb-embed/")  # type: ignore[method-assign]
    body = md.render(markdown_text)
    esc = title.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<meta name="generator" content="Trojan Workbench">'
            f"<title>{esc}</title><style>{_CSS}</style></head>\n<body>\n{body}</body></html>\n")


def render_jsonl(bundle: dict[str, Any]) -> str:
    """The case for archiving: one JSON object per line (case, subjects, runs, findings, artifacts, notes, every
    audit row with its hashes, the verification)."""
    lines = [{"type": "case", **bundle["case"]}]
    lines += [{"type": "subject", **s} for s in bundle["subjects"]]
    lines += [{"type": "run", **r} for r in bundle["runs"]]
    lines += [{"type": "finding", **f} for f in bundle["findings"]]
    lines += [{"type": "artifact", **{k: v for k, v in a.items() if k != "data"}} for a in bundle["artifacts"]]
    lines += [{"type": "note", **n} for n in bundle["notes"]]
    lines += [{"type": "audit", **a} for a in bundle["audit"]]
    lines.append({"type": "verify", **bundle["verify"]})
    return "".join(json.dumps(x, sort_keys=True, default=str, ensure_ascii=False) + "\n" for x in lines)


# -- writing ----------------------------------------------------------------------------------
def _atomic_file(dest: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent if str(dest.parent) else ".")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, dest)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _md_file(output: Path) -> bool:
    """``-o report.md``: one markdown file (images in ``images/`` beside it) rather than a report folder."""
    return output.suffix.lower() == ".md"


def _write_md_file(dest: Path, report: bytes, images: dict[str, bytes]) -> list[str]:
    """The markdown file at ``dest`` and its images in ``images/`` beside it (each written atomically)."""
    folder = (dest.parent if str(dest.parent) else Path(".")) / "images"
    if images:
        folder.mkdir(exist_ok=True)
    for name, data in images.items():
        _atomic_file(folder / name, data)
    _atomic_file(dest, report)
    return [dest.name, *(f"images/{n}" for n in images)]


def _write_folder(dest: Path, report: bytes, images: dict[str, bytes]) -> list[str]:
    """report.md + images/ into ``dest`` (built in a temporary sibling first; an earlier export there is replaced)."""
    parent = dest.parent if str(dest.parent) else Path(".")
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the report folder is an ordinary one
    try:
        (tmp / "images").mkdir()
        for name, data in images.items():
            (tmp / "images" / name).write_bytes(data)
        (tmp / "report.md").write_bytes(report)
        if not dest.exists():
            os.replace(tmp, dest)
        else:
            if (dest / "images").exists():
                shutil.rmtree(dest / "images")
            os.replace(tmp / "images", dest / "images")
            os.replace(tmp / "report.md", dest / "report.md")
            shutil.rmtree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ["report.md", *(f"images/{n}" for n in images)]


def export_case(store: Any, case_id: int, fmt: str, output: Path | None, *, figures: bool = True,
                large_case: int | None = None) -> tuple[ExportOutcome, bytes | None]:
    """Export case ``case_id``; returns the outcome and, when ``output`` is None, the bytes for stdout.

    The export is recorded in the audit trail (format, destination, sha256 of what was written).
    """
    from casefiles.export import LARGE_CASE

    t0 = time.perf_counter()
    check_destination(fmt, output)
    store.get_case(case_id)
    large = LARGE_CASE if large_case is None else large_case
    figs: dict[int, list[tuple[str, str, bytes]]] = {}
    drawn = 0
    want_figures = figures and fmt in ("html", "md") and not (fmt == "md" and output is None)
    bundle = store.case_bundle(case_id)
    if want_figures:
        figs, drawn = ensure_figures(store, bundle, large_case=large)
        if drawn:  # the new figures are artifacts with an audit row: the report lists them
            bundle = store.case_bundle(case_id)
    files: list[str] = []
    if fmt in ("html", "md"):
        how = "path" if fmt == "md" else "data"
        note = (f"Figures are drawn for the first {MAX_FIGURE_SUBJECTS} flagged subjects."
                if want_figures and len(bundle["subjects"]) > large else "")
        text = render_markdown(bundle, ReportOptions(images=_images(figs, how), large_case=large, note=note))
        if fmt == "html":
            page = render_html(text, f"Case {bundle['case']['id']}: {bundle['case']['title']}")
            data = _embed(page, figs).encode("utf-8")
        else:
            data = text.encode("utf-8")
    elif fmt == "jsonl":
        data = render_jsonl(bundle).encode("utf-8")
    else:
        from casefiles.cyclonedx_bom import render_cyclonedx

        data = render_cyclonedx(bundle).encode("utf-8")
    digest = hashlib.sha256(data).hexdigest()
    n_figs = sum(len(v) for v in figs.values())
    try:
        if output is None:
            where = "stdout"
        elif fmt == "md":
            images = {f"run-{rid}-{name.split('-', 2)[-1]}": png
                      for rid, items in figs.items() for name, _, png in items}
            files = (_write_md_file if _md_file(output) else _write_folder)(output, data, images)
            where = str(output)
        else:
            _atomic_file(output, data)
            where, files = str(output), [output.name]
    except OSError as exc:
        raise ExportError(f"cannot write {output}: {exc.strerror or exc}") from None
    if not getattr(store, "read_only", False):  # a read-only case file cannot record its own export
        store.record(case_id, "case.exported", {"format": fmt, "sha256": digest, "output": where, "figures": n_figs})
    outcome = ExportOutcome(fmt, where, digest, len(data), n_figs, drawn, time.perf_counter() - t0, files)
    return outcome, (data if output is None else None)

"""The ``workbench`` command: a thin Typer layer over the headless core.

Exit codes (stable, CI gates depend on them): 0 analysis done, 1 the
``--fail-on`` risk band was reached, 2 bad input or usage (one line on stderr,
nothing written to the case file). Heavy imports (torch, the store, the TUI)
happen inside commands so ``workbench --help`` stays fast.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn, Optional

import typer

app = typer.Typer(
    name="workbench",
    help="Trojan Workbench: investigate ML models for backdoors and booby-trapped files, offline.\n\n"
         "Run without a command to open the terminal workbench on the default case file.",
    no_args_is_help=False, add_completion=False, rich_markup_mode=None, pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]})
case_app = typer.Typer(help="Create, list, show, export and verify cases.", no_args_is_help=True)
note_app = typer.Typer(help="Add notes to a case or a subject.", no_args_is_help=True)
subject_app = typer.Typer(help="Add suspect models to a case.", no_args_is_help=True)
app.add_typer(case_app, name="case")
app.add_typer(note_app, name="note")
app.add_typer(subject_app, name="subject")
baseline_app = typer.Typer(help="Named baselines of known-clean models for the fingerprint ensemble.", no_args_is_help=True)
app.add_typer(baseline_app, name="baseline")

DbOpt = Annotated[Optional[Path], typer.Option(
    "--db", help="Case file to use (default: $WORKBENCH_DB, else the platform's data dir).",
    envvar="WORKBENCH_DB", show_envvar=True)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
ThreadsOpt = Annotated[Optional[int], typer.Option(
    "--threads", min=1, envvar="WORKBENCH_THREADS", show_envvar=True,
    help="torch threads (default: the cores idle when the command starts; one thread is often fastest on a busy "
         "machine).")]

BAND_ORDER = {"low": 0, "medium": 1, "high": 2}


def fail(message: str, code: int = 2) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _open_store(db: Path | None, *, create: bool = True, read: bool = False):
    """The case file; ``read=True`` (commands that only read) opens a file this process cannot write read-only."""
    from casefiles import CaseStore
    from casefiles.store import read_only_reason
    from workbench.paths import default_db_path

    path = db or default_db_path()
    if read and path.exists() and read_only_reason(path):
        return CaseStore(path, create=False, read_only=True)
    return CaseStore(path, create=create)


class _Guard:
    """Turn the core's one-line errors into ``error: ...`` on stderr and exit code 2."""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is None or isinstance(exc, (typer.Exit, typer.Abort, SystemExit, KeyboardInterrupt)):
            return False
        from casefiles.errors import CaseFileError
        from probes.errors import ProbeError, one_line

        if isinstance(exc, (CaseFileError, ProbeError)):
            fail(one_line(exc))
        return False


def _print_json(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2, sort_keys=False, default=str))


# --------------------------------------------------------------------------------------------
@app.callback(invoke_without_command=True)
def main_callback(ctx: typer.Context, db: DbOpt = None, threads: ThreadsOpt = None,
                  version: Annotated[bool, typer.Option("--version", help="Show the version and exit.")] = False) -> None:
    _use_threads(threads)
    if version:
        from workbench import __version__

        typer.echo(f"workbench {__version__}")
        raise typer.Exit(0)
    if ctx.invoked_subcommand is None:
        with _Guard():
            from workbench.paths import default_db_path

            _run_tui(db or default_db_path())


def _use_threads(threads: int | None) -> None:
    """Make ``--threads`` the count every probe of this process (and its workers) uses."""
    if threads is not None:
        from workbench.threads import ENV

        os.environ[ENV] = str(threads)


def _run_tui(db: Path, **kwargs: Any) -> None:
    try:
        from workbench.ui.app import run_app
    except ImportError as exc:  # pragma: no cover - only before the TUI lands
        fail(f"the terminal workbench is not available: {exc}")
    run_app(db, **kwargs)


# --------------------------------------------------------------------------------------------
@app.command("demo")
def demo(no_tui: Annotated[bool, typer.Option("--no-tui", help="Build the demo case and print it; do not open the workbench.")] = False,
         rebuild: Annotated[bool, typer.Option("--rebuild", help="Start a fresh demo case even if one exists.")] = False,
         db: Annotated[Optional[Path], typer.Option("--db", help="Demo case file (default: demo.db in the platform's data dir).")] = None,
         threads: ThreadsOpt = None) -> None:
    """Build demo subjects locally (backdoored and clean classifiers and language models) and open a demo case."""
    from workbench.demo import build_demo_case

    _use_threads(threads)
    from workbench.paths import default_db_path

    with _Guard():
        target = db or default_db_path().with_name("demo.db")
        case_id = build_demo_case(target, say=lambda m: typer.echo(m, err=True), rebuild=rebuild)
        if no_tui:
            case_show(case_id, db=target, as_json=False)
        else:
            _run_tui(target, case_id=case_id)


# --------------------------------------------------------------------------------------------
@case_app.command("new")
def case_new(title: Annotated[str, typer.Argument(help="Case title, e.g. \"Vendor model 2026-11\".")],
             description: Annotated[str, typer.Option("--description", "-d", help="One-paragraph description.")] = "",
             db: DbOpt = None, as_json: JsonOpt = False) -> None:
    """Create a case and print its id."""
    with _Guard(), _open_store(db) as store:
        cid = store.new_case(title, description)
        if as_json:
            _print_json(store.get_case(cid))
        else:
            typer.echo(f"case {cid} created in {store.path}")


@case_app.command("list")
def case_list(db: DbOpt = None, as_json: JsonOpt = False) -> None:
    """List the cases in the case file."""
    with _Guard(), _open_store(db, create=False, read=True) as store:
        cases = store.list_cases()
        if as_json:
            _print_json(cases)
            return
        if not cases:
            typer.echo(f"no cases in {store.path} (create one with: workbench case new TITLE)")
            return
        typer.echo(f"{'id':>4}  {'subjects':>8}  {'runs':>5}  {'updated':<24}  title")
        for c in cases:
            typer.echo(f"{c['id']:>4}  {c['subjects']:>8}  {c['runs']:>5}  {c['updated']:<24}  {c['title']}")


@case_app.command("show")
def case_show(case_id: Annotated[int, typer.Argument(help="Case id.")], db: DbOpt = None,
              as_json: JsonOpt = False) -> None:
    """Show a case: subjects, probe runs, notes and the audit head."""
    from casefiles.export import overall_verdict

    with _Guard(), _open_store(db, create=False, read=True) as store:
        bundle = store.case_bundle(case_id)
        if as_json:
            bundle["artifacts"] = [dict(a) for a in bundle["artifacts"]]
            _print_json(bundle)
            return
        c = bundle["case"]
        typer.echo(f"Case {c['id']}: {c['title']}")
        if c.get("description"):
            typer.echo(f"  {c['description']}")
        typer.echo(f"  opened {c['created']}, overall verdict: {overall_verdict(bundle['runs'], bundle['subjects'])}")
        typer.echo(f"\nSubjects ({len(bundle['subjects'])}):")
        for s in bundle["subjects"]:
            typer.echo(f"  [{s['id']}] {s['name']}  {s['format']}/{s['kind']}  sha256 {s['sha256'][:16]}…  {s['path']}")
        typer.echo(f"\nRuns ({len(bundle['runs'])}):")
        for r in bundle["runs"]:
            dur = f"{r['duration_s']:.2f}s" if r.get("duration_s") is not None else "-"
            verdict = r.get("verdict") or "-"
            tail = r.get("summary") or r.get("error") or ""
            typer.echo(f"  [{r['id']}] subject {r['subject_id']} {r['probe']:<22} {r['status']:<11} {verdict:<12} {dur:>8}  {tail}")
        typer.echo(f"\nNotes: {len(bundle['notes'])}")
        v = bundle["verify"]
        typer.echo(f"Audit: {v['rows']} rows, head {v['head'][:16]}…, {'intact' if v['ok'] else 'BROKEN (run case verify)'}")


@case_app.command("export")
def case_export(case_id: Annotated[int, typer.Argument(help="Case id.")],
                output: Annotated[Optional[Path], typer.Option("-o", "--output", help="Write the report here (default: stdout).")] = None,
                db: DbOpt = None) -> None:
    """Export the case as a markdown report (subjects, runs, findings, ATLAS mapping, notes, audit head)."""
    import hashlib

    from casefiles.export import render_markdown
    from casefiles.store import read_only_reason

    with _Guard(), _open_store(db, create=False, read=True) as store:
        text = render_markdown(store.case_bundle(case_id))
        if output is None:
            sys.stdout.write(text)
        else:
            try:
                output.write_text(text, encoding="utf-8")
            except OSError as exc:
                fail(f"cannot write {output}: {exc.strerror or exc}")
            typer.echo(f"report written to {output}", err=True)
        if store.read_only:
            typer.echo(f"note: {store.path} is read-only ({read_only_reason(store.path)}): this export is not "
                       "recorded in its audit trail", err=True)
            return
        store.record(case_id, "case.exported", {"sha256": hashlib.sha256(text.encode()).hexdigest(),
                                                "output": str(output) if output else "stdout"})


@case_app.command("verify")
def case_verify(case_id: Annotated[int, typer.Argument(help="Case id.")],
                head: Annotated[Optional[str], typer.Option("--head", help="Also check that this head hash (e.g. from an exported report) is part of the trail.")] = None,
                db: DbOpt = None, as_json: JsonOpt = False) -> None:
    """Check the audit trail's hash chain: exit 0 when intact, 1 when tampered, naming the row."""
    with _Guard(), _open_store(db, create=False, read=True) as store:
        report = store.verify(case_id)
        problems = list(report.problems)
        if head and head not in {r["hash"] for r in store.audit_rows(case_id)}:
            problems.append(f"head hash {head[:16]}… is not in this case's audit trail")
        ok = not problems
        if as_json:
            _print_json({**report.to_dict(), "ok": ok, "problems": problems})
        elif ok:
            typer.echo(f"audit trail intact: {report.rows} rows, head {report.head}")
            if report.coverage:
                typer.echo(f"evidence rows: {report.coverage}")
        else:
            typer.echo(f"audit trail BROKEN ({len(problems)} problem{'s' if len(problems) != 1 else ''}):")
            for p in problems:
                typer.echo(f"  - {p}")
        raise typer.Exit(0 if ok else 1)


# --------------------------------------------------------------------------------------------
def _text_from_editor() -> str:
    import shlex
    import subprocess
    import tempfile

    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR")
    if not editor:
        fail("no note text: give TEXT, --file FILE, or set $EDITOR")
    with tempfile.NamedTemporaryFile("w+", suffix=".md", delete=False) as fh:
        path = fh.name
    try:
        rc = subprocess.call([*shlex.split(editor), path])
        if rc != 0:
            fail(f"editor exited with status {rc}; note not saved")
        return Path(path).read_text(encoding="utf-8")
    finally:
        os.unlink(path)


@note_app.command("add")
def note_add(case_id: Annotated[int, typer.Argument(help="Case id.")],
             text: Annotated[Optional[str], typer.Argument(help="Note text (markdown). Omit to use --file or $EDITOR.")] = None,
             file: Annotated[Optional[Path], typer.Option("--file", "-f", help="Read the note from a file ('-' for stdin).")] = None,
             subject: Annotated[Optional[int], typer.Option("--subject", "-s", help="Attach the note to this subject id.")] = None,
             db: DbOpt = None) -> None:
    """Add a markdown note to a case (or one of its subjects)."""
    with _Guard():
        if text is None and file is not None:
            if str(file) == "-":
                text = sys.stdin.read()
            else:
                try:
                    text = file.read_text(encoding="utf-8")
                except (OSError, UnicodeDecodeError) as exc:
                    fail(f"cannot read note file {file}: {getattr(exc, 'strerror', None) or exc}")
        elif text is None:
            text = _text_from_editor()
        if not text.strip():
            fail("the note is empty; nothing saved")
        with _open_store(db, create=False) as store:
            if subject is not None and store.get_subject(subject)["case_id"] != case_id:
                fail(f"subject {subject} belongs to another case")
            nid = store.add_note(case_id, text, subject_id=subject)
        typer.echo(f"note {nid} added to case {case_id}")


@subject_app.command("add")
def subject_add(case_id: Annotated[int, typer.Argument(help="Case id.")],
                path: Annotated[Path, typer.Argument(help="A model file or a Hugging Face-style folder.")],
                db: DbOpt = None, as_json: JsonOpt = False) -> None:
    """Record a suspect model: path, sha256 of every file, size, detected format and kind. Nothing is loaded."""
    from workbench.subject_files import describe

    with _Guard():
        info = describe(path)  # validate before opening (and so before writing) the case file
        with _open_store(db, create=False) as store:
            store.get_case(case_id)
            sid = store.add_subject(case_id, path=info.path, sha256=info.sha256, size=info.size,
                                    format=info.format, kind=info.kind, files=info.files, name=info.name)
        if as_json:
            _print_json({"id": sid, **info.to_dict()})
        else:
            typer.echo(f"subject {sid} added: {info.name} ({info.format}, {info.kind}, {len(info.files)} file(s), "
                       f"sha256 {info.sha256})")


# --------------------------------------------------------------------------------------------
@baseline_app.command("add")
def baseline_add(name: Annotated[str, typer.Argument(help="Baseline name, e.g. digits-cnn.")],
                 models: Annotated[list[Path], typer.Argument(help="Trusted models (files or folders) of one architecture.")],
                 data: Annotated[Optional[Path], typer.Option("--data", help="Reference inputs (.npz) to fingerprint with, as for scan.")] = None,
                 arch: Annotated[Optional[str], typer.Option("--arch", help="Architecture for bare state_dicts: FILE.py:ClassName.")] = None,
                 input_shape: Annotated[Optional[str], typer.Option("--input-shape", help="C,H,W when it cannot be inferred.")] = None,
                 seed: Annotated[int, typer.Option("--seed", help="Seed of the synthetic reference inputs.")] = 0,
                 threads: ThreadsOpt = None, db: DbOpt = None) -> None:
    """Fingerprint trusted models once and keep them in the case file under NAME."""
    from probes.data import load_npz
    from workbench.baselines import add_models

    _use_threads(threads)
    with _Guard():
        reference = load_npz(data) if data else None
        with _open_store(db) as store:
            added = add_models(store, name, models, data=reference, arch=arch, input_shape=_parse_shape(input_shape),
                               seed=seed, progress=lambda i, n, m: typer.echo(f"[{i}/{n}] {m}", err=True))
        typer.echo(f"baseline {name}: {added} model(s) added")


@baseline_app.command("list")
def baseline_list(db: DbOpt = None, as_json: JsonOpt = False) -> None:
    """List the stored baselines."""
    with _Guard(), _open_store(db, create=False, read=True) as store:
        rows = store.list_baselines()
        if as_json:
            _print_json(rows)
        elif not rows:
            typer.echo("no baselines (create one with: workbench baseline add NAME MODEL...)")
        else:
            for r in rows:
                typer.echo(f"{r['name']:<24} {r['members']:>4} model(s)  {r['kind'] or '':<18} created {r['created']}")


# --------------------------------------------------------------------------------------------
def _parse_params(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            fail(f"--param takes KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def _parse_shape(text: str | None) -> tuple[int, ...] | None:
    if not text:
        return None
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        fail(f"--input-shape takes C,H,W (e.g. 3,32,32), got {text!r}")
    if len(shape) != 3 or min(shape) <= 0:
        fail(f"--input-shape takes three positive numbers C,H,W, got {text!r}")
    return shape


class _StderrProgress:
    """Progress on stderr: a rewritten line on a terminal, nothing when piped (stdout stays clean JSON)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self.last = ""

    def __call__(self, ev: Any) -> None:
        if not self.enabled:
            return
        frac = ev.fraction
        pct = f"{100 * frac:3.0f}%" if frac is not None else "    "
        line = f"{ev.probe:<22} {pct} {ev.text()}"[:100]
        sys.stderr.write("\r" + line.ljust(len(self.last)))
        sys.stderr.flush()
        self.last = line

    def close(self) -> None:
        if self.enabled and self.last:
            sys.stderr.write("\r" + " " * len(self.last) + "\r")


def _summary_lines(report) -> list[str]:
    d = report.to_dict()
    s = d["subject"]
    lines = [f"{s['path']}", f"  sha256 {s['sha256']}  format {s['format']}  kind {s['kind']}", ""]
    for r in d["results"]:
        lines.append(f"  {r['probe']:<22} {r['verdict']:<12} score {r['score']:.2f}  {r['summary']}")
    for e in d["errors"]:
        lines.append(f"  {e['probe']:<22} {e['status']:<12} {e['error']}")
    t = d["trust"]
    lines += ["", f"Verdict: {d['verdict']}  risk {t['score'] if t['score'] is not None else '-'}/100 ({t['band'] or '-'})",
              f"Evidence: {d['evidence']}"]
    for o in d.get("offers") or []:
        lines.append(f"Next: {o['reason']}: {o['command']}")
    return lines


@app.command("probes")
def probes_list(name: Annotated[Optional[str], typer.Argument(help="Show one probe's parameters in full.")] = None,
                as_json: JsonOpt = False) -> None:
    """List the probes, what each needs and its parameters (set them with scan --param KEY=VALUE)."""
    from probes import registry

    with _Guard():
        specs = [registry.get(name)] if name else list(registry.PROBES.values())
        if as_json:
            _print_json([{"name": s.name, "help": s.help, "needs": s.needs, "kinds": list(s.kinds), "data": s.data,
                          "data_required": s.data_required, "uses": list(s.uses), "default": s.default,
                          "version": s.version,
                          "params": [{"name": p.name, "type": p.type_text(), "default": p.default, "help": p.help}
                                     for p in s.all_params]} for s in specs])
            return
        for s in specs:
            tag = "" if s.default else "  (opt-in)"
            typer.echo(f"{s.name}{tag}: {s.help}")
            typer.echo(f"  runs on {s.needs_text()}")
            for p in s.all_params:
                setting = f"{p.name}={json.dumps(p.default)}"
                typer.echo(f"  {setting:<32} {p.type_text():<28} {p.help}")
            typer.echo("")
        typer.echo("A plain KEY goes to every probe of the scan that takes it; PROBE.KEY to that probe only.")


def _note_arch(arch: str | None) -> None:
    """Say plainly that an ``--arch`` file is code that runs (in a child first, then here)."""
    if arch:
        typer.echo(f"note: --arch {arch} is examiner code: it is imported and built in a child process first, "
                   "then runs in this process to rebuild the model (use only a file you trust)", err=True)


@app.command("scan")
def scan(path: Annotated[Path, typer.Argument(help="A model file or a Hugging Face-style folder.")],
         data: Annotated[Optional[Path], typer.Option("--data", help="Clean labelled inputs (.npz with x, y) for the behavioural probes.")] = None,
         audit: Annotated[Optional[Path], typer.Option("--audit", help="A suspect training set (.npz) to audit (spectral, activation-clustering).")] = None,
         probes: Annotated[Optional[str], typer.Option("--probes", help="Comma-separated probes (default: the layered set that applies; `workbench probes` lists them).")] = None,
         arch: Annotated[Optional[str], typer.Option("--arch", help="Architecture for a bare state_dict: path/to/file.py:ClassName.")] = None,
         input_shape: Annotated[Optional[str], typer.Option("--input-shape", help="Image input shape C,H,W when it cannot be inferred.")] = None,
         reference: Annotated[Optional[Path], typer.Option("--reference", help="A trusted model of the same family, to calibrate the KL hunt.")] = None,
         prompts: Annotated[Optional[Path], typer.Option("--prompts", help="Prompt file (one per line) for language-model probes.")] = None,
         candidates: Annotated[Optional[Path], typer.Option("--candidates", help="Candidate trigger list (one per line) for the KL hunt.")] = None,
         baseline: Annotated[Optional[str], typer.Option("--baseline", help="Folder of trusted models (or a stored baseline name) for the fingerprint ensemble.")] = None,
         param: Annotated[list[str], typer.Option("--param", help="Probe parameter KEY=VALUE or PROBE.KEY=VALUE (JSON value), repeatable; `workbench probes` lists them.")] = [],  # noqa: B006 - Typer's way to declare a repeatable option
         seed: Annotated[int, typer.Option("--seed", help="Seed for every probe (results are deterministic for a seed).")] = 0,
         device: Annotated[Optional[str], typer.Option("--device", help="torch device (default: cuda when present, else cpu).")] = None,
         case: Annotated[Optional[int], typer.Option("--case", help="Record the subject and every run in this case.")] = None,
         sarif: Annotated[Optional[Path], typer.Option("--sarif", help="Write the static scan's findings as SARIF 2.1.0 to this file.")] = None,
         fail_on: Annotated[Optional[str], typer.Option("--fail-on", help="Exit 1 when the risk band is at or above low|medium|high.")] = None,
         threads: ThreadsOpt = None,
         db: DbOpt = None, as_json: JsonOpt = False) -> None:
    """Run the layered scan: static scan, safe load, the probes that apply, and a risk verdict."""
    from workbench.scan import ScanOptions, parse_probe_list, prepare, run_scan

    if fail_on is not None and fail_on not in BAND_ORDER:
        fail("--fail-on takes low, medium or high")
    with _Guard():
        extra = _parse_params(param)
        inputs: dict[str, Any] = {}
        for key, value in (("reference", reference), ("prompts_file", prompts), ("candidates", candidates)):
            if value is not None:
                if not Path(value).exists():
                    fail(f"{key.replace('_file', '')} not found: {value}")
                extra[key] = str(value)
        if baseline is not None:
            if Path(baseline).is_dir():
                extra["baseline"] = str(Path(baseline).resolve())
            else:  # a baseline stored in the case file
                with _open_store(db, create=False) as bstore:
                    inputs["baseline_fingerprints"] = bstore.baseline_fingerprints(baseline)
                extra["baseline_name"] = baseline
        options = ScanOptions(probes=parse_probe_list(probes), data=str(data) if data else None,
                              audit=str(audit) if audit else None, arch=arch, input_shape=_parse_shape(input_shape),
                              seed=seed, device=device, params=extra, inputs=inputs, threads=threads)
        prepared = prepare(path, options)
        _note_arch(arch)
        store = None
        if case is not None:
            store = _open_store(db, create=False)
            store.get_case(case)
        progress = _StderrProgress(enabled=True)
        try:
            report = run_scan(prepared, store=store, case_id=case, progress=progress)
        except KeyboardInterrupt:
            progress.close()
            fail("interrupted; runs in progress were recorded as cancelled or will show as interrupted", 130)
        finally:
            progress.close()
            if store is not None:
                store.close()
        out = report.to_dict()
        if sarif is not None:
            _write_sarif(sarif, out["results"])
        if not out["results"]:
            fail(out["errors"][0]["error"] if out["errors"] else "no probe produced a result")
        if as_json:
            _print_json(out)
        else:
            for line in _summary_lines(report):
                typer.echo(line)
        band = out["trust"]["band"]
        if fail_on and band and BAND_ORDER[band] >= BAND_ORDER[fail_on]:
            raise typer.Exit(1)


def _write_sarif(dest: Path, results: list[dict[str, Any]]) -> None:
    try:
        from probes.static_scan.sarif import to_sarif
    except ImportError:
        fail("SARIF output needs the static scan module")
    static = [r for r in results if r.get("probe") == "static"]
    try:
        dest.write_text(json.dumps(to_sarif(static), indent=2), encoding="utf-8")
    except OSError as exc:
        fail(f"cannot write {dest}: {exc.strerror or exc}")


def _printable_output() -> None:
    """Print a non-UTF-8 file name's odd bytes as ``\\xff`` (valid UTF-8 a pipe or a JSON reader accepts),
    the same form the case file stores, instead of raw bytes or an encoding traceback."""
    import codecs

    def escape(exc: UnicodeError) -> tuple[str, int]:
        if not isinstance(exc, UnicodeEncodeError):
            raise exc
        bad = exc.object[exc.start:exc.end]
        return "".join(f"\\x{ord(c) - 0xDC00:02x}" if 0xDC80 <= ord(c) <= 0xDCFF else f"\\u{ord(c):04x}"
                       for c in bad), exc.end

    codecs.register_error("workbench-printable", escape)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="workbench-printable")  # type: ignore[union-attr]
        except (AttributeError, ValueError):
            pass


def main() -> None:
    """Console-script entry point."""
    _printable_output()
    app()


if __name__ == "__main__":
    main()

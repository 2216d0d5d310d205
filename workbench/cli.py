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
registry_app = typer.Typer(help="Scan a whole model store (registry mirror, Hugging Face cache, vendor drop) as one job.", no_args_is_help=True)
app.add_typer(registry_app, name="registry")

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
                  examiner: Annotated[Optional[str], typer.Option(
                      "--examiner", envvar="WORKBENCH_EXAMINER", show_envvar=True,
                      help="Examiner name signed on every audit row (default: the OS user).")] = None,
                  version: Annotated[bool, typer.Option("--version", help="Show the version and exit.")] = False) -> None:
    _use_threads(threads)
    if examiner is not None:
        os.environ["WORKBENCH_EXAMINER"] = examiner
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
                fmt: Annotated[str, typer.Option("--format", "-f", help="html (one self-contained file), md (a folder: "
                                                 "report.md + images/), cyclonedx (1.6 ML-BOM JSON) or jsonl "
                                                 "(audit trail and runs, for archiving); -o X.md writes one markdown file with images/ beside it.")] = "md",
                output: Annotated[Optional[Path], typer.Option("-o", "--output", help="Write here (default: stdout; "
                                                               "md on stdout has no images).")] = None,
                no_figures: Annotated[bool, typer.Option("--no-figures", help="Leave the figures out (faster).")] = False,
                db: DbOpt = None, as_json: JsonOpt = False) -> None:
    """Export the case: subjects, custody, findings characterised, figures, ATLAS mapping, notes, audit trail."""
    from casefiles.report import check_destination, export_case
    from casefiles.store import read_only_reason

    with _Guard():
        check_destination(fmt, output)  # a bad format or destination: one line, before the case file is opened
        with _open_store(db, create=False, read=True) as store:
            outcome, data = export_case(store, case_id, fmt, output, figures=not no_figures)
            read_only = store.read_only
        if data is not None:
            sys.stdout.buffer.write(data)
            sys.stdout.flush()
        elif as_json:
            _print_json(outcome.to_dict())
        else:
            typer.echo(f"{fmt} report written to {output} ({outcome.size:,} bytes, {outcome.figures} figure(s), "
                       f"sha256 {outcome.sha256[:16]}…, {outcome.seconds:.2f} s)", err=True)
        if read_only:
            typer.echo(f"note: {store.path} is read-only ({read_only_reason(store.path)}): this export is not "
                       "recorded in its audit trail", err=True)


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
                source: Annotated[Optional[str], typer.Option("--source", help="Where the files came from (URL, ticket, media id).")] = None,
                acquired_by: Annotated[Optional[str], typer.Option("--acquired-by", help="Who acquired the files.")] = None,
                acquired_at: Annotated[Optional[str], typer.Option("--acquired-at", help="When they were acquired (ISO date/time).")] = None,
                origin: Annotated[Optional[str], typer.Option("--origin", help="Claimed origin or vendor.")] = None,
                provenance: Annotated[Optional[str], typer.Option("--provenance", help="Free provenance text.")] = None,
                db: DbOpt = None, as_json: JsonOpt = False) -> None:
    """Record a suspect model: path, sha256 of every file, size, format, kind and custody. Nothing is loaded."""
    from workbench.custody import custody_record
    from workbench.subject_files import describe

    with _Guard():
        custody = custody_record(source=source, acquired_by=acquired_by, acquired_at=acquired_at,
                                 claimed_origin=origin, provenance=provenance)
        info = describe(path)  # validate before opening (and so before writing) the case file
        with _open_store(db, create=False) as store:
            store.get_case(case_id)
            sid = store.add_subject(case_id, path=info.path, sha256=info.sha256, size=info.size,
                                    format=info.format, kind=info.kind, files=info.files, name=info.name,
                                    metadata={"custody": custody} if custody else None)
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


@app.command("remediate")
def remediate(path: Annotated[Path, typer.Argument(help="The flagged model: a file or a Hugging Face-style folder.")],
              out: Annotated[Path, typer.Option("--out", help="New folder for the repaired model, filter.json and remediation.json.")],
              data: Annotated[Optional[Path], typer.Option("--data", help="Clean labelled inputs (.npz with x, y) for an image classifier.")] = None,
              method: Annotated[str, typer.Option("--method", help="Image classifiers: unlearn (fine-tune) or prune.")] = "unlearn",
              arch: Annotated[Optional[str], typer.Option("--arch", help="Architecture for a bare state_dict: path/to/file.py:ClassName.")] = None,
              trigger: Annotated[Optional[str], typer.Option("--trigger", help="Language models: the trigger text (default: the case's confirmed one).")] = None,
              prompts: Annotated[Optional[Path], typer.Option("--prompts", help="Language models: extra prompts, one per line.")] = None,
              input_shape: Annotated[Optional[str], typer.Option("--input-shape", help="Image input shape C,H,W when it cannot be inferred.")] = None,
              param: Annotated[list[str], typer.Option("--param", help="Remediation setting KEY=VALUE (docs/remediation.md lists them), repeatable.")] = [],  # noqa: B006 - Typer's repeatable option
              seed: Annotated[int, typer.Option("--seed", help="Seed of every random choice.")] = 0,
              device: Annotated[Optional[str], typer.Option("--device", help="torch device (default: cuda when present, else cpu).")] = None,
              case: Annotated[Optional[int], typer.Option("--case", help="Take the flagged result from this case and record the repair in it.")] = None,
              threads: ThreadsOpt = None, db: DbOpt = None, as_json: JsonOpt = False) -> None:
    """Take a detected backdoor out of a copy of the model; write it, an input filter and the before/after evidence."""
    from workbench.remediate import RemediateOptions, prepare, run_remediation

    _use_threads(threads)
    if method not in ("unlearn", "prune"):
        fail("--method takes unlearn or prune")
    with _Guard():
        options = RemediateOptions(out=str(out), data=str(data) if data else None, method=method, arch=arch,
                                   trigger=trigger, prompts=str(prompts) if prompts else None,
                                   input_shape=_parse_shape(input_shape), seed=seed, device=device,
                                   params=_parse_params(param))
        prepared = prepare(path, options)
        store = None
        if case is not None:
            store = _open_store(db, create=False)
            store.get_case(case)
        progress = _StderrProgress(enabled=True)
        try:
            doc = run_remediation(prepared, store=store, case_id=case, progress=progress)
        except KeyboardInterrupt:
            progress.close()
            fail("interrupted; nothing was written", 130)
        except (typer.Exit, SystemExit):
            raise
        except Exception as exc:  # noqa: BLE001 - a model that cannot be repaired is one line, never a traceback
            from casefiles.errors import CaseFileError
            from probes.errors import ProbeError, explain

            progress.close()
            if isinstance(exc, (ProbeError, CaseFileError)):
                raise
            fail(f"remediation failed: {explain(exc)}")
        finally:
            progress.close()
            if store is not None:
                store.close()
        if as_json:
            _print_json(doc)
            return
        from casefiles.remediation_section import summary_lines

        for line in summary_lines(doc):
            typer.echo(line)


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


@registry_app.command("scan")
def registry_scan(root: Annotated[Path, typer.Argument(help="A folder of models (or one model file).")],
                  case: Annotated[Optional[int], typer.Option("--case", help="Record into this case (default: the case titled 'registry ROOT', created when missing).")] = None,
                  engine: Annotated[str, typer.Option("--engine", help="local (process pool) or ray.")] = "local",
                  address: Annotated[Optional[str], typer.Option("--address", help="Ray cluster to join (default: start a local one for the job).")] = None,
                  workers: Annotated[int, typer.Option("--workers", min=1, help="Worker processes (Ray: CPUs of the local instance).")] = 2,
                  probes: Annotated[Optional[str], typer.Option("--probes", help="Beyond the static scan: dynamic (on inconclusive/review-tier subjects) and model probes (need --data/--audit as in scan).")] = None,
                  data: Annotated[Optional[Path], typer.Option("--data", help="Clean labelled inputs (.npz) for the model probes.")] = None,
                  audit: Annotated[Optional[Path], typer.Option("--audit", help="Suspect training set (.npz) for the audit probes.")] = None,
                  param: Annotated[list[str], typer.Option("--param", help="Probe parameter KEY=VALUE or PROBE.KEY=VALUE, repeatable.")] = [],  # noqa: B006 - Typer's repeatable option
                  resume: Annotated[bool, typer.Option("--resume/--rescan", help="Skip subjects the case already finished under the same probe versions and parameters (default), or scan everything again.")] = True,
                  time_limit: Annotated[float, typer.Option("--time-limit", min=0.1, help="Seconds per subject.")] = 300.0,
                  memory_mb: Annotated[int, typer.Option("--memory-mb", min=64, help="Data-memory limit per worker process (MB).")] = 4096,
                  json_lines: Annotated[Optional[Path], typer.Option("--json-lines", help="Write one JSON object per subject (and per problem) to this file.")] = None,
                  sarif: Annotated[Optional[Path], typer.Option("--sarif", help="Write one SARIF 2.1.0 log for the whole job.")] = None,
                  quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress lines.")] = False,
                  db: DbOpt = None, as_json: JsonOpt = False) -> None:
    """Scan every model under ROOT: static scan on all, then the opt-in layers; resumable and content-addressed."""
    from workbench.registry.cli import run_registry_scan

    with _Guard():
        run_registry_scan(root, case=case, engine=engine, address=address, workers=workers, probes=probes,
                          data=data, audit=audit, params=_parse_params(param), resume=resume, time_limit=time_limit,
                          memory_mb=memory_mb, json_lines=json_lines, sarif=sarif, quiet=quiet, db=db,
                          as_json=as_json, echo=typer.echo, open_store=_open_store)


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

"""The case store: one SQLite file (WAL) per set of cases, via sqlite-utils.

Every logical write is one ``BEGIN IMMEDIATE`` transaction that also appends its
audit row, so a crash never leaves half a write, and two processes writing the
same file either both succeed or one gets :class:`CaseFileBusy`.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import shutil
import socket
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlite_utils import Database

from casefiles import attest, schema
from casefiles import audit as chain
from casefiles.errors import CaseFileBusy, CaseFileError, CaseFileFull, NotFound
from vocabulary import one_line, printable

RUN_STATUSES = ("running", "done", "failed", "cancelled", "interrupted")
EXAMINER_ENV = "WORKBENCH_EXAMINER"


def examiner_name() -> str:
    """Who signs the audit rows: ``$WORKBENCH_EXAMINER`` (the CLI's ``--examiner``), else the OS user."""
    name = " ".join(os.environ.get(EXAMINER_ENV, "").split())
    return name or getpass.getuser()


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _is_full(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.Error) and ("full" in str(exc).lower() or getattr(exc, "sqlite_errorcode", 0) == 13)


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    msg = str(exc).lower()
    return "locked" in msg or "busy" in msg


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_only_reason(path: Path) -> str | None:
    """Why this process cannot write the case file (file, or its folder for the -wal/-shm files), else None."""
    path = Path(path)
    folder = path.absolute().parent
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return "it is on a read-only file system"
    except OSError:
        pass
    if path.exists() and not os.access(path, os.W_OK):
        return "no write permission on the file"
    wal_ready = all(Path(f"{path}{x}").exists() and os.access(f"{path}{x}", os.W_OK) for x in ("-wal", "-shm"))
    if not os.access(folder, os.W_OK) and not wal_ready:
        return "no write permission on its folder (SQLite needs to create its -wal and -shm files there)"
    return None


class CaseStore:
    """A case file. Use as a context manager or call :meth:`close`."""

    def __init__(self, path: str | Path, *, create: bool = True, busy_timeout_s: float = 5.0,
                 actor: str | None = None, read_only: bool = False) -> None:
        self.path = Path(path)
        self.read_only = read_only
        if not create and not self.path.exists():
            raise CaseFileError(f"case file not found: {self.path}")
        if self.path.exists() and self.path.is_dir():
            raise CaseFileError(f"case file path is a directory: {self.path}")
        if self.path.exists() and self.path.stat().st_size and not self._has_sqlite_header():
            raise CaseFileError(f"{self.path}: not a case file (not an SQLite database)")
        self.actor = actor or f"{examiner_name()}@{socket.gethostname()}"
        if read_only:
            self._open_read_only(busy_timeout_s)
            return
        why = read_only_reason(self.path) if self.path.exists() else None
        if why:
            raise CaseFileError(f"{self.path}: the case file is read-only ({why}); it can be listed, shown, "
                                "exported and verified but not changed")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(str(self.path), timeout=busy_timeout_s, isolation_level=None,
                                   check_same_thread=False)
        except (sqlite3.Error, OSError) as exc:
            raise CaseFileError(f"cannot open case file {self.path}: {one_line(exc)}") from None
        self.db = Database(conn)
        try:
            conn.execute("PRAGMA foreign_keys = ON")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise CaseFileError(f"{self.path}: cannot switch the case file to WAL mode (got {mode})")
            conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            self._migrate()
            self._mark_interrupted()
        except sqlite3.OperationalError as exc:
            conn.close()
            if _is_busy(exc):
                raise CaseFileBusy(f"case file busy ({self.path}); another process is writing, retry") from None
            raise CaseFileError(f"{self.path}: unreadable case file ({one_line(exc)})") from None
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise CaseFileError(f"{self.path}: corrupt case file ({one_line(exc)})") from None
        except CaseFileError:
            conn.close()
            raise

    def _open_read_only(self, busy_timeout_s: float) -> None:
        """Open with SQLite's ``mode=ro`` (no migration, no repair of stale runs, every write refused); on a
        medium nothing can write to (a write-blocked evidence copy) ``immutable=1`` lets a WAL file open
        without its -shm file."""
        uri = "file:" + quote(os.fsencode(self.path.absolute()))
        last: Exception | None = None
        for extra in ("?mode=ro", "?mode=ro&immutable=1"):
            try:
                conn = sqlite3.connect(uri + extra, uri=True, timeout=busy_timeout_s, isolation_level=None,
                                       check_same_thread=False)
                conn.execute("select count(*) from sqlite_master").fetchone()
            except sqlite3.Error as exc:
                last = exc
                continue
            self.db = Database(conn)
            version = schema.current_version(self.db)
            if version > schema.SCHEMA_VERSION:
                conn.close()
                raise CaseFileError(f"{self.path}: case file schema v{version} is newer than this workbench "
                                    f"understands (v{schema.SCHEMA_VERSION}); upgrade the workbench")
            return
        raise CaseFileError(f"cannot open case file {self.path} read-only: {one_line(last)}") from None

    def _has_sqlite_header(self) -> bool:
        try:
            with open(self.path, "rb") as fh:
                return fh.read(16) == b"SQLite format 3\x00"
        except OSError as exc:
            raise CaseFileError(f"cannot read case file {self.path}: {one_line(exc)}") from None

    # -- plumbing --------------------------------------------------------------------------
    def close(self) -> None:
        self.db.conn.close()

    def __enter__(self) -> CaseStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @contextmanager
    def write(self) -> Iterator[Database]:
        """One logical write: an immediate transaction, committed or rolled back whole."""
        conn = self.db.conn
        if self.read_only:
            raise CaseFileError(f"{self.path}: the case file is open read-only; this command cannot change it")
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if _is_busy(exc):
                raise CaseFileBusy(f"case file busy ({self.path}); another process is writing, retry") from None
            raise CaseFileError(f"{self.path}: {one_line(exc)}") from None
        try:
            yield self.db
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if _is_full(exc):
                raise CaseFileFull(f"{self.path}: the case file cannot grow ({one_line(exc)}); nothing of this "
                                   "write was stored") from None
            raise
        else:
            try:
                conn.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if _is_busy(exc):
                    raise CaseFileBusy(f"case file busy ({self.path}); another process is writing, retry") from None
                if _is_full(exc):
                    raise CaseFileFull(f"{self.path}: the case file cannot grow ({one_line(exc)}); nothing of this "
                                       "write was stored") from None
                raise

    def _migrate(self) -> None:
        version = schema.current_version(self.db)
        if version > schema.SCHEMA_VERSION:
            raise CaseFileError(f"{self.path}: case file schema v{version} is newer than this workbench "
                                f"understands (v{schema.SCHEMA_VERSION}); upgrade the workbench")
        todo = schema.pending(self.db)
        if not todo:
            return
        if version > 0:  # keep the examiner's original before changing its shape
            self.db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            shutil.copy2(self.path, self.path.with_name(f"{self.path.name}.v{version}.bak"))
        with self.write():
            for v in todo:
                if schema.current_version(self.db) < v:  # another process may have migrated meanwhile
                    schema.apply(self.db, v)

    def _mark_interrupted(self) -> None:
        """Runs left ``running`` by a process that no longer exists crashed: mark them."""
        host = socket.gethostname()
        # A run owned by a live process (this one included: the TUI may open a
        # second connection while its worker runs) is not stale; one from another
        # host cannot be checked and is left alone.
        stale = [r for r in self.db.query("select id, case_id, pid, host, probe from runs where status = 'running'")
                 if r["host"] is None or (r["host"] == host and not _pid_alive(r["pid"]))]
        if not stale:
            return
        with self.write():
            for r in stale:
                self.db["runs"].update(r["id"], {"status": "interrupted", "finished": now(),
                                                 "error": "the process running this probe ended before it finished"})
                self._audit(r["case_id"], "run.interrupted", {"run_id": r["id"], "probe": r["probe"]},
                            rows=[("runs", r["id"])])

    def _audit(self, case_id: int, action: str, detail: dict[str, Any],
               rows: list[tuple[str, Any]] | None = None) -> None:
        """Append one hash-chained audit row (caller holds the transaction), attesting the evidence ``rows``
        (table, id) this write created or changed, as they now are, so ``verify`` catches a later edit."""
        detail = printable(detail)
        if rows:
            detail = {**detail, "rows": {f"{t}/{i}": attest.digest(t, self.db[t].get(i)) for t, i in rows}}
        case = self.db["cases"].get(case_id)
        row = {"case_id": case_id, "seq": (case["audit_count"] or 0) + 1, "ts": now(), "actor": self.actor,
               "action": action, "detail": chain.canonical(detail)}
        prev = case["audit_head"] or chain.GENESIS
        row["prev_hash"] = prev
        row["hash"] = chain.chain_hash(prev, chain.row_content(row))
        self.db["audit"].insert(row)
        self.db["cases"].update(case_id, {"audit_head": row["hash"], "audit_count": row["seq"], "updated": row["ts"]})

    def _get(self, table: str, row_id: int, what: str) -> dict[str, Any]:
        rows = list(self.db.query(f"select * from {table} where id = ?", [row_id]))
        if not rows:
            raise NotFound(f"no {what} with id {row_id} in {self.path}")
        return rows[0]

    # -- cases -----------------------------------------------------------------------------
    def new_case(self, title: str, description: str = "") -> int:
        title = title.strip()
        if not title:
            raise CaseFileError("a case needs a title")
        with self.write():
            ts = now()
            case_id = self.db["cases"].insert({"title": title, "description": description, "created": ts,
                                               "updated": ts, "audit_head": chain.GENESIS, "audit_count": 0}).last_pk
            self._audit(case_id, "case.created", {"title": title}, rows=[("cases", case_id)])
        return int(case_id)

    def list_cases(self) -> list[dict[str, Any]]:
        return list(self.db.query(
            "select c.id, c.title, c.created, c.updated, "
            "(select count(*) from subjects s where s.case_id = c.id) as subjects, "
            "(select count(*) from runs r where r.case_id = c.id) as runs "
            "from cases c order by c.id"))

    def get_case(self, case_id: int) -> dict[str, Any]:
        return self._get("cases", case_id, "case")

    # -- subjects --------------------------------------------------------------------------
    def add_subject(self, case_id: int, *, path: str, sha256: str, size: int, format: str, kind: str,
                    files: list[dict[str, Any]], name: str | None = None,
                    metadata: dict[str, Any] | None = None) -> int:
        self.get_case(case_id)
        # A non-UTF-8 file name (surrogate escapes) is stored as its printable form, never a traceback.
        path, name, files, metadata = printable(str(path)), printable(name), printable(files), printable(metadata)
        with self.write():
            sid = self.db["subjects"].insert({
                "case_id": case_id, "name": name or Path(path).name, "path": str(path), "sha256": sha256,
                "size": size, "format": format, "kind": kind, "files": json.dumps(files),
                "metadata": json.dumps(metadata or {}), "added": now()}).last_pk
            detail: dict[str, Any] = {"subject_id": sid, "path": str(path), "sha256": sha256, "format": format,
                                      "kind": kind}
            if (metadata or {}).get("custody"):
                detail["custody"] = metadata["custody"]  # type: ignore[index]
            self._audit(case_id, "subject.added", detail, rows=[("subjects", sid)])
        return int(sid)

    def list_subjects(self, case_id: int) -> list[dict[str, Any]]:
        return [self._decode_subject(r) for r in
                self.db.query("select * from subjects where case_id = ? order by id", [case_id])]

    def get_subject(self, subject_id: int) -> dict[str, Any]:
        return self._decode_subject(self._get("subjects", subject_id, "subject"))

    def set_subject_kind(self, subject_id: int, kind: str) -> None:
        """Record the kind the loader found (``subject add`` can only guess it)."""
        subject = self.get_subject(subject_id)
        if subject["kind"] == kind:
            return
        with self.write():
            self.db["subjects"].update(subject_id, {"kind": kind})
            self._audit(subject["case_id"], "subject.kind", {"subject_id": subject_id, "kind": kind},
                        rows=[("subjects", subject_id)])

    def find_subject(self, case_id: int, sha256: str) -> dict[str, Any] | None:
        rows = list(self.db.query("select * from subjects where case_id = ? and sha256 = ? order by id",
                                  [case_id, sha256]))
        return self._decode_subject(rows[0]) if rows else None

    @staticmethod
    def _decode_subject(r: dict[str, Any]) -> dict[str, Any]:
        return {**r, "files": json.loads(r["files"] or "[]"), "metadata": json.loads(r["metadata"] or "{}")}

    # -- runs ------------------------------------------------------------------------------
    def start_run(self, case_id: int, subject_id: int | None, probe: str, params: dict[str, Any]) -> int:
        """Write the run row as ``running`` before the probe starts."""
        self.get_case(case_id)
        params = printable(params)
        with self.write():
            rid = self.db["runs"].insert({"case_id": case_id, "subject_id": subject_id, "probe": probe,
                                          "params": json.dumps(params, sort_keys=True, default=str),
                                          "status": "running", "started": now(), "pid": os.getpid(),
                                          "host": socket.gethostname()}).last_pk
            self._audit(case_id, "run.started", {"run_id": rid, "subject_id": subject_id, "probe": probe},
                        rows=[("runs", rid)])
        return int(rid)

    def finish_run(self, run_id: int, *, status: str, result: dict[str, Any] | None = None,
                   error: str | None = None, duration_s: float | None = None,
                   findings: list[dict[str, Any]] | None = None,
                   artifacts: dict[str, bytes] | None = None) -> None:
        """Close a run as done/failed/cancelled, with its result, findings and artifacts, in one write."""
        if status not in ("done", "failed", "cancelled"):
            raise ValueError(f"cannot finish a run as {status!r}")
        run = self._get("runs", run_id, "run")
        result, error, findings = printable(result or {}), printable(error), printable(findings)
        with self.write():
            self.db["runs"].update(run_id, {
                "status": status, "finished": now(),
                "duration_s": duration_s if duration_s is not None else result.get("duration_s"),
                "verdict": result.get("verdict"), "score": result.get("score"), "summary": result.get("summary"),
                "result": json.dumps(result, sort_keys=True) if result else None, "error": error})
            attested: list[tuple[str, Any]] = [("runs", run_id)]
            for f in findings or []:
                fid = self.db["findings"].insert({"case_id": run["case_id"], "subject_id": run["subject_id"],
                                                  "run_id": run_id, "probe": run["probe"], "created": now(),
                                                  **{k: f.get(k) for k in ("severity", "title", "detail", "atlas")}}).last_pk
                attested.append(("findings", fid))
            for name, data in (artifacts or {}).items():
                aid = self.db["artifacts"].insert({"case_id": run["case_id"], "subject_id": run["subject_id"],
                                                   "run_id": run_id, "name": name, "media_type": _media_type(name),
                                                   "sha256": hashlib.sha256(data).hexdigest(), "size": len(data),
                                                   "data": data, "created": now()}).last_pk
                attested.append(("artifacts", aid))
            self._audit(run["case_id"], f"run.{status}", {
                "run_id": run_id, "probe": run["probe"], "verdict": result.get("verdict"),
                "score": result.get("score"), "error": error,
                "artifacts": {n: hashlib.sha256(d).hexdigest() for n, d in (artifacts or {}).items()}}, rows=attested)

    def add_artifacts(self, run_id: int, items: dict[str, bytes], *, media_type: str | None = None) -> int:
        """Attach derived evidence (e.g. report figures) to a finished run; a name already stored with the same
        bytes is skipped. Returns how many were added (one audit row lists their hashes)."""
        run = self._get("runs", run_id, "run")
        have = {(a["name"], a["sha256"]) for a in self.list_artifacts(run_id=run_id)}
        todo = {n: d for n, d in items.items() if (n, hashlib.sha256(d).hexdigest()) not in have}
        if not todo:
            return 0
        with self.write():
            added = []
            for name, data in todo.items():
                added.append(self.db["artifacts"].insert({
                    "case_id": run["case_id"], "subject_id": run["subject_id"], "run_id": run_id, "name": name,
                    "media_type": media_type or _media_type(name), "sha256": hashlib.sha256(data).hexdigest(),
                    "size": len(data), "data": data, "created": now()}).last_pk)
            self._audit(run["case_id"], "artifact.added", {
                "run_id": run_id, "artifacts": {n: hashlib.sha256(d).hexdigest() for n, d in todo.items()}},
                rows=[("artifacts", a) for a in added])
        return len(todo)

    def add_subject_artifact(self, subject_id: int, name: str, data: bytes) -> None:
        """Evidence about a subject that no single run owns (e.g. the triage screen), hashed in the audit trail."""
        subject = self.get_subject(subject_id)
        digest = hashlib.sha256(data).hexdigest()
        with self.write():
            aid = self.db["artifacts"].insert({"case_id": subject["case_id"], "subject_id": subject_id, "run_id": None,
                                               "name": name, "media_type": _media_type(name), "sha256": digest,
                                               "size": len(data), "data": data, "created": now()}).last_pk
            self._audit(subject["case_id"], "artifact.added", {"subject_id": subject_id, "artifacts": {name: digest}},
                        rows=[("artifacts", aid)])

    def subject_artifact(self, subject_id: int, name: str) -> bytes | None:
        """The newest bytes of a subject-level artifact (None when absent)."""
        rows = list(self.db.query("select data from artifacts where subject_id = ? and run_id is null and name = ? "
                                  "order by id desc limit 1", [subject_id, name]))
        return bytes(rows[0]["data"]) if rows else None

    def artifact_data(self, run_id: int, name: str) -> bytes | None:
        """The newest stored bytes of artifact ``name`` of a run (None when absent)."""
        rows = list(self.db.query("select data from artifacts where run_id = ? and name = ? order by id desc limit 1",
                                  [run_id, name]))
        return bytes(rows[0]["data"]) if rows else None

    def list_runs(self, *, case_id: int | None = None, subject_id: int | None = None) -> list[dict[str, Any]]:
        where, args = [], []
        if case_id is not None:
            where.append("case_id = ?"), args.append(case_id)
        if subject_id is not None:
            where.append("subject_id = ?"), args.append(subject_id)
        sql = "select * from runs" + (" where " + " and ".join(where) if where else "") + " order by id"
        return [self._decode_run(r) for r in self.db.query(sql, args)]

    def get_run(self, run_id: int) -> dict[str, Any]:
        return self._decode_run(self._get("runs", run_id, "run"))

    @staticmethod
    def _decode_run(r: dict[str, Any]) -> dict[str, Any]:
        return {**r, "params": json.loads(r["params"] or "{}"), "result": json.loads(r["result"]) if r["result"] else None}

    def list_findings(self, case_id: int) -> list[dict[str, Any]]:
        return list(self.db.query("select * from findings where case_id = ? order by id", [case_id]))

    def list_artifacts(self, *, case_id: int | None = None, run_id: int | None = None,
                       with_data: bool = False) -> list[dict[str, Any]]:
        cols = "*" if with_data else "id, case_id, subject_id, run_id, name, media_type, sha256, size, created"
        key, val = ("run_id", run_id) if run_id is not None else ("case_id", case_id)
        return list(self.db.query(f"select {cols} from artifacts where {key} = ? order by id", [val]))

    # -- notes -----------------------------------------------------------------------------
    def add_note(self, case_id: int, body: str, *, subject_id: int | None = None) -> int:
        self.get_case(case_id)
        if subject_id is not None:
            self.get_subject(subject_id)
        with self.write():
            ts = now()
            nid = self.db["notes"].insert({"case_id": case_id, "subject_id": subject_id, "body": body,
                                           "created": ts, "updated": ts}).last_pk
            self._audit(case_id, "note.added", {"note_id": nid, "subject_id": subject_id,
                                                "sha256": hashlib.sha256(body.encode()).hexdigest()},
                        rows=[("notes", nid)])
        return int(nid)

    def save_note(self, case_id: int, body: str, *, subject_id: int | None = None) -> int:
        """Autosave target: upsert the single working note of a case or subject (used by the TUI editor)."""
        rows = list(self.db.query(
            "select id, body from notes where case_id = ? and subject_id is ? order by id desc limit 1",
            [case_id, subject_id]))
        if not rows:
            return self.add_note(case_id, body, subject_id=subject_id)
        if rows[0]["body"] == body:
            return int(rows[0]["id"])
        with self.write():
            self.db["notes"].update(rows[0]["id"], {"body": body, "updated": now()})
            self._audit(case_id, "note.edited", {"note_id": rows[0]["id"],
                                                 "sha256": hashlib.sha256(body.encode()).hexdigest()},
                        rows=[("notes", rows[0]["id"])])
        return int(rows[0]["id"])

    def list_notes(self, case_id: int, *, subject_id: int | None | str = "any") -> list[dict[str, Any]]:
        if subject_id == "any":
            return list(self.db.query("select * from notes where case_id = ? order by id", [case_id]))
        return list(self.db.query("select * from notes where case_id = ? and subject_id is ? order by id",
                                  [case_id, subject_id]))

    # -- audit -----------------------------------------------------------------------------
    def record(self, case_id: int, action: str, detail: dict[str, Any]) -> None:
        """Append an audit row for an action that changes nothing else (e.g. an export)."""
        self.get_case(case_id)
        with self.write():
            self._audit(case_id, action, detail)

    def audit_rows(self, case_id: int) -> list[dict[str, Any]]:
        return list(self.db.query("select * from audit where case_id = ? order by id", [case_id]))

    def verify(self, case_id: int) -> chain.ChainReport:
        """The hash chain of the audit rows, then every evidence row against what the chain attests."""
        case = self.get_case(case_id)
        audit_rows = self.audit_rows(case_id)
        report = chain.verify_chain(audit_rows, expected_head=case["audit_head"],
                                    expected_count=case["audit_count"])
        current = {t: list(self.db.query(f"select * from {t} where {'id' if t == 'cases' else 'case_id'} = ? order by id",
                                         [case_id])) for t in attest.FIELDS}
        rows = attest.check_rows(audit_rows, current)
        report.problems += rows.problems
        report.ok = not report.problems
        report.rows_checked, report.coverage = rows.checked, rows.coverage
        return report

    # -- baselines -------------------------------------------------------------------------
    def add_baseline_member(self, name: str, *, path: str, sha256: str, fingerprint: dict[str, Any],
                            kind: str = "", description: str = "") -> bool:
        """Add a model's fingerprint to baseline ``name`` (created on first use).

        Returns False when that model (same sha256) is already a member.
        Baselines are reference data shared by every case in the file, so they
        are not part of any case's audit trail.
        """
        with self.write():
            rows = list(self.db.query("select id from baselines where name = ?", [name]))
            if rows:
                bid = rows[0]["id"]
            else:
                bid = self.db["baselines"].insert({"name": name, "kind": kind, "description": description,
                                                   "created": now()}).last_pk
            if list(self.db.query("select 1 from baseline_members where baseline_id = ? and sha256 = ?", [bid, sha256])):
                return False
            self.db["baseline_members"].insert({"baseline_id": bid, "path": path, "sha256": sha256,
                                                "fingerprint": json.dumps(fingerprint), "created": now()})
        return True

    def list_baselines(self) -> list[dict[str, Any]]:
        return list(self.db.query(
            "select b.id, b.name, b.kind, b.created, count(m.id) as members from baselines b "
            "left join baseline_members m on m.baseline_id = b.id group by b.id order by b.name"))

    def baseline_fingerprints(self, name: str) -> list[dict[str, Any]]:
        rows = list(self.db.query("select id from baselines where name = ?", [name]))
        if not rows:
            raise NotFound(f"no baseline named {name!r} in {self.path} (create one with: workbench baseline add)")
        return [{"sha256": r["sha256"], "path": r["path"], **json.loads(r["fingerprint"])} for r in self.db.query(
            "select * from baseline_members where baseline_id = ? order by id", [rows[0]["id"]])]

    # -- registry jobs ---------------------------------------------------------------------
    def registry_has_plan(self, case_id: int, plan: str) -> bool:
        """Whether any registry job of this case ran under ``plan`` (a fresh job skips the per-subject lookups)."""
        return self.db.conn.execute("select 1 from registry_items where case_id = ? and plan = ? limit 1",
                                    [case_id, plan]).fetchone() is not None

    def registry_item(self, case_id: int, path: str, sha256: str, plan: str) -> dict[str, Any] | None:
        """The finished item of a registry job for the subject at ``path`` with these bytes under ``plan``."""
        cur = self.db.conn.execute(
            "select i.subject_id, i.verdict, i.risk, i.status, i.error from registry_items i "
            "join subjects s on s.id = i.subject_id where i.case_id = ? and s.path = ? and i.sha256 = ? and i.plan = ? "
            "limit 1", [case_id, path, sha256, plan])
        row = cur.fetchone()
        return dict(zip(("subject_id", "verdict", "risk", "status", "error"), row)) if row else None

    def registry_content(self, case_id: int, sha256: str, plan: str) -> dict[str, Any] | None:
        """Where content ``sha256`` was scanned under ``plan`` in this case (``subject_id``, ``path``): the dedup memo."""
        row = self.db.conn.execute("select report from registry_content where case_id = ? and sha256 = ? and plan = ?",
                                   [case_id, sha256, plan]).fetchone()
        return json.loads(row[0]) if row else None

    def record_registry_batch(self, case_id: int, items: list[dict[str, Any]]) -> list[int]:
        """Write finished registry subjects in ONE transaction (all or nothing, also under ``kill -9``).

        Each item: ``subject`` (path, name, sha256, size, format, kind, files), ``plan``, ``runs`` (probe,
        status, params, result, error, duration_s, findings), ``verdict``, ``risk``, ``status``, ``error`` and
        ``content`` (true when these bytes were scanned for this subject: the per-sha256 memo points at it).
        An existing subject row with the same path and sha256 is reused. Audit rows: ``subject.added`` for a
        new subject and ``run.<status>`` per run.
        Returns the subject ids.
        """
        conn = self.db.conn
        ids: list[int] = []
        pid, host = os.getpid(), socket.gethostname()
        with self.write():
            case = self.get_case(case_id)
            head, count = case["audit_head"] or chain.GENESIS, case["audit_count"] or 0
            audit_rows: list[tuple[Any, ...]] = []

            def audit(action: str, detail: dict[str, Any], rows: list[tuple[str, Any]]) -> None:
                nonlocal head, count
                count += 1
                detail = {**printable(detail),
                          "rows": {f"{t}/{i}": attest.digest(t, self.db[t].get(i)) for t, i in rows}}
                row = {"case_id": case_id, "seq": count, "ts": now(), "actor": self.actor, "action": action,
                       "detail": chain.canonical(detail)}
                digest = chain.chain_hash(head, chain.row_content(row))
                audit_rows.append((case_id, count, row["ts"], self.actor, action, row["detail"], head, digest))
                head = digest

            for it in items:
                s = it["subject"]
                found = conn.execute("select id from subjects where case_id = ? and path = ? and sha256 = ? limit 1",
                                     [case_id, s["path"], s["sha256"]]).fetchone()
                if found:
                    sid = int(found[0])
                else:
                    sid = int(conn.execute(
                        "insert into subjects (case_id, name, path, sha256, size, format, kind, files, metadata, added) "
                        "values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [case_id, s["name"], s["path"], s["sha256"], s["size"], s["format"], s["kind"],
                         json.dumps(s["files"]), json.dumps(s.get("metadata") or {}), now()]).lastrowid or 0)
                    audit("subject.added", {"subject_id": sid, "path": s["path"], "sha256": s["sha256"],
                                            "format": s["format"], "kind": s["kind"]}, [("subjects", sid)])
                ids.append(sid)
                for r in it["runs"]:
                    res = r.get("result") or {}
                    ts = now()
                    rid = conn.execute(
                        "insert into runs (case_id, subject_id, probe, params, status, started, finished, duration_s, "
                        "verdict, score, summary, result, error, pid, host) values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [case_id, sid, r["probe"], json.dumps(r.get("params") or {}, sort_keys=True, default=str),
                         r["status"], ts, ts, r.get("duration_s"), res.get("verdict"), res.get("score"),
                         res.get("summary"), json.dumps(res, sort_keys=True) if res else None, r.get("error"),
                         pid, host]).lastrowid
                    attested: list[tuple[str, Any]] = [("runs", rid)]
                    for f in r.get("findings") or []:
                        attested.append(("findings", conn.execute(
                            "insert into findings (case_id, subject_id, run_id, probe, severity, title, detail, atlas, created) "
                            "values (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                            [case_id, sid, rid, r["probe"], f.get("severity"), f.get("title"), f.get("detail"),
                             f.get("atlas"), ts]).lastrowid))
                    # the run is written finished (no ``running`` row exists to crash): its closing audit row only
                    audit(f"run.{r['status']}", {"run_id": rid, "subject_id": sid, "probe": r["probe"],
                                                 "verdict": res.get("verdict"), "score": res.get("score"),
                                                 "error": r.get("error"), "artifacts": {}}, attested)
                conn.execute("insert or replace into registry_items (case_id, subject_id, sha256, plan, verdict, risk, "
                             "status, error, created) values (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                             [case_id, sid, s["sha256"], it["plan"], it.get("verdict"), it.get("risk"), it["status"],
                              it.get("error"), now()])
                if it.get("content"):  # these bytes were scanned for this subject: the memo points at its runs
                    conn.execute("insert or ignore into registry_content (case_id, sha256, plan, report, created) "
                                 "values (?, ?, ?, ?, ?)",
                                 [case_id, s["sha256"], it["plan"], json.dumps({"subject_id": sid, "path": s["path"]}),
                                  now()])
            conn.executemany("insert into audit (case_id, seq, ts, actor, action, detail, prev_hash, hash) "
                             "values (?, ?, ?, ?, ?, ?, ?, ?)", audit_rows)
            conn.execute("update cases set audit_head = ?, audit_count = ?, updated = ? where id = ?",
                         [head, count, now(), case_id])
        return ids

    # -- export ----------------------------------------------------------------------------
    def case_bundle(self, case_id: int) -> dict[str, Any]:
        """Everything the report needs, as plain data (the export is a pure function of this)."""
        case = self.get_case(case_id)
        return {"case": case, "subjects": self.list_subjects(case_id), "runs": self.list_runs(case_id=case_id),
                "findings": self.list_findings(case_id), "notes": self.list_notes(case_id),
                "artifacts": self.list_artifacts(case_id=case_id), "audit": self.audit_rows(case_id),
                "verify": self.verify(case_id).to_dict(), "triage": self._triage(case_id)}

    def _triage(self, case_id: int) -> dict[int, dict[str, Any]]:
        """Each subject's newest stored triage screen (per-class accuracy and confusion on the clean data)."""
        out: dict[int, dict[str, Any]] = {}
        for r in self.db.query("select subject_id, data from artifacts where case_id = ? and run_id is null and "
                               "name = 'triage.json' order by id", [case_id]):
            try:
                out[int(r["subject_id"])] = json.loads(bytes(r["data"]).decode("utf-8"))
            except (ValueError, TypeError):
                continue
        return out


def _media_type(name: str) -> str:
    return {"npy": "application/x-npy", "json": "application/json", "txt": "text/plain",
            "md": "text/markdown", "png": "image/png"}.get(name.rsplit(".", 1)[-1], "application/octet-stream")

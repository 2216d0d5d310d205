"""Schema and migrations. ``PRAGMA user_version`` is the schema version.

Each migration upgrades a case file by one version inside one transaction; a
file newer than this code is refused rather than silently misread.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlite_utils import Database


def _v1(db: Database) -> None:
    db["cases"].create({"id": int, "title": str, "description": str, "created": str, "updated": str,
                        "audit_head": str, "audit_count": int}, pk="id", not_null={"title", "created"})
    db["subjects"].create({"id": int, "case_id": int, "name": str, "path": str, "sha256": str, "size": int,
                           "format": str, "kind": str, "files": str, "metadata": str, "added": str},
                          pk="id", foreign_keys=[("case_id", "cases", "id")], not_null={"case_id", "path", "sha256"})
    db["runs"].create({"id": int, "case_id": int, "subject_id": int, "probe": str, "params": str, "status": str,
                       "started": str, "finished": str, "duration_s": float, "verdict": str, "score": float,
                       "summary": str, "result": str, "error": str},
                      pk="id", foreign_keys=[("case_id", "cases", "id"), ("subject_id", "subjects", "id")],
                      not_null={"case_id", "probe", "status", "started"})
    db["findings"].create({"id": int, "case_id": int, "subject_id": int, "run_id": int, "probe": str,
                           "severity": str, "title": str, "detail": str, "atlas": str, "created": str},
                          pk="id", foreign_keys=[("case_id", "cases", "id"), ("run_id", "runs", "id")])
    db["notes"].create({"id": int, "case_id": int, "subject_id": int, "body": str, "created": str, "updated": str},
                       pk="id", foreign_keys=[("case_id", "cases", "id")], not_null={"case_id"})
    db["artifacts"].create({"id": int, "case_id": int, "subject_id": int, "run_id": int, "name": str,
                            "media_type": str, "sha256": str, "size": int, "data": bytes, "created": str},
                           pk="id", foreign_keys=[("case_id", "cases", "id")])
    db["audit"].create({"id": int, "case_id": int, "seq": int, "ts": str, "actor": str, "action": str,
                        "detail": str, "prev_hash": str, "hash": str}, pk="id", not_null={"case_id", "seq", "hash"})
    for table, cols in [("subjects", ["case_id"]), ("runs", ["subject_id"]), ("runs", ["status"]),
                        ("findings", ["case_id"]), ("notes", ["case_id"]), ("artifacts", ["run_id"])]:
        db[table].create_index(cols)
    db["audit"].create_index(["case_id", "seq"], unique=True)
    # The audit trail is append-only: the tool never updates or deletes rows.
    db.execute("CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit BEGIN "
               "SELECT RAISE(ABORT, 'audit trail is append-only'); END")
    db.execute("CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit BEGIN "
               "SELECT RAISE(ABORT, 'audit trail is append-only'); END")


def _v2(db: Database) -> None:
    """Record which process owns a running run, so a second process opening the
    file does not mistake a live run for a crashed one."""
    db["runs"].add_column("pid", int)
    db["runs"].add_column("host", str)


def _v3(db: Database) -> None:
    """Named baselines of known-clean models for the fingerprint ensemble: each
    member's fingerprint is computed once and kept with the model's sha256."""
    db["baselines"].create({"id": int, "name": str, "kind": str, "description": str, "created": str},
                           pk="id", not_null={"name", "created"})
    db["baselines"].create_index(["name"], unique=True)
    db["baseline_members"].create({"id": int, "baseline_id": int, "path": str, "sha256": str, "fingerprint": str,
                                   "created": str}, pk="id", foreign_keys=[("baseline_id", "baselines", "id")],
                                  not_null={"baseline_id", "sha256", "fingerprint"})
    db["baseline_members"].create_index(["baseline_id", "sha256"], unique=True)


def _v4_i16(db: Database) -> None:
    """Registry jobs: one row per subject a job finished (the resume key) and one per scanned content
    (sha256 + the plan's probe versions and parameters), so the same bytes are scanned once per case."""
    db["registry_items"].create({"id": int, "case_id": int, "subject_id": int, "sha256": str, "plan": str,
                                 "verdict": str, "risk": float, "status": str, "error": str, "created": str},
                                pk="id", foreign_keys=[("case_id", "cases", "id"), ("subject_id", "subjects", "id")],
                                not_null={"case_id", "subject_id", "sha256", "plan", "status"})
    db["registry_items"].create_index(["case_id", "subject_id", "plan"], unique=True)
    db["registry_content"].create({"id": int, "case_id": int, "sha256": str, "plan": str, "report": str,
                                   "created": str}, pk="id", foreign_keys=[("case_id", "cases", "id")],
                                  not_null={"case_id", "sha256", "plan", "report"})
    db["registry_content"].create_index(["case_id", "sha256", "plan"], unique=True)
    db["subjects"].create_index(["case_id", "path"])


MIGRATIONS: list[Callable[[Database], None]] = [_v1, _v2, _v3, _v4_i16]
SCHEMA_VERSION = len(MIGRATIONS)


def current_version(db: Database) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def pending(db: Database) -> list[int]:
    return list(range(current_version(db) + 1, SCHEMA_VERSION + 1))


def apply(db: Database, version: int) -> None:
    """Apply one migration (caller holds the transaction) and stamp the version."""
    MIGRATIONS[version - 1](db)
    db.execute(f"PRAGMA user_version = {int(version)}")

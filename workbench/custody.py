"""Chain of custody: who handed the examiner a subject, and proof its files did not change between probe runs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from probes.errors import ProbeError

CUSTODY_FIELDS = ("source", "acquired_by", "acquired_at", "claimed_origin", "provenance")


def custody_record(**values: str | None) -> dict[str, str]:
    """The custody metadata of ``subject add`` (only the fields the examiner gave), validated."""
    unknown = set(values) - set(CUSTODY_FIELDS)
    if unknown:
        raise ProbeError(f"unknown custody field(s): {', '.join(sorted(unknown))}")
    out = {k: " ".join(str(v).split()) if k != "provenance" else str(v).strip()
           for k, v in values.items() if v is not None and str(v).strip()}
    if "acquired_at" in out:
        from datetime import datetime

        try:
            datetime.fromisoformat(out["acquired_at"].replace("Z", "+00:00"))
        except ValueError:
            raise ProbeError(f"--acquired-at takes an ISO date or time (e.g. 2026-11-20T14:00Z), "
                             f"got {out['acquired_at']!r}") from None
    return out


@dataclass
class CustodyCheck:
    """The outcome of re-hashing a subject's files before a run."""

    subject_id: int
    ok: bool
    expected: str
    actual: str | None
    changed_files: list[str]
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"subject_id": self.subject_id, "ok": self.ok, "expected": self.expected, "actual": self.actual,
                "changed_files": self.changed_files, "message": self.message}


def check_subject(subject: dict[str, Any]) -> CustodyCheck:
    """Re-hash a recorded subject's files and compare them with the hashes taken when it was added."""
    from workbench.subject_files import describe

    sid, expected = int(subject["id"]), str(subject["sha256"])
    try:
        from vocabulary import file_path

        now = describe(file_path(str(subject["path"])))
    except ProbeError as exc:
        return CustodyCheck(sid, False, expected, None, [], f"custody: subject {sid} cannot be re-hashed: {exc}")
    if now.sha256 == expected:
        return CustodyCheck(sid, True, expected, now.sha256, [], "files unchanged since the subject was added")
    before = {f["path"]: f.get("sha256") for f in subject.get("files") or []}
    after = {f["path"]: f.get("sha256") for f in now.files}
    changed = sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))
    what = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
    return CustodyCheck(sid, False, expected, now.sha256, changed,
                        f"custody: subject {sid}'s files changed since it was added ({what or 'content'}: "
                        f"sha256 {expected[:12]}… → {now.sha256[:12]}…); run refused")


def path_changed(store: Any, case_id: int, subject_id: int) -> list[int]:
    """When a newly added subject sits at the path of an earlier one with other hashes, the file changed in between:
    record ``custody.changed`` (the report warns) and return the earlier subjects' ids."""
    new = store.get_subject(subject_id)
    older = [s for s in store.list_subjects(case_id) if s["path"] == new["path"] and s["id"] != subject_id
             and s["sha256"] != new["sha256"]]
    for old in older:
        store.record(case_id, "custody.changed", {
            "subject_id": old["id"], "ok": False, "expected": old["sha256"], "actual": new["sha256"],
            "new_subject_id": subject_id,
            "message": f"custody: {new['path']} changed after subject {old['id']} was added "
                       f"(sha256 {old['sha256'][:12]}… → {new['sha256'][:12]}…); the new content is subject {subject_id}"})
    return [int(s["id"]) for s in older]

"""The hash chain behind the append-only audit trail (pure functions, no I/O).

Each audit row stores ``prev_hash`` (the hash of the previous row *of the same
case*) and ``hash = sha256(prev_hash || canonical-json(row content))``. Editing
a row breaks its own hash; deleting or reordering rows breaks the next row's
``prev_hash``; deleting the newest rows is caught by the head hash and row
count kept on the case row (written in the same transaction).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

GENESIS = "0" * 64


def canonical(content: dict[str, Any]) -> str:
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def row_content(row: dict[str, Any]) -> dict[str, Any]:
    """The fields of an audit row that the hash covers."""
    return {k: row[k] for k in ("seq", "case_id", "ts", "actor", "action", "detail")}


def chain_hash(prev_hash: str, content: dict[str, Any]) -> str:
    return hashlib.sha256((prev_hash + canonical(content)).encode("utf-8")).hexdigest()


@dataclass
class ChainReport:
    ok: bool
    rows: int
    head: str
    problems: list[str] = field(default_factory=list)
    rows_checked: int = 0  # evidence rows (runs, notes, findings, subjects...) checked against the chain
    coverage: str = ""  # what the evidence check covers (older rows may be only partly covered)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "rows": self.rows, "head": self.head, "problems": self.problems,
                "rows_checked": self.rows_checked, "coverage": self.coverage}


def verify_chain(rows: Iterable[dict[str, Any]], *, expected_head: str | None, expected_count: int | None) -> ChainReport:
    """Check rows (ordered by rowid) of one case; say which row is wrong and how."""
    problems: list[str] = []
    prev = GENESIS
    count = 0
    last_seq = 0
    for row in rows:
        count += 1
        seq = row["seq"]
        if seq != last_seq + 1:
            if seq <= last_seq:
                problems.append(f"audit row seq {seq} is out of order (after seq {last_seq}): rows were reordered")
            else:
                problems.append(f"audit rows seq {last_seq + 1}..{seq - 1} are missing: rows were deleted")
        if row["prev_hash"] != prev:
            problems.append(f"audit row seq {seq} does not follow the previous row (prev_hash mismatch): "
                            "a row before it was deleted, inserted or reordered")
        actual = chain_hash(row["prev_hash"], row_content(row))
        if actual != row["hash"]:
            problems.append(f"audit row seq {seq} ({row['action']}) was edited: its content no longer matches its hash")
        prev = row["hash"]
        last_seq = max(last_seq, seq)
    if expected_count is not None and count != expected_count:
        problems.append(f"the case records {expected_count} audit rows but {count} remain: rows were deleted or added")
    if expected_head is not None and prev != expected_head:
        problems.append("the newest audit row is not the recorded head: the trail was truncated or extended outside the tool")
    return ChainReport(ok=not problems, rows=count, head=prev, problems=problems)

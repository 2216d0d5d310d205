"""The case store (SQLite via sqlite-utils) and the markdown report. No torch, no probes."""

from casefiles.errors import CaseFileBusy, CaseFileError, NotFound
from casefiles.store import RUN_STATUSES, CaseStore

__all__ = ["CaseStore", "CaseFileError", "CaseFileBusy", "NotFound", "RUN_STATUSES"]

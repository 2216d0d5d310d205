"""Errors of the case store; each message is one line an examiner can act on."""


class CaseFileError(Exception):
    """The case file is missing, unreadable, corrupt, or an id does not exist."""


class CaseFileBusy(CaseFileError):
    """Another process holds the write lock longer than we are willing to wait."""


class NotFound(CaseFileError):
    """A case, subject, run or note id that does not exist."""


class CaseFileFull(CaseFileError):
    """The case file cannot grow: SQLite reports ``database or disk is full``."""

"""Exceptions raised while loading IBL sessions.

They live in their own small module so that code which only needs to *catch* them (the dataset
builder, the CLI) does not have to import ONE-api. :mod:`neds_hf.data.ibl` re-exports them.

* :class:`SessionNotFoundError`: the session id is unknown to the ONE instance (cache or server).
* :class:`MissingDataError`: a dataset the pipeline needs is absent (no spike sorting, no motion
  energy on either camera, an empty trials table...). The builder skips such sessions and records
  the reason.
* :class:`CorruptedFileError`: a file exists but cannot be decoded (truncated ``.npy``, unreadable
  parquet). It names the file; the builder aborts on it, since it signals a broken download or
  disk rather than a property of the session.
* Inconsistent contents (arrays of mismatched length, cluster indices past the clusters table)
  raise a plain :class:`ValueError` naming the session, probe and datasets.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "CorruptedFileError",
    "IBLDataError",
    "MissingDataError",
    "SessionNotFoundError",
]


class IBLDataError(Exception):
    """Base class of the loading errors defined here."""


class SessionNotFoundError(IBLDataError, LookupError):
    """The requested session id does not exist in the ONE cache or on the server."""

    def __init__(self, session_id: str, detail: str = "") -> None:
        self.session_id = str(session_id)
        message = f"session {self.session_id} not found"
        self.detail = detail
        super().__init__(f"{message}: {detail}" if detail else message)

    def __reduce__(self):  # keep the error picklable across worker processes
        return (type(self), (self.session_id, self.detail))


class MissingDataError(IBLDataError, LookupError):
    """A dataset needed by the pipeline is absent for a session."""

    def __init__(self, session_id: str, missing: str) -> None:
        self.session_id = str(session_id)
        self.missing = missing
        super().__init__(f"session {self.session_id}: {missing}")

    def __reduce__(self):  # keep the error picklable across worker processes
        return (type(self), (self.session_id, self.missing))


class CorruptedFileError(IBLDataError, OSError):
    """A dataset file exists but cannot be read; ``path`` names it."""

    def __init__(self, session_id: str, path: str | Path, cause: BaseException) -> None:
        self.session_id = str(session_id)
        self.path = Path(path)
        self.cause = cause
        super().__init__(
            f"session {self.session_id}: cannot read file {self.path} "
            f"({type(cause).__name__}: {cause})"
        )

    def __reduce__(self):  # keep the error picklable across worker processes
        return (type(self), (self.session_id, self.path, self.cause))

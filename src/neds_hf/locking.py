"""Output locks: two runs writing into one output (a dataset build, a training run) refuse.

A lock is a small JSON file next to the output (`.<name>.lock`, so that swapping the output
folder in atomically never moves the lock) created with `O_EXCL`. It records the holder's
pid, host, start time and command so that the error can name them. A lock left by a process
that no longer runs on this host is stale and taken over (with a warning); one held on another
host cannot be checked, so the error says how to remove it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = ["OutputLock", "OutputLockedError"]

logger = logging.getLogger(__name__)


class OutputLockedError(RuntimeError):
    """Another live process holds the lock of an output."""


def _redacted_command(argv: list[str]) -> str:
    """The command line with the value of any ``--...token...`` option hidden (a lock file is
    readable by other users of the output folder; a token must never be written there)."""
    words: list[str] = []
    hide_next = False
    for word in argv:
        if hide_next:
            words.append("<redacted>")
            hide_next = False
        elif word.startswith("--") and "token" in word.lower():
            name, has_value, _ = word.partition("=")
            words.append(f"{name}=<redacted>" if has_value else word)
            hide_next = not has_value
        else:
            words.append(word)
    return " ".join(words)


def _process_alive(pid: int) -> bool:
    """Whether a process with this pid runs on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class OutputLock:
    """Exclusive lock on an output path for the duration of a `with` block.

    Args:
        output: the folder (or file) the run writes.
        purpose: what the run is, for the error message ("prepare-data", "training").
    """

    def __init__(self, output: str | os.PathLike[str], purpose: str):
        self.output = Path(output).absolute()
        self.purpose = purpose
        self.path = self.output.parent / f".{self.output.name}.lock"
        self._held = False

    def _holder(self) -> dict[str, Any]:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    def _is_stale(self, holder: dict[str, Any]) -> bool:
        pid = holder.get("pid")
        if holder.get("host") != socket.gethostname() or not isinstance(pid, int):
            return False
        return pid != os.getpid() and not _process_alive(pid)

    def acquire(self) -> None:
        """Take the lock or raise `OutputLockedError` naming the holder."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "purpose": self.purpose,
            "command": _redacted_command(sys.argv),
        }
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if self._is_stale(holder):
                    logger.warning(
                        "removing stale lock %s (pid %s on %s no longer runs)",
                        self.path,
                        holder.get("pid"),
                        holder.get("host"),
                    )
                    self.path.unlink(missing_ok=True)
                    continue
                raise OutputLockedError(
                    f"{self.output} is in use by another {holder.get('purpose', 'run')}: "
                    f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')} since "
                    f"{holder.get('started', '?')} ({holder.get('command', 'unknown command')!r}). "
                    f"Wait for it to finish, choose another output, or delete {self.path} if "
                    "that process is gone."
                ) from None
            with os.fdopen(fd, "w") as handle:
                json.dump(record, handle)
            self._held = True
            return
        raise OutputLockedError(f"could not take the lock {self.path}")

    def release(self) -> None:
        """Give the lock back (only if this object holds it)."""
        if self._held:
            self.path.unlink(missing_ok=True)
            self._held = False

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()

"""Atomic writes: a file or folder is either the old complete version or the new complete one.

Every output the package writes that a user may already have (a dataset folder, a model
folder, `evaluation.json`, a card, a checkpoint) goes through here, so that a run that fails
or is interrupted half-way never leaves an empty or half-written result where a good one was.
Folders are built in a hidden sibling and swapped in with `os.replace` only on success.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_directory",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "replace_directory",
]


def _sibling(path: Path, tag: str) -> Path:
    """A hidden, unique path next to `path` (same filesystem, so `os.replace` is atomic)."""
    return path.parent / f".{path.name}.{tag}-{uuid.uuid4().hex[:8]}"


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write `data` to `path` through a temporary sibling and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write UTF-8 `text` to `path` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], payload: Any, **dumps_kwargs: Any) -> None:
    """Write `payload` as JSON (indent 2 unless given) to `path` atomically."""
    dumps_kwargs.setdefault("indent", 2)
    atomic_write_text(path, json.dumps(payload, **dumps_kwargs) + "\n")


def replace_directory(new_dir: str | os.PathLike[str], final_dir: str | os.PathLike[str]) -> None:
    """Put the complete folder `new_dir` at `final_dir`, replacing what was there.

    The old folder is first renamed aside, then the new one renamed in, then the old one
    deleted: at no moment is `final_dir` missing its old content without the new being in
    place (a crash between the two renames leaves the old folder at its hidden sibling path,
    which is named in the error).
    """
    new_dir, final_dir = Path(new_dir), Path(final_dir)
    if not final_dir.exists():
        os.replace(new_dir, final_dir)
        return
    backup = _sibling(final_dir, "old")
    os.replace(final_dir, backup)
    try:
        os.replace(new_dir, final_dir)
    except BaseException as error:
        os.replace(backup, final_dir)
        raise OSError(f"could not move {new_dir} to {final_dir}; the old folder is kept") from error
    shutil.rmtree(backup, ignore_errors=True)


@contextlib.contextmanager
def atomic_directory(final_dir: str | os.PathLike[str]) -> Iterator[Path]:
    """Build a folder in a temporary sibling and swap it in for `final_dir` on success.

    Yields the temporary folder to write into. If the block raises (any exception, Ctrl-C
    included) the temporary folder is removed and `final_dir` is left exactly as it was.
    """
    final_dir = Path(final_dir)
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = _sibling(final_dir, "new")
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    replace_directory(staging, final_dir)

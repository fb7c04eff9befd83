"""Atomic folder/file writes and output locks: a failed or interrupted write keeps the old
content; a second writer is refused with the holder named; stale locks are taken over."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from neds_hf.atomic import atomic_directory, atomic_write_json, atomic_write_text
from neds_hf.locking import OutputLock, OutputLockedError


def _tree(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def test_atomic_directory_swaps_in_on_success(tmp_path):
    final = tmp_path / "out"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with atomic_directory(final) as staging:
        assert staging != final and staging.parent == final.parent
        (staging / "new.txt").write_text("new")
        assert (final / "old.txt").read_text() == "old"  # untouched while building
    assert _tree(final) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no leftovers


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_atomic_directory_keeps_old_content_on_failure(tmp_path, error):
    final = tmp_path / "out"
    final.mkdir()
    (final / "keep.txt").write_text("precious")
    with pytest.raises(type(error)), atomic_directory(final) as staging:
        (staging / "half.txt").write_text("half")
        raise error
    assert (final / "keep.txt").read_text() == "precious"
    assert _tree(final) == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_atomic_write_text_and_json(tmp_path):
    target = tmp_path / "sub" / "f.json"
    atomic_write_json(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}
    atomic_write_text(target, "x")
    assert target.read_text() == "x"
    assert sorted(p.name for p in target.parent.iterdir()) == ["f.json"]


def test_second_lock_is_refused_naming_the_holder(tmp_path):
    output = tmp_path / "dataset"
    with OutputLock(output, "prepare-data"):
        with pytest.raises(OutputLockedError) as info:
            OutputLock(output, "prepare-data").acquire()
        message = str(info.value)
        assert f"pid {os.getpid()}" in message and socket.gethostname() in message
        assert "prepare-data" in message and ".dataset.lock" in message
    # released: can be taken again, and the lock file is gone
    assert not (tmp_path / ".dataset.lock").exists()
    with OutputLock(output, "training"):
        pass


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    pid = int(dead.stdout)
    lock_file = tmp_path / ".run.lock"
    lock_file.write_text(json.dumps({"pid": pid, "host": socket.gethostname()}))
    with OutputLock(tmp_path / "run", "training") as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()


def test_lock_from_another_host_is_not_taken(tmp_path):
    (tmp_path / ".run.lock").write_text(json.dumps({"pid": 1, "host": "elsewhere.example"}))
    with pytest.raises(OutputLockedError, match=r"elsewhere\.example"):
        OutputLock(tmp_path / "run", "training").acquire()


def test_lock_file_never_holds_a_token(tmp_path, monkeypatch):
    secret = "hf_secret_value_123"
    monkeypatch.setattr(
        "sys.argv", ["neds-hf", "train", "--hub_token", secret, f"--hub_token={secret}", "--x", "1"]
    )
    with OutputLock(tmp_path / "run", "training") as lock:
        text = lock.path.read_text()
    assert secret not in text
    assert "--hub_token <redacted> --hub_token=<redacted> --x 1" in text

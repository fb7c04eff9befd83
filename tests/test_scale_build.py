"""Tests of the build engines: local vs Ray give identical datasets, Ray retries a worker that
dies mid-session without leaving half a file, sessions of a replaced dataset are reused."""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from neds_hf.data import build_dataset
from neds_hf.data.build import PARTIAL_DIR, write_session_trials
from neds_hf.data.cli_prepare import add_prepare_data_arguments, run_prepare_data
from neds_hf.data.engines import LocalEngine, RayEngine, make_engine
from neds_hf.data.ibl import load_session, make_one
from neds_hf.data.preprocess import PreprocessingConfig, preprocess_session
from neds_hf.data.synthetic import make_synthetic_cache


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """Three tiny synthetic sessions."""
    root = tmp_path_factory.mktemp("scale_cache")
    eids = make_synthetic_cache(root, 3, seed=5, n_trials=40, n_neurons_per_probe=8)
    return root, eids


@pytest.fixture(scope="module")
def local_build(cache, tmp_path_factory):
    """The dataset of all three sessions built by the local engine in this process."""
    root, eids = cache
    output = tmp_path_factory.mktemp("local") / "dataset"
    report = build_dataset(root, eids, output, progress=False)
    assert report.skipped == {}
    return output, report


def _data_files(report) -> dict[str, str]:
    return {name: record["sha256"] for name, record in report.files.items()}


def _entries(report) -> list[dict]:
    return [{k: v for k, v in entry.items() if k != "reused"} for entry in report.sessions]


def _crashing_one_factory(cache_dir: str, marker: str, driver_pid: int):
    """ONE factory that, in the first worker process to use it, makes the next Parquet write
    stop half-way and kill the process (a worker dying mid-session)."""
    import pyarrow.parquet

    if os.getpid() != driver_pid and not os.path.exists(marker):
        original = pyarrow.parquet.write_table

        def write_half_then_die(table, where, **kwargs):
            original(table, where, **kwargs)
            size = os.path.getsize(where)
            with open(where, "r+b") as handle:
                handle.truncate(size // 2)
            Path(marker).touch()
            os._exit(1)

        pyarrow.parquet.write_table = write_half_then_die
    return make_one(cache_dir, online=False)


@pytest.fixture(scope="module")
def ray_local():
    """A small local Ray instance shared by the Ray tests (started once: it takes seconds)."""
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'neds_hf[scale]')")
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_and_local_engines_write_identical_datasets(cache, local_build, ray_local, tmp_path):
    root, eids = cache
    local_dir, local_report = local_build
    ray_report = build_dataset(root, eids, tmp_path / "ray", engine="ray", progress=False)
    assert _data_files(ray_report) == _data_files(local_report)
    assert _entries(ray_report) == _entries(local_report)
    for name in local_report.files:
        assert (tmp_path / "ray" / name).read_bytes() == (local_dir / name).read_bytes()
    assert all(entry["content_sha256"] for entry in ray_report.sessions)


def test_ray_retries_a_worker_that_dies_mid_write(cache, local_build, ray_local, tmp_path):
    root, eids = cache
    marker = tmp_path / "crashed"
    factory = functools.partial(_crashing_one_factory, str(root), str(marker), os.getpid())
    output = tmp_path / "dataset"
    report = build_dataset(factory, eids, output, engine=RayEngine(max_retries=2), progress=False)
    assert marker.exists(), "no worker died: the test did not exercise a retry"
    assert _data_files(report) == _data_files(local_build[1])
    assert not (output / PARTIAL_DIR).exists()
    stray = [p for p in output.rglob("*") if p.is_file() and p.name.startswith(".")]
    assert stray == []


def test_ray_gives_up_after_max_retries_naming_the_session(cache, ray_local, tmp_path):
    root, eids = cache
    marker = tmp_path / "crashed"
    factory = functools.partial(_crashing_one_factory, str(root), str(marker), os.getpid())
    with pytest.raises(RuntimeError, match=r"session .*Ray worker died 1 time"):
        build_dataset(
            factory, eids[:1], tmp_path / "out", engine=RayEngine(max_retries=0), progress=False
        )
    assert not (tmp_path / "out").exists()


def test_replacing_a_dataset_reuses_intact_sessions(cache, local_build, tmp_path):
    root, eids = cache
    output = tmp_path / "dataset"
    build_dataset(root, eids[:2], output, progress=False)
    # a changed file is detected by its hash and that session rebuilt
    recorded = json.loads((output / "build_report.json").read_text())["files"]
    damaged = output / next(name for name in recorded if name.startswith(f"data/trials/{eids[1]}/"))
    damaged.write_bytes(damaged.read_bytes()[:-1] + b"\0")
    report = build_dataset(root, eids, output, progress=False, overwrite=True)
    assert [bool(e.get("reused")) for e in report.sessions] == [True, False, False]
    assert _data_files(report) == _data_files(local_build[1])
    assert _entries(report) == _entries(local_build[1])

    rebuilt = build_dataset(
        root, eids, output, progress=False, overwrite=True, rebuild_sessions=True
    )
    assert not any(e.get("reused") for e in rebuilt.sessions)
    assert _data_files(rebuilt) == _data_files(local_build[1])

    other = build_dataset(
        root,
        eids,
        output,
        PreprocessingConfig(min_firing_rate=0.0),
        progress=False,
        overwrite=True,
    )
    assert not any(e.get("reused") for e in other.sessions), "other preprocessing reused"


def test_a_failed_write_leaves_no_file_at_the_dataset_path(cache, tmp_path, monkeypatch):
    root, eids = cache
    session = preprocess_session(load_session(make_one(root), eids[0]), PreprocessingConfig())
    calls = []

    def fail_second(table, where, **kwargs):
        calls.append(where)
        if len(calls) == 2:
            Path(where).write_bytes(b"PAR1 half")
            raise OSError("disk full")
        return original(table, where, **kwargs)

    original = pq.write_table
    monkeypatch.setattr(pq, "write_table", fail_second)
    with pytest.raises(OSError, match="disk full"):
        write_session_trials(session, tmp_path)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_engine_choice_and_errors(monkeypatch, cache, tmp_path, capsys):
    assert isinstance(make_engine("local", num_proc=2), LocalEngine)
    assert make_engine("ray", num_proc=3, max_retries=5).max_retries == 5
    with pytest.raises(ValueError, match="unknown engine 'spark'"):
        make_engine("spark")
    with pytest.raises(ValueError, match="max_retries"):
        RayEngine(max_retries=-1)

    root, eids = cache
    monkeypatch.setitem(sys.modules, "ray", None)  # Ray not installed
    import argparse

    parser = add_prepare_data_arguments(argparse.ArgumentParser())
    args = parser.parse_args(
        [
            *("--cache-dir", str(root), "--eids", eids[0], "--output", str(tmp_path / "o")),
            *("--engine", "ray", "--no-progress"),
        ]
    )
    assert run_prepare_data(args) == 2
    assert "pip install 'neds_hf[scale]'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()

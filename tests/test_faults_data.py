"""Fault injection for the data layer: bad inputs and damaged files give clear errors, never
lost data, silent truncation or code execution. Each table row is one bad input and the
fragment its error must contain; the next bad input is one more row."""

from __future__ import annotations

import argparse
import hashlib
import json
import pickle
import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from neds_hf.cli import main as cli_main
from neds_hf.data import (
    DATASET_MODALITIES,
    TRIAL_FEATURES,
    CorruptedFileError,
    DatasetFolderError,
    DatasetIntegrityError,
    build_dataset,
    check_dataset_folder,
    load_modalities,
    load_neds_dataset,
    read_eids_file,
    verify_dataset,
)
from neds_hf.data.cli_prepare import add_prepare_data_arguments, run_prepare_data
from neds_hf.data.schema import trial_features, trials_table
from neds_hf.data.synthetic import (
    SyntheticSessionSpec,
    generate_session,
    make_synthetic_cache,
    write_alf_session,
    write_one_cache,
)
from neds_hf.locking import OutputLock

SMALL = {"n_trials": 60, "n_neurons_per_probe": 10, "first_block_trials": 20}


@pytest.fixture(autouse=True)
def private_hf_cache(tmp_path, monkeypatch):
    """Loads in these tests never touch the user's datasets cache."""
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A synthetic ONE cache (session 1 has a truncated spikes.times.npy) and a dataset built
    from session 0."""
    root = tmp_path_factory.mktemp("faults")
    cache = root / "cache"
    eids = make_synthetic_cache(cache, 2, seed=9, faults={1: "corrupted_spike_times"}, **SMALL)
    dataset = root / "dataset"
    build_dataset(cache, eids[:1], dataset, progress=False)
    return {"cache": cache, "eids": eids, "dataset": dataset}


def _tree_digest(folder: Path) -> dict[str, str]:
    """Every file of a folder -> its SHA-256 (to show a folder is unchanged)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _leftovers(output: Path) -> list[str]:
    """Staging folders and locks left next to an output."""
    return sorted(p.name for p in output.parent.iterdir() if p.name.startswith(f".{output.name}."))


def _prepare_args(cache: Path, output: Path, *extra: str) -> argparse.Namespace:
    parser = add_prepare_data_arguments(argparse.ArgumentParser())
    return parser.parse_args(
        ["--cache-dir", str(cache), "--output", str(output), "--no-progress", *extra]
    )


# ------------------------------------------------------------------------------------------
# Damaged datasets (issue 10, item 7)
# ------------------------------------------------------------------------------------------


def _train_file(dataset: Path) -> Path:
    return next((dataset / "data" / "trials").glob("*/train-*.parquet"))


def _delete(dataset: Path) -> None:
    _train_file(dataset).unlink()


def _truncate(dataset: Path) -> None:
    path = _train_file(dataset)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_a_data_byte(dataset: Path) -> None:
    path = _train_file(dataset)
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0xFF  # inside the column data: the footer still reads
    path.write_bytes(bytes(data))


def _add_unknown_session(dataset: Path) -> None:
    source = _train_file(dataset).parent
    shutil.copytree(source, source.parent / "not-a-listed-session")


def _drop_sessions_table(dataset: Path) -> None:
    next((dataset / "data" / "sessions").glob("*.parquet")).unlink()


def _drop_test_file_and_its_record(dataset: Path) -> None:
    """A deleted file whose hash record was removed too: the sessions table still counts it."""
    path = next((dataset / "data" / "trials").glob("*/test-*.parquet"))
    path.unlink()
    report_path = dataset / "build_report.json"
    report = json.loads(report_path.read_text())
    report["files"] = {k: v for k, v in report["files"].items() if "test-" not in k}
    report_path.write_text(json.dumps(report))


def _rename_a_column(dataset: Path) -> None:
    path = _train_file(dataset)
    table = pq.read_table(path)
    names = ["whisker" if c == "whisker_motion_energy" else c for c in table.column_names]
    pq.write_table(table.rename_columns(names), path)


DAMAGED_DATASETS = [
    pytest.param(
        _delete, DatasetIntegrityError, r"train-00000-of-00001\.parquet is missing", id="deleted"
    ),
    pytest.param(_truncate, DatasetIntegrityError, r"cannot read .*train-00000", id="truncated"),
    pytest.param(
        _flip_a_data_byte,
        DatasetIntegrityError,
        "differs from the file written at build time",
        id="altered",
    ),
    pytest.param(
        _add_unknown_session, DatasetIntegrityError, "not-a-listed-session", id="unlisted-session"
    ),
    pytest.param(
        _rename_a_column,
        DatasetIntegrityError,
        r"does not match the neds_hf trials schema: missing columns \['whisker_motion_energy'\]",
        id="renamed-column",
    ),
    pytest.param(
        _drop_sessions_table, DatasetFolderError, "sessions-00000", id="no-sessions-table"
    ),
    pytest.param(
        _drop_test_file_and_its_record,
        DatasetIntegrityError,
        r"test-00000-of-00001\.parquet is missing \(\d+ test trials",
        id="deleted-unrecorded",
    ),
]


@pytest.mark.parametrize("damage, error, fragment", DAMAGED_DATASETS)
def test_a_damaged_dataset_is_refused_naming_the_file(corpus, tmp_path, damage, error, fragment):
    dataset = tmp_path / "dataset"
    shutil.copytree(corpus["dataset"], dataset)
    load_neds_dataset(dataset)  # loads (and caches) fine before the damage
    damage(dataset)
    with pytest.raises(error, match=fragment):
        verify_dataset(dataset)
    with pytest.raises(error, match=fragment):
        load_neds_dataset(dataset)


def test_a_dataset_is_verified_once_per_state(corpus, tmp_path):
    dataset = tmp_path / "dataset"
    shutil.copytree(corpus["dataset"], dataset)
    first = verify_dataset(dataset)
    assert first["sessions"] == corpus["eids"][:1] and first["n_files_hashed"] == 5
    assert verify_dataset(dataset)["n_files_hashed"] == 0  # unchanged: not hashed again


def test_verifying_without_hashes_reads_no_file_contents(corpus, tmp_path, monkeypatch):
    from neds_hf.data import load as load_module

    dataset = tmp_path / "dataset"
    shutil.copytree(corpus["dataset"], dataset)
    hashed = []
    sha256 = load_module.file_sha256
    monkeypatch.setattr(
        load_module, "file_sha256", lambda path: hashed.append(path) or sha256(path)
    )
    assert verify_dataset(dataset, hash_contents=False)["n_files_hashed"] == 0
    assert not hashed
    # a size-only check does not stand in for a hashed one ...
    assert verify_dataset(dataset)["n_files_hashed"] == 5 and len(hashed) == 5
    # ... but a hashed one stands in for a size-only one
    assert verify_dataset(dataset, hash_contents=False)["n_files_hashed"] == 0
    _flip_a_data_byte(dataset)  # same size: only the hash sees it
    verify_dataset(dataset, hash_contents=False)
    with pytest.raises(DatasetIntegrityError, match="content hash differs"):
        verify_dataset(dataset)
    _truncate(dataset)  # another size: refused without hashing too
    with pytest.raises(DatasetIntegrityError, match=r"train-00000-of-00001\.parquet"):
        verify_dataset(dataset, hash_contents=False)


# ------------------------------------------------------------------------------------------
# Paths that are not datasets (issue 10, item 11)
# ------------------------------------------------------------------------------------------


def _missing(tmp_path: Path, corpus: dict) -> Path:
    return tmp_path / "no-such-dataset"


def _one_cache(tmp_path: Path, corpus: dict) -> Path:
    return corpus["cache"]


def _a_file(tmp_path: Path, corpus: dict) -> Path:
    path = tmp_path / "trials.parquet"
    path.write_bytes(b"PAR1")
    return path


def _empty_folder(tmp_path: Path, corpus: dict) -> Path:
    (tmp_path / "empty").mkdir()
    return tmp_path / "empty"


NOT_DATASETS = [
    pytest.param(_missing, "does not exist", id="missing"),
    pytest.param(_one_cache, "is a ONE cache", id="one-cache"),
    pytest.param(_a_file, "is a file, not a folder", id="file"),
    pytest.param(_empty_folder, r"not a neds_hf dataset: README\.md", id="empty-folder"),
]


@pytest.mark.parametrize("make_path, fragment", NOT_DATASETS)
def test_a_path_that_is_not_a_dataset_says_what_a_dataset_is(corpus, tmp_path, make_path, fragment):
    path = make_path(tmp_path, corpus)
    with pytest.raises(DatasetFolderError, match=fragment) as raised:
        check_dataset_folder(path)
    assert "build_report.json" in str(raised.value) and "data/trials" in str(raised.value)
    with pytest.raises(DatasetFolderError, match=fragment):
        load_neds_dataset(path)


def test_the_built_dataset_passes_the_checks(corpus):
    assert check_dataset_folder(corpus["dataset"]) == corpus["dataset"]


# ------------------------------------------------------------------------------------------
# prepare-data: outputs, inputs and the lock (issue 10, items 1, 3, 12)
# ------------------------------------------------------------------------------------------


def _existing_dataset(output: Path, corpus: dict) -> list[str]:
    shutil.copytree(corpus["dataset"], output)
    return ["--eids", corpus["eids"][0]]


def _users_folder(output: Path, corpus: dict) -> list[str]:
    (output / "data").mkdir(parents=True)
    (output / "README.md").write_text("my notes\n")
    (output / "data" / "results.csv").write_text("a,b\n1,2\n")
    return ["--eids", corpus["eids"][0], "--overwrite"]


def _held_lock(output: Path, corpus: dict) -> list[str]:
    OutputLock(output, "prepare-data").acquire()  # held by this (live) process
    return ["--eids", corpus["eids"][0]]


def _binary_eids_file(output: Path, corpus: dict) -> list[str]:
    path = output.parent / "eids.bin"
    path.write_bytes(b"\xff\xfe\x00\x81binary")
    return ["--eids-file", str(path)]


#: (prepare the output and return the arguments, exit code, error fragment)
PREPARE_DATA_FAULTS = [
    pytest.param(_existing_dataset, 2, "pass --overwrite", id="dataset-without-overwrite"),
    pytest.param(_users_folder, 2, "--force-overwrite-non-dataset", id="users-folder"),
    pytest.param(_held_lock, 2, r"in use by another prepare-data: pid \d+", id="locked"),
    pytest.param(_binary_eids_file, 1, r"eids\.bin is not a UTF-8 text file", id="binary-eids"),
]


@pytest.mark.parametrize("prepare, code, fragment", PREPARE_DATA_FAULTS)
def test_prepare_data_refuses_bad_outputs_and_inputs(
    corpus, tmp_path, capsys, prepare, code, fragment
):
    output = tmp_path / "out"
    arguments = prepare(output, corpus)
    before = _tree_digest(output) if output.exists() else {}
    assert run_prepare_data(_prepare_args(corpus["cache"], output, *arguments)) == code
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert re.search(fragment, err), err
    assert (_tree_digest(output) if output.exists() else {}) == before


def test_binary_eids_file_names_the_file(tmp_path):
    path = tmp_path / "eids.txt"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    with pytest.raises(ValueError, match=r"eids\.txt is not a UTF-8 text file"):
        read_eids_file(path)


def test_force_replaces_a_folder_that_is_not_a_dataset(corpus, tmp_path, capsys):
    output = tmp_path / "out"
    _users_folder(output, corpus)
    args = _prepare_args(
        corpus["cache"], output, "--eids", corpus["eids"][0], "--force-overwrite-non-dataset"
    )
    assert run_prepare_data(args) == 0
    assert not (output / "data" / "results.csv").exists()
    verify_dataset(output)
    assert _leftovers(output) == []


def test_a_failed_rebuild_keeps_the_previous_dataset(corpus, tmp_path):
    output = tmp_path / "out"
    _existing_dataset(output, corpus)
    before = _tree_digest(output)
    with pytest.raises(CorruptedFileError, match=r"spikes\.times\.npy"):
        build_dataset(corpus["cache"], corpus["eids"], output, progress=False, overwrite=True)
    assert _tree_digest(output) == before
    assert _leftovers(output) == []
    load_neds_dataset(output)


def test_ctrl_c_during_a_build_leaves_nothing_behind(corpus, tmp_path, monkeypatch, capsys):
    import neds_hf.data.build as build

    output = tmp_path / "out"
    _existing_dataset(output, corpus)
    before = _tree_digest(output)
    calls = []
    real = build.process_session

    def interrupted(*args, **kwargs):
        calls.append(args[1])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(build, "process_session", interrupted)
    second = generate_session(SyntheticSessionSpec(seed=9, index=5, **SMALL))
    cache = tmp_path / "cache"
    shutil.copytree(corpus["cache"], cache)
    write_alf_session(second, cache)
    write_one_cache(cache)
    code = cli_main(
        [
            *("prepare-data", "--cache-dir", str(cache), "--eids", corpus["eids"][0], second.eid),
            # --rebuild-sessions: session 0 is in the old dataset and would be reused, not run
            *("--output", str(output), "--overwrite", "--rebuild-sessions", "--no-progress"),
        ]
    )
    assert code == 130 and len(calls) == 2
    assert "interrupted" in capsys.readouterr().err
    assert _tree_digest(output) == before
    assert _leftovers(output) == []


# ------------------------------------------------------------------------------------------
# No code from data files (issue 10, item 4)
# ------------------------------------------------------------------------------------------


class _WritesMarker:
    """Unpickling this object writes a marker file: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code from a data file ran"))


def _plain_pickle(path: Path, marker: Path) -> None:
    with open(path, "wb") as handle:
        pickle.dump(_WritesMarker(marker), handle)


def _object_array(path: Path, marker: Path) -> None:
    np.save(path, np.array([_WritesMarker(marker)], dtype=object), allow_pickle=True)


PICKLED_FILES = [
    pytest.param("spikes.times.npy", _plain_pickle, "pickled Python objects", id="pickle-as-npy"),
    pytest.param("spikes.clusters.npy", _object_array, "pickled Python objects", id="object-npy"),
    pytest.param(
        "_ibl_wheel.position.npy", _plain_pickle, "pickled Python objects", id="wheel-pickle"
    ),
]


@pytest.mark.parametrize("name, write, fragment", PICKLED_FILES)
def test_a_pickled_npy_is_refused_and_never_run(tmp_path, name, write, fragment):
    cache = tmp_path / "cache"
    session = generate_session(SyntheticSessionSpec(seed=4, **SMALL))
    session_path = write_alf_session(session, cache)
    target = next(session_path.rglob(name))
    marker = tmp_path / "marker.txt"
    write(target, marker)
    write_one_cache(cache)
    with pytest.raises(CorruptedFileError, match=fragment) as raised:
        build_dataset(cache, [session.eid], tmp_path / "dataset", progress=False)
    assert name in str(raised.value)
    assert not marker.exists()
    assert not (tmp_path / "dataset").exists()


# ------------------------------------------------------------------------------------------
# One exclusion reason per trial (issue 8, item 6)
# ------------------------------------------------------------------------------------------


def test_no_go_trials_without_first_movement_count_as_no_choice(tmp_path):
    """IBL no-go trials have NaN firstMovement_times: each is counted once, as no_choice."""
    spec = SyntheticSessionSpec(seed=6, **SMALL)
    session = generate_session(spec)
    no_go = session.trials["choice"] == 0
    assert no_go.sum() == spec.n_no_choice_trials
    session.trials.loc[no_go, "firstMovement_times"] = np.nan
    cache = tmp_path / "cache"
    write_alf_session(session, cache)
    write_one_cache(cache)
    build_dataset(cache, [session.eid], tmp_path / "dataset", progress=False)
    entry = json.loads((tmp_path / "dataset" / "build_report.json").read_text())["sessions"][0]
    excluded, matching = entry["exclusion"]["excluded"], entry["exclusion"]["matching"]
    assert excluded["no_choice"] == matching["no_choice"] == spec.n_no_choice_trials
    assert excluded["nan_field"] == matching["nan_field"] == spec.n_nan_trials
    assert sum(excluded.values()) == spec.n_bad_trials


# ------------------------------------------------------------------------------------------
# Modalities as data (issue 7, item 4)
# ------------------------------------------------------------------------------------------


def test_the_dataset_declares_its_modalities(corpus):
    declared = load_modalities(corpus["dataset"])
    assert declared == [dict(spec) for spec in DATASET_MODALITIES]
    assert trial_features(declared) == TRIAL_FEATURES
    card = (corpus["dataset"] / "README.md").read_text()
    assert "## Modalities" in card and "| `whisker_motion_energy` | continuous |" in card


def test_the_trials_writer_follows_the_modality_table():
    modalities = [*DATASET_MODALITIES, {"name": "paw_speed", "kind": "continuous"}]
    n_trials, n_neurons, n_bins = 3, 2, 4
    columns = {
        "session_id": np.array(["s"] * n_trials, dtype=object),
        "trial_id": np.arange(n_trials),
        "spikes": np.ones((n_trials, n_neurons, n_bins), dtype=np.uint16),
        "wheel_speed": np.zeros((n_trials, n_bins)),
        "whisker_motion_energy": np.zeros((n_trials, n_bins)),
        "paw_speed": np.arange(n_trials * n_bins, dtype=np.float64).reshape(n_trials, n_bins),
        "left_paw_speed": np.full((n_trials, n_bins), np.nan),
        "right_paw_speed": np.zeros((n_trials, n_bins)),
        "choice": np.array([0, 1, 0]),
        "block": np.array([0, 1, 2]),
        "reward": np.array([1, 0, 1]),
        "stimulus_contrast": np.array([0, 4, -1]),
        "licking_rate": np.full((n_trials, n_bins), np.nan),
        "contrast": np.zeros(n_trials),
        "stim_on_time": np.arange(n_trials, dtype=np.float64),
    }
    table = trials_table(columns, trial_features(modalities))
    assert table.column("paw_speed").to_pylist()[1] == [4.0, 5.0, 6.0, 7.0]
    assert str(table.schema.field("paw_speed").type) == "list<item: float>"
    assert table.column("spikes").to_pylist()[0] == [[1, 1, 1, 1], [1, 1, 1, 1]]
    del columns["paw_speed"]
    with pytest.raises(ValueError, match="paw_speed"):
        trials_table(columns, trial_features(modalities))
    with pytest.raises(ValueError, match="kind 'video'"):
        trial_features([{"name": "frames", "kind": "video"}])


def test_parquet_row_counts_are_recorded(corpus):
    report = json.loads((corpus["dataset"] / "build_report.json").read_text())
    for relative, record in report["files"].items():
        assert pq.ParquetFile(corpus["dataset"] / relative).metadata.num_rows == record["rows"]

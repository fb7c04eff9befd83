"""Loading a built NEDS dataset: checks first, then trials, neurons, sessions, normalisation.

A local dataset folder is checked before any of it is read (:func:`verify_dataset`): it must
look like a dataset (:func:`check_dataset_folder`), every session of its sessions table must
have its Parquet files with the recorded numbers of trials, and each file must still have the
size and SHA-256 recorded in ``build_report.json`` at build time. A deleted, truncated or
altered file is an error naming the session and the file, never a dataset with fewer trials.
Hub repositories are downloaded and checked by ``datasets`` itself. The continuous windows of
a dataset built with them (:func:`load_windows`) are files of the build report like any other,
so the same check covers them.

Local folders are loaded with a cache directory of their own, keyed by the folder's content
(:func:`local_dataset_fingerprint`): ``datasets`` 5.2 keys the cache of a local folder whose
card lists ``configs`` by the folder *name* and the config, so two folders called ``dataset``
(or one rebuilt in place) would otherwise share stale Arrow files
(``tests/test_dataset.py::test_loads_never_mix_up_two_folders_with_the_same_name``).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from datasets import DatasetDict

from ..configuration_neds import IBL_MODALITIES
from .preprocess import BWB_MODALITIES, SPLITS
from .schema import (
    ALL_CONFIG,
    BUILD_REPORT_FILE,
    NEURONS_CONFIG,
    NEURONS_FILE,
    SESSIONS_CONFIG,
    SESSIONS_FILE,
    TRIALS_DIR,
    WINDOWS_CONFIG,
    WINDOWS_DIR,
    trial_features,
    trial_file,
)

__all__ = [
    "DatasetFolderError",
    "DatasetIntegrityError",
    "check_dataset_folder",
    "default_modalities",
    "file_record",
    "file_sha256",
    "has_windows",
    "load_modalities",
    "load_neds_dataset",
    "load_neurons",
    "load_normalization",
    "load_sessions",
    "load_windows",
    "local_dataset_fingerprint",
    "verify_dataset",
    "window_counts",
]

#: What a dataset folder holds, for error messages.
DATASET_FOLDER_LAYOUT = (
    "a neds_hf dataset folder (written by `neds-hf prepare-data`) holds README.md, "
    f"{BUILD_REPORT_FILE}, {TRIALS_DIR}/<session_id>/<split>-*.parquet, {NEURONS_FILE} and "
    f"{SESSIONS_FILE}"
)


class DatasetFolderError(FileNotFoundError):
    """A path given as a dataset is missing or is not a neds_hf dataset folder."""


class DatasetIntegrityError(ValueError):
    """A dataset's files disagree with its sessions table or its build report."""


def check_dataset_folder(path: str | os.PathLike) -> Path:
    """Check that ``path`` is a local neds_hf dataset folder; returns it as a ``Path``.

    Raises :class:`DatasetFolderError` saying what is wrong (missing path, a file, a ONE cache,
    a folder without the dataset files) and what a dataset folder looks like.
    """
    folder = Path(path)
    if not folder.exists():
        raise DatasetFolderError(f"dataset {folder} does not exist; {DATASET_FOLDER_LAYOUT}")
    if not folder.is_dir():
        raise DatasetFolderError(
            f"dataset {folder} is a file, not a folder; {DATASET_FOLDER_LAYOUT}"
        )
    if (folder / "sessions.pqt").is_file() or (folder / "datasets.pqt").is_file():
        raise DatasetFolderError(
            f"{folder} is a ONE cache (sessions.pqt / datasets.pqt), not a dataset: build one "
            f"with `neds-hf prepare-data --cache-dir {folder} --output DATASET ...`; "
            + DATASET_FOLDER_LAYOUT
        )
    missing = [
        name
        for name in ("README.md", SESSIONS_FILE, NEURONS_FILE, TRIALS_DIR)
        if not (folder / name).exists()
    ]
    if missing:
        raise DatasetFolderError(
            f"{folder} is not a neds_hf dataset: {', '.join(missing)} not found; "
            + DATASET_FOLDER_LAYOUT
        )
    return folder


def _read_build_report(folder: Path) -> dict[str, Any]:
    """The build report of a dataset folder (``{}`` when absent, e.g. a hand-copied dataset)."""
    path = folder / BUILD_REPORT_FILE
    if not path.exists():
        return {}
    try:
        content = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise DatasetIntegrityError(f"cannot read the build report {path}: {error}") from error
    if not isinstance(content, dict):
        raise DatasetIntegrityError(f"build report {path} is not a JSON object")
    return content


def _parquet_rows(path: Path, session_id: str) -> int:
    """Row count from a Parquet file's footer, or an error naming the session and file."""
    try:
        return pq.ParquetFile(path).metadata.num_rows
    except Exception as error:  # pyarrow raises ArrowInvalid / OSError on damaged files
        raise DatasetIntegrityError(
            f"session {session_id}: cannot read {path} ({type(error).__name__}: {error}); the "
            "file is damaged: rebuild the dataset with `neds-hf prepare-data --overwrite`"
        ) from error


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes (hex), read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_record(path: Path, rows: int) -> dict[str, Any]:
    """What :func:`verify_dataset` checks of a file, recorded at build time: its number of
    rows, size in bytes and SHA-256."""
    return {"rows": int(rows), "bytes": path.stat().st_size, "sha256": file_sha256(path)}


def _check_trials_schema(folder: Path, path: Path, expected: Any) -> None:
    """The columns of a trials file: every one of the declared schema, with its type."""
    try:
        schema = pq.read_schema(path)
    except Exception as error:  # damaged footer
        raise DatasetIntegrityError(f"cannot read the schema of {path}: {error}") from error
    missing = [field.name for field in expected if field.name not in schema.names]
    mismatched = [
        field.name
        for field in expected
        if field.name in schema.names and schema.field(field.name).type != field.type
    ]
    if missing or mismatched:
        raise DatasetIntegrityError(
            f"dataset {folder} does not match the neds_hf trials schema: missing columns "
            f"{missing}, columns of another type {mismatched} (in {path})"
        )


def _check_session_files(folder: Path, row: dict[str, Any], expected_schema: Any) -> None:
    """Each split of a session: its file is there, holds the recorded number of trials and
    the declared columns."""
    session_id = str(row["session_id"])
    for split in SPLITS:
        expected = int(row[f"n_trials_{split}"])
        path = folder / trial_file(session_id, split)
        if not path.exists():
            if expected:
                raise DatasetIntegrityError(
                    f"session {session_id}: {path} is missing ({expected} {split} trials "
                    "recorded in the sessions table); rebuild the dataset"
                )
            continue
        rows = _parquet_rows(path, session_id)
        if rows != expected:
            raise DatasetIntegrityError(
                f"session {session_id}: {path} holds {rows} trials, the sessions table "
                f"records {expected} {split} trials; rebuild the dataset"
            )
        _check_trials_schema(folder, path, expected_schema)


def _check_recorded_files(
    folder: Path, files: dict[str, dict[str, Any]], hash_contents: bool
) -> None:
    """Each file recorded in the build report still has its size and (`hash_contents`) its
    content hash."""
    for relative, record in files.items():
        path = folder / relative
        in_session_folder = relative.startswith((f"{TRIALS_DIR}/", f"{WINDOWS_DIR}/"))
        session = relative.split("/")[2] if in_session_folder else relative
        if not path.exists():
            raise DatasetIntegrityError(
                f"session {session}: {path} is missing; rebuild the dataset"
            )
        size = path.stat().st_size
        if size != record["bytes"] or (hash_contents and file_sha256(path) != record["sha256"]):
            raise DatasetIntegrityError(
                f"session {session}: {path} differs from the file written at build time "
                f"({size} bytes, recorded {record['bytes']}; content hash differs): it was "
                "altered or damaged; rebuild the dataset with `neds-hf prepare-data --overwrite`"
            )


#: The one-file tables of a dataset: config name -> file.
_TABLE_FILES = {SESSIONS_CONFIG: SESSIONS_FILE, NEURONS_CONFIG: NEURONS_FILE}

#: Folders already verified -> their :func:`local_dataset_fingerprint` at the time and whether
#: the contents were hashed then.
_VERIFIED: dict[str, tuple[str, bool]] = {}


def verify_dataset(path: str | os.PathLike, *, hash_contents: bool = True) -> dict[str, Any]:
    """Check a local dataset folder against its sessions table and build report.

    Every session of the sessions table must have one Parquet file per non-empty split with
    the recorded number of trials and the columns of the declared modality table (with their
    types); no trials folder may belong to a session absent from the
    table; every file recorded in ``build_report.json`` must keep its size and SHA-256. Raises
    :class:`DatasetFolderError` or :class:`DatasetIntegrityError` naming the session and file.
    Returns ``{"sessions": [...], "n_files_hashed": int}``. A folder unchanged since its last
    successful check (same files, sizes and times) is not hashed again.

    ``hash_contents=False`` checks everything above except the content hashes: files are not
    read beyond their Parquet footers, so the check costs the same whatever the size of the
    corpus (streaming training's start-up). It catches missing, truncated, replaced and
    re-typed files, not a same-size change of the bytes.
    """
    folder = check_dataset_folder(path).resolve()
    state = local_dataset_fingerprint(folder)
    report = _read_build_report(folder)
    try:
        rows = pq.read_table(folder / SESSIONS_FILE).to_pylist()
    except Exception as error:
        raise DatasetIntegrityError(
            f"cannot read the sessions table {folder / SESSIONS_FILE} ({error}); "
            "rebuild the dataset"
        ) from error
    session_ids = [str(row["session_id"]) for row in rows]
    verified = _VERIFIED.get(str(folder))
    if verified is not None and verified[0] == state and (verified[1] or not hash_contents):
        return {"sessions": session_ids, "n_files_hashed": 0}
    expected_schema = trial_features(load_modalities(folder)).arrow_schema
    for row in rows:
        _check_session_files(folder, row, expected_schema)
    for rows_dir in (TRIALS_DIR, WINDOWS_DIR):
        unknown = sorted(
            p.name
            for p in (folder / rows_dir).glob("*")
            if p.is_dir() and p.name not in session_ids
        )
        if unknown:
            raise DatasetIntegrityError(
                f"{folder / rows_dir} holds rows of sessions absent from the sessions table: "
                f"{unknown}; they would be loaded without neurons or normalisation"
            )
    files = report.get("files") or {}
    _check_recorded_files(folder, files, hash_contents)
    _VERIFIED[str(folder)] = (state, hash_contents)
    return {"sessions": session_ids, "n_files_hashed": len(files) if hash_contents else 0}


def local_dataset_fingerprint(path: str | os.PathLike) -> str:
    """A digest of a local dataset folder: its resolved path and its files' sizes and mtimes."""
    root = Path(path).resolve()
    digest = hashlib.sha256(str(root).encode())
    for file in sorted(root.rglob("*")):
        if file.is_file() and (file.suffix == ".parquet" or file.name == "README.md"):
            stat = file.stat()
            digest.update(f"{file.relative_to(root)}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def load_modalities(path_or_repo: str | os.PathLike) -> list[dict[str, Any]]:
    """The modality table a dataset declares (``build_report.json`` ``"modalities"``).

    Datasets built before the table was recorded, and Hub repos, declare the five IBL
    modalities of the paper (:data:`neds_hf.configuration_neds.IBL_MODALITIES`), which every
    dataset of the IBL preprocessing has.
    """
    folder = Path(path_or_repo)
    if folder.is_dir():
        declared = _read_build_report(folder).get("modalities")
        if declared:
            return [dict(spec) for spec in declared]
    return [dict(spec) for spec in IBL_MODALITIES]


def default_modalities(declared: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The declared modalities used when none are named: all but the BrainWideBench behaviours
    (:data:`neds_hf.data.preprocess.BWB_MODALITIES`, opt-in), i.e. the paper's five on an IBL
    dataset. Training, the trial datasets and evaluation share this rule."""
    opt_in = {spec["name"] for spec in BWB_MODALITIES}
    return [dict(spec) for spec in declared if spec["name"] not in opt_in]


def is_local_dataset_path(path: str) -> bool:
    """Whether ``path`` names a local folder rather than a Hub repo id (``org/name``)."""
    return (
        os.path.exists(path)
        or path.startswith((".", "/", "~"))
        or path.count("/") != 1
        or (os.sep != "/" and os.sep in path)
    )


def _load(
    path_or_repo: str | os.PathLike, name: str, *, hash_contents: bool = True, **kwargs: Any
) -> DatasetDict:
    """One config of a dataset; a local folder is verified first (`hash_contents`: see
    :func:`verify_dataset`)."""
    import datasets

    path = os.fspath(path_or_repo)
    source: tuple[str, ...] = (path, name)
    if is_local_dataset_path(path):
        verify_dataset(path, hash_contents=hash_contents)
        if "cache_dir" not in kwargs:
            # kept: datasets 5.2 keys the cache of a local folder with card `configs` by its
            # name and config, not its content (see the module docstring)
            root = os.environ.get("HF_DATASETS_CACHE") or datasets.config.HF_DATASETS_CACHE
            kwargs["cache_dir"] = os.path.join(root, "neds_hf", local_dataset_fingerprint(path))
        if name in _TABLE_FILES:
            # the file itself: loading a config of the folder resolves the data files of
            # every config of the card first (one per session: seconds at 128 sessions)
            source = ("parquet",)
            kwargs["data_files"] = {"train": os.path.join(path, _TABLE_FILES[name])}
    try:
        return datasets.load_dataset(*source, **kwargs)
    except datasets.exceptions.DatasetGenerationError as error:
        cause = error.__cause__ or error
        raise DatasetIntegrityError(
            f"dataset {path}, config {name!r}: the Parquet files cannot be read ({cause}); "
            "rebuild the dataset"
        ) from error


def load_neds_dataset(
    path_or_repo: str | os.PathLike, sessions: Sequence[str] | None = None, **kwargs: Any
) -> DatasetDict:
    """Trials of all sessions (config ``all``) or of the given sessions, as a ``DatasetDict``.

    Selected sessions are loaded from their own configs and concatenated split by split, so
    only their files are read. ``kwargs`` go to ``datasets.load_dataset`` (e.g. ``cache_dir``).
    A local folder is checked with :func:`verify_dataset` first.
    """
    import datasets

    if sessions is None:
        return _load(path_or_repo, ALL_CONFIG, **kwargs)
    sessions = [str(s) for s in sessions]
    if not sessions:
        raise ValueError("sessions is empty; pass None for every session")
    if is_local_dataset_path(os.fspath(path_or_repo)):
        verify_dataset(path_or_repo)
    available = set(datasets.get_dataset_config_names(os.fspath(path_or_repo)))
    unknown = [s for s in sessions if s not in available]
    if unknown:
        raise KeyError(f"sessions not in the dataset {os.fspath(path_or_repo)}: {unknown}")
    parts = [_load(path_or_repo, session_id, **kwargs) for session_id in sessions]
    return DatasetDict(
        {
            split: datasets.concatenate_datasets([part[split] for part in parts])
            for split in parts[0]
        }
    )


def has_windows(path_or_repo: str | os.PathLike) -> bool:
    """Whether a dataset holds continuous windows: a local folder's build report describes
    them; a Hub dataset lists the ``windows`` config."""
    path = os.fspath(path_or_repo)
    if is_local_dataset_path(path):
        return _read_build_report(Path(path)).get("windows") is not None
    import datasets

    return WINDOWS_CONFIG in datasets.get_dataset_config_names(path)


def window_counts(path_or_repo: str | os.PathLike, split: str) -> dict[str, int]:
    """``{session_id: windows of split}`` from a local dataset's build report (the per-session
    windows summaries); a ``ValueError`` for a dataset without windows or a Hub id."""
    path = os.fspath(path_or_repo)
    if not is_local_dataset_path(path):
        raise ValueError(
            f"dataset {path}: counting continuous windows needs a local dataset folder; "
            "download the dataset first"
        )
    if not has_windows(path):
        raise ValueError(f"dataset {path} has no continuous windows")
    report = _read_build_report(Path(path))
    return {
        str(entry["session_id"]): int(entry["windows"][split])
        for entry in report.get("sessions", [])
        if entry.get("status") == "ok"
    }


def load_windows(
    path_or_repo: str | os.PathLike, sessions: Sequence[str] | None = None, **kwargs: Any
) -> DatasetDict:
    """Continuous windows of all sessions or of the given ones (config ``windows``), as a
    ``DatasetDict`` with the trials' splits; rows keep the file order (session, window).

    A dataset built without windows is an error saying how to build them; a local folder is
    checked with :func:`verify_dataset` first.
    """
    path = os.fspath(path_or_repo)
    if not has_windows(path):
        raise ValueError(
            f"dataset {path} has no continuous windows; build it with `neds-hf prepare-data "
            "--windows continuous --window-length S --window-stride S`"
        )
    windows = _load(path, WINDOWS_CONFIG, **kwargs)
    if sessions is None:
        return windows
    sessions = [str(s) for s in sessions]
    if not sessions:
        raise ValueError("sessions is empty; pass None for every session")
    selected = {}
    for split, rows in windows.items():
        session_ids = rows.with_format("numpy")["session_id"]  # (n_rows,)
        selected[split] = rows.select(np.flatnonzero(np.isin(session_ids, sessions)))
    found = {str(s) for split in selected.values() for s in split.unique("session_id")}
    unknown = [s for s in sessions if s not in found]
    if unknown:
        raise KeyError(f"sessions without continuous windows in {path}: {unknown}")
    return DatasetDict(selected)


def load_sessions(path_or_repo: str | os.PathLike, **kwargs: Any):
    """The sessions table (config ``sessions``) as a ``datasets.Dataset``; ``kwargs`` go to
    ``datasets.load_dataset``, except ``hash_contents`` (:func:`verify_dataset`)."""
    return _load(path_or_repo, SESSIONS_CONFIG, **kwargs)["train"]


def load_neurons(
    path_or_repo: str | os.PathLike, sessions: Sequence[str] | None = None, **kwargs: Any
) -> pd.DataFrame:
    """The neurons table (config ``neurons``) as a DataFrame, optionally for some sessions only.

    Rows are sorted by (session order, ``neuron_index``); with ``sessions`` given, every
    session must be present. ``kwargs`` as for :func:`load_sessions`.
    """
    table = _load(path_or_repo, NEURONS_CONFIG, **kwargs)["train"].to_pandas()
    if sessions is None:
        return table.sort_values(["session_id", "neuron_index"], ignore_index=True)
    sessions = [str(s) for s in sessions]
    unknown = sorted(set(sessions) - set(table["session_id"]))
    if unknown:
        raise KeyError(f"sessions without neurons in {os.fspath(path_or_repo)}: {unknown}")
    order = {session_id: position for position, session_id in enumerate(sessions)}
    table = table[table["session_id"].isin(order)].copy()
    table["_order"] = table["session_id"].map(order)
    return table.sort_values(["_order", "neuron_index"], ignore_index=True).drop(columns="_order")


def _session_rows(sessions_table: Any) -> list[dict[str, Any]]:
    """Rows of a sessions table given as a path, Dataset(Dict), DataFrame or list of dicts."""
    if isinstance(sessions_table, (str, os.PathLike)):
        sessions_table = load_sessions(sessions_table)
    if isinstance(sessions_table, DatasetDict):
        sessions_table = sessions_table["train"]
    if isinstance(sessions_table, pd.DataFrame):
        return sessions_table.to_dict("records")
    if hasattr(sessions_table, "to_list"):
        return sessions_table.to_list()
    return list(sessions_table)


def load_normalization(
    sessions_table: Any, modalities: Sequence[str] | None = None
) -> dict[str, dict[str, dict[str, float]]]:
    """``{session_id: {modality: {"mean", "std", "min", "max"}}}`` from the sessions table.

    Accepts the ``sessions`` config as a ``datasets.Dataset`` / ``DatasetDict``, a DataFrame,
    a list of row dicts, or a dataset path / repo id (loaded with :func:`load_sessions`).
    Every session must have constants for the same continuous modalities: ``modalities`` when
    given, else those the sessions declare (the union over sessions).
    """
    normalization: dict[str, dict[str, dict[str, float]]] = {}
    for row in _session_rows(sessions_table):
        normalization[str(row["session_id"])] = {
            str(entry["modality"]): {
                key: float(entry[key]) for key in ("mean", "std", "min", "max")
            }
            for entry in row["normalization"]
        }
    required = (
        list(modalities)
        if modalities is not None
        else sorted({name for per_session in normalization.values() for name in per_session})
    )
    for session_id, per_modality in normalization.items():
        missing = [m for m in required if m not in per_modality]
        if missing:
            raise ValueError(f"session {session_id}: no normalisation constants for {missing}")
    return normalization

"""Building the NEDS dataset: ONE sessions -> preprocessing -> Parquet, card and build report.

:func:`build_dataset` loads every requested session through ONE, preprocesses it, writes its
trials (one Parquet file per split), the neurons and sessions tables, the card and
``build_report.json``. The build is safe to interrupt and to repeat:

* it runs in a hidden sibling folder that replaces the output only when everything is written
  (:func:`neds_hf.atomic.atomic_directory`): a failed or interrupted rebuild leaves the
  previous dataset exactly as it was, and no staging folder behind;
* a lock next to the output (:class:`neds_hf.locking.OutputLock`) makes a second build into
  the same output fail, naming the first;
* an output that already holds a dataset is replaced only with ``overwrite``; a non-empty
  folder that is not a neds_hf dataset only with ``force_overwrite_non_dataset``;
* sessions run on an engine (:mod:`neds_hf.data.engines`: a local process pool, or one Ray
  task per session); each session's files are written under a private name and renamed into
  place, so a worker that dies mid-session never leaves half a Parquet file in the dataset;
* when an existing dataset is replaced with the same preprocessing, revision and modalities,
  a session built there whose files still match the recorded SHA-256 is reused (its files
  linked, its neurons and sessions rows copied) instead of rebuilt, unless
  ``rebuild_sessions``; its entry says ``"reused": true``.

With ``windows`` (a :class:`~neds_hf.data.windows.WindowConfig`) every session also gets its
continuous windows (:mod:`neds_hf.data.windows`), written next to its trials under
``data/windows/`` and described in the report (``"windows"``: the parameters and rules; per
session: recording span, windows per split, uncovered tail, missing modalities) and the card;
a window longer than a session's recording stops the build with an error naming the session
(the previous dataset stays as it was). Without it the build is exactly the trial-only one.

The report records, besides every session's outcome, the modality table the dataset declares
and each file's row count, size and SHA-256, which :func:`neds_hf.data.load.verify_dataset`
checks before training and evaluation read the dataset.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from ..atomic import atomic_directory
from ..locking import OutputLock
from .card import make_dataset_card
from .engines import SessionEngine, make_engine
from .errors import CorruptedFileError, MissingDataError, SessionNotFoundError
from .load import file_record
from .preprocess import (
    DATASET_MODALITIES,
    SPLITS,
    EmptySessionError,
    PreprocessedSession,
    PreprocessingConfig,
    package_versions,
    preprocess_session,
)
from .schema import (
    BUILD_REPORT_FILE,
    NEURONS_FILE,
    PARQUET_ROW_GROUP_SIZE,
    RESERVED_CONFIG_NAMES,
    SESSIONS_FILE,
    neurons_table,
    sessions_table,
    trial_features,
    trial_file,
    trials_table,
    window_features,
    window_file,
)
from .windows import SessionWindows, WindowConfig, make_session_windows, window_modalities

__all__ = [
    "PARTIAL_DIR",
    "BuildReport",
    "OneSource",
    "SessionTask",
    "build_dataset",
    "is_neds_dataset",
    "process_session",
    "session_content_hash",
    "write_session_trials",
    "write_session_windows",
]

OneSource = str | os.PathLike | Callable[[], Any]

#: Folder (inside the build's staging folder) where session files are written before they are
#: renamed into place; removed before the dataset is swapped in.
PARTIAL_DIR = ".partial"


@dataclass
class BuildReport:
    """Outcome of :func:`build_dataset`: one entry per requested session, in request order.

    Each entry has ``session_id``, ``status`` (``"ok"`` or ``"skipped"``) and, when skipped,
    ``reason`` (``"missing_data"``, ``"invalid_data"``, ``"no_trials"``, ``"no_neurons"`` or
    ``"too_few_trials"``) and ``message``; ``counts`` (trials per split, neurons), ``files``
    and ``content_sha256`` (:func:`session_content_hash` of its files) when ok, ``reused`` when
    taken over from the dataset being replaced, and ``exclusion`` (the
    :class:`~neds_hf.data.preprocess.ExclusionReport`) when known. ``modalities`` is the
    modality table the dataset declares; ``files`` maps every Parquet file to its ``rows``,
    ``bytes`` and ``sha256``.
    """

    output_dir: str
    config: PreprocessingConfig
    source: str
    revision: str | None
    revision_last_before: str | None
    created: str
    package_versions: dict[str, str]
    modalities: list[dict[str, Any]] = field(default_factory=lambda: list(DATASET_MODALITIES))
    sessions: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    windows: dict[str, Any] | None = None

    @property
    def built_session_ids(self) -> list[str]:
        """Ids of the sessions written to the dataset."""
        return [s["session_id"] for s in self.sessions if s["status"] == "ok"]

    @property
    def skipped(self) -> dict[str, str]:
        """``{session_id: reason}`` of the skipped sessions."""
        return {s["session_id"]: s["reason"] for s in self.sessions if s["status"] != "ok"}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the content of ``build_report.json``)."""
        windows = {} if self.windows is None else {"windows": self.windows}
        return {
            "output_dir": self.output_dir,
            "source": self.source,
            "revision": self.revision,
            "revision_last_before": self.revision_last_before,
            "created": self.created,
            "preprocessing": self.config.to_dict(),
            "package_versions": self.package_versions,
            "modalities": self.modalities,
            **windows,
            "n_sessions_ok": len(self.built_session_ids),
            "n_sessions_skipped": len(self.skipped),
            "sessions": self.sessions,
            "files": self.files,
        }


# --------------------------------------------------------------------------------------------
# Writing files
# --------------------------------------------------------------------------------------------


# The trials are written with pyarrow rather than `datasets.Dataset.to_parquet`: the numpy
# arrays become Arrow list arrays without a detour through Python lists (`Dataset.from_dict`
# would convert `[K, N, T]` spike arrays element by element), the file layout (one file per
# session and split, named for the card's `data_files` patterns) and the row-group size are
# ours to choose, and the schema is the exact `TRIAL_FEATURES` one, with the features in the
# Arrow metadata as `datasets` writes them. `datasets` shards only when pushing a DatasetDict,
# which would lose the per-session configs.
def write_session_trials(
    session: PreprocessedSession,
    output_dir: str | os.PathLike,
    modalities: Sequence[dict[str, Any]] = DATASET_MODALITIES,
) -> dict[str, dict[str, Any]]:
    """Write one Parquet file per non-empty split of a session; returns ``{relative path:
    file record}`` (rows, bytes, sha256). Columns follow the declared ``modalities``.

    Each file is written in a private folder under ``output_dir/PARTIAL_DIR`` and renamed into
    place when complete, so a process killed mid-write leaves no partial file at a dataset
    path (the build deletes ``PARTIAL_DIR`` before the dataset is swapped in).
    """
    return _write_split_files(
        session.session_id,
        output_dir,
        {split: session.split_indices(split) for split in SPLITS},
        session.trial_columns,
        trial_features(modalities),
        trial_file,
    )


def write_session_windows(
    windows: SessionWindows,
    output_dir: str | os.PathLike,
    modalities: Sequence[dict[str, Any]] = DATASET_MODALITIES,
) -> dict[str, dict[str, Any]]:
    """Write a session's continuous windows, one Parquet file per non-empty split, like
    :func:`write_session_trials` (same atomic renames); returns their file records."""
    return _write_split_files(
        windows.session_id,
        output_dir,
        {split: windows.split_indices(split) for split in SPLITS},
        windows.window_columns,
        window_features(modalities),
        window_file,
    )


def _write_split_files(
    session_id: str,
    output_dir: str | os.PathLike,
    split_rows: dict[str, Any],
    columns: Callable[[Any], dict[str, Any]],
    features: Any,
    relative_path: Callable[[str, str], str],
) -> dict[str, dict[str, Any]]:
    """The split files of one session's rows: ``columns(rows)`` as a table of ``features``,
    staged under ``PARTIAL_DIR`` and renamed to ``relative_path(session_id, split)``."""
    output_dir = Path(output_dir)
    partial = output_dir / PARTIAL_DIR / f"{session_id}-{uuid.uuid4().hex[:8]}"
    partial.mkdir(parents=True)
    written, staged = {}, {}
    try:
        for split, rows in split_rows.items():
            if len(rows) == 0:
                continue
            relative = relative_path(session_id, split)
            table = trials_table(columns(rows), features)
            staged[relative] = partial / f"{split}.parquet"
            pq.write_table(table, staged[relative], row_group_size=PARQUET_ROW_GROUP_SIZE)
            written[relative] = file_record(staged[relative], len(rows))
        for relative, path in staged.items():
            (output_dir / relative).parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, output_dir / relative)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return written


def session_content_hash(files: dict[str, dict[str, Any]]) -> str:
    """SHA-256 over a session's ``{relative path: file record}`` (paths and file hashes): equal
    for two builds exactly when they wrote the same files with the same bytes."""
    digest = hashlib.sha256()
    for relative in sorted(files):
        digest.update(f"{relative}\0{files[relative]['sha256']}\n".encode())
    return digest.hexdigest()


def _write_table(table: Any, output_dir: Path, relative: str) -> dict[str, Any]:
    """Write one Arrow table as Parquet; returns its file record."""
    path = output_dir / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return file_record(path, table.num_rows)


# --------------------------------------------------------------------------------------------
# ONE and sessions
# --------------------------------------------------------------------------------------------


def _make_one(source: OneSource, online: bool) -> Any:
    if callable(source):
        return source()
    from .ibl import make_one

    return make_one(source, online=online)


def _describe_source(source: OneSource, online: bool) -> str:
    if callable(source):
        name = getattr(source, "__qualname__", None) or repr(source)
        return f"ONE instance from factory {name}"
    mode = "public IBL server (online ONE)" if online else "local ONE cache (offline)"
    return f"{mode}, cache directory {os.fspath(source)}"


def _missing_session_ids(one: Any, eids: Sequence[str]) -> list[str]:
    """The requested ids that the ONE instance does not know."""
    remote = getattr(one, "alyx", None) is not None and not getattr(one, "offline", True)
    if not remote:
        known = {str(eid) for eid in one.search()}
        return [eid for eid in eids if str(eid) not in known]
    missing = []
    for eid in eids:
        try:
            one.alyx.rest("sessions", "read", id=str(eid))
        except Exception as error:  # requests.HTTPError 404 or alyx-specific not-found errors
            if "404" in str(error) or "not found" in str(error).lower():
                missing.append(eid)
            else:
                raise
    return missing


def _skip_reason(error: BaseException) -> str:
    if isinstance(error, EmptySessionError):
        return error.reason
    if isinstance(error, MissingDataError):
        return "missing_data"
    return "invalid_data"


def process_session(
    source: OneSource,
    eid: str,
    output_dir: str | os.PathLike,
    config: PreprocessingConfig,
    online: bool = False,
    revision: str | None = None,
    one: Any = None,
    windows: WindowConfig | None = None,
) -> dict[str, Any]:
    """Load, preprocess and write one session's trials (and its continuous ``windows`` when
    given); returns its build-report entry.

    Missing or inconsistent data give a ``"skipped"`` entry; a session id unknown to ONE, a
    corrupted file or a window that does not fit the recording raises. The entry of a built
    session carries its neurons table, sessions row and file records under the private keys
    ``_neurons`` / ``_session`` / ``_files`` (moved out of the entry before the report is
    written).
    """
    from .ibl import load_session

    if one is None:
        one = _make_one(source, online)
    try:
        raw = load_session(one, eid, revision=revision)
        session = preprocess_session(raw, config)
    except (SessionNotFoundError, CorruptedFileError):
        raise
    except (MissingDataError, ValueError) as error:
        entry: dict[str, Any] = {
            "session_id": str(eid),
            "status": "skipped",
            "reason": _skip_reason(error),
            "message": f"{type(error).__name__}: {error}",
        }
        if isinstance(error, EmptySessionError):
            entry["exclusion"] = error.report.to_dict()
        return entry
    session_windows = (
        None if windows is None else make_session_windows(raw, session, windows, DATASET_MODALITIES)
    )
    written = write_session_trials(session, output_dir)
    windows_entry = {}
    if session_windows is not None:
        windows_entry = {"windows": session_windows.summary}
        written.update(write_session_windows(session_windows, output_dir))
    return {
        "session_id": session.session_id,
        "status": "ok",
        "counts": {
            "n_neurons": session.n_neurons,
            "n_trials": session.n_trials,
            **{split: len(session.split_indices(split)) for split in SPLITS},
        },
        "exclusion": session.report.to_dict(),
        # behaviours kept with missing entries (masked, not dropped): {name: fraction missing}
        "missing_modalities": session.missing_fractions(),
        # the pose source of the paw speeds
        "pose": raw.metadata.get("pose", {}),
        # probes left out because they have no spike sorting (listed, never silently dropped)
        "probes_without_spike_sorting": list(raw.metadata.get("probes_without_spike_sorting", [])),
        **windows_entry,
        "files": list(written),
        "content_sha256": session_content_hash(written),
        "_files": written,
        "_neurons": session.neurons,
        "_session": session.session,
    }


@dataclass
class SessionTask:
    """The picklable per-session task an engine runs: :func:`process_session` with the
    build's fixed arguments. ``one`` (a ONE instance) is only set for in-process runs."""

    source: OneSource
    output_dir: Path
    config: PreprocessingConfig
    online: bool = False
    revision: str | None = None
    one: Any = None
    windows: WindowConfig | None = None

    def __call__(self, eid: str) -> dict[str, Any]:
        """Build one session; returns its build-report entry."""
        return process_session(
            self.source,
            eid,
            self.output_dir,
            self.config,
            self.online,
            self.revision,
            self.one,
            self.windows,
        )


# --------------------------------------------------------------------------------------------
# Reusing the sessions of the dataset being replaced
# --------------------------------------------------------------------------------------------


def _link_or_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _reusable_report(output_dir: Path, report: BuildReport) -> dict[str, Any] | None:
    """The build report of the dataset at ``output_dir`` when its sessions may be reused: same
    preprocessing, revision, modalities and continuous windows as this build; else ``None``."""
    if not is_neds_dataset(output_dir):
        return None
    old = json.loads((output_dir / BUILD_REPORT_FILE).read_text())
    same = (
        old.get("preprocessing") == report.config.to_dict()
        and old.get("revision") == report.revision
        and old.get("modalities") == report.modalities
        and old.get("windows") == report.windows
    )
    return old if same else None


def _reuse_sessions(
    output_dir: Path, staging: Path, report: BuildReport, eids: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """Entries of the requested sessions built in the dataset being replaced whose files still
    have their recorded SHA-256; their files are linked (or copied) into ``staging`` and
    their neurons and sessions rows read back, so the entry looks like a fresh build's."""
    old = _reusable_report(output_dir, report)
    if old is None:
        return {}
    old_entries = {entry["session_id"]: entry for entry in old.get("sessions", [])}
    candidates = [eid for eid in eids if old_entries.get(eid, {}).get("status") == "ok"]
    if not candidates:
        return {}
    neurons = pd.read_parquet(output_dir / NEURONS_FILE)
    session_rows = {
        row["session_id"]: row for row in pq.read_table(output_dir / SESSIONS_FILE).to_pylist()
    }
    reused = {}
    for eid in candidates:
        entry = dict(old_entries[eid])
        records = {name: old["files"].get(name) for name in entry.get("files", [])}
        intact = eid in session_rows and all(
            record is not None
            and (output_dir / name).is_file()
            and file_record(output_dir / name, record["rows"]) == record
            for name, record in records.items()
        )
        if not intact:
            continue  # rebuilt: a file is missing or changed since it was recorded
        for name in records:
            _link_or_copy(output_dir / name, staging / name)
        entry.update(
            content_sha256=session_content_hash(records),
            reused=True,
            _files=records,
            _neurons=neurons[neurons["session_id"] == eid].reset_index(drop=True),
            _session=session_rows[eid],
        )
        reused[eid] = entry
    return reused


def _process_sessions(
    engine: SessionEngine,
    task: SessionTask,
    eids: Sequence[str],
    reused: dict[str, dict[str, Any]],
    progress: bool,
) -> dict[str, dict[str, Any]]:
    """Run ``task`` on the engine for every id not in ``reused``; then remove the partial
    files of workers that died (their sessions were retried or the build failed)."""
    todo = [eid for eid in eids if eid not in reused]
    try:
        results = engine.run(task, todo, progress=progress) if todo else {}
    finally:
        shutil.rmtree(task.output_dir / PARTIAL_DIR, ignore_errors=True)
    return {**reused, **results}


# --------------------------------------------------------------------------------------------
# The output folder
# --------------------------------------------------------------------------------------------


def is_neds_dataset(path: str | os.PathLike) -> bool:
    """Whether ``path`` holds a dataset written by :func:`build_dataset` (its build report)."""
    report = Path(path) / BUILD_REPORT_FILE
    try:
        content = json.loads(report.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(content, dict) and {"sessions", "preprocessing"} <= set(content)


def _check_output_dir(output_dir: Path, overwrite: bool, force_non_dataset: bool) -> None:
    """Refuse to replace a dataset without ``overwrite`` and any other non-empty folder
    without ``force_non_dataset`` (the whole folder is replaced by the new dataset)."""
    if not output_dir.exists():
        return
    if not output_dir.is_dir():
        raise FileExistsError(f"output {output_dir} exists and is not a folder")
    if is_neds_dataset(output_dir):
        if not overwrite:
            raise FileExistsError(
                f"{output_dir} already holds a neds_hf dataset; pass --overwrite "
                "(overwrite=True) to replace it (the old one is kept until the new one is "
                "complete)"
            )
        return
    content = sorted(p.name for p in output_dir.iterdir())
    if content and not force_non_dataset:
        shown = ", ".join(content[:5]) + (", ..." if len(content) > 5 else "")
        raise FileExistsError(
            f"{output_dir} is not empty and is not a neds_hf dataset (no {BUILD_REPORT_FILE}; "
            f"it holds {shown}); building there would delete its content. Choose another "
            "--output, or pass --force-overwrite-non-dataset (force_overwrite_non_dataset="
            "True) to replace the whole folder"
        )


def _validated_eids(eids: Sequence[str]) -> list[str]:
    """Session ids as strings; refuses an empty list, duplicates and reserved config names."""
    eids = [str(eid) for eid in eids]
    if not eids:
        raise ValueError("no session ids given")
    duplicates = sorted({eid for eid in eids if eids.count(eid) > 1})
    if duplicates:
        raise ValueError(f"session ids given more than once: {duplicates}")
    reserved = [eid for eid in eids if eid in RESERVED_CONFIG_NAMES]
    if reserved:
        raise ValueError(
            f"session ids {reserved} clash with the config names {RESERVED_CONFIG_NAMES}"
        )
    return eids


def _write_dataset(
    staging: Path,
    report: BuildReport,
    results: dict[str, dict[str, Any]],
    eids: Sequence[str],
) -> None:
    """Fill the report from the session results and write the tables, card and report."""
    neurons, session_rows = [], []
    for eid in eids:
        entry = results[eid]
        if entry["status"] == "ok":
            neurons.append(entry.pop("_neurons"))
            session_rows.append(entry.pop("_session"))
            report.files.update(entry.pop("_files"))
        report.sessions.append(entry)
    if not session_rows:
        details = "; ".join(
            f"{s['session_id']}: {s['reason']} ({s.get('message', '')})" for s in report.sessions
        )
        raise RuntimeError(f"no session could be built: {details}")
    report.files[NEURONS_FILE] = _write_table(
        neurons_table(pd.concat(neurons, ignore_index=True)), staging, NEURONS_FILE
    )
    report.files[SESSIONS_FILE] = _write_table(sessions_table(session_rows), staging, SESSIONS_FILE)
    (staging / BUILD_REPORT_FILE).write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    splits = [s for s, fraction in zip(SPLITS, report.config.split_fractions) if fraction > 0]
    make_dataset_card(report, session_rows, splits).save(staging / "README.md")


def build_dataset(
    one_factory_or_cache_dir: OneSource,
    eids: Sequence[str],
    output_dir: str | os.PathLike,
    config: PreprocessingConfig | None = None,
    num_proc: int = 1,
    online: bool = False,
    revision: str | None = None,
    progress: bool = True,
    overwrite: bool = False,
    force_overwrite_non_dataset: bool = False,
    engine: str | SessionEngine = "local",
    rebuild_sessions: bool = False,
    windows: WindowConfig | None = None,
) -> BuildReport:
    """Build the Parquet dataset, its card and ``build_report.json`` for the given sessions.

    ``one_factory_or_cache_dir`` is a ONE cache directory (opened with
    :func:`neds_hf.data.ibl.make_one`, online or not) or a zero-argument callable returning a
    ONE instance (picklable, e.g. a module-level function, when sessions run in other
    processes). Every id is checked first: an unknown one raises
    :class:`neds_hf.data.ibl.SessionNotFoundError` before any work. Sessions run on
    ``engine``: ``"local"`` (``num_proc`` worker processes), ``"ray"`` (one Ray task per
    session; ``num_proc`` CPUs for a local Ray instance) or a
    :class:`~neds_hf.data.engines.SessionEngine`; each worker opens its own ONE. Sessions with
    missing or invalid data, or left with no trial or neuron, are skipped and reported; a
    corrupted file aborts the build with the loader's error naming the file. See the module
    docstring for what happens to an existing output (atomic swap, lock, ``overwrite``,
    reused sessions unless ``rebuild_sessions``). ``windows`` adds continuous windows (their
    length and stride must be whole numbers of ``config.bin_size`` bins, checked first).
    """
    config = config or PreprocessingConfig()
    windows_description = None if windows is None else windows.to_dict(config.bin_size)
    eids = _validated_eids(eids)
    output_dir = Path(output_dir)
    if isinstance(engine, str):
        engine = make_engine(engine, num_proc=num_proc)
    one = _make_one(one_factory_or_cache_dir, online)
    source = _describe_source(one_factory_or_cache_dir, online)
    missing = _missing_session_ids(one, eids)
    if missing:
        raise SessionNotFoundError(
            missing[0], f"not in the {source}; unknown ids: " + ", ".join(missing)
        )
    with OutputLock(output_dir, "prepare-data"):
        _check_output_dir(output_dir, overwrite, force_overwrite_non_dataset)
        report = BuildReport(
            output_dir=os.fspath(output_dir),
            config=config,
            source=source,
            revision=revision,
            revision_last_before=os.environ.get("ONE_REVISION_LAST_BEFORE"),
            created=pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds"),
            package_versions=package_versions(),
            windows=windows_description,
        )
        if windows is not None:  # windows hold missing behaviour entries
            report.modalities = window_modalities(DATASET_MODALITIES)
        with atomic_directory(output_dir) as staging:
            reused = {} if rebuild_sessions else _reuse_sessions(output_dir, staging, report, eids)
            task = SessionTask(
                one_factory_or_cache_dir,
                Path(staging),
                config,
                online,
                revision,
                one=one if engine.runs_in_process else None,
                windows=windows,
            )
            results = _process_sessions(engine, task, eids, reused, progress)
            _write_dataset(staging, report, results, eids)
    return report

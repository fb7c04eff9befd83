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
  folder that is not a neds_hf dataset only with ``force_overwrite_non_dataset``.

The report records, besides every session's outcome, the modality table the dataset declares
and each file's row count, size and SHA-256, which :func:`neds_hf.data.load.verify_dataset`
checks before training and evaluation read the dataset.
"""

from __future__ import annotations

import concurrent.futures
import json
import multiprocessing
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from ..atomic import atomic_directory
from ..locking import OutputLock
from .card import make_dataset_card
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
)

__all__ = [
    "BuildReport",
    "OneSource",
    "build_dataset",
    "is_neds_dataset",
    "process_session",
    "write_session_trials",
]

OneSource = str | os.PathLike | Callable[[], Any]


@dataclass
class BuildReport:
    """Outcome of :func:`build_dataset`: one entry per requested session, in request order.

    Each entry has ``session_id``, ``status`` (``"ok"`` or ``"skipped"``) and, when skipped,
    ``reason`` (``"missing_data"``, ``"invalid_data"``, ``"no_trials"``, ``"no_neurons"`` or
    ``"too_few_trials"``) and ``message``; ``counts`` (trials per split, neurons) and ``files``
    when ok, and ``exclusion`` (the :class:`~neds_hf.data.preprocess.ExclusionReport`) when
    known. ``modalities`` is the modality table the dataset declares; ``files`` maps every
    Parquet file to its ``rows``, ``bytes`` and ``sha256``.
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
        return {
            "output_dir": self.output_dir,
            "source": self.source,
            "revision": self.revision,
            "revision_last_before": self.revision_last_before,
            "created": self.created,
            "preprocessing": self.config.to_dict(),
            "package_versions": self.package_versions,
            "modalities": self.modalities,
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
    file record}`` (rows, bytes, sha256). Columns follow the declared ``modalities``."""
    features = trial_features(modalities)
    written = {}
    for split in SPLITS:
        rows = session.split_indices(split)
        if len(rows) == 0:
            continue
        relative = trial_file(session.session_id, split)
        path = Path(output_dir) / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        table = trials_table(session.trial_columns(rows), features)
        pq.write_table(table, path, row_group_size=PARQUET_ROW_GROUP_SIZE)
        written[relative] = file_record(path, len(rows))
    return written


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
) -> dict[str, Any]:
    """Load, preprocess and write one session's trials; returns its build-report entry.

    Missing or inconsistent data give a ``"skipped"`` entry; a session id unknown to ONE or a
    corrupted file raises. The entry of a built session carries its neurons table, sessions
    row and file records under the private keys ``_neurons`` / ``_session`` / ``_files``
    (moved out of the entry before the report is written).
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
    written = write_session_trials(session, output_dir)
    return {
        "session_id": session.session_id,
        "status": "ok",
        "counts": {
            "n_neurons": session.n_neurons,
            "n_trials": session.n_trials,
            **{split: len(session.split_indices(split)) for split in SPLITS},
        },
        "exclusion": session.report.to_dict(),
        # probes left out because they have no spike sorting (listed, never silently dropped)
        "probes_without_spike_sorting": list(raw.metadata.get("probes_without_spike_sorting", [])),
        "files": list(written),
        "_files": written,
        "_neurons": session.neurons,
        "_session": session.session,
    }


# The sessions run in a `concurrent.futures` process pool rather than `datasets.Dataset.map(
# num_proc=...)`: each task is a whole session whose results (files on disk, a neurons
# DataFrame, a nested sessions row) are not dataset rows, `map` would cache its output in the
# datasets cache keyed by the function (a rebuild could silently reuse an old load), and the
# build must stop at the first corrupted file and cancel the sessions not yet started.
def _process_sessions(
    source: OneSource,
    eids: Sequence[str],
    output_dir: Path,
    config: PreprocessingConfig,
    options: dict[str, Any],
) -> dict[str, dict[str, Any]]:
    """Run :func:`process_session` on every id, in this process or ``num_proc`` workers."""
    from tqdm.auto import tqdm

    online, revision = options["online"], options["revision"]
    results: dict[str, dict[str, Any]] = {}
    bar = tqdm(total=len(eids), desc="sessions", unit="session", disable=not options["progress"])
    try:
        if options["num_proc"] <= 1:
            for eid in eids:
                results[eid] = process_session(
                    source, eid, output_dir, config, online, revision, one=options["one"]
                )
                bar.update()
            return results
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(
            options["num_proc"], mp_context=context
        ) as pool:
            futures = {
                pool.submit(process_session, source, eid, output_dir, config, online, revision): eid
                for eid in eids
            }
            try:
                for future in concurrent.futures.as_completed(futures):
                    results[futures[future]] = future.result()
                    bar.update()
            except BaseException:
                for pending in futures:
                    pending.cancel()
                raise
        return results
    finally:
        bar.close()


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
) -> BuildReport:
    """Build the Parquet dataset, its card and ``build_report.json`` for the given sessions.

    ``one_factory_or_cache_dir`` is a ONE cache directory (opened with
    :func:`neds_hf.data.ibl.make_one`, online or not) or a zero-argument callable returning a
    ONE instance (picklable, e.g. a module-level function, when ``num_proc > 1``). Every id is
    checked first: an unknown one raises :class:`neds_hf.data.ibl.SessionNotFoundError` before
    any work. Sessions run in ``num_proc`` worker processes, each with its own ONE. Sessions
    with missing or invalid data, or left with no trial or neuron, are skipped and reported; a
    corrupted file aborts the build with the loader's error naming the file. See the module
    docstring for what happens to an existing output (atomic swap, lock, ``overwrite``).
    """
    config = config or PreprocessingConfig()
    eids = _validated_eids(eids)
    output_dir = Path(output_dir)
    one = _make_one(one_factory_or_cache_dir, online)
    source = _describe_source(one_factory_or_cache_dir, online)
    missing = _missing_session_ids(one, eids)
    if missing:
        raise SessionNotFoundError(
            missing[0], f"not in the {source}; unknown ids: " + ", ".join(missing)
        )
    options = {
        "online": online,
        "revision": revision,
        "num_proc": num_proc,
        "progress": progress,
        "one": one,
    }
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
        )
        with atomic_directory(output_dir) as staging:
            results = _process_sessions(one_factory_or_cache_dir, eids, staging, config, options)
            _write_dataset(staging, report, results, eids)
    return report

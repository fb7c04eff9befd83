"""The NEDS IBL dataset on disk: schema, Parquet writing, dataset card, building and loading.

Layout written by :func:`build_dataset` (``<out>`` is the output directory)::

    <out>/README.md                                   dataset card (YAML ``configs`` + provenance)
    <out>/build_report.json                           every session: ok / skipped + reason + counts
    <out>/data/trials/<session_id>/train-00000-of-00001.parquet
    <out>/data/trials/<session_id>/validation-00000-of-00001.parquet
    <out>/data/trials/<session_id>/test-00000-of-00001.parquet
    <out>/data/neurons/neurons-00000-of-00001.parquet
    <out>/data/sessions/sessions-00000-of-00001.parquet

Configs (all loadable with ``datasets.load_dataset(<out or repo>, name)``): ``all`` (default;
trials of every session, splits train / validation / test), one config per session id (that
session's trials, same splits), ``neurons`` and ``sessions`` (one ``train`` split each).
Spike counts are ``List(List(int32))`` neuron-major ``[N, T]`` so that sessions with different
neuron counts share the ``all`` config. The features are stored in each Parquet file's Arrow
schema metadata; the card carries no ``dataset_info`` block (a partial one would override them).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import multiprocessing
import os
import shutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from datasets import DatasetDict, Features, List, Value
from huggingface_hub import DatasetCard, DatasetCardData

from .errors import CorruptedFileError, MissingDataError, SessionNotFoundError
from .preprocess import (
    CONTINUOUS_BEHAVIORS,
    EXCLUSION_REASONS,
    NEURON_COLUMNS,
    RECORDED_PACKAGES,
    SPLITS,
    EmptySessionError,
    PreprocessedSession,
    PreprocessingConfig,
    package_versions,
    preprocess_session,
)

#: Name of the default config holding the trials of every session.
ALL_CONFIG = "all"
#: Names of the table configs.
NEURONS_CONFIG = "neurons"
SESSIONS_CONFIG = "sessions"
RESERVED_CONFIG_NAMES = (ALL_CONFIG, NEURONS_CONFIG, SESSIONS_CONFIG)

TRIAL_FEATURES = Features(
    {
        "session_id": Value("string"),
        "trial_id": Value("int64"),  # row in the ALF trials table
        "spikes": List(List(Value("int32"))),  # [N, T] counts, neuron-major
        "wheel_speed": List(Value("float32")),  # [T] rad/s
        "whisker_motion_energy": List(Value("float32")),  # [T]
        "choice": Value("int64"),  # 0 = right (ALF -1), 1 = left (ALF +1)
        "block": Value("int64"),  # 0/1/2 = probabilityLeft 0.2/0.5/0.8
        "reward": Value("int64"),  # 1 = feedbackType +1
        "contrast": Value("float32"),  # contrastRight - contrastLeft
        "stim_on_time": Value("float64"),  # s, session clock
    }
)

NEURON_FEATURES = Features(
    {
        "session_id": Value("string"),
        "neuron_index": Value("int64"),  # row in the trials' spikes matrix
        "probe": Value("string"),
        "cluster_id": Value("int64"),  # row in that probe's ALF clusters tables
        "cluster_uuid": Value("string"),
        "region_allen": Value("string"),
        "region_beryl": Value("string"),
        "region_cosmos": Value("string"),
        "depth_um": Value("float64"),
        "x_um": Value("float64"),
        "y_um": Value("float64"),
        "z_um": Value("float64"),
        "firing_rate_hz": Value("float64"),  # over the kept trials' windows
        "qc_label": Value("float64"),  # fraction of IBL QC tests passed (1 = good unit)
    }
)
if tuple(NEURON_FEATURES) != NEURON_COLUMNS:
    raise RuntimeError("NEURON_FEATURES and preprocess.NEURON_COLUMNS disagree")


def _preprocessing_features() -> dict[str, Any]:
    """Struct features of :class:`PreprocessingConfig`, derived from its default values."""
    features: dict[str, Any] = {}
    for name, value in PreprocessingConfig().to_dict().items():
        if isinstance(value, bool):
            features[name] = Value("bool")
        elif isinstance(value, int):
            features[name] = Value("int64")
        elif isinstance(value, float):
            features[name] = Value("float64")
        elif isinstance(value, str):
            features[name] = Value("string")
        elif isinstance(value, list):
            features[name] = List(Value("float64"))
        else:
            raise TypeError(f"no feature type for preprocessing parameter {name}={value!r}")
    return features


SESSION_FEATURES = Features(
    {
        "session_id": Value("string"),
        "subject": Value("string"),
        "lab": Value("string"),
        "date": Value("string"),  # ISO date
        "probes": List(Value("string")),
        "n_neurons": Value("int64"),
        "n_clusters": Value("int64"),  # clusters before the neuron filter
        "n_trials": Value("int64"),  # kept trials, all splits
        "n_trials_train": Value("int64"),
        "n_trials_validation": Value("int64"),
        "n_trials_test": Value("int64"),
        "n_trials_alf": Value("int64"),  # rows of the ALF trials table
        "excluded_trials": {reason: Value("int64") for reason in EXCLUSION_REASONS},
        "normalization": List(
            {
                "modality": Value("string"),
                "mean": Value("float64"),
                "std": Value("float64"),
                "min": Value("float64"),
                "max": Value("float64"),
            }
        ),  # per continuous behaviour, train split only
        "motion_energy_camera": Value("string"),
        "one_revision": Value("string"),
        "preprocessing": _preprocessing_features(),
        "package_versions": {key: Value("string") for key in RECORDED_PACKAGES},
    }
)

TRIALS_DIR = "data/trials"
NEURONS_FILE = "data/neurons/neurons-00000-of-00001.parquet"
SESSIONS_FILE = "data/sessions/sessions-00000-of-00001.parquet"
BUILD_REPORT_FILE = "build_report.json"
PARQUET_ROW_GROUP_SIZE = 64

CITATIONS = """\
```bibtex
@article{zhang2025neds,
  title   = {Neural Encoding and Decoding at Scale},
  author  = {Zhang, Yizi and Wang, Yanchen and Azabou, Mehdi and others},
  journal = {arXiv preprint arXiv:2504.08201},
  year    = {2025}
}
@article{zhang2024mtm,
  title   = {Towards a "universal translator" for neural dynamics at single-cell,
             single-spike resolution},
  author  = {Zhang, Yizi and Wang, Yanchen and Jim{\\'e}nez-Beneto, Donato and others},
  journal = {arXiv preprint arXiv:2407.14668},
  year    = {2024}
}
@article{ibl2023repeatedsite,
  title   = {Reproducibility of in vivo electrophysiological measurements in mice},
  author  = {{International Brain Laboratory} and others},
  journal = {bioRxiv},
  doi     = {10.1101/2022.05.09.491042},
  year    = {2022}
}
@article{ibl2023brainwidemap,
  title   = {A Brain-Wide Map of Neural Activity during Complex Behaviour},
  author  = {{International Brain Laboratory} and others},
  journal = {bioRxiv},
  doi     = {10.1101/2023.07.04.547681},
  year    = {2023}
}
```"""


# --------------------------------------------------------------------------------------------
# Arrow / Parquet writing
# --------------------------------------------------------------------------------------------


def _list_array(values: np.ndarray, inner_length: int, arrow_type: pa.DataType) -> pa.Array:
    """Arrow list array of consecutive ``inner_length`` chunks of the flat ``values``."""
    if values.size >= np.iinfo(np.int32).max:
        raise ValueError(
            f"{values.size} values exceed the 32-bit offsets of one Parquet file; split the session"
        )
    n_lists = values.size // inner_length if inner_length else 0
    offsets = np.arange(n_lists + 1, dtype=np.int32) * np.int32(inner_length)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, type=arrow_type))


def trials_table(session: PreprocessedSession, rows: np.ndarray) -> pa.Table:
    """Arrow table (schema :data:`TRIAL_FEATURES`) of the given trial rows of a session."""
    columns = session.trial_columns(rows)
    n_rows, n_neurons, n_bins = columns["spikes"].shape  # (K, N, T)
    spike_values = np.ascontiguousarray(columns["spikes"], dtype=np.int32).ravel()  # (K*N*T,)
    neuron_rows = _list_array(spike_values, n_bins, pa.int32())  # K*N lists of T
    spikes = pa.ListArray.from_arrays(
        pa.array(np.arange(n_rows + 1, dtype=np.int32) * n_neurons), neuron_rows
    )
    arrays = {
        "session_id": pa.array(columns["session_id"].tolist(), type=pa.string()),
        "trial_id": pa.array(columns["trial_id"], type=pa.int64()),
        "spikes": spikes,
        "wheel_speed": _list_array(
            np.ascontiguousarray(columns["wheel_speed"], np.float32).ravel(), n_bins, pa.float32()
        ),
        "whisker_motion_energy": _list_array(
            np.ascontiguousarray(columns["whisker_motion_energy"], np.float32).ravel(),
            n_bins,
            pa.float32(),
        ),
        "choice": pa.array(columns["choice"], type=pa.int64()),
        "block": pa.array(columns["block"], type=pa.int64()),
        "reward": pa.array(columns["reward"], type=pa.int64()),
        "contrast": pa.array(columns["contrast"], type=pa.float32()),
        "stim_on_time": pa.array(columns["stim_on_time"], type=pa.float64()),
    }
    schema = TRIAL_FEATURES.arrow_schema
    return pa.Table.from_arrays([arrays[name] for name in schema.names], schema=schema)


def write_session_trials(session: PreprocessedSession, output_dir: str | os.PathLike) -> list[str]:
    """Write one Parquet file per non-empty split of a session; returns the relative paths."""
    written = []
    for split in SPLITS:
        rows = session.split_indices(split)
        if len(rows) == 0:
            continue
        relative = f"{TRIALS_DIR}/{session.session_id}/{split}-00000-of-00001.parquet"
        path = Path(output_dir) / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(trials_table(session, rows), path, row_group_size=PARQUET_ROW_GROUP_SIZE)
        written.append(relative)
    return written


def _write_table(rows: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(rows, path)


def neurons_table(neurons: pd.DataFrame) -> pa.Table:
    """Arrow table (schema :data:`NEURON_FEATURES`) of a neurons DataFrame."""
    return pa.Table.from_pandas(
        neurons[list(NEURON_FEATURES)], schema=NEURON_FEATURES.arrow_schema, preserve_index=False
    )


def sessions_table(session_rows: Sequence[dict[str, Any]]) -> pa.Table:
    """Arrow table (schema :data:`SESSION_FEATURES`) of sessions-table rows."""
    for row in session_rows:
        if set(row) != set(SESSION_FEATURES):
            raise ValueError(
                f"session {row.get('session_id')}: sessions row has keys {sorted(row)}, "
                f"expected {sorted(SESSION_FEATURES)}"
            )
    return pa.Table.from_pylist(list(session_rows), schema=SESSION_FEATURES.arrow_schema)


# --------------------------------------------------------------------------------------------
# Dataset card
# --------------------------------------------------------------------------------------------


def _split_paths(prefix: str, splits: Iterable[str]) -> list[dict[str, str]]:
    return [{"split": split, "path": f"{prefix}/{split}-*.parquet"} for split in splits]


def card_configs(session_ids: Sequence[str], splits: Sequence[str] = SPLITS) -> list[dict]:
    """The YAML ``configs`` entries: ``all`` (default), one per session, neurons, sessions."""
    configs = [
        {
            "config_name": ALL_CONFIG,
            "default": True,
            "data_files": _split_paths(f"{TRIALS_DIR}/*", splits),
        }
    ]
    for session_id in session_ids:
        configs.append(
            {
                "config_name": session_id,
                "data_files": _split_paths(f"{TRIALS_DIR}/{session_id}", splits),
            }
        )
    configs.append(
        {"config_name": NEURONS_CONFIG, "data_files": [{"split": "train", "path": NEURONS_FILE}]}
    )
    configs.append(
        {"config_name": SESSIONS_CONFIG, "data_files": [{"split": "train", "path": SESSIONS_FILE}]}
    )
    return configs


def make_dataset_card(
    report: BuildReport, session_rows: Sequence[dict[str, Any]], splits: Sequence[str] = SPLITS
) -> DatasetCard:
    """Dataset card: YAML configs plus provenance (sessions, ONE origin, parameters, citations)."""
    built = [s["session_id"] for s in report.sessions if s["status"] == "ok"]
    card_data = DatasetCardData(
        license="cc-by-4.0",
        pretty_name="NEDS IBL trials (binned spikes and behaviour)",
        tags=["neuroscience", "neuropixels", "international-brain-laboratory", "spikes"],
        size_categories=_size_category(sum(row["n_trials"] for row in session_rows)),
        configs=card_configs(built, splits),
    )
    n_neurons = sum(row["n_neurons"] for row in session_rows)
    n_trials = {split: sum(row[f"n_trials_{split}"] for row in session_rows) for split in SPLITS}
    skipped = [s for s in report.sessions if s["status"] != "ok"]
    lines = [
        "# NEDS IBL trials",
        "",
        "Trial-aligned, binned Neuropixels spiking activity and behaviour from International "
        "Brain Laboratory (IBL) sessions, prepared with `neds_hf` for NEDS (Neural Encoding and "
        "Decoding at Scale) and MtM. One row per trial; spike counts are neuron-major `[N, T]` "
        f"(N neurons of the session, T = {report.config.n_bins} bins of "
        f"{report.config.bin_size * 1000:g} ms from {report.config.window[0]:g} s to "
        f"{report.config.window[1]:g} s around `{report.config.align_event}`).",
        "",
        f"- sessions built: {len(built)}; skipped: {len(skipped)}",
        f"- neurons: {n_neurons}",
        "- trials: " + ", ".join(f"{split} {count}" for split, count in n_trials.items()),
        "",
        "## Usage",
        "",
        "```python",
        "from datasets import load_dataset",
        'trials = load_dataset("<this repo or folder>")            # config "all"',
        'one_session = load_dataset("<this repo or folder>", "<session_id>")',
        'neurons = load_dataset("<this repo or folder>", "neurons")["train"]',
        'sessions = load_dataset("<this repo or folder>", "sessions")["train"]',
        "```",
        "",
        "Behaviours are stored in physical units (wheel speed in rad/s, whisker motion energy "
        "in camera units); per-session normalisation constants (mean, std, min, max), computed "
        "on the train split only, are in the `sessions` config (`normalization`).",
        "",
        "## Schema",
        "",
        "trials: " + ", ".join(f"`{name}`" for name in TRIAL_FEATURES),
        "",
        "neurons: " + ", ".join(f"`{name}`" for name in NEURON_FEATURES),
        "",
        "sessions: " + ", ".join(f"`{name}`" for name in SESSION_FEATURES),
        "",
        "Conventions: `choice` 0 = right (ALF -1), 1 = left (ALF +1); `block` 0/1/2 = "
        "probabilityLeft 0.2/0.5/0.8; `reward` = 1 when `feedbackType == 1`; `contrast` = "
        "`contrastRight - contrastLeft` (NaN side read as 0, positive = stimulus on the right); "
        "`trial_id` = row of the ALF trials table; `neuron_index` = row of `spikes`; "
        "`cluster_id` = row of that probe's ALF clusters tables.",
        "",
        "## Provenance",
        "",
        f"- data source: {report.source}",
        f"- ONE revision: {report.revision or 'default (latest) revision'}",
        f"- ONE_REVISION_LAST_BEFORE: {report.revision_last_before or 'not set'}",
        f"- built: {report.created}",
        "",
        "### Sessions",
        "",
        "| session_id | subject | lab | date | neurons | train | validation | test |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in session_rows:
        lines.append(
            f"| {row['session_id']} | {row['subject']} | {row['lab']} | {row['date']} | "
            f"{row['n_neurons']} | {row['n_trials_train']} | {row['n_trials_validation']} | "
            f"{row['n_trials_test']} |"
        )
    lines += ["", "### Skipped sessions", ""]
    if skipped:
        lines += ["| session_id | reason | detail |", "|---|---|---|"]
        for entry in skipped:
            detail = entry.get("message", "").replace("|", "\\|").replace("\n", " ")
            lines.append(f"| {entry['session_id']} | {entry['reason']} | {detail} |")
    else:
        lines.append("None.")
    partial = [
        s for s in report.sessions if s["status"] == "ok" and s.get("probes_without_spike_sorting")
    ]
    if partial:
        lines += ["", "### Probes left out (no spike sorting)", ""]
        lines += [
            f"- {s['session_id']}: {', '.join(s['probes_without_spike_sorting'])}" for s in partial
        ]
    lines += [
        "",
        "### Preprocessing parameters",
        "",
        "```json",
        json.dumps(report.config.to_dict(), indent=2),
        "```",
        "",
        "Trials are excluded when any of stimOn / choice / feedback / probabilityLeft / "
        "firstMovement / feedbackType is NaN, choice == 0, firstMovement - stimOn < min_rt or "
        "> max_rt, feedback - goCue > max_trial_duration, or when the trial window is not "
        "covered by the wheel / motion-energy recording (never extrapolated). Neurons are kept "
        "when their firing rate over the kept trials' windows exceeds min_firing_rate. Splits "
        "are 70/10/20 by trial, seeded by (split_seed, session id). Per-session exclusion "
        "counts are in `build_report.json` and the `sessions` config.",
        "",
        "### Package versions",
        "",
        "```json",
        json.dumps(report.package_versions, indent=2),
        "```",
        "",
        "## License",
        "",
        "IBL data are released under CC-BY-4.0 (https://creativecommons.org/licenses/by/4.0/); "
        "cite the IBL papers below when using them.",
        "",
        "## Citation",
        "",
        CITATIONS,
        "",
    ]
    content = f"---\n{card_data.to_yaml()}\n---\n\n" + "\n".join(lines)
    return DatasetCard(content)


def _size_category(n_rows: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K")):
        if n_rows < limit:
            return label
    return "100K<n<1M"


# --------------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------------


@dataclass
class BuildReport:
    """Outcome of :func:`build_dataset`: one entry per requested session, in request order.

    Each entry has ``session_id``, ``status`` (``"ok"`` or ``"skipped"``) and, when skipped,
    ``reason`` (``"missing_data"``, ``"invalid_data"``, ``"no_trials"``, ``"no_neurons"`` or
    ``"too_few_trials"``) and ``message``; ``counts`` (trials per split, neurons) when ok and
    ``exclusion`` (the :class:`~neds_hf.data.preprocess.ExclusionReport`) when known.
    """

    output_dir: str
    config: PreprocessingConfig
    source: str
    revision: str | None
    revision_last_before: str | None
    created: str
    package_versions: dict[str, str]
    sessions: list[dict[str, Any]] = field(default_factory=list)

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
            "n_sessions_ok": len(self.built_session_ids),
            "n_sessions_skipped": len(self.skipped),
            "sessions": self.sessions,
        }


OneSource = str | os.PathLike | Callable[[], Any]


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
    corrupted file raises. The entry of a built session carries its neurons table and sessions
    row under the private keys ``_neurons`` / ``_session`` (removed from the written report).
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
        "files": written,
        "_neurons": session.neurons,
        "_session": session.session,
    }


def _prepare_output_dir(output_dir: Path, overwrite: bool) -> None:
    owned = [output_dir / "data", output_dir / "README.md", output_dir / BUILD_REPORT_FILE]
    if output_dir.exists() and any(path.exists() for path in owned):
        if not overwrite:
            raise FileExistsError(
                f"{output_dir} already holds a dataset (data/, README.md or {BUILD_REPORT_FILE}); "
                "pass overwrite=True to replace it"
            )
        shutil.rmtree(output_dir / "data", ignore_errors=True)
        for path in owned[1:]:
            path.unlink(missing_ok=True)
    output_dir.mkdir(parents=True, exist_ok=True)


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
) -> BuildReport:
    """Build the Parquet dataset, its card and ``build_report.json`` for the given sessions.

    ``one_factory_or_cache_dir`` is a ONE cache directory (opened with
    :func:`neds_hf.data.ibl.make_one`, online or not) or a zero-argument callable returning a
    ONE instance (picklable, e.g. a module-level function, when ``num_proc > 1``). Every id is
    checked first: an unknown one raises :class:`neds_hf.data.ibl.SessionNotFoundError` before
    any work. Sessions run in ``num_proc`` worker processes, each with its own ONE. Sessions
    with missing or invalid data, or left with no trial or neuron, are skipped and reported; a
    corrupted file aborts the build with the loader's error naming the file.
    """
    from tqdm.auto import tqdm

    config = config or PreprocessingConfig()
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
    output_dir = Path(output_dir)

    one = _make_one(one_factory_or_cache_dir, online)
    missing = _missing_session_ids(one, eids)
    if missing:
        raise SessionNotFoundError(
            missing[0],
            f"not in the {_describe_source(one_factory_or_cache_dir, online)}; unknown ids: "
            + ", ".join(missing),
        )
    _prepare_output_dir(output_dir, overwrite)

    report = BuildReport(
        output_dir=os.fspath(output_dir),
        config=config,
        source=_describe_source(one_factory_or_cache_dir, online),
        revision=revision,
        revision_last_before=os.environ.get("ONE_REVISION_LAST_BEFORE"),
        created=pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds"),
        package_versions=package_versions(),
    )
    results: dict[str, dict[str, Any]] = {}
    bar = tqdm(total=len(eids), desc="sessions", unit="session", disable=not progress)
    try:
        if num_proc <= 1:
            for eid in eids:
                results[eid] = process_session(
                    one_factory_or_cache_dir, eid, output_dir, config, online, revision, one=one
                )
                bar.update()
        else:
            context = multiprocessing.get_context("spawn")
            with concurrent.futures.ProcessPoolExecutor(num_proc, mp_context=context) as pool:
                futures = {
                    pool.submit(
                        process_session,
                        one_factory_or_cache_dir,
                        eid,
                        output_dir,
                        config,
                        online,
                        revision,
                    ): eid
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
    finally:
        bar.close()

    neurons, session_rows = [], []
    for eid in eids:
        entry = results[eid]
        if entry["status"] == "ok":
            neurons.append(entry.pop("_neurons"))
            session_rows.append(entry.pop("_session"))
        report.sessions.append(entry)
    (output_dir / BUILD_REPORT_FILE).write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    if not session_rows:
        raise RuntimeError(
            f"no session could be built; see {output_dir / BUILD_REPORT_FILE}: {report.skipped}"
        )
    _write_table(neurons_table(pd.concat(neurons, ignore_index=True)), output_dir / NEURONS_FILE)
    _write_table(sessions_table(session_rows), output_dir / SESSIONS_FILE)
    splits = [split for split, fraction in zip(SPLITS, config.split_fractions) if fraction > 0]
    make_dataset_card(report, session_rows, splits).save(output_dir / "README.md")
    return report


def write_preprocessed_sessions(
    sessions: Sequence[PreprocessedSession],
    output_dir: str | os.PathLike,
    source: str = "preprocessed sessions given in memory",
    overwrite: bool = False,
) -> BuildReport:
    """Write already preprocessed sessions as a dataset (same layout and card as a build)."""
    if not sessions:
        raise ValueError("no sessions to write")
    config = sessions[0].config
    if any(session.config != config for session in sessions):
        raise ValueError("all sessions must share one PreprocessingConfig")
    output_dir = Path(output_dir)
    _prepare_output_dir(output_dir, overwrite)
    report = BuildReport(
        output_dir=os.fspath(output_dir),
        config=config,
        source=source,
        revision=None,
        revision_last_before=os.environ.get("ONE_REVISION_LAST_BEFORE"),
        created=pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds"),
        package_versions=package_versions(),
    )
    for session in sessions:
        files = write_session_trials(session, output_dir)
        report.sessions.append(
            {
                "session_id": session.session_id,
                "status": "ok",
                "counts": {
                    "n_neurons": session.n_neurons,
                    "n_trials": session.n_trials,
                    **{split: len(session.split_indices(split)) for split in SPLITS},
                },
                "exclusion": session.report.to_dict(),
                "files": files,
            }
        )
    (output_dir / BUILD_REPORT_FILE).write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    _write_table(
        neurons_table(pd.concat([s.neurons for s in sessions], ignore_index=True)),
        output_dir / NEURONS_FILE,
    )
    session_rows = [s.session for s in sessions]
    _write_table(sessions_table(session_rows), output_dir / SESSIONS_FILE)
    splits = [split for split, fraction in zip(SPLITS, config.split_fractions) if fraction > 0]
    make_dataset_card(report, session_rows, splits).save(output_dir / "README.md")
    return report


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def _load(path_or_repo: str | os.PathLike, name: str, **kwargs: Any) -> DatasetDict:
    import datasets

    path = os.fspath(path_or_repo)
    if os.path.isdir(path) and "cache_dir" not in kwargs:
        # datasets keys the cache of a local folder by its name and configs, not by its content:
        # two folders called "dataset" with the same sessions would share (stale) Arrow files
        root = os.environ.get("HF_DATASETS_CACHE") or datasets.config.HF_DATASETS_CACHE
        kwargs["cache_dir"] = os.path.join(root, "neds_hf", local_dataset_fingerprint(path))
    return datasets.load_dataset(path, name, **kwargs)


def local_dataset_fingerprint(path: str | os.PathLike) -> str:
    """A digest of a local dataset folder: its resolved path and its files' sizes and mtimes."""
    root = Path(path).resolve()
    digest = hashlib.sha256(str(root).encode())
    for file in sorted(root.rglob("*")):
        if file.is_file() and (file.suffix == ".parquet" or file.name == "README.md"):
            stat = file.stat()
            digest.update(f"{file.relative_to(root)}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def load_neds_dataset(
    path_or_repo: str | os.PathLike, sessions: Sequence[str] | None = None, **kwargs: Any
) -> DatasetDict:
    """Trials of all sessions (config ``all``) or of the given sessions, as a ``DatasetDict``.

    Selected sessions are loaded from their own configs and concatenated split by split, so
    only their files are read. ``kwargs`` go to ``datasets.load_dataset`` (e.g. ``cache_dir``).
    """
    import datasets

    if sessions is None:
        return _load(path_or_repo, ALL_CONFIG, **kwargs)
    sessions = [str(s) for s in sessions]
    if not sessions:
        raise ValueError("sessions is empty; pass None for every session")
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


def load_sessions(path_or_repo: str | os.PathLike, **kwargs: Any):
    """The sessions table (config ``sessions``) as a ``datasets.Dataset``."""
    return _load(path_or_repo, SESSIONS_CONFIG, **kwargs)["train"]


def load_neurons(
    path_or_repo: str | os.PathLike, sessions: Sequence[str] | None = None, **kwargs: Any
) -> pd.DataFrame:
    """The neurons table (config ``neurons``) as a DataFrame, optionally for some sessions only.

    Rows are sorted by (session order, ``neuron_index``); with ``sessions`` given, every
    session must be present.
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


def load_normalization(sessions_table: Any) -> dict[str, dict[str, dict[str, float]]]:
    """``{session_id: {modality: {"mean", "std", "min", "max"}}}`` from the sessions table.

    Accepts the ``sessions`` config as a ``datasets.Dataset`` / ``DatasetDict``, a DataFrame,
    a list of row dicts, or a dataset path / repo id (loaded with :func:`load_sessions`).
    """
    if isinstance(sessions_table, (str, os.PathLike)):
        sessions_table = load_sessions(sessions_table)
    if isinstance(sessions_table, DatasetDict):
        sessions_table = sessions_table["train"]
    if isinstance(sessions_table, pd.DataFrame):
        rows = sessions_table.to_dict("records")
    elif hasattr(sessions_table, "to_list"):
        rows = sessions_table.to_list()
    else:
        rows = list(sessions_table)
    normalization: dict[str, dict[str, dict[str, float]]] = {}
    for row in rows:
        entries = row["normalization"]
        per_modality = {}
        for entry in entries:
            per_modality[str(entry["modality"])] = {
                key: float(entry[key]) for key in ("mean", "std", "min", "max")
            }
        missing = [m for m in CONTINUOUS_BEHAVIORS if m not in per_modality]
        if missing:
            raise ValueError(
                f"session {row['session_id']}: no normalisation constants for {missing}"
            )
        normalization[str(row["session_id"])] = per_modality
    return normalization


# --------------------------------------------------------------------------------------------
# Publishing
# --------------------------------------------------------------------------------------------


def push_dataset_to_hub(
    local_dir: str | os.PathLike,
    repo_id: str,
    token: str | None = None,
    private: bool = False,
    commit_message: str = "Upload NEDS IBL dataset",
) -> str:
    """Upload a built dataset folder (Parquet, card, build report) to a Hub dataset repo.

    Creates the repo if needed (``exist_ok=True``) and uploads the folder in one commit;
    returns the commit URL. The folder must hold a ``README.md`` card and ``data/``.
    """
    from huggingface_hub import HfApi

    local_dir = Path(local_dir)
    for required in ("README.md", "data"):
        if not (local_dir / required).exists():
            raise FileNotFoundError(f"{local_dir / required} not found: build the dataset first")
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    commit = api.upload_folder(
        folder_path=os.fspath(local_dir),
        repo_id=repo_id,
        repo_type="dataset",
        commit_message=commit_message,
    )
    return str(getattr(commit, "commit_url", commit))

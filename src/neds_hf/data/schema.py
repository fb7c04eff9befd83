"""The schema of the NEDS dataset on disk: file layout, features of each table, Arrow tables.

Layout written by :func:`neds_hf.data.build.build_dataset` (``<out>`` is the output folder)::

    <out>/README.md                                   dataset card (YAML ``configs`` + provenance)
    <out>/build_report.json                           every session: ok / skipped + reason + counts,
                                                      the declared modalities, file row counts and
                                                      content hashes
    <out>/data/trials/<session_id>/train-00000-of-00001.parquet
    <out>/data/trials/<session_id>/validation-00000-of-00001.parquet
    <out>/data/trials/<session_id>/test-00000-of-00001.parquet
    <out>/data/windows/<session_id>/<split>-00000-of-00001.parquet   (built with continuous
                                                      windows only)
    <out>/data/neurons/neurons-00000-of-00001.parquet
    <out>/data/sessions/sessions-00000-of-00001.parquet

Configs (all loadable with ``datasets.load_dataset(<out or repo>, name)``): ``all`` (default;
trials of every session, splits train / validation / test), one config per session id (that
session's trials, same splits), ``neurons`` and ``sessions`` (one ``train`` split each), and
``windows`` (continuous windows of every session, same splits; only in datasets built with
them, see :mod:`neds_hf.data.windows`).
Spike counts are ``List(List(int32))`` neuron-major ``[N, T]`` so that sessions with different
neuron counts share the ``all`` config. The features are stored in each Parquet file's Arrow
schema metadata; the card carries no ``dataset_info`` block (a partial one would override them).

The trial features are derived from the dataset's modality table (name and kind of each
modality, :data:`neds_hf.data.preprocess.DATASET_MODALITIES` for the IBL preprocessing): a
``spikes`` modality is ``[N, T]`` counts, a ``continuous`` one ``[T]`` float32 values, a
``categorical`` one an int64 class (``[T]`` int64 classes when ``"trial_level": False``). The
writer converts whatever columns these features name. A behaviour declared with
``"allow_missing"`` stores a missing entry in the value: NaN (continuous) or -1 (categorical).
The windows features (:func:`window_features`) carry the same modality columns between their
own keys (``session_id``, ``window_id``, the assigned ``trial_id`` or -1) and context
(``start_time``, ``end_time`` in s on the session clock, ``trial_overlap`` in s).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from datasets import Features, List, Value

from .exclusion import EXCLUSION_REASONS
from .preprocess import DATASET_MODALITIES, NEURON_COLUMNS, RECORDED_PACKAGES, PreprocessingConfig

__all__ = [
    "ALL_CONFIG",
    "BUILD_REPORT_FILE",
    "NEURONS_CONFIG",
    "NEURONS_FILE",
    "NEURON_FEATURES",
    "PARQUET_ROW_GROUP_SIZE",
    "RESERVED_CONFIG_NAMES",
    "SESSIONS_CONFIG",
    "SESSIONS_FILE",
    "SESSION_FEATURES",
    "TRIALS_DIR",
    "TRIAL_FEATURES",
    "WINDOWS_CONFIG",
    "WINDOWS_DIR",
    "neurons_table",
    "sessions_table",
    "trial_features",
    "trial_file",
    "trials_table",
    "window_features",
    "window_file",
]

#: Name of the default config holding the trials of every session.
ALL_CONFIG = "all"
#: Names of the table configs.
NEURONS_CONFIG = "neurons"
SESSIONS_CONFIG = "sessions"
#: Name of the config holding the continuous windows of every session.
WINDOWS_CONFIG = "windows"
RESERVED_CONFIG_NAMES = (ALL_CONFIG, NEURONS_CONFIG, SESSIONS_CONFIG, WINDOWS_CONFIG)

TRIALS_DIR = "data/trials"
WINDOWS_DIR = "data/windows"
NEURONS_FILE = "data/neurons/neurons-00000-of-00001.parquet"
SESSIONS_FILE = "data/sessions/sessions-00000-of-00001.parquet"
BUILD_REPORT_FILE = "build_report.json"
PARQUET_ROW_GROUP_SIZE = 64

#: Feature of a modality column, by kind.
MODALITY_KIND_FEATURES: dict[str, Any] = {
    "spikes": List(List(Value("int32"))),  # [N, T] counts, neuron-major
    "continuous": List(Value("float32")),  # [T], physical units
    "categorical": Value("int64"),  # class index
}
#: Feature of a categorical modality with one label per bin (``"trial_level": False``).
PER_BIN_LABELS_FEATURE = List(Value("int64"))  # [T] class indices

#: Trial columns before and after the modalities.
TRIAL_KEY_FEATURES = {
    "session_id": Value("string"),
    "trial_id": Value("int64"),  # row in the ALF trials table
}
TRIAL_CONTEXT_FEATURES = {
    "reward": Value("int64"),  # 1 = feedbackType +1
    "contrast": Value("float32"),  # contrastRight - contrastLeft
    "stim_on_time": Value("float64"),  # s, session clock
}


#: Window columns before and after the modalities (:mod:`neds_hf.data.windows`).
WINDOW_KEY_FEATURES = {
    "session_id": Value("string"),
    "window_id": Value("int64"),  # position of the window in its session, from 0
    "trial_id": Value("int64"),  # the trial whose trial-level values it holds; -1 = none
}
WINDOW_CONTEXT_FEATURES = {
    "start_time": Value("float64"),  # s, session clock
    "end_time": Value("float64"),  # s, session clock
    "trial_overlap": Value("float64"),  # s of overlap with that trial's row window (0 = none)
}


def trial_features(modalities: Sequence[Mapping[str, Any]] = DATASET_MODALITIES) -> Features:
    """Trials features for a modality table: keys, one column per modality, trial context."""
    columns = {**TRIAL_KEY_FEATURES, **_modality_features(modalities)}
    # a context column a modality also names (``reward``) is that modality's column
    columns.update({k: v for k, v in TRIAL_CONTEXT_FEATURES.items() if k not in columns})
    return Features(columns)


def window_features(modalities: Sequence[Mapping[str, Any]] = DATASET_MODALITIES) -> Features:
    """Continuous-windows features for a modality table: keys, modalities, window context."""
    columns = {**WINDOW_KEY_FEATURES, **_modality_features(modalities)}
    columns.update(WINDOW_CONTEXT_FEATURES)
    return Features(columns)


def _modality_features(modalities: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One feature per modality, by kind (per-bin labels for non-trial-level categoricals)."""
    columns: dict[str, Any] = {}
    for spec in modalities:
        if spec["kind"] not in MODALITY_KIND_FEATURES:
            raise ValueError(
                f"modality {spec['name']!r}: kind {spec['kind']!r} has no dataset feature; "
                f"expected one of {sorted(MODALITY_KIND_FEATURES)}"
            )
        per_bin_labels = spec["kind"] == "categorical" and not spec.get("trial_level", True)
        feature = PER_BIN_LABELS_FEATURE if per_bin_labels else MODALITY_KIND_FEATURES[spec["kind"]]
        columns[spec["name"]] = feature
    return columns


TRIAL_FEATURES = trial_features()

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


def trial_file(session_id: str, split: str) -> str:
    """Relative path of the Parquet file of one session's split."""
    return f"{TRIALS_DIR}/{session_id}/{split}-00000-of-00001.parquet"


def window_file(session_id: str, split: str) -> str:
    """Relative path of the Parquet file of one session's continuous windows of a split."""
    return f"{WINDOWS_DIR}/{session_id}/{split}-00000-of-00001.parquet"


def _list_array(values: np.ndarray, inner_length: int, arrow_type: pa.DataType) -> pa.Array:
    """Arrow list array of consecutive ``inner_length`` chunks of the flat ``values``."""
    if values.size >= np.iinfo(np.int32).max:
        raise ValueError(
            f"{values.size} values exceed the 32-bit offsets of one Parquet file; split the session"
        )
    n_lists = values.size // inner_length if inner_length else 0
    offsets = np.arange(n_lists + 1, dtype=np.int32) * np.int32(inner_length)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, type=arrow_type))


def _column_array(name: str, values: np.ndarray, arrow_type: pa.DataType) -> pa.Array:
    """One trials column as Arrow: ``(K,)`` scalars, ``(K, T)`` lists or ``(K, N, T)`` lists
    of lists, as ``arrow_type`` says."""
    if pa.types.is_list(arrow_type) and pa.types.is_list(arrow_type.value_type):
        n_rows, n_inner, n_bins = values.shape  # (K, N, T)
        leaf = arrow_type.value_type.value_type
        flat = np.ascontiguousarray(values, dtype=leaf.to_pandas_dtype()).ravel()  # (K*N*T,)
        inner = _list_array(flat, n_bins, leaf)  # K*N lists of T
        return pa.ListArray.from_arrays(
            pa.array(np.arange(n_rows + 1, dtype=np.int32) * n_inner), inner
        )
    if pa.types.is_list(arrow_type):
        leaf = arrow_type.value_type
        n_bins = values.shape[1]  # (K, T)
        flat = np.ascontiguousarray(values, dtype=leaf.to_pandas_dtype()).ravel()
        return _list_array(flat, n_bins, leaf)
    if pa.types.is_string(arrow_type):
        return pa.array(np.asarray(values).tolist(), type=arrow_type)
    try:
        return pa.array(values, type=arrow_type)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
        raise ValueError(f"trials column {name!r} does not fit {arrow_type}: {error}") from error


def trials_table(
    columns: Mapping[str, np.ndarray], features: Features = TRIAL_FEATURES
) -> pa.Table:
    """Arrow table with the schema of ``features`` from per-trial ``columns`` (numpy arrays
    with one row per trial, e.g. :meth:`PreprocessedSession.trial_columns`)."""
    schema = features.arrow_schema
    missing = [name for name in schema.names if name not in columns]
    if missing:
        raise ValueError(f"trial columns lack {missing} required by the dataset features")
    arrays = [_column_array(field.name, columns[field.name], field.type) for field in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


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

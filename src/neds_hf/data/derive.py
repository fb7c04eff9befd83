"""A new dataset folder from a built one plus a categorical modality computed per trial.

:func:`add_categorical_modality` is how a label that the IBL preprocessing does not produce
(per-bin actions from a segmentation model, say) becomes a modality NEDS trains on: the source
folder is verified, every trials file gets the new column (computed by a function of the
session's trials), the modality is appended to the modality table in ``build_report.json``,
every file gets a fresh record (rows, bytes, SHA-256) and the card is rewritten from the new
report. The folder is written in a hidden sibling and swapped in whole
(:func:`neds_hf.atomic.atomic_directory`) under an output lock, so the result either passes
:func:`~neds_hf.data.verify_dataset` or is not there. The source folder is never changed.

Only categorical modalities can be added: a continuous one would also need per-session
normalisation constants in the sessions table, which only the preprocessing computes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..atomic import atomic_directory
from ..locking import OutputLock
from .build import BuildReport, is_neds_dataset
from .card import make_dataset_card
from .load import file_record, load_modalities, verify_dataset
from .preprocess import SPLITS, PreprocessingConfig
from .schema import (
    BUILD_REPORT_FILE,
    NEURONS_FILE,
    PARQUET_ROW_GROUP_SIZE,
    SESSIONS_FILE,
    TRIAL_CONTEXT_FEATURES,
    TRIAL_KEY_FEATURES,
    trial_features,
    trial_file,
)

__all__ = ["ModalityColumn", "add_categorical_modality", "load_preprocessing_config"]

#: ``(session_id, split, trials) -> labels``: the new column of one trials file, ``(K,)`` for
#: a trial-level modality or ``(K, T)`` for a per-bin one (K trials of the file, T bins).
ModalityColumn = Callable[[str, str, pa.Table], np.ndarray]


def _checked_spec(spec: Mapping[str, Any], declared: list[dict[str, Any]]) -> dict[str, Any]:
    """The modality entry to append, or a ValueError saying why it cannot be added."""
    name = spec.get("name")
    if spec.get("kind") != "categorical":
        raise ValueError(
            f"modality {name!r}: only categorical modalities can be added (got kind "
            f"{spec.get('kind')!r}); a continuous one needs normalisation constants that only "
            "the preprocessing computes"
        )
    taken = [m["name"] for m in declared] + [*TRIAL_KEY_FEATURES, *TRIAL_CONTEXT_FEATURES]
    if not isinstance(name, str) or not name or name in taken:
        raise ValueError(f"modality name {name!r} must be a new column name, not one of {taken}")
    num_classes = spec.get("num_classes")
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
        raise ValueError(f"modality {name!r}: num_classes must be an int >= 2, got {num_classes!r}")
    return {
        "name": name,
        "kind": "categorical",
        "num_classes": num_classes,
        "trial_level": bool(spec.get("trial_level", True)),
    }


def _label_array(
    labels: np.ndarray, spec: dict[str, Any], trials: pa.Table, where: str
) -> pa.Array:
    """The computed labels of one trials file as an Arrow column, after checking their shape
    (one per trial, or one per trial and bin) and range."""
    labels = np.asarray(labels)
    num_trials = trials.num_rows
    num_bins = len(trials.column("spikes")[0][0]) if num_trials else 0
    expected = (num_trials,) if spec["trial_level"] else (num_trials, num_bins)
    if labels.shape != expected:
        raise ValueError(
            f"{where}: {spec['name']} labels have shape {list(labels.shape)}, expected "
            f"{list(expected)} (trials{'' if spec['trial_level'] else ', bins'})"
        )
    if labels.dtype.kind not in "iu":
        raise ValueError(f"{where}: {spec['name']} labels must be integers, got {labels.dtype}")
    outside = (labels < 0) | (labels >= spec["num_classes"])
    if outside.any():
        raise ValueError(
            f"{where}: {spec['name']} labels must lie in [0, {spec['num_classes']}), got "
            f"{sorted(set(labels[outside].ravel().tolist()))[:10]}"
        )
    arrow_type = pa.int64() if spec["trial_level"] else pa.list_(pa.int64())
    return pa.array(labels.astype(np.int64).tolist(), type=arrow_type)


def _write_trials(
    source: Path, staging: Path, spec: dict[str, Any], schema: pa.Schema, column: ModalityColumn
) -> dict[str, dict[str, Any]]:
    """Every trials file of `source` with the new column, written under `staging`; returns
    their file records."""
    records = {}
    for row in pq.read_table(source / SESSIONS_FILE).to_pylist():
        session_id = str(row["session_id"])
        for split in SPLITS:
            relative = trial_file(session_id, split)
            if not (source / relative).exists():
                continue  # an empty split has no file (verify_dataset checked the counts)
            trials = pq.read_table(source / relative)
            labels = column(session_id, split, trials)
            array = _label_array(labels, spec, trials, f"session {session_id}, {split} split")
            columns = [
                array if name == spec["name"] else trials.column(name) for name in schema.names
            ]
            path = staging / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            table = pa.Table.from_arrays(columns, schema=schema)
            pq.write_table(table, path, row_group_size=PARQUET_ROW_GROUP_SIZE)
            records[relative] = file_record(path, table.num_rows)
    return records


def _preprocessing_config(report: Mapping[str, Any], where: Path) -> PreprocessingConfig:
    """The preprocessing parameters recorded in a build report."""
    recorded = report.get("preprocessing")
    if not isinstance(recorded, Mapping):
        raise ValueError(f"{where / BUILD_REPORT_FILE} records no preprocessing parameters")
    config_fields = {f.name for f in dataclasses.fields(PreprocessingConfig)}
    return PreprocessingConfig(**{k: v for k, v in recorded.items() if k in config_fields})


def load_preprocessing_config(dataset: str | os.PathLike) -> PreprocessingConfig:
    """The preprocessing parameters a local dataset folder was built with (its trial window,
    bin size, alignment event...), from its ``build_report.json``."""
    folder = Path(dataset)
    path = folder / BUILD_REPORT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; {folder} is not a built neds_hf dataset")
    return _preprocessing_config(json.loads(path.read_text()), folder)


def _rewrite_card(staging: Path, report: dict[str, Any], spec: dict[str, Any]) -> None:
    """The card of the new folder, made from its build report, plus where it comes from."""
    config = _preprocessing_config(report, staging)
    recorded = {f.name: report[f.name] for f in dataclasses.fields(BuildReport) if f.name in report}
    build_report = BuildReport(**{**recorded, "config": config})
    session_rows = pq.read_table(staging / SESSIONS_FILE).to_pylist()
    splits = [s for s, fraction in zip(SPLITS, config.split_fractions) if fraction > 0]
    card = make_dataset_card(build_report, session_rows, splits)
    derived = report["derived_from"][-1]
    card.text += (
        "\n## Added modality\n\n"
        f"`{spec['name']}` ({spec['num_classes']} classes, "
        f"{'one per trial' if spec['trial_level'] else 'one per bin'}) was added on "
        f"{derived['created']} to the dataset `{derived['dataset']}`"
        f"{': ' + derived['description'] if derived.get('description') else ''}.\n"
    )
    card.save(staging / "README.md")


def add_categorical_modality(
    dataset: str | os.PathLike,
    output: str | os.PathLike,
    spec: Mapping[str, Any],
    column: ModalityColumn,
    description: str = "",
    overwrite: bool = False,
) -> Path:
    """Write `output`: the dataset folder `dataset` plus the categorical modality `spec`.

    `spec` is a modality entry (``name``, ``kind="categorical"``, ``num_classes``,
    ``trial_level``; per-bin labels need ``"trial_level": False``); `column` computes its
    labels for each trials file (see :data:`ModalityColumn`); `description` says where the
    labels come from (card and build report). An existing `output` is replaced only with
    `overwrite` and only when it is a dataset folder. Returns `output`.
    """
    source, output = Path(dataset).resolve(), Path(output).resolve()
    if output == source:
        raise ValueError(f"output {output} is the source dataset; write a new folder")
    verify_dataset(source)
    declared = load_modalities(source)
    spec = _checked_spec(spec, declared)
    if output.exists() and not (overwrite and is_neds_dataset(output)):
        raise FileExistsError(
            f"{output} exists; pass overwrite to replace it (only a neds_hf dataset folder is "
            "replaced)"
        )
    report = json.loads((source / BUILD_REPORT_FILE).read_text())
    modalities = [*declared, spec]
    schema = trial_features(modalities).arrow_schema
    with OutputLock(output, "add-modality"), atomic_directory(output) as staging:
        files = _write_trials(source, staging, spec, schema, column)
        for relative in (NEURONS_FILE, SESSIONS_FILE):
            (staging / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source / relative, staging / relative)
            rows = pq.ParquetFile(staging / relative).metadata.num_rows
            files[relative] = file_record(staging / relative, rows)
        created = datetime.now(timezone.utc).isoformat(timespec="seconds")
        report.update(output_dir=str(output), modalities=modalities, files=files)
        report["derived_from"] = [
            *report.get("derived_from", []),
            {
                "dataset": str(source),
                "added": spec,
                "created": created,
                "description": description,
            },
        ]
        (staging / BUILD_REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
        _rewrite_card(staging, report, spec)
    verify_dataset(output)
    return output

"""Predictions of NEDS models in the BrainWideBench layout (``neds-hf export-bwb``).

One model per benchmark seed: ``export_predictions(["m43", "m44", "m45"], ...)`` files model
``i`` under seed ``seeds[i]`` (default: the first ``EVAL_SEEDS``). One model written under
several seeds would fake the seed variance the benchmark's ranking tests on, so it is refused
unless ``replicate_seeds=True``, which the files' metadata then records
(``replicated_model: true``).

Per seed and recording: TS1 from the decoding protocol (spikes shown, every behaviour hidden;
class logits, or per-bin values back in physical units, or log-rates for event-rate tasks),
TS2 from the MtM spike-prediction path with BrainWideBench's held-out sets (log-rates of the
scored block), TS3 from a cross-validated linear probe of Cosmos region on the model's
per-neuron embeddings (the ``neds-hf evaluate --region-probe`` features), folds shuffled with
the seed. Everything is validated (:mod:`neds_hf.brainwidebench.validation`) before the first
file is written with the package's own ``PredictionsWriter``; ``<output>/<label>`` is then
replaced as a whole.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..evaluation import (
    PROTOCOL_DECODING,
    denormalize_behavior,
    neuron_embeddings,
    predict_mtm_task,
    predict_session,
)
from ..masking import HeldOutSet
from ..modeling_neds import NedsForMaskedModeling
from .ground_truth import BwbTargets, collect_targets
from .recordings import DatasetRecordings, load_recordings
from .tasks import TS1_MODALITIES, TS1_TRANSFORMS, RecordingWindows, require_bwb, ts1_scored_bins
from .validation import PredictionFile, validate_predictions

__all__ = [
    "EXPORT_SUMMARY_FILE",
    "LOG_RATE_FLOOR",
    "ExportSummary",
    "cosmos_probabilities",
    "export_predictions",
    "resolve_seeds",
    "seed_predictions",
    "write_prediction_files",
]

#: Written next to the predictions of a label: models, seeds, tasks, skipped entries.
EXPORT_SUMMARY_FILE = "bwb_export.json"
#: Smallest rate a log-rate task's prediction is clipped to before the log (events per bin).
LOG_RATE_FLOOR = 1e-4
#: MtM task whose prompt and masks each TS2 task runs with.
TS2_MTM_TASKS = {"co_smoothing": "co_smoothing", "forecasting": "forward_prediction"}


@dataclass
class ExportSummary:
    """What an export wrote: label, seeds and their models, counts, tasks left out."""

    label: str
    output: str
    seeds: list[int]
    models: list[str]
    replicated_model: bool
    files: int
    targets: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "label": self.label,
            "output": self.output,
            "seeds": self.seeds,
            "models": self.models,
            "replicated_model": self.replicated_model,
            "files": self.files,
            **self.targets,
        }


def resolve_seeds(num_models: int, seeds: Sequence[int] | None, replicate_seeds: bool) -> list[int]:
    """The seed of each model (or, with `replicate_seeds`, the seeds of the one model).

    Seeds must be benchmark seeds (``EVAL_SEEDS``), distinct, one per model; one model may be
    written under several seeds only with `replicate_seeds`.
    """
    from ibl_bwb_eval import EVAL_SEEDS

    if replicate_seeds and num_models != 1:
        raise ValueError(f"replicate_seeds writes ONE model under several seeds, got {num_models}")
    if seeds is None:
        seeds = list(EVAL_SEEDS) if replicate_seeds else list(EVAL_SEEDS[:num_models])
        if num_models > len(EVAL_SEEDS):
            raise ValueError(f"{num_models} models for {len(EVAL_SEEDS)} seeds {EVAL_SEEDS}")
    seeds = [int(s) for s in seeds]
    unknown = [s for s in seeds if s not in EVAL_SEEDS]
    if unknown:
        raise ValueError(f"seeds {unknown} are not benchmark seeds {list(EVAL_SEEDS)}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds {seeds} repeat a seed")
    if not replicate_seeds and len(seeds) != num_models:
        raise ValueError(
            f"{num_models} model(s) for {len(seeds)} seed(s) {seeds}: give one model per seed "
            "(in seed order), or one model with --replicate-seeds to file it under every seed "
            "(recorded in the metadata)"
        )
    return seeds


def cosmos_probabilities(embeddings: np.ndarray, targets: np.ndarray, seed: int) -> np.ndarray:
    """``(n, 10)`` out-of-fold probabilities of the ``COSMOS_LABELS`` classes.

    A standardised logistic regression (the region probe's classifier) is fit on 4/5 of the
    units and predicts the other 1/5 (5 folds shuffled with `seed`), so every unit gets a
    probability from a probe that never saw it; a class absent from a fold's training units
    gets probability 0, and a fold trained on one class gives it probability 1.
    """
    from ibl_bwb_eval.tasks import COSMOS_LABELS
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import KFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if len(targets) < 2:
        raise ValueError(f"unit_cosmos needs at least 2 labelled units, got {len(targets)}")
    probabilities = np.zeros((len(targets), len(COSMOS_LABELS)))  # (n, 10)
    folds = KFold(n_splits=min(5, len(targets)), shuffle=True, random_state=seed)
    for train, test in folds.split(embeddings):
        classes = np.unique(targets[train])
        if len(classes) == 1:
            probabilities[test, classes[0]] = 1.0
            continue
        probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
        probe.fit(embeddings[train], targets[train])
        probabilities[np.ix_(test, classes)] = probe.predict_proba(embeddings[test])
    return probabilities


def _file(
    suite: str, task: str, seed: int, label: str, recording_id: str | None, base: dict[str, str]
) -> PredictionFile:
    metadata = dict(base)
    metadata["unit_filtering"] = "all_units" if suite == "ts1" else "selected_units"
    if recording_id is not None:
        metadata["recording_id"] = recording_id
    return PredictionFile(suite, task, seed, recording_id, label, metadata)


def _ts1_files(
    model: NedsForMaskedModeling,
    recording: RecordingWindows,
    targets: BwbTargets,
    data: DatasetRecordings,
    make_file: Any,
    batch_size: int,
) -> list[PredictionFile]:
    """The TS1 files of one recording: one decoding pass, one file per task."""
    from ibl_bwb_eval.tasks import TargetResolution, get_ts1_readout_spec

    tasks = [task for task, rec in targets.ts1 if rec == recording.recording_id]
    if not tasks:
        return []
    decoded = predict_session(
        model,
        recording.trials,
        PROTOCOL_DECODING,
        normalization=data.normalization,
        batch_size=batch_size,
    )
    files = []
    for task in tasks:
        target = targets.ts1[(task, recording.recording_id)]
        name = TS1_MODALITIES[task]
        predicted = decoded.behavior_predictions[name][target.rows]
        if get_ts1_readout_spec(task).target_resolution == TargetResolution.SEQUENCE:
            values = predicted[:, None, :]  # (N, 1, C) logits
        else:
            stats = data.normalization[recording.recording_id][name]
            method = model.config.behavior_normalization
            values = denormalize_behavior(predicted[:, ts1_scored_bins(recording)], stats, method)
            if TS1_TRANSFORMS.get(task) == "log_rate":
                values = np.log(np.maximum(values, LOG_RATE_FLOOR))
            values = values[..., None]  # (N, 50, 1)
        file = make_file("ts1", task, recording.recording_id)
        file.tensors = {
            "trial_id": torch.from_numpy(target.trial_ids),
            "predictions": torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)),
        }
        files.append(file)
    return files


def _ts2_file(
    model: NedsForMaskedModeling,
    recording: RecordingWindows,
    task: str,
    targets: BwbTargets,
    data: DatasetRecordings,
    make_file: Any,
    batch_size: int,
) -> PredictionFile:
    """The TS2 file of one task and recording: log-rates of the scored bins x units."""
    from ibl_bwb_eval.entity_ids import encode_entity_ids

    target = targets.ts2[(task, recording.recording_id)]
    units = tuple(int(u) for u in target.units)
    # co-smoothing hides its units in the whole window; forecasting hides the forecast bins
    first_bin = 0 if task == "co_smoothing" else int(target.bins[0])
    heldout = HeldOutSet(TS2_MTM_TASKS[task], units, units, first_bin=first_bin)
    predictions, _ = predict_mtm_task(
        model,
        [recording.trials[int(r)] for r in target.rows],
        TS2_MTM_TASKS[task],
        normalization=data.normalization,
        batch_size=batch_size,
        heldout_sets=[heldout],
    )
    rates = predictions.rates[:, target.bins][:, :, target.units]  # (B, T', N')
    with np.errstate(divide="ignore"):
        log_rates = np.ascontiguousarray(np.log(rates), dtype=np.float32)
    file = make_file("ts2", task, recording.recording_id)
    file.metadata["context_window"] = str(target.context_window)
    file.metadata["bin_size"] = str(recording.bin_size)
    file.tensors = {
        "window_timestamps": torch.from_numpy(target.timestamps),
        "predictions": torch.from_numpy(log_rates),
        "unit_ids": encode_entity_ids(np.asarray(target.unit_ids)),
    }
    return file


def _ts3_file(
    model: NedsForMaskedModeling, targets: BwbTargets, seed: int, make_file: Any
) -> PredictionFile:
    """The ``unit_cosmos`` file: out-of-fold probe probabilities of every scored unit."""
    from ibl_bwb_eval.entity_ids import encode_entity_ids
    from ibl_bwb_eval.tasks import COSMOS_LABELS

    ts3 = targets.ts3
    embeddings = {
        rec: neuron_embeddings(model, rec) for rec in dict.fromkeys(r for r, _ in ts3.units)
    }
    features = np.stack([embeddings[rec][index] for rec, index in ts3.units])  # (n, D)
    file = make_file("ts3", "unit_cosmos", None)
    file.metadata["label_names"] = ",".join(COSMOS_LABELS)
    if np.isfinite(features).all():
        probabilities = cosmos_probabilities(features, ts3.targets, seed)
    else:  # non-finite weights: NaN probabilities, reported by the validator (E107)
        probabilities = np.full((len(ts3.unit_ids), len(COSMOS_LABELS)), np.nan)
    file.tensors = {
        "entity_ids": encode_entity_ids(np.asarray(ts3.unit_ids)),
        "pred_proba": torch.from_numpy(probabilities.astype(np.float32)),
    }
    return file


def seed_predictions(
    model: NedsForMaskedModeling,
    seed: int,
    label: str,
    data: DatasetRecordings,
    targets: BwbTargets,
    metadata: dict[str, str],
    batch_size: int = 64,
) -> list[PredictionFile]:
    """Every prediction file of one model under one seed (nothing written)."""

    def make_file(suite: str, task: str, recording_id: str | None) -> PredictionFile:
        return _file(suite, task, seed, label, recording_id, metadata)

    files: list[PredictionFile] = []
    ts2_tasks = list(dict.fromkeys(task for task, _ in targets.ts2))
    for recording in data.recordings:
        files.extend(_ts1_files(model, recording, targets, data, make_file, batch_size))
        for task in ts2_tasks:
            files.append(_ts2_file(model, recording, task, targets, data, make_file, batch_size))
    if targets.ts3 is not None:
        files.append(_ts3_file(model, targets, seed, make_file))
    return files


def write_prediction_files(
    files: Sequence[PredictionFile], output: str | os.PathLike, label: str, summary: dict
) -> Path:
    """Write `files` with the package's ``PredictionsWriter`` into ``<output>/<label>``.

    The label folder is built aside and swapped in whole, so a failure leaves the previous
    one (and other labels under `output`) untouched.
    """
    from ibl_bwb_eval.predictions import PredictionsWriter

    from ..atomic import atomic_write_json, replace_directory
    from ..locking import OutputLock

    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    with OutputLock(output / label, "export-bwb"):
        staging = Path(tempfile.mkdtemp(prefix=".export-bwb-", dir=output))
        try:
            for file in files:
                writer = PredictionsWriter(
                    enable=True,
                    base_path=staging,
                    task=file.task_id,
                    seed=file.seed,
                    label=label,
                    metadata=file.metadata,
                    path_fn=_recording_path if file.recording_id is not None else None,
                )
                writer.set(**file.tensors)
                writer.save()
            (staging / label).mkdir(exist_ok=True)
            atomic_write_json(staging / label / EXPORT_SUMMARY_FILE, summary, indent=2)
            replace_directory(staging / label, output / label)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return output / label


def _recording_path(base: Path, metadata: dict[str, Any]) -> Path:
    """``PredictionsWriter``'s path segment for TS1 / TS2: the recording id."""
    return base / str(metadata["recording_id"])


def _load_models(models: Sequence[str | NedsForMaskedModeling]) -> list[NedsForMaskedModeling]:
    return [
        m
        if isinstance(m, NedsForMaskedModeling)
        else NedsForMaskedModeling.from_pretrained(m, dtype=torch.float32)
        for m in models
    ]


def _export_sessions(
    models: Sequence[NedsForMaskedModeling], dataset: str | os.PathLike, sessions: Any
) -> list[str]:
    """The sessions to export: `sessions`, else the dataset sessions every model knows."""
    from ..data.load import load_sessions

    available = [str(s) for s in load_sessions(dataset)["session_id"]]
    if sessions is None:
        sessions = [s for s in available if all(s in m.config.sessions for m in models)]
        if not sessions:
            raise ValueError(
                f"no session of dataset {os.fspath(dataset)} is known to every model; "
                "fine-tune the models on the dataset's sessions first"
            )
    for position, model in enumerate(models):
        unknown = [s for s in sessions if s not in model.config.sessions]
        if unknown:
            raise ValueError(f"model {position + 1} does not know sessions {unknown}")
    return list(sessions)


def _check_neuron_counts(models: Sequence[NedsForMaskedModeling], data: DatasetRecordings) -> None:
    """Every model has as many neurons per session as the dataset (same preprocessing)."""
    for position, model in enumerate(models):
        for recording in data.recordings:
            expected = model.config.sessions[recording.recording_id]
            if expected != len(recording.units):
                raise ValueError(
                    f"session {recording.recording_id}: model {position + 1} has {expected} "
                    f"neurons, the dataset {len(recording.units)}; they were built with "
                    "different preprocessing"
                )


def export_predictions(
    models: Sequence[str | NedsForMaskedModeling],
    dataset: str | os.PathLike,
    output: str | os.PathLike,
    *,
    seeds: Sequence[int] | None = None,
    label: str | None = None,
    replicate_seeds: bool = False,
    split: str = "test",
    sessions: Sequence[str] | None = None,
    batch_size: int = 64,
) -> ExportSummary:
    """Export the predictions of `models` (one per seed) on `split` of `dataset`.

    TS1 covers the tasks whose modality both the dataset and the models have (the others are
    listed in the summary), TS2 both tasks, TS3 ``unit_cosmos`` when units have Cosmos labels.
    Raises ``BwbValidationError`` (nothing written) when the predictions break the rules.
    """
    require_bwb()
    names = [m if isinstance(m, str) else getattr(m, "name_or_path", "") for m in models]
    label = label or (Path(str(names[0])).name if names and names[0] else "")
    if not label or label in (".", "..") or "/" in label or os.sep in label:
        raise ValueError(f"label {label!r} must be a plain folder name; give --label")
    seeds = resolve_seeds(len(models), seeds, replicate_seeds)
    loaded = _load_models(models)
    data = load_recordings(dataset, split, _export_sessions(loaded, dataset, sessions))
    _check_neuron_counts(loaded, data)
    model_modalities = set.intersection(
        *({s["name"] for s in m.config.behavior_modalities} for m in loaded)
    )
    targets = collect_targets(data, sorted(model_modalities))
    base = {
        "dataset": data.dataset,
        "dataset_version": data.version,
        "split": split,
        "replicated_model": str(replicate_seeds).lower(),
    }
    files: list[PredictionFile] = []
    for position, seed in enumerate(seeds):
        index = 0 if replicate_seeds else position
        metadata = {**base, "model": str(names[index])}
        files.extend(
            seed_predictions(loaded[index], seed, label, data, targets, metadata, batch_size)
        )
    validate_predictions(files, targets.expected(), seeds)
    summary = ExportSummary(
        label=label,
        output=os.fspath(output),
        seeds=seeds,
        models=[str(names[0 if replicate_seeds else i]) for i in range(len(seeds))],
        replicated_model=replicate_seeds,
        files=len(files),
        targets={"dataset": data.dataset, "split": split, **targets.summary()},
    )
    write_prediction_files(files, output, label, summary.to_dict())
    return summary

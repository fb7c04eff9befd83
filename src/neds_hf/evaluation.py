"""Evaluation of a NEDS model with the paper's protocols and metrics.

Protocols (fixed masks, dropout off):

* **encoding**: every spike hidden, every behaviour shown -> bits per spike (NEDS mean-over-
  neurons convention and the pooled NLB / BrainWideBench convention);
* **decoding**: every behaviour hidden, spikes shown -> R² (flattened trials x bins, and PSTH
  R² over (choice, block) conditions) for continuous behaviours, accuracy and balanced
  accuracy for categorical ones;
* **encoding:<behaviour>**: spikes hidden, only that behaviour shown -> bits per spike.

Scores are computed per session and averaged over sessions. The headline ``avg`` score is the
mean of the encoding bits per spike, every decoding R² and every balanced accuracy, which is
also the validation score that picks the best checkpoint during training.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .collator import DataCollatorForNedsMasking
from .metrics import accuracy as accuracy_score
from .metrics import balanced_accuracy, bits_per_spike, r2_flattened, r2_psth, region_probe
from .modeling_neds import NedsForMaskedModeling

PROTOCOL_ENCODING = "encoding"
PROTOCOL_DECODING = "decoding"


@dataclass
class SessionPredictions:
    """Targets and predictions of one session under one protocol (numpy, trial-major)."""

    session_id: str
    spikes: np.ndarray  # (trials, T, N) observed counts
    rates: np.ndarray | None = None  # (trials, T, N) predicted counts per bin
    behavior_targets: dict[str, np.ndarray] = field(default_factory=dict)  # (trials, T) | (trials,)
    behavior_predictions: dict[str, np.ndarray] = field(
        default_factory=dict
    )  # (trials, T) | (trials, C)


@dataclass
class EvaluationReport:
    """Per-session scores, their averages over sessions, and how they were obtained."""

    per_session: dict[str, dict[str, float]]
    average: dict[str, float]
    protocols: list[str]
    split: str
    region_probe: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "split": self.split,
            "protocols": self.protocols,
            "average": self.average,
            "per_session": self.per_session,
            "region_probe": self.region_probe,
        }

    def to_markdown(self) -> str:
        """A Markdown table: one row per session plus the average."""
        metrics = list(self.average)
        lines = ["| session | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
        for session_id, scores in self.per_session.items():
            lines.append(
                f"| {session_id} | " + " | ".join(_fmt(scores.get(m)) for m in metrics) + " |"
            )
        lines.append("| **average** | " + " | ".join(_fmt(self.average[m]) for m in metrics) + " |")
        if self.region_probe:
            lines += [
                "",
                "Region probe (linear classifier, 5-fold CV on per-neuron embeddings):",
                "",
            ]
            for level, result in self.region_probe.items():
                lines.append(
                    f"- {level}: accuracy {_fmt(result['accuracy'])}, macro F1 "
                    f"{_fmt(result['macro_f1'])}, chance {_fmt(result['chance_accuracy'])}, "
                    f"{result['n_neurons']} neurons in {result['n_classes']} classes"
                )
        return "\n".join(lines) + "\n"

    def save(self, output_dir: str | Path) -> tuple[Path, Path]:
        """Write ``evaluation.json`` and ``evaluation.md`` into `output_dir`."""
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        json_path, markdown_path = output_dir / "evaluation.json", output_dir / "evaluation.md"
        json_path.write_text(json.dumps(self.to_dict(), indent=2, default=_json_default) + "\n")
        markdown_path.write_text(self.to_markdown())
        return json_path, markdown_path


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.4f}"


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


# =============================================================================================
# Predictions
# =============================================================================================


@torch.no_grad()
def predict_session(
    model: NedsForMaskedModeling,
    trials: Sequence[Mapping[str, Any]],
    protocol: str,
    normalization: Mapping[str, Any] | None = None,
    normalization_method: str | None = None,
    batch_size: int = 64,
) -> SessionPredictions:
    """Run one protocol over the trials of ONE session and collect targets and predictions."""
    if not trials:
        raise ValueError("predict_session needs at least one trial")
    session_ids = {trial["session_id"] for trial in trials}
    if len(session_ids) != 1:
        raise ValueError(
            f"predict_session expects trials of one session, got {sorted(session_ids)}"
        )
    config = model.config
    collator = DataCollatorForNedsMasking(
        config,
        eval_protocol=protocol,
        normalization=normalization,
        normalization_method=normalization_method,
    )
    was_training = model.training
    model.eval()
    spikes, rates = [], []
    targets: dict[str, list[np.ndarray]] = {s["name"]: [] for s in config.behavior_modalities}
    predictions: dict[str, list[np.ndarray]] = {s["name"]: [] for s in config.behavior_modalities}
    try:
        for start in range(0, len(trials), batch_size):
            batch = collator(trials[start : start + batch_size])
            inputs = {k: v.to(model.device) for k, v in batch.items()}
            out = model(**inputs)
            spikes.append(batch["spikes"].numpy())
            rates.append(out.spike_log_rates.float().exp().cpu().numpy())
            continuous = categorical = 0
            for spec in config.behavior_modalities:
                name = spec["name"]
                predictions[name].append(out.behavior_predictions[name].float().cpu().numpy())
                if spec["kind"] == "continuous":
                    targets[name].append(batch["behavior_values"][..., continuous].numpy())
                    continuous += 1
                else:
                    labels = batch["behavior_labels"][..., categorical].numpy()
                    targets[name].append(labels[:, 0] if spec["trial_level"] else labels)
                    categorical += 1
    finally:
        model.train(was_training)
    return SessionPredictions(
        session_id=next(iter(session_ids)),
        spikes=np.concatenate(spikes),
        rates=np.concatenate(rates),
        behavior_targets={k: np.concatenate(v) for k, v in targets.items()},
        behavior_predictions={k: np.concatenate(v) for k, v in predictions.items()},
    )


def score_session(
    model_config: Any,
    encoding: SessionPredictions | None,
    decoding: SessionPredictions | None,
    per_behavior: Mapping[str, SessionPredictions] | None = None,
    conditions: np.ndarray | None = None,
) -> dict[str, float]:
    """The scores of one session from its protocol predictions."""
    scores: dict[str, float] = {}
    if encoding is not None:
        scores["bps"] = bits_per_spike(
            encoding.rates, encoding.spikes, log_input=False, convention="mean"
        )
        scores["bps_pooled"] = bits_per_spike(
            encoding.rates, encoding.spikes, log_input=False, convention="pooled"
        )
    for name, predictions in (per_behavior or {}).items():
        scores[f"bps_{name}_only"] = bits_per_spike(
            predictions.rates, predictions.spikes, log_input=False, convention="mean"
        )
    if decoding is not None:
        for spec in model_config.behavior_modalities:
            name = spec["name"]
            predicted, target = decoding.behavior_predictions[name], decoding.behavior_targets[name]
            if spec["kind"] == "continuous":
                scores[f"{name}_r2"] = r2_flattened(predicted, target)
                if conditions is not None:
                    scores[f"{name}_r2_psth"] = r2_psth(predicted, target, conditions)
            else:
                if not spec["trial_level"]:
                    predicted = predicted.reshape(-1, predicted.shape[-1])
                    target = target.reshape(-1)
                scores[f"{name}_accuracy"] = accuracy_score(predicted, target)
                scores[f"{name}_balanced_accuracy"] = balanced_accuracy(predicted, target)
    scores["avg"] = average_score(scores)
    return scores


def average_score(scores: Mapping[str, float]) -> float:
    """Mean of bits per spike, decoding R² and balanced accuracies (NaN ignored)."""
    parts = [
        value
        for key, value in scores.items()
        if key == "bps" or (key.endswith("_r2")) or key.endswith("_balanced_accuracy")
    ]
    finite = [value for value in parts if value is not None and np.isfinite(value)]
    return float(np.mean(finite)) if finite else float("nan")


def _group_by_session(dataset: Iterable[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    grouped: dict[str, list[Mapping[str, Any]]] = {}
    for trial in dataset:
        grouped.setdefault(trial["session_id"], []).append(trial)
    return grouped


def evaluate_trials(
    model: NedsForMaskedModeling,
    trials: Iterable[Mapping[str, Any]],
    normalization: Mapping[str, Any] | None = None,
    protocols: Sequence[str] = (PROTOCOL_ENCODING, PROTOCOL_DECODING),
    per_behavior_encoding: bool = False,
    normalization_method: str | None = None,
    batch_size: int = 64,
    split: str = "test",
) -> EvaluationReport:
    """Evaluate a model on trial dicts (any iterable of dataset items) of one or more sessions."""
    unknown = [p for p in protocols if p not in (PROTOCOL_ENCODING, PROTOCOL_DECODING)]
    if unknown:
        raise ValueError(f"unknown protocols {unknown}; use 'encoding' and/or 'decoding'")
    grouped = _group_by_session(trials)
    if not grouped:
        raise ValueError(f"no trials to evaluate in split {split!r}")
    missing = sorted(set(grouped) - set(model.config.sessions))
    if missing:
        raise ValueError(f"the model does not know sessions {missing}; fine-tune it on them first")
    config = model.config
    has_behavior = bool(config.behavior_modalities)
    per_session: dict[str, dict[str, float]] = {}
    for session_id, session_trials in grouped.items():
        common = dict(
            normalization=normalization,
            normalization_method=normalization_method,
            batch_size=batch_size,
        )
        encoding = (
            predict_session(model, session_trials, PROTOCOL_ENCODING, **common)
            if PROTOCOL_ENCODING in protocols
            else None
        )
        decoding = (
            predict_session(model, session_trials, PROTOCOL_DECODING, **common)
            if PROTOCOL_DECODING in protocols and has_behavior
            else None
        )
        per_behavior = None
        if per_behavior_encoding and has_behavior:
            per_behavior = {
                spec["name"]: predict_session(
                    model, session_trials, f"encoding:{spec['name']}", **common
                )
                for spec in config.behavior_modalities
            }
        conditions = None
        if all(name in session_trials[0] for name in ("choice", "block")):
            conditions = np.array([[t["choice"], t["block"]] for t in session_trials])
        per_session[session_id] = score_session(
            config, encoding, decoding, per_behavior, conditions
        )
    metric_names = list(dict.fromkeys(m for scores in per_session.values() for m in scores))
    average = {}
    for metric in metric_names:
        values = [scores.get(metric, float("nan")) for scores in per_session.values()]
        finite = [v for v in values if np.isfinite(v)]
        average[metric] = float(np.mean(finite)) if finite else float("nan")
    return EvaluationReport(
        per_session=per_session, average=average, protocols=list(protocols), split=split
    )


def neuron_embeddings(model: NedsForMaskedModeling, session_id: str) -> np.ndarray:
    """Per-neuron embeddings of one session: its stitcher input vector and readout vector.

    Returns `(n_neurons, spike_stitcher_size + hidden_size + 1)`.
    """
    if session_id not in model.config.sessions:
        raise ValueError(f"the model does not know session {session_id!r}")
    row = model.config.session_ids.index(session_id)
    counts = list(model.config.sessions.values())
    start, stop = sum(counts[:row]), sum(counts[: row + 1])
    stitcher = model.neds.spike_stitcher.session_neurons.neuron_weight[start:stop]
    readout = model.spike_readout.session_neurons.neuron_weight[start:stop]
    return torch.cat([stitcher, readout], dim=-1).detach().float().cpu().numpy()


def run_region_probe(
    model: NedsForMaskedModeling,
    neuron_regions: Mapping[str, Mapping[str, Sequence[str]]],
    n_splits: int = 5,
    seed: int = 0,
) -> dict[str, Any]:
    """Region probe on per-neuron embeddings pooled over sessions, per region level.

    `neuron_regions` maps a level (e.g. ``"region_beryl"``) to ``{session_id: [region of each
    neuron]}``.
    """
    results = {}
    for level, by_session in neuron_regions.items():
        embeddings, labels = [], []
        for session_id, regions in by_session.items():
            vectors = neuron_embeddings(model, session_id)
            if len(regions) != len(vectors):
                raise ValueError(
                    f"session {session_id}: {len(regions)} regions for {len(vectors)} neurons"
                )
            embeddings.append(vectors)
            labels.extend(regions)
        results[level] = region_probe(
            np.concatenate(embeddings), np.asarray(labels), n_splits=n_splits, seed=seed
        )
    return results


# =============================================================================================
# Whole-model evaluation and its command line
# =============================================================================================


def report_to_eval_results(
    report: EvaluationReport, dataset_name: str, dataset_type: str | None = None
) -> list[dict[str, Any]]:
    """Average scores as model-card ``eval_results`` entries (the Hub's model-index)."""
    entries = []
    for metric, value in report.average.items():
        if not np.isfinite(value):
            continue
        if metric.startswith("bps"):
            task_type, task_name = "neural-encoding", "Neural encoding (behaviour to spikes)"
        elif metric == "avg":
            task_type, task_name = (
                "neural-encoding-decoding",
                "Mean of encoding and decoding scores",
            )
        else:
            task_type, task_name = "neural-decoding", "Neural decoding (spikes to behaviour)"
        entries.append(
            {
                "task_type": task_type,
                "task_name": task_name,
                "dataset_type": dataset_type or dataset_name,
                "dataset_name": dataset_name,
                "dataset_split": report.split,
                "metric_type": metric,
                "metric_name": metric.replace("_", " "),
                "metric_value": float(value),
            }
        )
    return entries


def evaluate_model(
    model_name_or_path: str | NedsForMaskedModeling,
    dataset: str,
    split: str = "test",
    sessions: Sequence[str] | None = None,
    per_behavior_encoding: bool = False,
    region_probe_levels: Sequence[str] = (),
    normalization_method: str | None = None,
    batch_size: int = 64,
) -> EvaluationReport:
    """Evaluate a model folder / Hub id on a built dataset (default: the sessions it knows)."""
    from .data.dataset import load_sessions
    from .data.training_data import NedsTrialDataset

    model = (
        model_name_or_path
        if isinstance(model_name_or_path, NedsForMaskedModeling)
        else NedsForMaskedModeling.from_pretrained(model_name_or_path, dtype=torch.float32)
    )
    model.eval()
    if sessions is None:
        available = {str(s) for s in load_sessions(dataset)["session_id"]}
        sessions = [s for s in model.config.session_ids if s in available]
        if not sessions:
            raise ValueError(
                f"none of the model's sessions {model.config.session_ids} are in dataset "
                f"{dataset}; "
                "fine-tune the model on the dataset's sessions first"
            )
    unknown = sorted(set(sessions) - set(model.config.sessions))
    if unknown:
        raise ValueError(f"the model does not know sessions {unknown}; fine-tune it on them first")
    data = NedsTrialDataset(dataset, split, sessions=list(sessions))
    for session_id in sessions:
        if data.n_neurons[session_id] != model.config.sessions[session_id]:
            raise ValueError(
                f"session {session_id}: the model has {model.config.sessions[session_id]} "
                f"neurons, the dataset {data.n_neurons[session_id]}; they were built with "
                "different preprocessing"
            )
    trials = [data[i] for i in range(len(data))]
    report = evaluate_trials(
        model,
        trials,
        normalization=data.normalization,
        per_behavior_encoding=per_behavior_encoding,
        normalization_method=normalization_method,
        batch_size=batch_size,
        split=split,
    )
    if region_probe_levels:
        from .data.dataset import load_neurons

        neurons = load_neurons(dataset, list(sessions))
        levels = {
            level: {s: neurons.loc[neurons["session_id"] == s, level].tolist() for s in sessions}
            for level in region_probe_levels
        }
        report.region_probe = run_region_probe(model, levels)
    return report


def add_evaluate_arguments(parser: Any) -> None:
    """Arguments of ``neds-hf evaluate``."""
    parser.add_argument("model", help="model folder or Hub id")
    parser.add_argument(
        "--dataset", required=True, help="dataset folder or Hub id (built by prepare-data)"
    )
    parser.add_argument("--split", default="test", choices=("train", "validation", "test"))
    parser.add_argument(
        "--sessions",
        nargs="+",
        default=None,
        help="sessions to evaluate (default: every dataset session the model knows)",
    )
    parser.add_argument(
        "--per-behavior",
        action="store_true",
        help="also run one-behaviour encoding for every behaviour",
    )
    parser.add_argument(
        "--region-probe",
        nargs="*",
        default=None,
        metavar="LEVEL",
        help="run the region probe (default levels: region_beryl region_cosmos)",
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--output", default=None, help="folder for evaluation.json and evaluation.md"
    )


def run_evaluate(args: Any) -> int:
    """Run ``neds-hf evaluate`` and print the Markdown table."""
    levels: Sequence[str] = ()
    if args.region_probe is not None:
        levels = args.region_probe or ("region_beryl", "region_cosmos")
    report = evaluate_model(
        args.model,
        args.dataset,
        split=args.split,
        sessions=args.sessions,
        per_behavior_encoding=args.per_behavior,
        region_probe_levels=levels,
        batch_size=args.batch_size,
    )
    print(report.to_markdown())
    if args.output:
        json_path, markdown_path = report.save(args.output)
        print(f"wrote {json_path} and {markdown_path}")
    return 0

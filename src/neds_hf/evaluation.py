"""Evaluation of a NEDS model with the paper's protocols and metrics.

Protocols (fixed masks, dropout off):

* **encoding**: every spike hidden, every behaviour shown -> bits per spike (NEDS mean-over-
  neurons convention and the pooled NLB / BrainWideBench convention);
* **decoding**: every behaviour hidden, spikes shown -> R² (flattened trials x bins, and PSTH
  R² over (choice, block) conditions) for continuous behaviours, accuracy and balanced
  accuracy for categorical ones;
* **encoding:<behaviour>**: spikes hidden, only that behaviour shown -> bits per spike;
* the MtM spike-prediction tasks (``masking.MTM_EVAL_TASKS``): **co_smoothing** (each
  held-out neuron predicted from all the others), **forward_prediction** (the last 10 bins
  from the earlier ones), **inter_region** (every neuron of a region from the other regions)
  and **intra_region** (each held-out neuron from the other neurons of its region, other
  regions hidden) -> ``<task>_bps`` / ``<task>_bps_pooled`` (both bits-per-spike
  conventions), ``<task>_r2_psth`` (condition-averaged) and ``<task>_r2_trial`` (per trial), over
  the scored entries only. Behaviour stays visible (multimodal models) except in the forecast
  bins. Leave-one-neuron-out runs ``trials x held-out neurons`` samples in batches of
  ``batch_size`` (several neurons per forward pass); ``max_heldout_neurons`` caps the neurons
  with a seeded choice per session.

Behaviour entries that are missing (behaviours declared with ``allow_missing``; NaN / -1 in
the trials, :mod:`neds_hf.validity`) are hidden from the model and skipped by every score; the
report counts them per session (``skipped_entries``) and names the behaviours a session lacks
entirely (``missing_modalities``), whose scores are NaN rather than a score of nothing.

Scores are computed per session and averaged over sessions. The headline ``avg`` score is the
mean of the encoding bits per spike, every decoding R² and every balanced accuracy, which is
also the validation score that picks the best checkpoint during training.
"""

from __future__ import annotations

import argparse
import re
import sys
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .collator import DataCollatorForNedsMasking
from .configuration_neds import BEHAVIOR_NORMALIZATIONS, check_declared_modalities
from .masking import MTM_EVAL_TASKS, HeldOutSet, heldout_masks, mtm_heldout_sets
from .metrics import accuracy as accuracy_score
from .metrics import (
    balanced_accuracy,
    bits_per_spike,
    encoding_scores,
    r2_flattened,
    r2_psth,
    region_probe,
)
from .modeling_neds import NedsForMaskedModeling
from .report import evaluation_markdown, metric_display_name, write_json, write_markdown
from .validity import INVALID_LABEL, allows_missing, invalid_entries, missing_counts

__all__ = [
    "DEFAULT_REGION_LEVELS",
    "MTM_TASK_METRICS",
    "PROTOCOLS",
    "PROTOCOL_DECODING",
    "PROTOCOL_ENCODING",
    "EvaluationReport",
    "SessionPredictions",
    "add_evaluate_arguments",
    "average_over_sessions",
    "average_score",
    "card_metric",
    "check_finite_trials",
    "choose_heldout_neurons",
    "conditions_from_fields",
    "denormalize_behavior",
    "evaluate_model",
    "evaluate_trials",
    "mtm_task_scores",
    "neuron_embeddings",
    "predict_mtm_task",
    "predict_session",
    "report_to_eval_results",
    "run_evaluate",
    "run_region_probe",
    "score_session",
    "trial_conditions",
    "validation_loss",
]

PROTOCOL_ENCODING = "encoding"
PROTOCOL_DECODING = "decoding"
#: Every protocol ``evaluate --protocols`` accepts (``mtm`` stands for the four MtM tasks).
PROTOCOLS = (PROTOCOL_ENCODING, PROTOCOL_DECODING, *MTM_EVAL_TASKS)
#: Metric suffixes of every MtM task (``<task>_<suffix>``).
MTM_TASK_METRICS = ("bps", "bps_pooled", "r2_psth", "r2_trial")
#: Region levels of the neurons table probed by ``neds-hf evaluate --region-probe``.
DEFAULT_REGION_LEVELS = ("region_beryl", "region_cosmos")
#: Model-card task of each metric family: (task type, task name).
ENCODING_TASK = ("neural-encoding", "Neural encoding (behaviour to spikes)")
DECODING_TASK = ("neural-decoding", "Neural decoding (spikes to behaviour)")
AVERAGE_TASK = ("neural-encoding-decoding", "Mean of encoding and decoding scores")
#: Model-card task of each MtM spike-prediction task.
MTM_CARD_TASKS = {
    "co_smoothing": ("spike-co-smoothing", "Co-smoothing (leave-one-neuron-out)"),
    "forward_prediction": ("spike-forward-prediction", "Forward prediction (last 10 bins)"),
    "inter_region": ("spike-inter-region", "Inter-region spike prediction"),
    "intra_region": ("spike-intra-region", "Intra-region spike prediction"),
}


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
    #: ``{session_id: [neuron, ...]}`` left out one at a time by co-smoothing / intra-region.
    heldout_neurons: dict[str, list[int]] | None = None
    #: The evaluated dataset (folder or Hub id), when known: then ``to_dict`` also carries the
    #: card's ``eval_results``, so ``neds-hf push --eval-results evaluation.json`` reads them.
    dataset: str | None = None
    #: ``{session_id: {behaviour: [missing entries, entries]}}`` for behaviours that may be
    #: missing (skipped by every score); absent when the model has none.
    skipped_entries: dict[str, dict[str, list[int]]] | None = None

    @property
    def missing_modalities(self) -> dict[str, list[str]]:
        """``{session_id: [behaviour, ...]}``: the behaviours a session lacks entirely."""
        return {
            session_id: missing
            for session_id, counts in (self.skipped_entries or {}).items()
            if (missing := [name for name, (bad, total) in counts.items() if bad == total])
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        payload = {
            "split": self.split,
            "protocols": self.protocols,
            "average": self.average,
            "per_session": self.per_session,
            "region_probe": self.region_probe,
        }
        if self.heldout_neurons is not None:
            payload["heldout_neurons"] = self.heldout_neurons
        if self.skipped_entries is not None:
            payload["skipped_entries"] = self.skipped_entries
            payload["missing_modalities"] = self.missing_modalities
        if self.dataset is not None:
            payload["dataset"] = self.dataset
            payload["eval_results"] = report_to_eval_results(self, self.dataset)
        return payload

    def to_markdown(self) -> str:
        """A Markdown table: one row per session plus the average (and the region probe)."""
        return evaluation_markdown(
            self.per_session, self.average, self.region_probe, self.skipped_entries
        )

    def save(self, output_dir: str | Path) -> tuple[Path, Path]:
        """Write ``evaluation.json`` and ``evaluation.md`` into `output_dir` (atomically)."""
        output_dir = Path(output_dir)
        json_path = write_json(output_dir / "evaluation.json", self.to_dict())
        markdown_path = write_markdown(output_dir / "evaluation.md", self.to_markdown())
        return json_path, markdown_path


def denormalize_behavior(values: np.ndarray, stats: Mapping[str, float], method: str) -> np.ndarray:
    """Map normalised continuous behaviour back to physical units.

    The inverse of the collator's normalisation (``DataCollatorForNedsMasking``) for one
    session and modality: `stats` holds its ``mean`` / ``std`` / ``min`` / ``max`` (train
    split) and `method` is one of ``BEHAVIOR_NORMALIZATIONS`` (the model's
    ``config.behavior_normalization``). A zero spread is treated as 1, as the collator does.
    """
    if method not in BEHAVIOR_NORMALIZATIONS:
        raise ValueError(f"method must be one of {BEHAVIOR_NORMALIZATIONS}, got {method!r}")
    values = np.asarray(values, dtype=np.float64)
    if method == "none":
        return values
    if method == "minmax":
        span = stats["max"] - stats["min"]
        return values * (span if span > 0 else 1.0) + stats["min"]
    return values * (stats["std"] if stats["std"] > 0 else 1.0) + stats["mean"]


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
            out = model(**inputs, return_loss=False)
            spikes.append(batch["spikes"].numpy())
            rates.append(out.spike_log_rates.float().exp().cpu().numpy())
            for spec in config.behavior_modalities:
                name = spec["name"]
                predictions[name].append(out.behavior_predictions[name].float().cpu().numpy())
                targets[name].append(_behavior_targets(config, batch, spec))
    finally:
        model.train(was_training)
    return SessionPredictions(
        session_id=next(iter(session_ids)),
        spikes=np.concatenate(spikes),
        rates=np.concatenate(rates),
        behavior_targets={k: np.concatenate(v) for k, v in targets.items()},
        behavior_predictions={k: np.concatenate(v) for k, v in predictions.items()},
    )


def _behavior_targets(
    config: Any, batch: Mapping[str, torch.Tensor], spec: Mapping[str, Any]
) -> np.ndarray:
    """One behaviour's targets of a collated batch, ``(B, T)`` or ``(B,)`` labels, with the
    missing entries (``behavior_valid`` False) back to NaN / ``INVALID_LABEL``."""
    behaviors = config.behavior_modalities
    kind_specs = [s for s in behaviors if s["kind"] == spec["kind"]]
    column = kind_specs.index(spec)
    if spec["kind"] == "continuous":
        values = batch["behavior_values"][..., column].numpy()  # (B, T)
        filler = np.nan
    else:
        values = batch["behavior_labels"][..., column].numpy()  # (B, T)
        filler = INVALID_LABEL
    if "behavior_valid" in batch and allows_missing(spec):
        valid = batch["behavior_valid"][..., behaviors.index(spec)].numpy()  # (B, T)
        values = np.where(valid, values, filler)
    if spec["kind"] == "categorical" and spec["trial_level"]:
        return values[:, 0]  # (B,)
    return values


def score_session(
    model_config: Any,
    encoding: SessionPredictions | None,
    decoding: SessionPredictions | None,
    per_behavior: Mapping[str, SessionPredictions] | None = None,
    conditions: np.ndarray | None = None,
) -> dict[str, float]:
    """The scores of one session from its protocol predictions (any method's).

    NEDS, the oracle and the linear baselines are all scored here: `encoding` carries
    predicted rates (bits per spike), `decoding` the behaviour predictions of the modalities in
    ``model_config.behavior_modalities`` (R², accuracy, balanced accuracy). A modality that a
    method did not predict scores NaN. `conditions` ``(trials, K)`` adds the PSTH R².
    """
    scores: dict[str, float] = {}
    if encoding is not None:
        scores.update(encoding_scores(encoding.rates, encoding.spikes))
    for name, predictions in (per_behavior or {}).items():
        scores[f"bps_{name}_only"] = bits_per_spike(
            predictions.rates, predictions.spikes, log_input=False, convention="mean"
        )
    if decoding is not None:
        for spec in model_config.behavior_modalities:
            scores.update(_decoding_scores(spec, decoding, conditions))
    return scores


def _decoding_scores(
    spec: Mapping[str, Any], decoding: SessionPredictions, conditions: np.ndarray | None
) -> dict[str, float]:
    """R² (continuous) or accuracy / balanced accuracy (categorical) of one modality, over its
    present entries (missing ones, NaN / -1 in the targets, are skipped; NaN when none is)."""
    name = spec["name"]
    continuous = spec["kind"] == "continuous"
    keys = [f"{name}_r2"] if continuous else [f"{name}_accuracy", f"{name}_balanced_accuracy"]
    if continuous and conditions is not None:
        keys.append(f"{name}_r2_psth")
    if name not in decoding.behavior_predictions:
        return {key: float("nan") for key in keys}
    predicted, target = decoding.behavior_predictions[name], decoding.behavior_targets[name]
    present = ~invalid_entries(spec, target)  # (trials, T) or (trials,)
    if not present.any():
        return {key: float("nan") for key in keys}
    if continuous:
        scores = {f"{name}_r2": r2_flattened(predicted[present], target[present])}
        if conditions is not None:
            complete = present.all(axis=1)  # (trials,) PSTHs need whole traces
            scores[f"{name}_r2_psth"] = (
                r2_psth(predicted[complete], target[complete], conditions[complete])
                if complete.any()
                else float("nan")
            )
        return scores
    predicted, target = predicted[present], target[present]  # (n, C), (n,)
    return {
        f"{name}_accuracy": accuracy_score(predicted, target),
        f"{name}_balanced_accuracy": balanced_accuracy(predicted, target),
    }


def choose_heldout_neurons(
    session_id: str, num_neurons: int, max_heldout_neurons: int | None, seed: int = 0
) -> list[int]:
    """The neurons co-smoothing and intra-region leave out one at a time: all of them, or a
    seeded choice of `max_heldout_neurons` (the same for a given seed and session id)."""
    if max_heldout_neurons is None or max_heldout_neurons >= num_neurons:
        return list(range(num_neurons))
    if max_heldout_neurons < 1:
        raise ValueError(f"max_heldout_neurons must be >= 1, got {max_heldout_neurons}")
    rng = np.random.default_rng([seed, zlib.crc32(session_id.encode())])
    return sorted(int(n) for n in rng.choice(num_neurons, max_heldout_neurons, replace=False))


@torch.no_grad()
def predict_mtm_task(
    model: NedsForMaskedModeling,
    trials: Sequence[Mapping[str, Any]],
    task: str,
    *,
    neuron_regions: Sequence[str] | None = None,
    heldout_neurons: Sequence[int] | None = None,
    normalization: Mapping[str, Any] | None = None,
    normalization_method: str | None = None,
    batch_size: int = 64,
    heldout_sets: Sequence[HeldOutSet] | None = None,
) -> tuple[SessionPredictions, np.ndarray]:
    """Run one MtM task over the trials of ONE session.

    Every (trial, held-out set) pair is one sample; samples run in batches of `batch_size`, so a
    forward pass covers several held-out neurons. Returns the predictions, whose rates are NaN
    outside the scored entries, and the scored mask ``(T, N)``. `heldout_sets` replaces the
    task's own sets (``masking.mtm_heldout_sets``) by other ones run with the task's prompt, e.g.
    BrainWideBench's co-smoothing, which hides 10 % of the units at once.
    """
    config = model.config
    sets = (
        list(heldout_sets)
        if heldout_sets is not None
        else _heldout_sets(config, trials, task, neuron_regions, heldout_neurons)
    )
    prompt = _task_prompt_row(config, task)
    collator = DataCollatorForNedsMasking(
        config,
        eval_protocol=PROTOCOL_ENCODING,
        normalization=normalization,
        normalization_method=normalization_method,
    )
    inputs = collator(list(trials))
    for name in ("spike_mask", "spike_target_mask", "behavior_mask"):
        inputs.pop(name, None)
    spikes = inputs["spikes"].numpy()  # (R, T, N)
    num_trials, num_neurons = spikes.shape[0], spikes.shape[-1]
    rates = np.full(spikes.shape, np.nan)  # (R, T, N)
    was_training = model.training
    model.eval()
    try:
        for start in range(0, num_trials * len(sets), batch_size):
            pairs = range(start, min(start + batch_size, num_trials * len(sets)))
            trial_rows = torch.tensor([pair % num_trials for pair in pairs])  # (B,)
            masks = heldout_masks(config, [sets[pair // num_trials] for pair in pairs], num_neurons)
            batch = {name: value[trial_rows] for name, value in inputs.items()}
            batch["spike_mask"] = masks.spike_mask
            if masks.causal_attention.any():  # forward prediction of a causally trained model
                batch["causal_attention"] = masks.causal_attention
            if config.behavior_modalities:
                batch["behavior_mask"] = masks.behavior_mask
            if prompt is not None:
                batch["prompt_index"] = torch.full((len(pairs),), prompt, dtype=torch.long)
            batch = {name: value.to(model.device) for name, value in batch.items()}
            predicted = (
                model(**batch, return_loss=False).spike_log_rates.float().exp().cpu().numpy()
            )  # (B, T, N)
            scored = masks.spike_target_mask.numpy()  # (B, T, N)
            for sample, trial in enumerate(trial_rows.tolist()):
                rates[trial][scored[sample]] = predicted[sample][scored[sample]]
    finally:
        model.train(was_training)
    scored_mask = heldout_masks(config, sets, num_neurons).spike_target_mask.any(0).numpy()
    session_id = str(trials[0]["session_id"])
    return SessionPredictions(session_id, spikes=spikes, rates=rates), scored_mask


def _heldout_sets(
    config: Any,
    trials: Sequence[Mapping[str, Any]],
    task: str,
    neuron_regions: Sequence[str] | None,
    heldout_neurons: Sequence[int] | None,
) -> list[HeldOutSet]:
    """The held-out sets of `task` for the (one) session of `trials`."""
    if not trials:
        raise ValueError(f"{task}: needs at least one trial")
    session_ids = sorted({str(trial["session_id"]) for trial in trials})
    if len(session_ids) != 1:
        raise ValueError(f"{task}: expects trials of one session, got {session_ids}")
    session_id = session_ids[0]
    if session_id not in config.sessions:
        raise ValueError(f"the model does not know session {session_id!r}")
    if neuron_regions is None and "neuron_regions" in trials[0]:
        neuron_regions = list(trials[0]["neuron_regions"])
    try:
        return mtm_heldout_sets(
            task,
            config.sessions[session_id],
            config.num_time_bins,
            neuron_regions,
            heldout_neurons,
        )
    except ValueError as error:
        raise ValueError(f"session {session_id}: {error}") from None


def _task_prompt_row(config: Any, task: str) -> int | None:
    """Row of the task's prompt in `config.prompt_schemes` (None without prompts)."""
    if not config.use_prompt:
        return None
    scheme = MTM_EVAL_TASKS[task]
    if scheme not in config.prompt_schemes:
        raise ValueError(
            f"task {task!r} runs with the {scheme!r} prompt, which the model lacks "
            f"(config.prompt_schemes = {config.prompt_schemes})"
        )
    return config.prompt_schemes.index(scheme)


def mtm_task_scores(
    task: str,
    predictions: SessionPredictions,
    scored_mask: np.ndarray,
    conditions: np.ndarray | None = None,
) -> dict[str, float]:
    """``<task>_bps`` / ``_bps_pooled`` / ``_r2_psth`` / ``_r2_trial`` over the scored entries.

    The scored entries of a task form a block of bins x neurons (`scored_mask` ``(T, N)``);
    bits per spike use both conventions of ``metrics.encoding_scores``; the R² are the mean
    over scored neurons of each neuron's R² on trials x bins (``_r2_trial``) and on the
    trial averages per condition (``_r2_psth``; `conditions` ``(trials, K)``, one condition
    when None).
    """
    bins = np.flatnonzero(scored_mask.any(1))
    neurons = np.flatnonzero(scored_mask.any(0))
    if not np.array_equal(scored_mask, np.outer(scored_mask.any(1), scored_mask.any(0))):
        raise ValueError(f"{task}: the scored entries must form a block of bins x neurons")
    block = np.ix_(np.arange(predictions.spikes.shape[0]), bins, neurons)
    rates, spikes = predictions.rates[block], predictions.spikes[block]  # (R, T', N')
    if conditions is None:
        conditions = np.zeros(len(spikes), dtype=np.int64)
    scores = {f"{task}_{key}": value for key, value in encoding_scores(rates, spikes).items()}
    scores[f"{task}_r2_psth"] = r2_psth(rates, spikes, conditions)
    scores[f"{task}_r2_trial"] = r2_flattened(rates, spikes)
    return scores


def validation_loss(
    model: NedsForMaskedModeling,
    trials: Iterable[Mapping[str, Any]],
    normalization: Mapping[str, Any] | None = None,
    batch_size: int = 64,
) -> float:
    """Masked-modelling loss of the encoding and decoding protocols, mean over the trials and
    the two protocols (the model's weighted total loss; lower is better).

    The deterministic counterpart of the training loss, used to pick the best checkpoint with
    ``best_model_metric="loss"``: unlike balanced accuracies on a few dozen validation trials
    it moves smoothly with the model.
    """
    grouped = _grouped_trials_to_evaluate(
        model.config, trials, (PROTOCOL_ENCODING, PROTOCOL_DECODING), "validation"
    )
    was_training = model.training
    model.eval()
    totals = {PROTOCOL_ENCODING: 0.0, PROTOCOL_DECODING: 0.0}
    count = 0
    try:
        with torch.no_grad():
            for session_trials in grouped.values():
                count += len(session_trials)
                for protocol in totals:
                    collator = DataCollatorForNedsMasking(
                        model.config, eval_protocol=protocol, normalization=normalization
                    )
                    for start in range(0, len(session_trials), batch_size):
                        chunk = session_trials[start : start + batch_size]
                        inputs = {k: v.to(model.device) for k, v in collator(chunk).items()}
                        totals[protocol] += float(model(**inputs).loss) * len(chunk)
    finally:
        model.train(was_training)
    return float(np.mean([total / count for total in totals.values()]))


def average_score(scores: Mapping[str, float]) -> float:
    """Mean of bits per spike, decoding R² and balanced accuracies (NaN ignored)."""
    parts = [
        value
        for key, value in scores.items()
        if key == "bps" or (key.endswith("_r2")) or key.endswith("_balanced_accuracy")
    ]
    finite = [value for value in parts if value is not None and np.isfinite(value)]
    return float(np.mean(finite)) if finite else float("nan")


def average_over_sessions(per_session: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Mean over sessions of every metric (NaN where no session has a finite value)."""
    metric_names = list(dict.fromkeys(m for scores in per_session.values() for m in scores))
    average = {}
    for metric in metric_names:
        values = [scores.get(metric, float("nan")) for scores in per_session.values()]
        finite = [v for v in values if v is not None and np.isfinite(v)]
        average[metric] = float(np.mean(finite)) if finite else float("nan")
    return average


def _group_by_session(dataset: Iterable[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    grouped: dict[str, list[Mapping[str, Any]]] = {}
    for trial in dataset:
        grouped.setdefault(trial["session_id"], []).append(trial)
    return grouped


def trial_conditions(config: Any, trials: Sequence[Mapping[str, Any]]) -> np.ndarray | None:
    """``(trials, K)`` labels of the config's trial-level categorical modalities present in
    every trial (the PSTH conditions; those that may be missing are left out), or None when the
    model has none or the trials lack them."""
    names = [
        spec["name"]
        for spec in config.behavior_modalities
        if spec["kind"] == "categorical" and spec["trial_level"] and not allows_missing(spec)
    ]
    return conditions_from_fields(trials, names)


def conditions_from_fields(
    trials: Sequence[Mapping[str, Any]], names: Sequence[str]
) -> np.ndarray | None:
    """``(trials, K)`` integer labels of the trial-level fields `names`, or None when there are
    none or the trials lack them."""
    if not names or not all(name in trials[0] for name in names):
        return None
    return np.array([[int(np.asarray(t[name]).reshape(-1)[0]) for name in names] for t in trials])


def check_finite_trials(
    session_id: str,
    trials: Sequence[Mapping[str, Any]],
    fields: Sequence[str],
    missing_allowed: Sequence[str] = (),
) -> None:
    """Raise a ValueError naming the session, trial and field of the first NaN / inf value.

    Bits per spike skips NaN counts and the model turns a NaN input into NaN predictions, so a
    non-finite value must be caught before scoring, not averaged away. In the fields of
    `missing_allowed` (behaviours with ``allow_missing``) NaN marks a missing entry; inf is
    still an error.
    """
    for position, trial in enumerate(trials):
        for name in fields:
            if name not in trial:
                continue
            values = np.asarray(trial[name], dtype=np.float64)
            if name in missing_allowed:
                values = np.where(np.isnan(values), 0.0, values)
            if not np.isfinite(values).all():
                trial_id = trial.get("trial_id", position)
                raise ValueError(
                    f"session {session_id}: trial {trial_id}: field {name!r} holds "
                    f"{int((~np.isfinite(values)).sum())} NaN/inf value(s); evaluation needs "
                    "finite spike counts and behaviour (drop or repair the trial)"
                )


def _grouped_trials_to_evaluate(
    config: Any, trials: Iterable[Mapping[str, Any]], protocols: Sequence[str], split: str
) -> dict[str, list[Mapping[str, Any]]]:
    """The trials grouped by session, after checking the protocols, that there are trials, that
    the model knows every session and has the prompt of every MtM task (before any work)."""
    unknown = [p for p in protocols if p not in PROTOCOLS]
    if unknown:
        raise ValueError(f"unknown protocols {unknown}; known: {list(PROTOCOLS)}")
    grouped = _group_by_session(trials)
    if not grouped:
        raise ValueError(f"no trials to evaluate in split {split!r}")
    missing = sorted(set(grouped) - set(config.sessions))
    if missing:
        raise ValueError(f"the model does not know sessions {missing}; fine-tune it on them first")
    for task in (p for p in protocols if p in MTM_EVAL_TASKS):
        _task_prompt_row(config, task)
    return grouped


def _mtm_task_session_scores(
    model: NedsForMaskedModeling,
    session_trials: Sequence[Mapping[str, Any]],
    tasks: Sequence[str],
    regions: Sequence[str] | None,
    heldout_neurons: Sequence[int],
    conditions: Any,
    common: Mapping[str, Any],
) -> dict[str, float]:
    """One session's scores of the MtM tasks `tasks` (``<task>_bps`` ...)."""
    scores: dict[str, float] = {}
    for task in tasks:
        task_predictions, scored = predict_mtm_task(
            model,
            session_trials,
            task,
            neuron_regions=regions,
            heldout_neurons=heldout_neurons,
            **common,
        )
        scores.update(mtm_task_scores(task, task_predictions, scored, conditions))
    return scores


def _protocol_session_scores(
    model: NedsForMaskedModeling,
    session_trials: Sequence[Mapping[str, Any]],
    protocols: Sequence[str],
    per_behavior_encoding: bool,
    common: Mapping[str, Any],
    missing: Sequence[str] = (),
) -> dict[str, float]:
    """One session's encoding / decoding (and per-behaviour encoding) scores, with ``avg``.

    A behaviour in `missing` (absent from every trial of the session) gets no per-behaviour
    encoding run: its ``bps_<name>_only`` is NaN, not the score of showing nothing."""
    config = model.config
    predictions = {
        protocol: predict_session(model, session_trials, protocol, **common)
        for protocol in protocols
        if protocol == PROTOCOL_ENCODING
        or (protocol == PROTOCOL_DECODING and config.behavior_modalities)
    }
    per_behavior = None
    if per_behavior_encoding and config.behavior_modalities:
        per_behavior = {
            spec["name"]: predict_session(
                model, session_trials, f"encoding:{spec['name']}", **common
            )
            for spec in config.behavior_modalities
            if spec["name"] not in missing
        }
    scores = score_session(
        config,
        predictions.get(PROTOCOL_ENCODING),
        predictions.get(PROTOCOL_DECODING),
        per_behavior,
        trial_conditions(config, session_trials),
    )
    if per_behavior is not None:
        scores.update({f"bps_{name}_only": float("nan") for name in missing})
    if any(p in PROTOCOLS[:2] for p in protocols):
        scores["avg"] = average_score(scores)
    return scores


def evaluate_trials(
    model: NedsForMaskedModeling,
    trials: Iterable[Mapping[str, Any]],
    normalization: Mapping[str, Any] | None = None,
    protocols: Sequence[str] = (PROTOCOL_ENCODING, PROTOCOL_DECODING),
    per_behavior_encoding: bool = False,
    normalization_method: str | None = None,
    batch_size: int = 64,
    split: str = "test",
    *,
    neuron_regions: Mapping[str, Sequence[str]] | None = None,
    max_heldout_neurons: int | None = None,
    seed: int = 0,
    condition_fields: Sequence[str] | None = None,
) -> EvaluationReport:
    """Evaluate a model on trial dicts (any iterable of dataset items) of one or more sessions.

    `protocols` are entries of ``PROTOCOLS``. The MtM tasks use `neuron_regions`
    (``{session_id: [region, ...]}``, region tasks), `max_heldout_neurons` / `seed` (the
    neurons left out one at a time, :func:`choose_heldout_neurons`) and `condition_fields`
    (trial-level fields defining the PSTH conditions of ``<task>_r2_psth``; default: the
    model's trial-level categorical modalities).
    """
    grouped = _grouped_trials_to_evaluate(model.config, trials, protocols, split)
    config = model.config
    fields = ["spikes", *(spec["name"] for spec in config.behavior_modalities)]
    common = dict(
        normalization=normalization,
        normalization_method=normalization_method,
        batch_size=batch_size,
    )
    per_session: dict[str, dict[str, float]] = {}
    heldout: dict[str, list[int]] = {}
    skipped: dict[str, dict[str, list[int]]] = {}
    for session_id, session_trials in grouped.items():
        check_finite_trials(session_id, session_trials, fields, config.behaviors_with_missing)
        counts = missing_counts(config.behavior_modalities, session_trials)
        skipped[session_id] = {name: [bad, total] for name, (bad, total) in counts.items()}
        scores = _protocol_session_scores(
            model,
            session_trials,
            protocols,
            per_behavior_encoding,
            common,
            missing=[name for name, (bad, total) in counts.items() if bad == total],
        )
        tasks = [p for p in protocols if p in MTM_EVAL_TASKS]
        if tasks:
            heldout[session_id] = choose_heldout_neurons(
                session_id, config.sessions[session_id], max_heldout_neurons, seed
            )
            conditions = (
                trial_conditions(config, session_trials)
                if condition_fields is None
                else conditions_from_fields(session_trials, condition_fields)
            )
            scores.update(
                _mtm_task_session_scores(
                    model,
                    session_trials,
                    tasks,
                    (neuron_regions or {}).get(session_id),
                    heldout[session_id],
                    conditions,
                    common,
                )
            )
        per_session[session_id] = scores
    return EvaluationReport(
        per_session=per_session,
        average=average_over_sessions(per_session),
        protocols=list(protocols),
        split=split,
        heldout_neurons=heldout or None,
        skipped_entries=skipped if config.behaviors_with_missing else None,
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


#: Model-card task of a metric key, by key pattern (first match wins; ``{name}`` = modality).
_CARD_TASKS: tuple[tuple[str, tuple[str, str]], ...] = (
    *((rf"{task}_.+", card_task) for task, card_task in MTM_CARD_TASKS.items()),
    (r"bps(_.+)?", ENCODING_TASK),
    (r"avg", AVERAGE_TASK),
    (r".+", DECODING_TASK),
)


def card_metric(metric: str) -> dict[str, str]:
    """The model-card fields of a metric key: task type / name, metric type and name.

    The metric type is the key evaluation writes (``"wheel_speed_r2"``) and the metric name its
    display name (``"wheel speed R²"``), so a card, ``evaluation.json`` and the demo's
    ``results.json`` name every score alike.
    """
    task_type, task_name = next(
        task for pattern, task in _CARD_TASKS if re.fullmatch(pattern, metric)
    )
    return {
        "task_type": task_type,
        "task_name": task_name,
        "metric_type": metric,
        "metric_name": metric_display_name(metric),
    }


def report_to_eval_results(
    report: EvaluationReport | Mapping[str, float],
    dataset_name: str,
    dataset_type: str | None = None,
    *,
    split: str | None = None,
    metrics: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Average scores as model-card ``eval_results`` entries (the Hub's model-index).

    `report` is an :class:`EvaluationReport` or a mapping of average scores (then give
    `split`); `metrics` restricts the entries to these keys. Non-finite scores are left out.
    """
    average = report.average if isinstance(report, EvaluationReport) else report
    split = split if split is not None else getattr(report, "split", None)
    entries = []
    for metric, value in average.items():
        if (metrics is not None and metric not in metrics) or not np.isfinite(value):
            continue
        entries.append(
            {
                **card_metric(metric),
                "dataset_type": dataset_type or dataset_name,
                "dataset_name": dataset_name,
                "dataset_split": split,
                "metric_value": float(value),
            }
        )
    return entries


def _dataset_trials(
    model: NedsForMaskedModeling, dataset: str, split: str, sessions: Sequence[str]
) -> tuple[Any, list[dict[str, Any]], list[str]]:
    """The trials dataset, its trials and the PSTH condition fields (the declared trial-level
    categorical modalities present in every trial) for evaluating `model` on `dataset`; the
    declared modalities must feed the model, and every session its neuron count."""
    from .data.load import load_modalities
    from .data.training_data import NedsTrialDataset

    declared = load_modalities(dataset)
    check_declared_modalities(model.config.modalities, declared, str(dataset))
    condition_fields = [
        spec["name"]
        for spec in declared
        if spec["kind"] == "categorical"
        and spec.get("trial_level", True)
        and not allows_missing(spec)
    ]
    served = {spec["name"] for spec in model.config.modalities} | set(condition_fields)
    data = NedsTrialDataset(
        dataset,
        split,
        sessions=list(sessions),
        modalities=[spec["name"] for spec in declared if spec["name"] in served],
    )
    for session_id in sessions:
        if data.n_neurons[session_id] != model.config.sessions[session_id]:
            raise ValueError(
                f"session {session_id}: the model has {model.config.sessions[session_id]} "
                f"neurons, the dataset {data.n_neurons[session_id]}; they were built with "
                "different preprocessing"
            )
    return data, [data[i] for i in range(len(data))], condition_fields


def evaluate_model(
    model_name_or_path: str | NedsForMaskedModeling,
    dataset: str,
    split: str = "test",
    sessions: Sequence[str] | None = None,
    per_behavior_encoding: bool = False,
    region_probe_levels: Sequence[str] = (),
    normalization_method: str | None = None,
    batch_size: int = 64,
    protocols: Sequence[str] = (PROTOCOL_ENCODING, PROTOCOL_DECODING),
    max_heldout_neurons: int | None = None,
    seed: int = 0,
) -> EvaluationReport:
    """Evaluate a model folder / Hub id on a built dataset (default: the sessions it knows).

    The MtM tasks among `protocols` take the neuron regions from the dataset's neurons table
    and group trials for the spike PSTH R² by the dataset's trial-level categorical modalities,
    so spike-only and multimodal models are scored on the same conditions.
    """
    from .data.load import load_sessions

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
    data, trials, condition_fields = _dataset_trials(model, dataset, split, sessions)
    report = evaluate_trials(
        model,
        trials,
        normalization=data.normalization,
        protocols=protocols,
        per_behavior_encoding=per_behavior_encoding,
        normalization_method=normalization_method,
        batch_size=batch_size,
        split=split,
        neuron_regions=data.neuron_regions,
        max_heldout_neurons=max_heldout_neurons,
        seed=seed,
        condition_fields=condition_fields,
    )
    report.dataset = str(dataset)
    if region_probe_levels:
        from .data.load import load_neurons

        neurons = load_neurons(dataset, list(sessions))
        levels = {
            level: {s: neurons.loc[neurons["session_id"] == s, level].tolist() for s in sessions}
            for level in region_probe_levels
        }
        report.region_probe = run_region_probe(model, levels)
    return report


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
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
    # a flag, not an option with optional values, so that it never swallows the model path
    parser.add_argument(
        "--region-probe",
        action="store_true",
        help="run the region probe on the per-neuron embeddings (levels: --region-levels)",
    )
    parser.add_argument(
        "--region-levels",
        nargs="+",
        default=list(DEFAULT_REGION_LEVELS),
        metavar="LEVEL",
        help="region columns of the neurons table probed by --region-probe "
        f"(default: {' '.join(DEFAULT_REGION_LEVELS)})",
    )
    parser.add_argument(
        "--protocols",
        nargs="+",
        default=[PROTOCOL_ENCODING, PROTOCOL_DECODING],
        choices=[*PROTOCOLS, "mtm"],
        metavar="PROTOCOL",
        help=f"protocols to run, from {' '.join(PROTOCOLS)}; 'mtm' stands for the four MtM "
        "spike-prediction tasks (default: encoding decoding)",
    )
    parser.add_argument(
        "--max-heldout-neurons",
        type=int,
        default=None,
        metavar="N",
        help="co_smoothing / intra_region leave out at most N neurons per session, chosen with "
        "--seed (default: every neuron; cost: trials x neurons samples per task)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the --max-heldout-neurons choice"
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--output", default=None, help="folder for evaluation.json and evaluation.md"
    )


def run_evaluate(args: argparse.Namespace) -> int:
    """Run ``neds-hf evaluate`` and print the Markdown table.

    Returns 0, or 2 with the reason on stderr when the arguments or the data are invalid.
    """
    if args.batch_size < 1:
        print(
            f"neds-hf evaluate: error: --batch-size must be >= 1, got {args.batch_size}",
            file=sys.stderr,
        )
        return 2
    if args.max_heldout_neurons is not None and args.max_heldout_neurons < 1:
        print(
            "neds-hf evaluate: error: --max-heldout-neurons must be >= 1, got "
            f"{args.max_heldout_neurons}",
            file=sys.stderr,
        )
        return 2
    protocols = list(
        dict.fromkeys(
            task
            for protocol in args.protocols
            for task in (MTM_EVAL_TASKS if protocol == "mtm" else [protocol])
        )
    )
    try:
        report = evaluate_model(
            args.model,
            args.dataset,
            split=args.split,
            sessions=args.sessions,
            per_behavior_encoding=args.per_behavior,
            region_probe_levels=args.region_levels if args.region_probe else (),
            batch_size=args.batch_size,
            protocols=protocols,
            max_heldout_neurons=args.max_heldout_neurons,
            seed=args.seed,
        )
    except ValueError as error:
        print(f"neds-hf evaluate: error: {error}", file=sys.stderr)
        return 2
    print(report.to_markdown())
    if args.output:
        json_path, markdown_path = report.save(args.output)
        print(f"wrote {json_path} and {markdown_path}")
    return 0

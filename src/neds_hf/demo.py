"""``neds-hf demo``: the whole NEDS pipeline end to end on the embedded synthetic corpus.

Runs offline on a CPU in a few minutes with the default sizes:

1. write a synthetic IBL-like corpus (ALF sessions + ONE cache + ground truth);
2. build the ``datasets`` dataset from it through the real ONE loader;
3. pretrain NEDS on the pretraining sessions;
4. fine-tune the pretrained model on the held-out sessions;
5. train the same architecture from scratch on the held-out sessions alone (same steps);
6. evaluate on the held-out sessions' test trials: both NEDS models, the oracle (the true
   expected spike counts of the generative model), a reduced-rank linear encoder and
   ridge / logistic decoders; run the region probe on the per-neuron embeddings;
7. write ``<output>/report/`` (``report.md``, ``results.json``, plots) and ``<output>/model``
   (the fine-tuned model with a card whose ``model-index`` carries the test numbers).

Every figure in the report is computed by this run; the text that compares methods is
derived from the numbers, whichever way they go.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shlex
import shutil
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import yaml

logger = logging.getLogger("neds_hf.demo")  # also when run as __main__

#: Output folder of ``neds-hf demo`` when ``--output`` is not given (relative to the cwd).
DEFAULT_OUTPUT_DIR = "neds_demo_report"
#: Folders the demo writes inside its output folder (and replaces with ``overwrite``).
DEMO_SUBDIRS = ("one_cache", "dataset", "runs", "model", "report")
#: Continuous and trial-level behaviours of the IBL dataset, in the model's order.
CONTINUOUS_BEHAVIORS = ("wheel_speed", "whisker_motion_energy")
TRIAL_LABELS = ("choice", "block")
#: Methods of the results table, in row order, with their display names.
METHODS = {
    "oracle": "Oracle (true rates)",
    "neds_finetuned": "NEDS fine-tuned (pretrained)",
    "neds_scratch": "NEDS from scratch",
    "linear_encoder": "Linear encoder (reduced-rank)",
    "linear_decoder": "Ridge / logistic decoder",
}
#: Columns of the results table: metric key -> header.
TABLE_METRICS = {
    "bps": "bps (mean)",
    "bps_pooled": "bps (pooled)",
    "wheel_speed_r2": "wheel R²",
    "whisker_motion_energy_r2": "whisker R²",
    "choice_balanced_accuracy": "choice bal. acc.",
    "block_balanced_accuracy": "block bal. acc.",
}
ENCODING_METRICS = ("bps", "bps_pooled")
DECODING_METRICS = tuple(m for m in TABLE_METRICS if m not in ENCODING_METRICS)
#: Default sizes of ``neds-hf demo`` (chosen to finish in a few minutes on 2 CPU cores).
DEMO_DEFAULTS: dict[str, Any] = {
    "n_sessions": 6,
    "n_heldout": 2,
    "n_trials": 300,
    "n_neurons": 60,
    "hidden_size": 128,
    "num_layers": 1,
    "pretrain_steps": 1500,
    "finetune_steps": 400,
    "batch_size": 16,
    "learning_rate": 3e-3,
    "seed": 0,
}
#: Masking schemes of the demo's runs (probability weights): the two evaluation protocols
#: (neural = encoding, behavior = decoding) are drawn more often than the other NEDS schemes so
#: that a short CPU run learns both directions.
DEMO_MASKING_SCHEMES = (
    "neural=2",
    "behavior=2",
    "cross_modal=1",
    "within_spikes=0.5",
    "within_behavior=0.5",
)
#: Dropout of the demo's models: none, as the runs are short and the corpus small.
DEMO_DROPOUT = 0.0
#: Model-index fields of the demo's test results.
DATASET_TYPE = "neds-synthetic"
DATASET_NAME = "neds_hf synthetic IBL-like corpus"
CARD_METRICS = {
    "bps": ("neural-encoding", "Neural encoding", "bits_per_spike", "bits per spike"),
    "bps_pooled": (
        "neural-encoding",
        "Neural encoding",
        "bits_per_spike_pooled",
        "bits per spike (pooled)",
    ),
    "wheel_speed_r2": ("neural-decoding", "Neural decoding", "r2", "wheel speed R²"),
    "whisker_motion_energy_r2": (
        "neural-decoding",
        "Neural decoding",
        "r2",
        "whisker motion energy R²",
    ),
    "choice_balanced_accuracy": (
        "neural-decoding",
        "Neural decoding",
        "balanced_accuracy",
        "choice balanced accuracy",
    ),
    "block_balanced_accuracy": (
        "neural-decoding",
        "Neural decoding",
        "balanced_accuracy",
        "block balanced accuracy",
    ),
}


# =============================================================================================
# Output folder and stage bookkeeping
# =============================================================================================


def prepare_output_dir(output_dir: Path, overwrite: bool) -> None:
    """Create `output_dir`; refuse a non-empty one unless `overwrite` (then clear the demo's
    own sub-folders only, never other files)."""
    if output_dir.exists() and not output_dir.is_dir():
        raise NotADirectoryError(f"demo output {output_dir} exists and is not a directory")
    if output_dir.is_dir() and any(output_dir.iterdir()):
        if not overwrite:
            raise FileExistsError(
                f"demo output directory {output_dir} already exists and is not empty; pass "
                "--overwrite (overwrite=True) to replace its demo folders "
                f"{list(DEMO_SUBDIRS)}, or choose another --output"
            )
        for name in DEMO_SUBDIRS:
            shutil.rmtree(output_dir / name, ignore_errors=True)
    output_dir.mkdir(parents=True, exist_ok=True)


class StageTimer:
    """Logs the start and end of each demo stage and records its wall time (s)."""

    def __init__(self, n_stages: int) -> None:
        self.n_stages = n_stages
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str, description: str) -> Iterator[None]:
        """Context manager around one stage."""
        number = len(self.seconds) + 1
        logger.info("[%d/%d] %s ...", number, self.n_stages, description)
        start = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - start, 1)
        logger.info(
            "[%d/%d] %s done in %.1f s", number, self.n_stages, description, self.seconds[name]
        )


# =============================================================================================
# Trials as arrays, ground truth
# =============================================================================================


def trials_to_arrays(trials: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """Stack trial dicts of ONE session into trial-major arrays.

    Returns ``spikes`` (trials, T, N) counts, ``wheel_speed`` / ``whisker_motion_energy``
    (trials, T) in physical units, ``choice`` / ``block`` (trials,) and ``trial_id`` (trials,).
    """
    if not trials:
        raise ValueError("no trials to stack")
    arrays = {
        "spikes": np.stack([np.asarray(t["spikes"]).T for t in trials]).astype(np.float64),
        "trial_id": np.array([int(t["trial_id"]) for t in trials]),
    }
    for name in CONTINUOUS_BEHAVIORS:
        arrays[name] = np.stack([np.asarray(t[name], dtype=np.float64) for t in trials])
    for name in TRIAL_LABELS:
        arrays[name] = np.array([int(t[name]) for t in trials])
    return arrays


def oracle_expected_counts(
    ground_truth: Mapping[str, Any], neurons: Any, trial_ids: np.ndarray
) -> np.ndarray:
    """True expected spike counts ``(trials, T, N)`` of a session's dataset neurons.

    Dataset neurons are matched to ground-truth clusters by ``(probe, cluster_id)`` (the
    neurons table's columns vs the ground truth's ``cluster_probe`` / ``cluster_id``) and
    trials by ``trial_id`` (a row of the ALF trials table = a row of the ground truth).
    """
    cluster_column = {
        (str(probe), int(cluster)): column
        for column, (probe, cluster) in enumerate(
            zip(ground_truth["cluster_probe"], ground_truth["cluster_id"])
        )
    }
    keys = [(str(p), int(c)) for p, c in zip(neurons["probe"], neurons["cluster_id"])]
    missing = [key for key in keys if key not in cluster_column]
    if missing:
        raise ValueError(
            f"session {ground_truth['eid']}: dataset neurons {missing[:5]} have no "
            "ground-truth cluster"
        )
    expected = ground_truth["expected_counts"]  # (n_trials_alf, C, T)
    if trial_ids.max() >= expected.shape[0]:
        raise ValueError(
            f"session {ground_truth['eid']}: trial_id {trial_ids.max()} beyond the "
            f"{expected.shape[0]} ground-truth trials"
        )
    columns = [cluster_column[key] for key in keys]
    return expected[trial_ids][:, columns, :].transpose(0, 2, 1)  # (trials, T, N)


# =============================================================================================
# Baselines and NEDS evaluation
# =============================================================================================


def _nan_scores(metrics: Sequence[str]) -> dict[str, float]:
    return {metric: float("nan") for metric in metrics}


def fit_linear_baselines(
    train: Mapping[str, np.ndarray], test: Mapping[str, np.ndarray], seed: int
) -> tuple[dict[str, float], dict[str, float], dict[str, Any]]:
    """Fit the linear encoder and the ridge / logistic decoders on one session's train trials.

    Returns ``(encoder scores, decoder scores, predictions and notes)`` on the test trials.
    A trial label the linear models cannot use (e.g. a single class in the training trials) is
    reported in the notes and its scores are NaN.
    """
    from .baselines import fit_linear_encoder, fit_logistic_decoder, fit_ridge_decoder
    from .metrics import accuracy, balanced_accuracy, bits_per_spike, r2_flattened

    notes: list[str] = []
    continuous_train = np.stack([train[n] for n in CONTINUOUS_BEHAVIORS], axis=-1)  # (n, T, 2)
    continuous_test = np.stack([test[n] for n in CONTINUOUS_BEHAVIORS], axis=-1)
    labels_train = np.stack([train[n] for n in TRIAL_LABELS], axis=-1)  # (n, 2)
    labels_test = np.stack([test[n] for n in TRIAL_LABELS], axis=-1)
    unseen = [
        name
        for column, name in enumerate(TRIAL_LABELS)
        if np.setdiff1d(labels_test[:, column], labels_train[:, column]).size
    ]
    if unseen:
        notes.append(
            f"linear encoder fitted without trial labels: test trials have {unseen} "
            "values absent from the training trials"
        )
        labels_train = labels_test = None
    encoder = fit_linear_encoder(
        continuous_train, train["spikes"], trial_labels=labels_train, method="rrr"
    )
    encoder_rates = encoder.predict_rates(continuous_test, labels_test)  # (n, T, N)
    encoder_scores = {
        "bps": bits_per_spike(encoder_rates, test["spikes"], log_input=False, convention="mean"),
        "bps_pooled": bits_per_spike(
            encoder_rates, test["spikes"], log_input=False, convention="pooled"
        ),
    }

    decoder_scores: dict[str, float] = {}
    decoded: dict[str, np.ndarray] = {}
    for name in CONTINUOUS_BEHAVIORS:
        decoder = fit_ridge_decoder(train["spikes"], train[name])
        decoded[name] = decoder.predict(test["spikes"])  # (n, T), physical units
        decoder_scores[f"{name}_r2"] = r2_flattened(decoded[name], test[name])
    for name in TRIAL_LABELS:
        try:
            classifier = fit_logistic_decoder(train["spikes"], train[name], seed=seed)
        except ValueError as error:
            notes.append(f"logistic {name} decoder not fitted: {error}")
            decoder_scores.update(
                {f"{name}_accuracy": float("nan"), f"{name}_balanced_accuracy": float("nan")}
            )
            continue
        predicted = classifier.predict(test["spikes"])  # (n,)
        decoder_scores[f"{name}_accuracy"] = accuracy(predicted, test[name])
        decoder_scores[f"{name}_balanced_accuracy"] = balanced_accuracy(predicted, test[name])
    return (
        encoder_scores,
        decoder_scores,
        {"encoder_rates": encoder_rates, "decoded": decoded, "notes": notes},
    )


def _average(per_session: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Mean over sessions of every metric (NaN where no session has a finite value)."""
    metrics = list(dict.fromkeys(m for scores in per_session.values() for m in scores))
    average = {}
    for metric in metrics:
        values = [s.get(metric, float("nan")) for s in per_session.values()]
        finite = [v for v in values if v is not None and np.isfinite(v)]
        average[metric] = float(np.mean(finite)) if finite else float("nan")
    return average


# =============================================================================================
# Plots
# =============================================================================================


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_rates(
    path: Path,
    time_s: np.ndarray,
    bin_size_s: float,
    observed: np.ndarray,
    oracle: np.ndarray,
    neds: np.ndarray,
    linear: np.ndarray,
    choice: np.ndarray,
    neuron_indices: Sequence[int],
    regions: Sequence[str],
) -> None:
    """Trial-averaged rates (Hz) per choice for a few neurons: observed, true, NEDS, linear.

    Array arguments are ``(trials, T, N)`` expected counts per bin (observed: counts).
    """
    plt = _pyplot()
    conditions = [
        (value, label)
        for value, label in ((0, "choice right"), (1, "choice left"))
        if np.any(choice == value)
    ]
    figure, axes = plt.subplots(
        len(conditions),
        len(neuron_indices),
        squeeze=False,
        figsize=(3.2 * len(neuron_indices), 2.6 * len(conditions)),
        sharex=True,
    )
    for row, (value, label) in enumerate(conditions):
        trials = choice == value
        for column, neuron in enumerate(neuron_indices):
            axis = axes[row, column]
            for counts, style, name in (
                (observed, dict(color="0.6", lw=1), "observed"),
                (oracle, dict(color="k", lw=2), "true rate (oracle)"),
                (neds, dict(color="tab:red", lw=1.5), "NEDS fine-tuned"),
                (linear, dict(color="tab:blue", lw=1, ls="--"), "linear encoder"),
            ):
                axis.plot(
                    time_s, counts[trials, :, neuron].mean(axis=0) / bin_size_s, label=name, **style
                )
            axis.axvline(0.0, color="0.8", lw=0.8, zorder=0)
            axis.set_title(f"neuron {neuron} ({regions[neuron]}), {label}", fontsize=8)
            if column == 0:
                axis.set_ylabel("rate (Hz)")
            if row == len(conditions) - 1:
                axis.set_xlabel("time from stimulus onset (s)")
    axes[0, 0].legend(fontsize=7, loc="upper left")
    figure.suptitle("Held-out test trials: mean rate per choice (encoding: spikes hidden)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_behavior(
    path: Path,
    time_s: np.ndarray,
    truth: Mapping[str, np.ndarray],
    neds: Mapping[str, np.ndarray],
    ridge: Mapping[str, np.ndarray],
    trial_rows: Sequence[int],
    trial_ids: np.ndarray,
) -> None:
    """Decoded vs true wheel speed and whisker motion energy for a few test trials."""
    plt = _pyplot()
    figure, axes = plt.subplots(
        len(trial_rows),
        len(CONTINUOUS_BEHAVIORS),
        squeeze=False,
        figsize=(5.0 * len(CONTINUOUS_BEHAVIORS), 2.3 * len(trial_rows)),
        sharex=True,
    )
    for row, trial in enumerate(trial_rows):
        for column, name in enumerate(CONTINUOUS_BEHAVIORS):
            axis = axes[row, column]
            axis.plot(time_s, truth[name][trial], color="k", lw=2, label="true")
            axis.plot(time_s, neds[name][trial], color="tab:red", lw=1.5, label="NEDS fine-tuned")
            axis.plot(
                time_s, ridge[name][trial], color="tab:blue", lw=1, ls="--", label="ridge decoder"
            )
            axis.set_title(f"trial {int(trial_ids[trial])}: {name}", fontsize=8)
            if row == len(trial_rows) - 1:
                axis.set_xlabel("time from stimulus onset (s)")
    axes[0, 0].legend(fontsize=7)
    figure.suptitle("Held-out test trials: decoded behaviour (decoding: behaviour hidden)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_training_curves(
    path: Path, histories: Mapping[str, Sequence[Mapping[str, float]]]
) -> None:
    """Training loss and validation average score against the optimizer step, per run."""
    plt = _pyplot()
    figure, (loss_axis, score_axis) = plt.subplots(1, 2, figsize=(11, 3.8))
    for name, history in histories.items():
        loss = [(h["step"], h["train/loss"]) for h in history if "train/loss" in h]
        score = [(h["step"], h["eval/avg"]) for h in history if "eval/avg" in h]
        if loss:
            loss_axis.plot(*zip(*loss), label=name)
        if score:
            score_axis.plot(*zip(*score), marker="o", ms=3, label=name)
    loss_axis.set(
        xlabel="optimizer step", ylabel="training loss (masked modelling)", title="Training loss"
    )
    score_axis.set(
        xlabel="optimizer step",
        ylabel="validation avg score",
        title="Validation score (mean of bps, R², balanced accuracies)",
    )
    for axis in (loss_axis, score_axis):
        axis.legend(fontsize=8)
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


# =============================================================================================
# Report text
# =============================================================================================


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def results_table(methods: Mapping[str, Mapping[str, Any]]) -> str:
    """The headline Markdown table: one row per method, 'n/a' where a method does not apply."""
    lines = [
        "| method | " + " | ".join(TABLE_METRICS.values()) + " |",
        "|---|" + "---:|" * len(TABLE_METRICS),
    ]
    for key, label in METHODS.items():
        average = methods[key]["average"]
        lines.append(
            f"| {label} | " + " | ".join(_fmt(average.get(m)) for m in TABLE_METRICS) + " |"
        )
    return "\n".join(lines) + "\n"


def _compare(
    metric_label: str, first: str, first_value: float, second: str, second_value: float
) -> str:
    """One sentence saying which of two methods scores higher on a metric, with both numbers."""
    if not (math.isfinite(first_value) and math.isfinite(second_value)):
        return (
            f"{metric_label}: {first} {_fmt(first_value)} vs {second} "
            f"{_fmt(second_value)} (not comparable)."
        )
    if first_value > second_value:
        verdict = f"{first} is higher"
    elif first_value < second_value:
        verdict = f"{first} is lower"
    else:
        verdict = "they are equal"
    return (
        f"{metric_label}: {first} {_fmt(first_value)} vs {second} {_fmt(second_value)} "
        f"({verdict}, difference {first_value - second_value:+.3f})."
    )


def findings(methods: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Comparisons of NEDS fine-tuned against every other method, as measured."""
    neds = methods["neds_finetuned"]["average"]
    oracle = methods["oracle"]["average"]
    lines = []
    for metric in ENCODING_METRICS:
        fraction = neds[metric] / oracle[metric] if oracle[metric] > 0 else float("nan")
        lines.append(
            f"Fraction of the oracle's {TABLE_METRICS[metric]} reached by NEDS "
            f"fine-tuned: {_fmt(neds[metric])} / {_fmt(oracle[metric])} = "
            f"{_fmt(100 * fraction, 1)} %."
        )
    for other in ("neds_scratch", "linear_encoder", "linear_decoder"):
        values = methods[other]["average"]
        for metric, label in TABLE_METRICS.items():
            if math.isfinite(values.get(metric, float("nan"))):
                lines.append(
                    _compare(label, "NEDS fine-tuned", neds[metric], METHODS[other], values[metric])
                )
    return lines


def _region_probe_lines(probes: Mapping[str, Mapping[str, Any]]) -> list[str]:
    lines = []
    for name, levels in probes.items():
        for level, result in levels.items():
            dropped = (
                f"; dropped classes with fewer than {result['n_splits']} neurons: "
                f"{result['dropped_classes']}"
                if result["dropped_classes"]
                else ""
            )
            lines.append(
                f"- {name}, {level}: accuracy {_fmt(result['accuracy'])} "
                f"(chance {_fmt(result['chance_accuracy'])}), macro F1 {_fmt(result['macro_f1'])},"
                f" {result['n_neurons']} neurons in {result['n_classes']} classes{dropped}"
            )
    return lines


def write_report_markdown(path: Path, results: Mapping[str, Any]) -> None:
    """Write ``report.md`` from the results dict."""
    settings, sessions = results["settings"], results["sessions"]
    methods = results["methods"]
    lines = [
        "# NEDS demo on the synthetic IBL-like corpus",
        "",
        f"Held-out sessions ({len(sessions['heldout'])}): {', '.join(sessions['heldout'])}; "
        f"pretraining sessions ({len(sessions['pretrain'])}): {', '.join(sessions['pretrain'])}.",
        f"Scores are on the held-out sessions' **test** split ({results['n_test_trials']} trials),"
        " computed per session and averaged over sessions.",
        "",
        "## Results",
        "",
        results_table(methods),
        "- bps: bits per spike of the predicted rates when every spike is hidden and every "
        "behaviour is shown (encoding); 'mean' averages the per-neuron values (NEDS convention),"
        " 'pooled' sums over neurons first (NLB / BrainWideBench convention).",
        "- R² (flattened over trials x bins) and balanced accuracy: behaviour decoded from the "
        "spikes with every behaviour hidden (decoding).",
        "- Oracle: the generative model's true expected counts. It also knows the latent "
        "factors driven by smooth noise that no behaviour-conditioned encoder can observe, so "
        "it is an upper bound, not an attainable target.",
        "- Linear encoder: reduced-rank ridge regression from standardised wheel speed, whisker "
        "motion energy, one-hot choice / block and a one-hot time bin to Gaussian-smoothed "
        "counts. Decoders: ridge per time bin (continuous), cross-validated logistic regression "
        "on the flattened trial activity (choice, block). Baselines are fitted on the held-out "
        "sessions' train split; NEDS also uses their validation split to pick its checkpoint.",
        "",
        "## Findings (as measured)",
        "",
        *[f"- {line}" for line in findings(methods)],
    ]
    if results["notes"]:
        lines += ["", "Notes:", "", *[f"- {note}" for note in results["notes"]]]
    lines += [
        "",
        "## Region probe",
        "",
        "Linear classifier, 5-fold cross-validation, on per-neuron embeddings (stitcher input "
        "and readout vectors); chance is the majority-class fraction.",
        "",
        *_region_probe_lines(results["region_probe"]),
        "",
        "## Runs",
        "",
        "| stage | seconds |",
        "|---|---:|",
        *[f"| {stage} | {seconds} |" for stage, seconds in results["timings_s"].items()],
        "",
        "| run | sessions | steps | best step | best validation avg |",
        "|---|---|---:|---:|---:|",
    ]
    for name, run in results["training"].items():
        lines.append(
            f"| {name} | {len(run['sessions'])} | {run['global_step']} | "
            f"{run['best_step']} | {_fmt(run['best_score'])} |"
        )
    lines += [
        "",
        f"Model: hidden size {settings['hidden_size']}, {settings['num_layers']} layers, "
        f"{settings['num_attention_heads']} heads, dropout {DEMO_DROPOUT}, masking schemes "
        f"{' '.join(DEMO_MASKING_SCHEMES)}; batch {settings['batch_size']}, peak learning rate "
        f"{settings['learning_rate']} (one-cycle cosine), best checkpoint by validation avg. "
        f"Corpus: {settings['n_sessions']} sessions of "
        f"{settings['n_trials']} trials, {settings['n_neurons']} units per probe before the "
        f"firing-rate filter, seed {settings['seed']}.",
        "",
        "## Files",
        "",
        "- `results.json`: every number of this report (per session and averaged).",
        "- `rates.png`: predicted vs true rates for a few held-out neurons.",
        "- `behavior.png`: decoded vs true wheel speed and whisker motion energy.",
        "- `training_curves.png`: training loss and validation score of the three runs.",
        f"- `{results['paths']['model']}`: the fine-tuned model with its card (model-index = "
        "the NEDS fine-tuned row above).",
        "",
        "## Reproduce",
        "",
        "```bash",
        results["command"],
        "```",
        "",
        "The same steps with the separate commands: `neds-hf make-synthetic`, `neds-hf "
        "prepare-data`, `neds-hf train`, `neds-hf finetune`, `neds-hf evaluate`.",
        "",
    ]
    path.write_text("\n".join(lines), encoding="utf-8")


def card_eval_results(average: Mapping[str, float]) -> list[dict[str, Any]]:
    """Model-index entries of the fine-tuned model's test scores (finite ones only)."""
    entries = []
    for metric, (task_type, task_name, metric_type, metric_name) in CARD_METRICS.items():
        value = average.get(metric, float("nan"))
        if math.isfinite(value):
            entries.append(
                {
                    "task_type": task_type,
                    "task_name": task_name,
                    "dataset_type": DATASET_TYPE,
                    "dataset_name": DATASET_NAME,
                    "dataset_split": "test",
                    "metric_type": metric_type,
                    "metric_name": metric_name,
                    "metric_value": float(value),
                }
            )
    return entries


def _json_ready(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return _json_ready(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# =============================================================================================
# The demo
# =============================================================================================


def reproduce_command(output_dir: Path, settings: Mapping[str, Any]) -> str:
    """The ``neds-hf demo`` command line that reruns this demo."""
    flags = {
        "--output": output_dir,
        "--sessions": settings["n_sessions"],
        "--heldout": settings["n_heldout"],
        "--trials": settings["n_trials"],
        "--neurons": settings["n_neurons"],
        "--hidden-size": settings["hidden_size"],
        "--layers": settings["num_layers"],
        "--pretrain-steps": settings["pretrain_steps"],
        "--finetune-steps": settings["finetune_steps"],
        "--batch-size": settings["batch_size"],
        "--learning-rate": settings["learning_rate"],
        "--seed": settings["seed"],
    }
    return (
        "neds-hf demo "
        + " ".join(f"{flag} {shlex.quote(str(value))}" for flag, value in flags.items())
        + " --overwrite"
    )


def check_demo_settings(
    *,
    n_sessions: int,
    n_heldout: int,
    n_trials: int,
    n_neurons: int,
    hidden_size: int,
    num_layers: int,
    pretrain_steps: int,
    finetune_steps: int,
    batch_size: int,
    learning_rate: float,
) -> None:
    """Raise a ValueError naming every invalid demo setting (before anything is written)."""
    errors = []
    if n_heldout < 1 or n_sessions - n_heldout < 1:
        errors.append(
            f"need at least one pretraining and one held-out session, got "
            f"sessions={n_sessions}, heldout={n_heldout}"
        )
    if n_trials < 40:
        errors.append(
            f"trials must be >= 40 (train / validation / test splits of every session "
            f"need trials of both choices), got {n_trials}"
        )
    for name, value in (
        ("neurons", n_neurons),
        ("pretrain_steps", pretrain_steps),
        ("finetune_steps", finetune_steps),
        ("batch_size", batch_size),
        ("hidden_size", hidden_size),
        ("layers", num_layers),
    ):
        if value < 1:
            errors.append(f"{name} must be >= 1, got {value}")
    if hidden_size >= 1 and hidden_size % 32 and hidden_size > 32:
        errors.append(
            f"hidden_size above 32 must be a multiple of 32 (one attention head per "
            f"32 units), got {hidden_size}"
        )
    if not learning_rate > 0:
        errors.append(f"learning_rate must be > 0, got {learning_rate}")
    if errors:
        raise ValueError("invalid demo settings: " + "; ".join(errors))


def run_demo(
    output_dir: str | Path = DEFAULT_OUTPUT_DIR,
    *,
    n_sessions: int = DEMO_DEFAULTS["n_sessions"],
    n_heldout: int = DEMO_DEFAULTS["n_heldout"],
    n_trials: int = DEMO_DEFAULTS["n_trials"],
    n_neurons: int = DEMO_DEFAULTS["n_neurons"],
    hidden_size: int = DEMO_DEFAULTS["hidden_size"],
    num_layers: int = DEMO_DEFAULTS["num_layers"],
    pretrain_steps: int = DEMO_DEFAULTS["pretrain_steps"],
    finetune_steps: int = DEMO_DEFAULTS["finetune_steps"],
    batch_size: int = DEMO_DEFAULTS["batch_size"],
    learning_rate: float = DEMO_DEFAULTS["learning_rate"],
    seed: int = DEMO_DEFAULTS["seed"],
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the demo end to end and return the results (also written to ``report/results.json``).

    Args:
        output_dir: folder of the corpus, dataset, runs, model and report; refused when it
            exists and is not empty unless `overwrite`.
        n_sessions: synthetic sessions; the last `n_heldout` are held out (fine-tuning,
            from-scratch training and evaluation), the others are for pretraining.
        n_trials: trials per session (a few planted bad trials are excluded by preprocessing).
        n_neurons: units per probe (before the 2 Hz firing-rate filter).
        hidden_size, num_layers: model size (heads: one per 32 hidden units).
        pretrain_steps: optimizer steps of pretraining.
        finetune_steps: optimizer steps of fine-tuning and of the from-scratch run.
        batch_size, learning_rate, seed: optimisation settings shared by the three runs.
        overwrite: replace the demo folders of an existing output folder.
        progress: show progress bars.
    """
    import torch

    from .data.dataset import build_dataset, load_neurons
    from .data.synthetic import load_ground_truth, make_synthetic_cache
    from .data.training_data import NedsTrialDataset
    from .evaluation import evaluate_trials, predict_session, run_region_probe
    from .hub import TRAINING_CONFIG_FILE, save_model_with_card
    from .metrics import bits_per_spike
    from .modeling_neds import NedsForMaskedModeling
    from .training import NedsTrainingArguments, train

    check_demo_settings(
        n_sessions=n_sessions,
        n_heldout=n_heldout,
        n_trials=n_trials,
        n_neurons=n_neurons,
        hidden_size=hidden_size,
        num_layers=num_layers,
        pretrain_steps=pretrain_steps,
        finetune_steps=finetune_steps,
        batch_size=batch_size,
        learning_rate=learning_rate,
    )
    output_dir = Path(output_dir)
    prepare_output_dir(output_dir, overwrite)
    num_heads = max(1, hidden_size // 32)
    settings = dict(
        n_sessions=n_sessions,
        n_heldout=n_heldout,
        n_trials=n_trials,
        n_neurons=n_neurons,
        hidden_size=hidden_size,
        num_layers=num_layers,
        num_attention_heads=num_heads,
        pretrain_steps=pretrain_steps,
        finetune_steps=finetune_steps,
        batch_size=batch_size,
        learning_rate=learning_rate,
        seed=seed,
        torch_threads=torch.get_num_threads(),
    )
    cache_dir, dataset_dir = output_dir / "one_cache", output_dir / "dataset"
    runs_dir, model_dir, report_dir = (
        output_dir / "runs",
        output_dir / "model",
        output_dir / "report",
    )
    timer = StageTimer(n_stages=7)
    total_start = time.perf_counter()
    notes: list[str] = []

    # ---- 1. corpus
    with timer.stage("synthetic_corpus", f"writing {n_sessions} synthetic sessions to {cache_dir}"):
        # the first block (probabilityLeft 0.5) is shortened in small corpora so that every
        # session still has biased blocks for the block decoders
        eids = make_synthetic_cache(
            cache_dir,
            n_sessions,
            seed,
            n_trials=n_trials,
            n_neurons_per_probe=n_neurons,
            first_block_trials=min(90, n_trials // 3),
        )

    # ---- 2. dataset through the ONE loader
    with timer.stage("dataset", f"building the dataset through ONE into {dataset_dir}"):
        build = build_dataset(cache_dir, eids, dataset_dir, progress=progress)
        for session_id, reason in build.skipped.items():
            message = f"session {session_id} skipped by the dataset build: {reason}"
            logger.warning(message)
            notes.append(message)
        built = build.built_session_ids
        pretrain_sessions = [e for e in eids[: n_sessions - n_heldout] if e in built]
        heldout_sessions = [e for e in eids[n_sessions - n_heldout :] if e in built]
        if not pretrain_sessions or not heldout_sessions:
            raise RuntimeError(
                f"after skipping {build.skipped}, {len(pretrain_sessions)} "
                f"pretraining and {len(heldout_sessions)} held-out sessions remain;"
                " the demo needs at least one of each"
            )
        logger.info(
            "dataset: %d sessions (%s neurons); pretraining on %d, holding out %d",
            len(built),
            [s["counts"]["n_neurons"] for s in build.sessions if s["status"] == "ok"],
            len(pretrain_sessions),
            len(heldout_sessions),
        )

    # ---- 3-5. training
    def run_training(name: str, sessions: list[str], steps: int, **extra: Any):
        if "model_name_or_path" not in extra:  # a fine-tuned model keeps its architecture
            extra.update(
                hidden_size=hidden_size,
                num_hidden_layers=num_layers,
                num_attention_heads=num_heads,
                intermediate_size=2 * hidden_size,
                spike_stitcher_size=hidden_size,
                hidden_dropout=DEMO_DROPOUT,
                attention_dropout=DEMO_DROPOUT,
                embedding_dropout=DEMO_DROPOUT,
            )
        arguments = NedsTrainingArguments(
            output_dir=str(runs_dir / name),
            dataset=str(dataset_dir),
            sessions=sessions,
            masking_schemes=list(DEMO_MASKING_SCHEMES),
            learning_rate=learning_rate,
            max_steps=steps,
            per_device_train_batch_size=batch_size,
            eval_steps=max(1, steps // 10),
            save_steps=steps,
            save_total_limit=1,
            logging_steps=max(1, min(10, steps // 20)),
            report_to="tensorboard",
            seed=seed,
            disable_progress_bar=not progress,
            **extra,
        )
        result = train(arguments)
        logger.info(
            "%s: %d steps, best validation avg %s at step %s, model in %s",
            name,
            result.global_step,
            _fmt(result.best_score),
            result.best_step,
            result.model_dir,
        )
        return result

    with timer.stage(
        "pretrain", f"pretraining on {len(pretrain_sessions)} sessions ({pretrain_steps} steps)"
    ):
        pretrained = run_training("pretrain", pretrain_sessions, pretrain_steps)
    with timer.stage(
        "finetune",
        f"fine-tuning on {len(heldout_sessions)} held-out sessions ({finetune_steps} steps)",
    ):
        finetuned = run_training(
            "finetune",
            heldout_sessions,
            finetune_steps,
            mode="finetune",
            model_name_or_path=pretrained.model_dir,
        )
    with timer.stage(
        "scratch", f"training from scratch on the held-out sessions ({finetune_steps} steps)"
    ):
        scratch = run_training("scratch", heldout_sessions, finetune_steps)

    # ---- 6. evaluation
    with timer.stage("evaluate", "evaluating on the held-out test trials"):
        finetuned_model = NedsForMaskedModeling.from_pretrained(finetuned.model_dir)
        scratch_model = NedsForMaskedModeling.from_pretrained(scratch.model_dir)
        test_data = NedsTrialDataset(dataset_dir, "test", sessions=heldout_sessions)
        train_data = NedsTrialDataset(dataset_dir, "train", sessions=heldout_sessions)
        test_trials = [test_data[i] for i in range(len(test_data))]
        normalization = test_data.normalization
        neds_reports = {
            name: evaluate_trials(model, test_trials, normalization=normalization, split="test")
            for name, model in (
                ("neds_finetuned", finetuned_model),
                ("neds_scratch", scratch_model),
            )
        }
        neurons = load_neurons(dataset_dir, heldout_sessions)
        per_session: dict[str, dict[str, dict[str, float]]] = {
            "oracle": {},
            "linear_encoder": {},
            "linear_decoder": {},
        }
        plot_inputs: dict[str, Any] = {}
        for session_id in heldout_sessions:
            session_test = [t for t in test_trials if t["session_id"] == session_id]
            session_train = [train_data[int(i)] for i in train_data.session_indices()[session_id]]
            test_arrays, train_arrays = (
                trials_to_arrays(session_test),
                trials_to_arrays(session_train),
            )
            truth = load_ground_truth(cache_dir, session_id)
            session_neurons = neurons[neurons["session_id"] == session_id]
            oracle_counts = oracle_expected_counts(truth, session_neurons, test_arrays["trial_id"])
            oracle_scores = {
                "bps": bits_per_spike(
                    oracle_counts, test_arrays["spikes"], log_input=False, convention="mean"
                ),
                "bps_pooled": bits_per_spike(
                    oracle_counts, test_arrays["spikes"], log_input=False, convention="pooled"
                ),
            }
            per_session["oracle"][session_id] = oracle_scores
            encoder_scores, decoder_scores, linear = fit_linear_baselines(
                train_arrays, test_arrays, seed
            )
            per_session["linear_encoder"][session_id] = encoder_scores
            per_session["linear_decoder"][session_id] = decoder_scores
            notes.extend(f"session {session_id}: {note}" for note in linear["notes"])
            if not plot_inputs:  # plots show the first held-out session
                plot_inputs = dict(
                    session_id=session_id,
                    truth=truth,
                    test=test_arrays,
                    trials=session_test,
                    oracle=oracle_counts,
                    linear=linear,
                    regions=session_neurons["region_beryl"].tolist(),
                )
        methods: dict[str, dict[str, Any]] = {}
        for key in METHODS:
            if key in neds_reports:
                report = neds_reports[key]
                methods[key] = {"average": report.average, "per_session": report.per_session}
            else:
                methods[key] = {
                    "average": _average(per_session[key]),
                    "per_session": per_session[key],
                }
            applicable = {
                "oracle": ENCODING_METRICS,
                "linear_encoder": ENCODING_METRICS,
                "linear_decoder": DECODING_METRICS,
            }.get(key, tuple(TABLE_METRICS))
            for metric in TABLE_METRICS:
                if metric not in applicable:
                    methods[key]["average"].setdefault(metric, float("nan"))

        region_probe = {}
        pretrained_model = NedsForMaskedModeling.from_pretrained(pretrained.model_dir)
        for name, model, sessions in (
            ("NEDS fine-tuned, held-out sessions", finetuned_model, heldout_sessions),
            ("NEDS pretrained, pretraining sessions", pretrained_model, pretrain_sessions),
        ):
            session_neurons = load_neurons(dataset_dir, sessions)
            regions = {
                level: {
                    s: session_neurons.loc[session_neurons["session_id"] == s, level].tolist()
                    for s in sessions
                }
                for level in ("region_beryl", "region_cosmos")
            }
            try:
                region_probe[name] = run_region_probe(model, regions, seed=seed)
            except ValueError as error:
                notes.append(f"region probe ({name}) not run: {error}")

    # ---- 7. report
    with timer.stage("report", f"writing the report to {report_dir}"):
        report_dir.mkdir(parents=True, exist_ok=True)
        session_id, truth, test_arrays = (
            plot_inputs["session_id"],
            plot_inputs["truth"],
            plot_inputs["test"],
        )
        window_start, bin_size_s = float(truth["window_s"][0]), float(truth["bin_size_s"])
        num_bins = test_arrays["spikes"].shape[1]
        time_s = window_start + bin_size_s * (np.arange(num_bins) + 0.5)  # bin centres
        encoding = predict_session(
            finetuned_model, plot_inputs["trials"], "encoding", normalization
        )
        decoding = predict_session(
            finetuned_model, plot_inputs["trials"], "decoding", normalization
        )
        _, oracle_per_neuron = bits_per_spike(
            plot_inputs["oracle"], test_arrays["spikes"], log_input=False, return_per_neuron=True
        )
        ranked = np.argsort(np.nan_to_num(oracle_per_neuron, nan=-np.inf))[::-1]
        plot_rates(
            report_dir / "rates.png",
            time_s,
            bin_size_s,
            test_arrays["spikes"],
            plot_inputs["oracle"],
            encoding.rates,
            plot_inputs["linear"]["encoder_rates"],
            test_arrays["choice"],
            ranked[:4].tolist(),
            plot_inputs["regions"],
        )
        neds_behavior = {}  # decoded behaviour back in physical units (inverse min-max)
        for name in CONTINUOUS_BEHAVIORS:
            stats = normalization[session_id][name]
            span = stats["max"] - stats["min"]
            neds_behavior[name] = (
                decoding.behavior_predictions[name] * (span if span > 0 else 1.0) + stats["min"]
            )
        moving = np.argsort(test_arrays["wheel_speed"].max(axis=1))[::-1]
        plot_behavior(
            report_dir / "behavior.png",
            time_s,
            test_arrays,
            neds_behavior,
            plot_inputs["linear"]["decoded"],
            moving[[0, len(moving) // 2, -1]].tolist() if len(moving) >= 3 else moving.tolist(),
            test_arrays["trial_id"],
        )
        plot_training_curves(
            report_dir / "training_curves.png",
            {
                "pretrain": pretrained.history,
                "fine-tune": finetuned.history,
                "from scratch": scratch.history,
            },
        )

        training_config_path = Path(finetuned.model_dir) / TRAINING_CONFIG_FILE
        training_config = (
            yaml.safe_load(training_config_path.read_text(encoding="utf-8"))
            if training_config_path.is_file()
            else None
        )
        save_model_with_card(
            finetuned_model,
            model_dir,
            repo_id="local/neds-demo-finetuned",
            eval_results=card_eval_results(methods["neds_finetuned"]["average"]),
            datasets=[str(dataset_dir)],
            training_config=training_config,
            base_model=str(pretrained.model_dir),
        )
        results = {
            "settings": settings,
            "sessions": {
                "pretrain": pretrain_sessions,
                "heldout": heldout_sessions,
                "skipped": build.skipped,
            },
            "n_test_trials": len(test_trials),
            "methods": methods,
            "region_probe": region_probe,
            "training": {
                name: {
                    "sessions": sessions,
                    "global_step": run.global_step,
                    "best_step": run.best_step,
                    "best_score": run.best_score,
                    "model_dir": run.model_dir,
                    "history": run.history,
                }
                for name, run, sessions in (
                    ("pretrain", pretrained, pretrain_sessions),
                    ("finetune", finetuned, heldout_sessions),
                    ("scratch", scratch, heldout_sessions),
                )
            },
            "timings_s": timer.seconds,
            "notes": notes,
            "paths": {
                "report": str(report_dir),
                "model": str(model_dir),
                "dataset": str(dataset_dir),
                "one_cache": str(cache_dir),
                "runs": str(runs_dir),
            },
            "command": reproduce_command(output_dir, settings),
        }
    # written last so that they carry every stage's time
    timer.seconds["total"] = round(time.perf_counter() - total_start, 1)
    write_report_markdown(report_dir / "report.md", results)
    (report_dir / "results.json").write_text(
        json.dumps(_json_ready(results), indent=2) + "\n", encoding="utf-8"
    )
    return results


# =============================================================================================
# Command line
# =============================================================================================


def add_demo_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``neds-hf demo`` options to `parser`."""
    defaults = DEMO_DEFAULTS
    options = (
        ("--sessions", "n_sessions", int, "synthetic sessions"),
        ("--heldout", "n_heldout", int, "of which held out for fine-tuning and evaluation"),
        ("--trials", "n_trials", int, "trials per session"),
        ("--neurons", "n_neurons", int, "units per probe before the 2 Hz firing-rate filter"),
        ("--hidden-size", "hidden_size", int, "hidden size (one attention head per 32)"),
        ("--layers", "num_layers", int, "transformer layers"),
        ("--pretrain-steps", "pretrain_steps", int, "pretraining optimizer steps"),
        (
            "--finetune-steps",
            "finetune_steps",
            int,
            "fine-tuning (and from-scratch) optimizer steps",
        ),
        ("--batch-size", "batch_size", int, "trials per batch"),
        ("--learning-rate", "learning_rate", float, "peak learning rate of the three runs"),
        ("--seed", "seed", int, "corpus and training seed"),
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=Path(DEFAULT_OUTPUT_DIR),
        help=f"output folder (default ./{DEFAULT_OUTPUT_DIR})",
    )
    for flag, key, kind, description in options:
        parser.add_argument(
            flag,
            dest=key,
            metavar=key.removeprefix("n_").upper(),
            type=kind,
            default=defaults[key],
            help=f"{description} (default {defaults[key]})",
        )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the demo folders of an existing output folder",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser


def run_demo_cli(args: argparse.Namespace) -> int:
    """Run ``neds-hf demo`` with parsed `args`; prints the report location and the table."""
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    logging.getLogger("neds_hf").setLevel(logging.INFO)
    # keep the output to the demo's stages and training bars, not every file written or read
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    settings = {key: getattr(args, key) for key in DEMO_DEFAULTS}
    try:
        check_demo_settings(**{k: v for k, v in settings.items() if k != "seed"})
        prepare_output_dir(args.output, args.overwrite)
    except (FileExistsError, NotADirectoryError, ValueError) as error:
        print(f"neds-hf demo: error: {error}", file=sys.stderr)
        return 2
    results = run_demo(
        args.output, overwrite=args.overwrite, progress=not args.no_progress, **settings
    )
    print()
    print(
        f"Report: {Path(results['paths']['report']) / 'report.md'} (results.json and plots "
        f"next to it); fine-tuned model with its card: {results['paths']['model']}"
    )
    print(
        f"Held-out test split, {len(results['sessions']['heldout'])} sessions, total "
        f"{results['timings_s']['total']} s:"
    )
    print()
    print(results_table(results["methods"]))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry point: ``python -m neds_hf.demo [options]``."""
    parser = argparse.ArgumentParser(
        prog="neds-hf demo",
        description="Run NEDS end to end on a synthetic IBL-like corpus (offline, CPU): "
        "pretrain, fine-tune on held-out sessions, evaluate against the true rates "
        "and linear baselines, and write a report.",
    )
    add_demo_arguments(parser)
    return run_demo_cli(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

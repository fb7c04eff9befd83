"""Reports of evaluation results: Markdown tables and text, JSON and plots.

``neds-hf evaluate`` (``evaluation.md``) and ``neds-hf demo`` (``report.md`` and its plots)
write their reports through this module, so a number is formatted, a metric is named and a
file is written (atomically) the same way in both. Functions take plain dicts and arrays, never
a model, so that the report layer sits on top of evaluation and knows nothing about training.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_write_bytes, atomic_write_json, atomic_write_text

__all__ = [
    "compare_sentence",
    "demo_findings",
    "demo_report_markdown",
    "evaluation_markdown",
    "fmt",
    "json_ready",
    "methods_table",
    "metric_display_name",
    "missing_entry_lines",
    "plot_behavior",
    "plot_rates",
    "plot_training_curves",
    "region_probe_lines",
    "spike_task_lines",
    "write_json",
    "write_markdown",
]

#: Display names of metric keys; ``{name}`` is a behaviour modality (underscores -> spaces).
#: The keys are the ones evaluation writes; the names are shown in tables and model cards.
#: Display names of the MtM spike-prediction tasks (``masking.MTM_EVAL_TASKS``).
SPIKE_TASK_NAMES = {
    "co_smoothing": "co-smoothing",
    "forward_prediction": "forward prediction",
    "inter_region": "inter-region",
    "intra_region": "intra-region",
}
#: Columns of the spike-prediction table: metric suffix -> header.
SPIKE_TASK_COLUMNS = {
    "bps": "bits per spike",
    "bps_pooled": "bits per spike (pooled)",
    "r2_psth": "PSTH R²",
    "r2_trial": "R² per trial",
}
METRIC_DISPLAY_NAMES: tuple[tuple[str, str], ...] = (
    *(
        (f"{task}_{suffix}", f"{label} {header}")
        for task, label in SPIKE_TASK_NAMES.items()
        for suffix, header in SPIKE_TASK_COLUMNS.items()
    ),
    ("bps", "bits per spike"),
    ("bps_pooled", "bits per spike (pooled)"),
    ("bps_{name}_only", "bits per spike ({name} only)"),
    ("{name}_r2_psth", "{name} PSTH R²"),
    ("{name}_r2", "{name} R²"),
    ("{name}_balanced_accuracy", "{name} balanced accuracy"),
    ("{name}_accuracy", "{name} accuracy"),
    ("avg", "average score"),
)


def metric_display_name(metric: str) -> str:
    """The display name of a metric key (``"wheel_speed_r2"`` -> ``"wheel speed R²"``).

    Unknown keys are shown with underscores as spaces.
    """
    for pattern, name in METRIC_DISPLAY_NAMES:
        regex = "^" + re.escape(pattern).replace(re.escape("{name}"), "(?P<name>.+)") + "$"
        match = re.match(regex, metric)
        if match:
            modality = match.groupdict().get("name")
            return name.format(name=modality.replace("_", " ")) if modality else name
    return metric.replace("_", " ")


def fmt(value: Any, digits: int = 3) -> str:
    """A score with `digits` decimals, or ``n/a`` for a missing or non-finite one."""
    if value is None or (isinstance(value, float | np.floating) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def json_ready(value: Any) -> Any:
    """`value` as JSON builtins: numpy scalars / arrays unpacked, non-finite floats as null."""
    if isinstance(value, Mapping):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_ready(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: str | Path, payload: Any) -> Path:
    """Write `payload` (made JSON-ready) to `path` atomically; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, json_ready(payload), indent=2)
    return path


def write_markdown(path: str | Path, lines: Sequence[str] | str) -> Path:
    """Write Markdown `lines` (or text) to `path` atomically; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = lines if isinstance(lines, str) else "\n".join(lines)
    atomic_write_text(path, text)
    return path


# =============================================================================================
# Tables and text
# =============================================================================================


def region_probe_lines(probes: Mapping[str, Any], digits: int = 3) -> list[str]:
    """One Markdown bullet per region level: accuracy, chance, macro F1, neurons, dropped."""
    lines = []
    for level, result in probes.items():
        dropped = (
            f"; dropped classes with fewer than {result['n_splits']} neurons: "
            f"{result['dropped_classes']}"
            if result.get("dropped_classes")
            else ""
        )
        lines.append(
            f"- {level}: accuracy {fmt(result['accuracy'], digits)}, macro F1 "
            f"{fmt(result['macro_f1'], digits)}, chance {fmt(result['chance_accuracy'], digits)}"
            f", {result['n_neurons']} neurons in {result['n_classes']} classes{dropped}"
        )
    return lines


def evaluation_markdown(
    per_session: Mapping[str, Mapping[str, float]],
    average: Mapping[str, float],
    region_probe: Mapping[str, Any] | None = None,
    skipped_entries: Mapping[str, Mapping[str, Sequence[int]]] | None = None,
) -> str:
    """``evaluation.md``: one row per session plus the average, then the spike-prediction
    tasks (:func:`spike_task_lines`), the missing behaviour entries
    (:func:`missing_entry_lines`) and the region probe."""
    metrics = [m for m in average if _spike_task_of(m) is None]
    lines = []
    if metrics:
        lines += ["| session | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
        for session_id, scores in per_session.items():
            lines.append(
                f"| {session_id} | " + " | ".join(fmt(scores.get(m), 4) for m in metrics) + " |"
            )
        lines.append("| **average** | " + " | ".join(fmt(average[m], 4) for m in metrics) + " |")
    spike_lines = spike_task_lines(per_session, average)
    if spike_lines:
        lines += ([""] if lines else []) + spike_lines
    missing_lines = missing_entry_lines(skipped_entries or {})
    if missing_lines:
        lines += ([""] if lines else []) + missing_lines
    if region_probe:
        lines += [
            "",
            "Region probe (linear classifier, 5-fold CV on per-neuron embeddings):",
            "",
            *region_probe_lines(region_probe, digits=4),
        ]
    return "\n".join(lines) + "\n"


def missing_entry_lines(skipped_entries: Mapping[str, Mapping[str, Sequence[int]]]) -> list[str]:
    """One line per session with missing behaviour entries (``{session_id: {behaviour:
    [missing, entries]}}``): a behaviour missing entirely is named as missing (its scores are
    NaN), a partly missing one with the count skipped; empty when nothing is missing."""
    lines = []
    for session_id, counts in skipped_entries.items():
        parts = [
            f"{name} missing" if bad == total else f"{name} {bad} of {total} entries skipped"
            for name, (bad, total) in counts.items()
            if bad
        ]
        if parts:
            lines.append(f"- {session_id}: " + "; ".join(parts))
    if not lines:
        return []
    return ["Missing behaviour (not scored; a missing behaviour's scores are n/a):", "", *lines]


def _spike_task_of(metric: str) -> str | None:
    """The spike-prediction task a metric key belongs to, or None."""
    return next(
        (
            task
            for task in SPIKE_TASK_NAMES
            if any(metric == f"{task}_{suffix}" for suffix in SPIKE_TASK_COLUMNS)
        ),
        None,
    )


def spike_task_lines(
    per_session: Mapping[str, Mapping[str, float]], average: Mapping[str, float], digits: int = 4
) -> list[str]:
    """The MtM spike-prediction table: one row per (session, task) and per task's average,
    one column per metric; empty when no task was run."""
    tasks = [task for task in SPIKE_TASK_NAMES if any(_spike_task_of(m) == task for m in average)]
    if not tasks:
        return []
    lines = [
        "Spike prediction (MtM tasks; scored entries only):",
        "",
        "| session | task | " + " | ".join(SPIKE_TASK_COLUMNS.values()) + " |",
        "|---|---|" + "---:|" * len(SPIKE_TASK_COLUMNS),
    ]
    rows = [*per_session.items(), ("**average**", average)]
    for session_id, scores in rows:
        for task in tasks:
            values = " | ".join(fmt(scores.get(f"{task}_{s}"), digits) for s in SPIKE_TASK_COLUMNS)
            lines.append(f"| {session_id} | {SPIKE_TASK_NAMES[task]} | {values} |")
    return lines


def methods_table(
    methods: Mapping[str, Mapping[str, Any]],
    labels: Mapping[str, str],
    columns: Mapping[str, str],
) -> str:
    """A Markdown table: one row per method (``labels``: key -> row label), one column per
    metric (``columns``: key -> header) of the method's ``average``; 'n/a' where it does not
    apply."""
    lines = [
        "| method | " + " | ".join(columns.values()) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for key, label in labels.items():
        average = methods[key]["average"]
        lines.append(f"| {label} | " + " | ".join(fmt(average.get(m)) for m in columns) + " |")
    return "\n".join(lines) + "\n"


def compare_sentence(
    metric_label: str, first: str, first_value: float, second: str, second_value: float
) -> str:
    """One sentence saying which of two methods scores higher on a metric, with both numbers."""
    if not (math.isfinite(first_value) and math.isfinite(second_value)):
        return (
            f"{metric_label}: {first} {fmt(first_value)} vs {second} "
            f"{fmt(second_value)} (not comparable)."
        )
    if first_value > second_value:
        verdict = f"{first} is higher"
    elif first_value < second_value:
        verdict = f"{first} is lower"
    else:
        verdict = "they are equal"
    return (
        f"{metric_label}: {first} {fmt(first_value)} vs {second} {fmt(second_value)} "
        f"({verdict}, difference {first_value - second_value:+.3f})."
    )


# =============================================================================================
# Plots
# =============================================================================================


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _panel_grid(rows: int, columns: int, width: float, height: float) -> tuple[Any, Any]:
    """A figure of ``rows x columns`` panels sharing the time axis (`width` / `height` inches
    per panel); the axes are always a 2-D array."""
    return _pyplot().subplots(
        rows, columns, squeeze=False, figsize=(width * columns, height * rows), sharex=True
    )


def _save_figure(figure: Any, path: Path) -> None:
    """Save a figure as PNG atomically and close it."""
    import io

    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=100)
    _pyplot().close(figure)
    atomic_write_bytes(path, buffer.getvalue())


def plot_rates(
    path: Path,
    time_s: np.ndarray,
    bin_size_s: float,
    curves: Mapping[str, np.ndarray],
    conditions: Mapping[str, np.ndarray],
    neuron_indices: Sequence[int],
    regions: Sequence[str],
) -> None:
    """Trial-averaged rates (Hz) per condition for a few neurons, one line per source.

    `curves` maps a legend label to ``(trials, T, N)`` expected counts per bin (the first is
    drawn grey as the observation, the second black as the truth); `conditions` maps a
    condition label to a boolean ``(trials,)`` mask (empty conditions are left out).
    """
    conditions = {label: mask for label, mask in conditions.items() if np.any(mask)}
    figure, axes = _panel_grid(len(conditions), len(neuron_indices), 3.2, 2.6)
    styles = (
        dict(color="0.6", lw=1),
        dict(color="k", lw=2),
        dict(color="tab:red", lw=1.5),
        dict(color="tab:blue", lw=1, ls="--"),
    )
    for row, (label, trials) in enumerate(conditions.items()):
        for column, neuron in enumerate(neuron_indices):
            axis = axes[row, column]
            for (name, counts), style in zip(curves.items(), styles):
                mean_rate = counts[trials, :, neuron].mean(axis=0) / bin_size_s  # (T,) Hz
                axis.plot(time_s, mean_rate, label=name, **style)
            axis.axvline(0.0, color="0.8", lw=0.8, zorder=0)
            axis.set_title(f"neuron {neuron} ({regions[neuron]}), {label}", fontsize=8)
            if column == 0:
                axis.set_ylabel("rate (Hz)")
            if row == len(conditions) - 1:
                axis.set_xlabel("time from stimulus onset (s)")
    axes[0, 0].legend(fontsize=7, loc="upper left")
    figure.suptitle("Held-out test trials: mean rate per condition (encoding: spikes hidden)")
    _save_figure(figure, path)


def plot_behavior(
    path: Path,
    time_s: np.ndarray,
    curves: Mapping[str, Mapping[str, np.ndarray]],
    trial_rows: Sequence[int],
    trial_ids: np.ndarray,
) -> None:
    """Decoded vs true continuous behaviours for a few test trials.

    `curves` maps a legend label (the first is the truth) to ``{modality: (trials, T)}`` in
    physical units; the modalities are those of the first entry.
    """
    names = list(next(iter(curves.values())))
    figure, axes = _panel_grid(len(trial_rows), len(names), 5.0, 2.3)
    styles = (
        dict(color="k", lw=2),
        dict(color="tab:red", lw=1.5),
        dict(color="tab:blue", lw=1, ls="--"),
    )
    for row, trial in enumerate(trial_rows):
        for column, name in enumerate(names):
            axis = axes[row, column]
            for (label, traces), style in zip(curves.items(), styles):
                if name in traces:
                    axis.plot(time_s, traces[name][trial], label=label, **style)
            axis.set_title(f"trial {int(trial_ids[trial])}: {name}", fontsize=8)
            if row == len(trial_rows) - 1:
                axis.set_xlabel("time from stimulus onset (s)")
    axes[0, 0].legend(fontsize=7)
    figure.suptitle("Held-out test trials: decoded behaviour (decoding: behaviour hidden)")
    _save_figure(figure, path)


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
    _save_figure(figure, path)


# =============================================================================================
# The demo's report.md
# =============================================================================================


def demo_findings(
    methods: Mapping[str, Mapping[str, Any]],
    labels: Mapping[str, str],
    columns: Mapping[str, str],
) -> list[str]:
    """Comparisons of NEDS fine-tuned against every other method, as measured."""
    neds = methods["neds_finetuned"]["average"]
    oracle = methods["oracle"]["average"]
    lines = []
    for metric in ("bps", "bps_pooled"):
        fraction = neds[metric] / oracle[metric] if oracle[metric] > 0 else float("nan")
        lines.append(
            f"Fraction of the oracle's {columns[metric]} reached by NEDS "
            f"fine-tuned: {fmt(neds[metric])} / {fmt(oracle[metric])} = "
            f"{fmt(100 * fraction, 1)} %."
        )
    for other in ("neds_scratch", "linear_encoder", "poisson_glm", "linear_decoder"):
        if other not in methods:  # results written before the method existed
            continue
        values = methods[other]["average"]
        for metric, label in columns.items():
            if math.isfinite(values.get(metric, float("nan"))):
                lines.append(
                    compare_sentence(
                        label, "NEDS fine-tuned", neds[metric], labels[other], values[metric]
                    )
                )
    return lines


def _demo_results_section(
    results: Mapping[str, Any], labels: Mapping[str, str], columns: Mapping[str, str]
) -> list[str]:
    """Header, results table, metric notes and findings of ``report.md``."""
    sessions, methods = results["sessions"], results["methods"]
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
        methods_table(methods, labels, columns),
        "- bits per spike: of the predicted rates when every spike is hidden and every "
        "behaviour is shown (encoding); 'mean' averages the per-neuron values (NEDS convention),"
        " 'pooled' sums over neurons first (NLB / BrainWideBench convention).",
        "- R² (flattened over trials x bins) and balanced accuracy: behaviour decoded from the "
        "spikes with every behaviour hidden (decoding).",
        "- Oracle: the generative model's true expected counts. It also knows the latent "
        "factors driven by smooth noise that no behaviour-conditioned encoder can observe, so "
        "it is an upper bound, not an attainable target.",
        "- Linear encoder: reduced-rank ridge regression from standardised continuous "
        "behaviours, one-hot trial labels and a one-hot time bin to Gaussian-smoothed "
        "counts. Decoders: ridge per time bin (continuous), cross-validated logistic regression "
        "on the flattened trial activity (trial labels). Baselines are fitted on the held-out "
        "sessions' train split; NEDS also uses their validation split to pick its checkpoint.",
        "",
        "## Findings (as measured)",
        "",
        *[f"- {line}" for line in demo_findings(methods, labels, columns)],
    ]
    if results["notes"]:
        lines += ["", "Notes:", "", *[f"- {note}" for note in results["notes"]]]
    return lines


def _demo_runs_section(results: Mapping[str, Any]) -> list[str]:
    """Region probe, stage timings, training runs and settings of ``report.md``."""
    settings = results["settings"]
    lines = [
        "",
        "## Region probe",
        "",
        "Linear classifier, 5-fold cross-validation, on per-neuron embeddings (stitcher input "
        "and readout vectors) and, as their baseline, on simple per-neuron features (log mean "
        "count and Poisson GLM weights); chance is the majority-class fraction.",
        "",
    ]
    for name, levels in results["region_probe"].items():
        lines += [f"- {name}, {line[2:]}" for line in region_probe_lines(levels)]
    lines += [
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
            f"{run['best_step']} | {fmt(run['best_score'])} |"
        )
    lines += [
        "",
        f"Model: hidden size {settings['hidden_size']}, {settings['num_layers']} layers, "
        f"{settings['num_attention_heads']} heads, dropout {settings['dropout']}, masking "
        f"schemes {' '.join(settings['masking_schemes'])}; batch {settings['batch_size']}, peak "
        f"learning rate {settings['learning_rate']} (one-cycle cosine), best checkpoint by "
        f"validation avg. Corpus: {settings['n_sessions']} sessions of "
        f"{settings['n_trials']} trials, {settings['n_neurons']} units per probe before the "
        f"firing-rate filter, seed {settings['seed']}.",
    ]
    return lines


def demo_report_markdown(
    results: Mapping[str, Any], labels: Mapping[str, str], columns: Mapping[str, str]
) -> list[str]:
    """The lines of the demo's ``report.md`` from its results dict.

    `labels` are the table's methods (key -> row label), `columns` its metrics (key ->
    header).
    """
    return [
        *_demo_results_section(results, labels, columns),
        *_demo_runs_section(results),
        "",
        "## Files",
        "",
        "- `results.json`: every number of this report (per session and averaged).",
        "- `rates.png`: predicted vs true rates for a few held-out neurons.",
        "- `behavior.png`: decoded vs true continuous behaviours.",
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

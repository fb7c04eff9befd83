"""The dataset card (``README.md``) of a built NEDS dataset: YAML configs plus provenance.

The card says what the dataset holds (the modality table it declares, the schema, the
sessions and their split sizes, what was skipped and why), how it was made (ONE source and
revision, preprocessing parameters, package versions) and how to cite it. A dataset with
continuous windows also lists the ``windows`` config, the window parameters and rules, and
per session its recording span and windows per split.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from huggingface_hub import DatasetCard, DatasetCardData

from ..validity import allows_missing
from .preprocess import MODALITY_UNITS, SPLITS
from .schema import (
    ALL_CONFIG,
    NEURON_FEATURES,
    NEURONS_CONFIG,
    NEURONS_FILE,
    SESSION_FEATURES,
    SESSIONS_CONFIG,
    SESSIONS_FILE,
    TRIALS_DIR,
    WINDOWS_CONFIG,
    WINDOWS_DIR,
    trial_features,
    window_features,
)

if TYPE_CHECKING:
    from .build import BuildReport

__all__ = ["CITATIONS", "card_configs", "make_dataset_card"]

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


def _split_paths(prefix: str, splits: Iterable[str]) -> list[dict[str, str]]:
    return [{"split": split, "path": f"{prefix}/{split}-*.parquet"} for split in splits]


def card_configs(
    session_ids: Sequence[str],
    splits: Sequence[str] = SPLITS,
    window_splits: Sequence[str] = (),
) -> list[dict]:
    """The YAML ``configs`` entries: ``all`` (default), one per session, neurons, sessions,
    and ``windows`` with the ``window_splits`` that hold continuous windows (if any)."""
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
    if window_splits:
        configs.append(
            {
                "config_name": WINDOWS_CONFIG,
                "data_files": _split_paths(f"{WINDOWS_DIR}/*", window_splits),
            }
        )
    return configs


def make_dataset_card(
    report: BuildReport, session_rows: Sequence[dict[str, Any]], splits: Sequence[str] = SPLITS
) -> DatasetCard:
    """Dataset card: YAML configs plus provenance (sessions, ONE origin, parameters, citations)."""
    card_data = DatasetCardData(
        license="cc-by-4.0",
        pretty_name="NEDS IBL trials (binned spikes and behaviour)",
        tags=["neuroscience", "neuropixels", "international-brain-laboratory", "spikes"],
        size_categories=_size_category(sum(row["n_trials"] for row in session_rows)),
        configs=card_configs(report.built_session_ids, splits, _window_splits(report)),
    )
    lines = [
        *_overview_lines(report, session_rows),
        *_usage_lines(),
        *_schema_lines(report),
        *_windows_lines(report),
        *_provenance_lines(report, session_rows),
        *_parameter_lines(report),
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


def _overview_lines(report: BuildReport, session_rows: Sequence[dict[str, Any]]) -> list[str]:
    """Title, what a row is, and the totals."""
    config = report.config
    n_neurons = sum(row["n_neurons"] for row in session_rows)
    n_trials = {split: sum(row[f"n_trials_{split}"] for row in session_rows) for split in SPLITS}
    return [
        "# NEDS IBL trials",
        "",
        "Trial-aligned, binned Neuropixels spiking activity and behaviour from International "
        "Brain Laboratory (IBL) sessions, prepared with `neds_hf` for NEDS (Neural Encoding and "
        "Decoding at Scale) and MtM. One row per trial; spike counts are neuron-major `[N, T]` "
        f"(N neurons of the session, T = {config.n_bins} bins of "
        f"{config.bin_size * 1000:g} ms from {config.window[0]:g} s to "
        f"{config.window[1]:g} s around `{config.align_event}`).",
        "",
        f"- sessions built: {len(report.built_session_ids)}; skipped: {len(report.skipped)}",
        f"- neurons: {n_neurons}",
        "- trials: " + ", ".join(f"{split} {count}" for split, count in n_trials.items()),
        "",
    ]


def _usage_lines() -> list[str]:
    """How to load each config."""
    return [
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
        "Behaviours are stored in physical units; per-session normalisation constants (mean, "
        "std, min, max) of the continuous ones, computed on the train split only, are in the "
        "`sessions` config (`normalization`).",
        "",
    ]


def _schema_lines(report: BuildReport) -> list[str]:
    """The declared modality table and the columns of each table."""
    lines = [
        "## Modalities",
        "",
        "| modality | kind | classes | unit / meaning | may be missing |",
        "|---|---|---|---|---|",
    ]
    for spec in report.modalities:
        lines.append(
            f"| `{spec['name']}` | {spec['kind']} | {spec.get('num_classes') or ''} | "
            f"{MODALITY_UNITS.get(spec['name'], '')} | {'yes' if allows_missing(spec) else ''} |"
        )
    lines += [
        "",
        "The modality table is also recorded in `build_report.json` (`modalities`). A behaviour "
        "that may be missing stores a missing entry in the value (NaN, or -1 for a class); its "
        "trials are kept, and models hide and never score those entries.",
        "",
        "## Schema",
        "",
        "trials: " + ", ".join(f"`{name}`" for name in trial_features(report.modalities)),
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
    ]
    return lines


def _window_splits(report: BuildReport) -> list[str]:
    """The splits holding continuous windows in some session (a split may have none, e.g.
    with a stride longer than the windows)."""
    summaries = [entry["windows"] for entry in report.sessions if "windows" in entry]
    return [split for split in SPLITS if any(summary[split] for summary in summaries)]


def _windows_lines(report: BuildReport) -> list[str]:
    """The continuous windows: parameters, rules, columns and per-session counts (none for a
    trial-only dataset)."""
    if report.windows is None:
        return []
    windows = report.windows
    lines = [
        "## Continuous windows",
        "",
        f"Config `{WINDOWS_CONFIG}`: windows of {windows['length_s']:g} s ({windows['n_bins']} "
        f"bins of {windows['bin_size_s'] * 1000:g} ms) every {windows['stride_s']:g} s over "
        f"each session's recording ({windows['recording_span']}), same neurons in the same "
        "order as the session's trials, same splits.",
        "",
        f"- trial-level values: {windows['assignment']};",
        f"- split: {windows['split']};",
        "- per-bin behaviours: NaN where the behaviour was not recorded (never extrapolated).",
        "",
        "windows: " + ", ".join(f"`{name}`" for name in window_features(report.modalities)),
        "(`start_time` / `end_time` in s on the session clock, `trial_id` the assigned trial "
        "or -1, `trial_overlap` its overlap in s).",
        "",
        "| session_id | recording (s) | train | validation | test | with a trial | "
        "uncovered tail (s) | missing (share of entries) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for entry in report.sessions:
        if entry["status"] != "ok" or "windows" not in entry:
            continue
        summary = entry["windows"]
        missing = ", ".join(
            f"{name} {fraction:.3f}" for name, fraction in summary["missing_modalities"].items()
        )
        lines.append(
            f"| {entry['session_id']} | {summary['recording_start_s']:.2f}-"
            f"{summary['recording_end_s']:.2f} | {summary['train']} | {summary['validation']} | "
            f"{summary['test']} | {summary['n_windows_with_trial']} | "
            f"{summary['uncovered_tail_s']:.3f} | {missing or 'none'} |"
        )
    return [*lines, ""]


def _provenance_lines(report: BuildReport, session_rows: Sequence[dict[str, Any]]) -> list[str]:
    """Data source, the built sessions, the skipped ones and the probes left out."""
    lines = [
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
    skipped = [s for s in report.sessions if s["status"] != "ok"]
    if skipped:
        lines += ["| session_id | reason | detail |", "|---|---|---|"]
        for entry in skipped:
            detail = entry.get("message", "").replace("|", "\\|").replace("\n", " ")
            lines.append(f"| {entry['session_id']} | {entry['reason']} | {detail} |")
    else:
        lines.append("None.")
    lines += _missing_behavior_lines(report)
    partial = [
        s for s in report.sessions if s["status"] == "ok" and s.get("probes_without_spike_sorting")
    ]
    if partial:
        lines += ["", "### Probes left out (no spike sorting)", ""]
        lines += [
            f"- {s['session_id']}: {', '.join(s['probes_without_spike_sorting'])}" for s in partial
        ]
    return [*lines, ""]


def _missing_behavior_lines(report: BuildReport) -> list[str]:
    """The built sessions with missing behaviour entries: a behaviour missing in every trial
    is named as missing, a partly missing one with its fraction (``missing_modalities``)."""
    rows = [
        (entry["session_id"], entry["missing_modalities"])
        for entry in report.sessions
        if entry["status"] == "ok" and entry.get("missing_modalities")
    ]
    if not rows:
        return []
    lines = ["", "### Missing behaviours (sessions kept, entries masked)", ""]
    for session_id, fractions in rows:
        parts = [
            f"{name} missing" if fraction >= 1.0 else f"{name} {fraction:.1%} of entries missing"
            for name, fraction in fractions.items()
        ]
        lines.append(f"- {session_id}: " + "; ".join(parts))
    return lines


def _parameter_lines(report: BuildReport) -> list[str]:
    """Preprocessing parameters, the exclusion rules in words, package versions."""
    return [
        "### Preprocessing parameters",
        "",
        "```json",
        json.dumps(report.config.to_dict(), indent=2),
        "```",
        "",
        "Trials are excluded when any of stimOn / choice / feedback / probabilityLeft / "
        "firstMovement / feedbackType is NaN, choice == 0, firstMovement - stimOn < min_rt or "
        "> max_rt, feedback - goCue > max_trial_duration, or when the trial window is not "
        "covered by the wheel / motion-energy recording (never extrapolated); each excluded "
        "trial is counted under one reason, a no-go trial (no first movement) under no_choice. "
        "Neurons are kept when their firing rate over the kept trials' windows exceeds "
        "min_firing_rate. Splits are 70/10/20 by trial, seeded by (split_seed, session id). "
        "Per-session exclusion counts are in `build_report.json` and the `sessions` config.",
        "",
        "### Package versions",
        "",
        "```json",
        json.dumps(report.package_versions, indent=2),
        "```",
        "",
    ]


def _size_category(n_rows: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K")):
        if n_rows < limit:
            return label
    return "100K<n<1M"

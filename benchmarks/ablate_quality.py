"""Ablations of NEDS training choices on the realistic synthetic preset, one factor at a time.

Builds one realistic corpus and its dataset once (reused from ``--output`` when present),
scores the oracle and the linear baselines on the held-out sessions once, then for every
variant x seed pretrains on the other sessions, fine-tunes on the held-out ones (jointly, as
the demo does) and evaluates the fine-tuned model on their test trials. Each variant changes
ONE setting of the default (the demo's recipe at a reduced budget). Prints a table of
mean ± sd over seeds (each seed's average over the held-out sessions), the ratio to the
logistic / ridge decoder and the fraction of the oracle's bits per spike; then the wall time.

Every run's scores are written to ``<output>/runs/<variant>_seed<k>.json`` as soon as it ends,
and a run whose file exists is not repeated, so an interrupted grid resumes where it stopped.

Run: ``OMP_NUM_THREADS=1 python benchmarks/ablate_quality.py --output DIR
[--variants default,ce_x4,...] [--seeds 2] [--pretrain-steps 400] [--finetune-steps 200]``;
``--list`` prints the variants, ``--table-only`` the table of the runs already finished.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from neds_hf.baselines import (
    fit_linear_baselines,
    oracle_expected_counts,
    trials_to_arrays,
)
from neds_hf.configuration_neds import NedsConfig
from neds_hf.data.build import build_dataset
from neds_hf.data.load import default_modalities, load_modalities, load_neurons
from neds_hf.data.synthetic import load_ground_truth, make_synthetic_cache
from neds_hf.data.training_data import NedsTrialDataset
from neds_hf.demo import DEMO_MASKING_SCHEMES, score_baselines
from neds_hf.evaluation import evaluate_trials
from neds_hf.modeling_neds import NedsForMaskedModeling
from neds_hf.training import NedsTrainingArguments, train
from neds_hf.training.arguments import ARCHITECTURE_FIELDS

#: Columns of the table: metric key -> (header, reference method for the ratio column).
COLUMNS = {
    "bps": ("bps", "oracle"),
    "choice_balanced_accuracy": ("choice", "linear_decoder"),
    "block_balanced_accuracy": ("block", "linear_decoder"),
    "wheel_speed_r2": ("wheel R²", "linear_decoder"),
    "whisker_motion_energy_r2": ("whisker R²", "linear_decoder"),
}
#: The demo's masking mix with the decoding scheme drawn 4x as often.
VARIANT_BEHAVIOR4_SCHEMES = [
    "neural=2",
    "behavior=4",
    "cross_modal=1",
    "within_spikes=0.5",
    "within_behavior=0.5",
]
#: One factor changed per variant: ``{name: (what it tests, overrides of the default)}``.
#: Keys ending in ``@pretrain`` / ``@finetune`` apply to that stage only;
#: ``freeze_warmup_share`` freezes the shared encoder for that share of a stage's steps.
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "default": ("the demo's recipe at the reduced budget", {}),
    "ce_x4": ("choice and block losses x4", {"loss_weights": ["choice=4", "block=4"]}),
    "ce_x0.25": ("choice and block losses x0.25", {"loss_weights": ["choice=0.25", "block=0.25"]}),
    "spikes_x0.5": ("spike loss x0.5", {"loss_weights": ["spikes=0.5"]}),
    "drop0.1_keys": (
        "attention dropout 0.1 on keys (+ hidden 0.1)",
        {"attention_dropout": 0.1, "hidden_dropout": 0.1, "attention_dropout_mode": "keys"},
    ),
    "drop0.1_probs": (
        "attention dropout 0.1 on probabilities (+ hidden 0.1)",
        {
            "attention_dropout": 0.1,
            "hidden_dropout": 0.1,
            "attention_dropout_mode": "probabilities",
        },
    ),
    "select_loss": ("best checkpoint by validation loss", {"best_model_metric": "loss"}),
    "select_last": ("no selection: the last step", {"eval_steps": 10**6}),
    "mask_uniform": ("uniform over the 5 NEDS schemes", {"masking_schemes": None}),
    "mask_behavior4": (
        "decoding scheme drawn 4x (behavior=4)",
        {"masking_schemes": VARIANT_BEHAVIOR4_SCHEMES},
    ),
    "mask_ratio0.5": ("mask ratio 0.5 (default 0.3)", {"mask_ratio": 0.5}),
    "lr1e-3": ("learning rate 1e-3 (default 3e-3)", {"learning_rate": 1e-3}),
    "steps_x2": ("twice the steps", {"steps_factor": 2}),
    "hidden128": ("hidden 128 (default 64)", {"hidden_size": 128}),
    "readout_spikes": (
        "trial-level heads also read the mean spike token",
        {"trial_level_readout": "token_and_spikes"},
    ),
    # at the demo's learning rate (1e-3): the control and one factor on top of it
    "lr1e-3_readout_spikes": (
        "learning rate 1e-3 and trial-level heads reading the mean spike token",
        {"learning_rate": 1e-3, "trial_level_readout": "token_and_spikes"},
    ),
    "lr1e-3_hidden128": (
        "learning rate 1e-3 and hidden 128",
        {"learning_rate": 1e-3, "hidden_size": 128},
    ),
    "lr1e-3_steps_x2": (
        "learning rate 1e-3 and twice the steps",
        {"learning_rate": 1e-3, "steps_factor": 2},
    ),
    "lr1e-3_finetune_x2": (
        "learning rate 1e-3 and twice the fine-tuning steps",
        {"learning_rate": 1e-3, "finetune_steps_factor": 2},
    ),
    "lr1e-3_finetune_x4": (
        "learning rate 1e-3 and 4x the fine-tuning steps",
        {"learning_rate": 1e-3, "finetune_steps_factor": 4},
    ),
    "lr1e-3_pretrain_x0.5_finetune_x2": (
        "learning rate 1e-3, half the pretraining and twice the fine-tuning steps",
        {"learning_rate": 1e-3, "pretrain_steps_factor": 0.5, "finetune_steps_factor": 2},
    ),
    "lr1e-3_mask_behavior4": (
        "learning rate 1e-3 and the decoding scheme drawn 4x",
        {"learning_rate": 1e-3, "masking_schemes": VARIANT_BEHAVIOR4_SCHEMES},
    ),
    "lr1e-3_hidden128_steps_x2": (
        "learning rate 1e-3, hidden 128 and twice the steps",
        {"learning_rate": 1e-3, "hidden_size": 128, "steps_factor": 2},
    ),
    # how the fine-tuning stage spends a fixed number of steps
    "lr1e-3_finetune_lr2e-3": (
        "learning rate 1e-3, fine-tuning at 2e-3",
        {"learning_rate": 1e-3, "learning_rate@finetune": 2e-3},
    ),
    "lr1e-3_finetune_lr3e-3": (
        "learning rate 1e-3, fine-tuning at 3e-3",
        {"learning_rate": 1e-3, "learning_rate@finetune": 3e-3},
    ),
    "lr1e-3_finetune_warmup0.05": (
        "learning rate 1e-3, fine-tuning warms up over 5 % of its steps (default 15 %)",
        {"learning_rate": 1e-3, "warmup_ratio@finetune": 0.05},
    ),
    "lr1e-3_finetune_freeze0.2": (
        "learning rate 1e-3, shared encoder frozen for the first 20 % of fine-tuning",
        {"learning_rate": 1e-3, "freeze_warmup_share@finetune": 0.2},
    ),
    "lr1e-3_finetune_behavior4": (
        "learning rate 1e-3, fine-tuning draws the decoding scheme 4x",
        {"learning_rate": 1e-3, "masking_schemes@finetune": VARIANT_BEHAVIOR4_SCHEMES},
    ),
    "lr1e-3_finetune_protocols": (
        "learning rate 1e-3, fine-tuning on the two evaluation protocols only (neural, behavior)",
        {"learning_rate": 1e-3, "masking_schemes@finetune": ["neural=1", "behavior=1"]},
    ),
    "lr1e-3_finetune_session_lr5": (
        "learning rate 1e-3, per-session parameters fine-tuned at 5x",
        {"learning_rate": 1e-3, "session_learning_rate_scale@finetune": 5.0},
    ),
    "lr1e-3_finetune_x4_session_lr5": (
        "learning rate 1e-3, 4x the fine-tuning steps, per-session parameters at 5x",
        {
            "learning_rate": 1e-3,
            "finetune_steps_factor": 4,
            "session_learning_rate_scale@finetune": 5.0,
        },
    ),
    "lr1e-3_finetune_fit_readout": (
        "learning rate 1e-3, new readouts fitted (Poisson GLM on encoder features)",
        {"learning_rate": 1e-3, "fit_session_readouts@finetune": True},
    ),
    "lr1e-3_finetune_x4_fit_readout": (
        "learning rate 1e-3, 4x the fine-tuning steps, new readouts fitted",
        {
            "learning_rate": 1e-3,
            "finetune_steps_factor": 4,
            "fit_session_readouts@finetune": True,
        },
    ),
    "lr1e-3_pretrain_lr3e-3_fit_readout": (
        "pretraining at learning rate 3e-3, fine-tuning at 1e-3 with new readouts fitted",
        {
            "learning_rate": 1e-3,
            "learning_rate@pretrain": 3e-3,
            "fit_session_readouts@finetune": True,
        },
    ),
    "lr1e-3_finetune_x4_lr2e-3": (
        "learning rate 1e-3, 4x the fine-tuning steps at 2e-3",
        {"learning_rate": 1e-3, "finetune_steps_factor": 4, "learning_rate@finetune": 2e-3},
    ),
}


def parse_arguments() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--output", type=Path, help="work folder (reused; required unless --list)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated")
    parser.add_argument("--seeds", type=int, default=2, help="training seeds (2)")
    parser.add_argument("--sessions", type=int, default=6, help="corpus sessions (6)")
    parser.add_argument("--heldout", type=int, default=2, help="held-out sessions (2)")
    parser.add_argument("--trials", type=int, default=300, help="trials per session (300)")
    parser.add_argument("--neurons", type=int, default=60, help="units per probe (60)")
    parser.add_argument("--hidden-size", type=int, default=64, help="default hidden size (64)")
    parser.add_argument("--pretrain-steps", type=int, default=400, help="(400)")
    parser.add_argument("--finetune-steps", type=int, default=200, help="(200)")
    parser.add_argument("--corpus-seed", type=int, default=0, help="corpus seed (0)")
    parser.add_argument("--list", action="store_true", help="print the variants and exit")
    parser.add_argument(
        "--table-only", action="store_true", help="print the table of the finished runs only"
    )
    args = parser.parse_args()
    if args.output is None and not args.list:
        parser.error("--output is required (the work folder) unless --list is given")
    unknown = [v for v in args.variants.split(",") if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {list(VARIANTS)}")
    return args


def prepare_corpus(args: argparse.Namespace) -> tuple[Path, list[str], list[str]]:
    """The ONE cache and dataset under ``--output`` (built once); returns
    ``(dataset folder, pretraining sessions, held-out sessions)``."""
    cache, dataset = args.output / "one_cache", args.output / "dataset"
    eids_file = args.output / "eids.json"
    if not eids_file.is_file():
        eids = make_synthetic_cache(
            cache,
            args.sessions,
            args.corpus_seed,
            n_trials=args.trials,
            n_neurons_per_probe=args.neurons,
            first_block_trials=min(90, args.trials // 3),
            preset="realistic",
        )
        build_dataset(cache, eids, dataset, progress=False)
        eids_file.write_text(json.dumps(eids))
    eids = json.loads(eids_file.read_text())
    return dataset, eids[: -args.heldout], eids[-args.heldout :]


def baseline_scores(args: argparse.Namespace, heldout: list[str], config: Any) -> dict[str, Any]:
    """Oracle, linear and Poisson GLM scores averaged over the held-out sessions (cached)."""
    path = args.output / "baselines.json"
    if path.is_file():
        return json.loads(path.read_text())
    dataset = args.output / "dataset"
    modalities = config.behavior_modalities
    test_data = NedsTrialDataset(dataset, "test", sessions=heldout)
    train_data = NedsTrialDataset(dataset, "train", sessions=heldout)
    neurons = load_neurons(dataset, heldout)
    per_session: dict[str, list[dict[str, float]]] = {}
    for session_id in heldout:
        test_trials = [test_data[int(i)] for i in test_data.session_indices()[session_id]]
        train_trials = [train_data[int(i)] for i in train_data.session_indices()[session_id]]
        test = trials_to_arrays(test_trials, modalities)
        train_arrays = trials_to_arrays(train_trials, modalities)
        truth = load_ground_truth(args.output / "one_cache", session_id)
        session_neurons = neurons[neurons["session_id"] == session_id]
        oracle = oracle_expected_counts(
            truth, session_neurons, test["trial_id"], array="expected_counts_observed"
        )
        linear = fit_linear_baselines(train_arrays, test, modalities, seed=0, poisson_glm=True)

        scores = score_baselines(config, session_id, test, oracle, linear)
        for method, values in scores.items():
            per_session.setdefault(method, []).append(values)
    averaged = {
        method: {k: float(np.nanmean([s[k] for s in sessions])) for k in sessions[0]}
        for method, sessions in per_session.items()
    }
    path.write_text(json.dumps(averaged, indent=1))
    return averaged


def training_arguments(
    args: argparse.Namespace, overrides: dict[str, Any], stage: str, seed: int, **extra: Any
) -> NedsTrainingArguments:
    """The arguments of one stage (``pretrain`` / ``finetune``) of a variant's run."""
    steps = args.pretrain_steps if stage == "pretrain" else args.finetune_steps
    steps = round(
        steps * overrides.get("steps_factor", 1) * overrides.get(f"{stage}_steps_factor", 1)
    )
    hidden = overrides.get("hidden_size", args.hidden_size)
    values: dict[str, Any] = dict(
        masking_schemes=list(DEMO_MASKING_SCHEMES),
        learning_rate=3e-3,
        per_device_train_batch_size=16,
        eval_steps=max(1, steps // 10),
        save_steps=steps,
        save_total_limit=1,
        logging_steps=max(1, steps // 10),
        report_to="none",
        num_threads=1,
        disable_progress_bar=True,
        seed=seed,
        max_steps=steps,
    )
    if stage == "pretrain":
        values.update(
            hidden_size=hidden,
            num_hidden_layers=1,
            num_attention_heads=max(1, hidden // 32),
            intermediate_size=2 * hidden,
            spike_stitcher_size=hidden,
            hidden_dropout=0.0,
            attention_dropout=0.0,
            embedding_dropout=0.0,
        )
    for key, value in overrides.items():
        name, _, only_stage = key.partition("@")
        if name.endswith("steps_factor") or only_stage not in ("", stage):
            continue
        if name in ARCHITECTURE_FIELDS and stage != "pretrain":  # fine-tuning keeps them
            continue
        if name == "freeze_warmup_share":
            values.update(freeze_encoder="warmup", freeze_warmup_steps=max(1, round(value * steps)))
            continue
        values[name] = value
    values.update(extra)
    return NedsTrainingArguments(**values)


def run_variant(
    args: argparse.Namespace,
    name: str,
    seed: int,
    dataset: Path,
    sessions: tuple[list[str], list[str]],
) -> dict[str, float]:
    """Pretrain, fine-tune and evaluate one variant with one seed; its averaged test scores."""
    overrides = VARIANTS[name][1]
    pretrain_sessions, heldout = sessions
    base = args.output / "work" / f"{name}_seed{seed}"
    common = dict(dataset=str(dataset), overwrite_output_dir=True)
    pretrain_args = training_arguments(
        args,
        overrides,
        "pretrain",
        seed,
        output_dir=str(base / "pretrain"),
        sessions=pretrain_sessions,
        **common,
    )
    pretrained = train(pretrain_args)
    finetune_args = training_arguments(
        args,
        overrides,
        "finetune",
        seed,
        output_dir=str(base / "finetune"),
        sessions=heldout,
        mode="finetune",
        model_name_or_path=pretrained.model_dir,
        **common,
    )
    finetuned = train(finetune_args)
    model = NedsForMaskedModeling.from_pretrained(finetuned.model_dir)
    test_data = NedsTrialDataset(dataset, "test", sessions=heldout)
    report = evaluate_trials(
        model, [test_data[i] for i in range(len(test_data))], test_data.normalization
    )
    scores = {key: float(report.average.get(key, np.nan)) for key in COLUMNS}
    scores["best_step_finetune"] = finetuned.best_step
    return scores


def summary_table(
    runs: dict[str, list[dict[str, float]]], baselines: dict[str, dict[str, float]]
) -> str:
    """Markdown table: variant x metric, mean ± sd over seeds and the ratio to the reference
    (oracle for bits per spike, the logistic / ridge decoder for the behaviours)."""
    header = ["variant", "seeds", *(f"{title} (ratio)" for title, _ in COLUMNS.values())]
    lines = ["| " + " | ".join(header) + " |", "|---|---:|" + "---:|" * len(COLUMNS)]
    for method in ("oracle", "poisson_glm", "linear_encoder", "linear_decoder"):
        cells = [
            ""
            if not np.isfinite(baselines[method].get(key, np.nan))
            else f"{baselines[method][key]:.3f}"
            for key in COLUMNS
        ]
        lines.append(f"| {method} | | " + " | ".join(cells) + " |")
    for name, seeds in runs.items():
        cells = []
        for key, (_, reference) in COLUMNS.items():
            values = np.array([run.get(key, np.nan) for run in seeds], dtype=np.float64)
            mean, sd = float(np.nanmean(values)), float(np.nanstd(values))
            ratio = mean / baselines[reference][key]
            cells.append(f"{mean:.3f} ± {sd:.3f} ({ratio:.2f})")
        lines.append(f"| {name} | {len(seeds)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    """Build (or reuse) the corpus, run the missing variant x seed runs, print the table."""
    args = parse_arguments()
    if args.list:
        for name, (what, overrides) in VARIANTS.items():
            print(f"{name}: {what} {overrides}")
        return
    logging.basicConfig(level=logging.WARNING)
    start = time.perf_counter()
    args.output.mkdir(parents=True, exist_ok=True)
    dataset, pretrain_sessions, heldout = prepare_corpus(args)
    config = NedsConfig(modalities=default_modalities(load_modalities(dataset)))
    baselines = baseline_scores(args, heldout, config)
    results_dir = args.output / "runs"
    results_dir.mkdir(exist_ok=True)
    runs: dict[str, list[dict[str, float]]] = {}
    for name in args.variants.split(","):
        for seed in range(args.seeds):
            path = results_dir / f"{name}_seed{seed}.json"
            if args.table_only and not path.is_file():
                continue
            if not path.is_file():
                run_start = time.perf_counter()
                scores = run_variant(args, name, seed, dataset, (pretrain_sessions, heldout))
                scores["wall_s"] = round(time.perf_counter() - run_start, 1)
                path.write_text(json.dumps(scores, indent=1))
                print(f"{name} seed {seed}: {scores}", flush=True)
            runs.setdefault(name, []).append(json.loads(path.read_text()))
    print(
        f"realistic preset, {args.sessions} sessions ({len(heldout)} held out, fine-tuned "
        f"jointly) x {args.trials} trials x {args.neurons} units; default hidden "
        f"{args.hidden_size}, 1 layer, {args.pretrain_steps} pretraining / "
        f"{args.finetune_steps} fine-tuning steps, {args.seeds} seed(s)"
    )
    print()
    print(summary_table(runs, baselines))
    print()
    print(f"wall time {time.perf_counter() - start:.0f} s; work folder {args.output}")


if __name__ == "__main__":
    main()

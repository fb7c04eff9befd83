"""Action segmentation side by side: neds_hf vs lightning-action 1.1.0, and semi-supervision.

Not a test: it trains several models and takes minutes. Two experiments:

* ``compare`` (default): on the same synthetic corpus (4 training sessions with sparse 50-frame
  labelled bouts, 2 fully labelled held-out test sessions), the same TCN (32 channels, 2
  layers, 4 lags, velocity + z-score, Adam lr 1e-3, chunks of 500, same epochs; batch 4 =
  neds_hf's default, 8 for lightning-action),
  trains neds_hf (its default: one whole training session held out for validation; and
  validation blocks of 10 % at the end of every training session, which leaves it the share
  of labelled frames lightning-action trains on with its 90/10 chunk split) and
  lightning-action 1.1.0, and prints one table scored by neds_hf's metrics for both, mean ±
  sd over the seeds: macro F1, accuracy, edit, F1@k, the share of frames without a
  prediction, training wall and CPU seconds (CPU time counts the data-loader workers too; on
  a shared machine it is the steadier number) and inference frames/s (read markers, predict,
  write the CSV: `write_predictions` for neds_hf, a model reloaded from its folder;
  lightning-action's ``predict`` with its in-memory final model). Row groups:

  - ``test``: the held-out sessions;
  - ``short``: sessions of 400 frames, shorter than one sequence;
  - ``just_over_one_sequence``: 510 frames, inside lightning-action's context pad;
  - ``tails``: sessions of 2,990 frames, scored only on the frames after the last full
    sequence (frames 2,500-2,989), where lightning-action writes NaN rows;
  - ``velocity reload``: the model with velocity features reloaded from disk; for
    lightning-action as saved (its reload fails) and with ``model.input_size`` set back
    by hand in its ``config.yaml``.

  Wherever lightning-action writes no prediction (NaN rows, or no file because it crashed),
  the frame counts as wrong: it gets the background label, which is never a true label of
  these fully labelled sessions; the ``no_prediction`` column gives the share of such frames.
  lightning-action runs in its own virtualenv created here (``--venv``, by default inside
  ``--output``): the wheel is installed without its dependencies (its metadata requires a
  GPU-only video loader), with ``lightning``, ``torchmetrics`` and ``jaxtyping``; torch,
  numpy and pandas come from this interpreter through a ``.pth`` file; its video model module
  is replaced by a stub before import, so the video back-ends never load. Both its
  best-validation-loss checkpoint (what its ``predict`` picks) and its final model are scored.
  Run it with ``OMP_NUM_THREADS=1`` (both tools then use one thread).
* ``semi``: position-only features, ~1 % of frames labelled; a supervised TCN against
  pseudo-labels, a next-step loss and both.
* ``weight_norm``: neds_hf's default with and without weight-normalised TCN convolutions
  (``weight_norm``, as lightning-action's TCN has), on the corpus and held-out sessions of
  ``compare`` with the same seeds; no lightning-action, no pitfall groups.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_action_segmentation.py --output out [--seeds 0 1 2]
    python benchmarks/bench_action_segmentation.py --experiment semi --output bench_semi
    OMP_NUM_THREADS=1 python benchmarks/bench_action_segmentation.py --experiment weight_norm \
        --output bench_wn --seeds 0 1 2 3 4
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import sysconfig
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd

from neds_hf.segmentation.evaluation import TABLE_COLUMNS
from neds_hf.segmentation.inference import write_predictions
from neds_hf.segmentation.metrics import score_sessions
from neds_hf.segmentation.readers import load_sessions
from neds_hf.segmentation.synthetic import make_synthetic_corpus
from neds_hf.segmentation.training import SegmentationTrainingArguments, train_segmentation

#: lightning-action's sequence length here (its tail frames past the last full one get none).
LA_SEQUENCE_LENGTH = 500
#: Pitfall sessions: `{group: (frames per session, seed offset)}`.
PITFALL_SESSIONS = {
    "short": (400, 1000),
    "just_over_one_sequence": (510, 2000),
    "tails": (2990, 3000),
}
#: neds_hf runs: its default, and validation blocks holding out lightning-action's 10 %.
NEDS_HF_VARIANTS = {
    "neds_hf default": {},
    "neds_hf, validation blocks 10 %": {"validation": "blocks", "validation_fraction": 0.1},
}

LA_PACKAGES = [
    "lightning-action==1.1.0",
    "lightning==2.6.6",
    "pytorch-lightning==2.6.6",
    "lightning-utilities==0.15.3",
    "torchmetrics==1.9.0",
    "jaxtyping",
    "wadler-lindig",
]

LA_RUNNER = textwrap.dedent(
    """
    import json, resource, sys, time, types
    import yaml
    stub = types.ModuleType("lightning_action.api.video_model")
    stub.VideoModel = None  # keep the video back-ends (DALI, torchvision, cv2) from importing
    sys.modules["lightning_action.api.video_model"] = stub
    from lightning_action.api.model import Model

    def cpu_seconds():
        own = resource.getrusage(resource.RUSAGE_SELF)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)  # its data-loader workers
        return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime

    def one_line(error):
        return " ".join(f"{type(error).__name__}: {error}".split())[:300]

    def predict_groups(model, which, timings, errors):
        for group, (data, ids) in groups.items():
            start = time.perf_counter()
            try:
                model.predict(data_path=data, input_dir="markers",
                              output_dir=f"{output}/pred_{which}_{group}", expt_ids=ids)
            except Exception as error:  # a crash means no prediction for the group
                errors[f"{which}/{group}"] = one_line(error)
            timings[f"{which}/{group}"] = time.perf_counter() - start

    config, output, groups = json.loads(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
    raw_input_size = config["model"]["input_size"]  # from_config doubles it in place
    timings, errors = {}, {}
    start, cpu = time.perf_counter(), cpu_seconds()
    model = Model.from_config(config)
    model.train(output_dir=output, post_inference=False)
    timings["train"], timings["train_cpu"] = time.perf_counter() - start, cpu_seconds() - cpu
    predict_groups(model, "final", timings, errors)  # the in-memory final model
    try:  # reload as saved (what `litaction predict -m OUTPUT` does)
        Model.from_dir(output)
    except Exception as error:
        errors["reload"] = one_line(error)
    # its reload doubles the velocity-doubled input size again: put the raw size back first
    saved = yaml.safe_load(open(output + "/config.yaml"))
    saved["model"]["input_size"] = raw_input_size
    yaml.safe_dump(saved, open(output + "/config.yaml", "w"))
    predict_groups(Model.from_dir(output), "best", timings, errors)
    print(json.dumps({"timings": timings, "errors": errors}))
    """
)


def create_la_venv(venv: Path) -> Path:
    """The virtualenv with lightning-action 1.1.0 (created once); returns its python."""
    python = venv / "bin" / "python"
    if python.is_file():
        return python
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # torch, numpy, pandas, yaml, tensorboard... from this interpreter (no second torch)
    Path(site, "_neds_hf_base.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", *LA_PACKAGES], check=True
    )
    return python


def la_config(data: Path, train: list[str], epochs: int, seed: int) -> dict:
    """lightning-action config of the same TCN (1.x keys)."""
    return {
        "data": {
            "data_path": str(data),
            "input_dir": "markers",
            "expt_ids": train,
            "transforms": ["VelocityConcat", "ZScore"],
            "ignore_index": 0,
            "weight_classes": True,
            "seed": seed,
        },
        "model": {
            "input_size": 8,
            "output_size": 5,
            "head": "dtcn",
            "num_hid_units": 32,
            "num_layers": 2,
            "num_lags": 4,
            "activation": "lrelu",
            "dropout_rate": 0.1,
            "seed": seed,
        },
        "optimizer": {"type": "Adam", "lr": 1e-3, "wd": 0.0},
        "training": {
            "device": "cpu",
            "num_epochs": epochs,
            "min_epochs": epochs,
            "batch_size": 8,
            "sequence_length": LA_SEQUENCE_LENGTH,
            "num_workers": 1,
            "train_probability": 0.9,
            "val_probability": 0.1,
            "seed": seed,
        },
    }


def make_pitfall_corpora(root: Path, seed: int) -> dict[str, tuple[Path, list[str]]]:
    """Fully labelled sessions where lightning-action's pitfalls bite: shorter than one
    sequence, just over one sequence (within its context pad) and with a tail after the last
    full sequence; `{group: (data folder, session ids)}`."""
    groups = {}
    for group, (frames, offset) in PITFALL_SESSIONS.items():
        split = make_synthetic_corpus(root / group, 0, 3, frames, 0.04, seed + offset)
        groups[group] = (root / group, split["test"])
    return groups


def score_predictions(
    folder: Path, sessions: list, classes: list[str], tails_only: bool = False
) -> dict:
    """neds_hf's scores of a folder of `<session>_predictions.csv` files (either tool's layout).

    A frame without a prediction (a NaN row, a row or file that is missing because the tool
    crashed) counts as wrong: it gets label 0 (background), never a true label of these fully
    labelled sessions. With `tails_only`, only the frames after the last full sequence of
    lightning-action (`LA_SEQUENCE_LENGTH`) are scored.
    """
    truths, predictions, missing, frames = [], [], 0, 0
    for session in sessions:
        probabilities = np.full((session.num_frames, len(classes)), np.nan)
        path = folder / f"{session.session_id}_predictions.csv"
        if path.is_file():
            table = pd.read_csv(path, index_col=0)[classes].to_numpy()[: session.num_frames]
            probabilities[: len(table)] = table
        absent = np.isnan(probabilities).any(axis=1)
        probabilities = np.nan_to_num(probabilities, nan=0.0)
        probabilities[:, 0] = -1.0  # background is never predicted
        labels = probabilities.argmax(axis=1)
        labels[absent] = 0
        first = (session.num_frames // LA_SEQUENCE_LENGTH) * LA_SEQUENCE_LENGTH if tails_only else 0
        truths.append(session.labels[first:])
        predictions.append(labels[first:])
        missing += int(absent[first:].sum())
        frames += session.num_frames - first
    scores = score_sessions(truths, predictions, len(classes))["average"]
    return {**scores, "no_prediction": missing / max(frames, 1)}


def run_neds_hf(groups: dict, out: Path, epochs: int, seed: int, **overrides) -> dict:
    """Train neds_hf's TCN; write the best checkpoint's predictions for every group (reloaded
    from its folder, as `neds-hf segment predict` does); returns the timings."""
    data = groups["test"][0]
    values = {
        "data_dir": str(data),
        "output_dir": str(out),
        "num_epochs": epochs,
        "seed": seed,
        "report_to": "none",
        "disable_progress_bar": True,
        **overrides,
    }
    start, cpu = time.perf_counter(), time.process_time()
    train_segmentation(SegmentationTrainingArguments(**values))
    timings = {"train": time.perf_counter() - start, "train_cpu": time.process_time() - cpu}
    for group, (folder, ids) in groups.items():
        start = time.perf_counter()
        write_predictions(out / "best", folder, out / f"pred_best_{group}", sessions=ids)
        timings[f"best/{group}"] = time.perf_counter() - start
    return timings


def run_lightning_action(
    args: argparse.Namespace, groups: dict, train: list, out: Path, seed: int
) -> dict:
    """Train lightning-action in its virtualenv; predictions of its in-memory final model and
    of its best checkpoint reloaded; returns timings and errors."""
    python = create_la_venv(args.venv)
    plain_groups = {g: (str(folder.resolve()), ids) for g, (folder, ids) in groups.items()}
    config = la_config(groups["test"][0].resolve(), train, args.epochs, seed)
    result = subprocess.run(
        [str(python), "-c", LA_RUNNER, json.dumps(config), str(out), json.dumps(plain_groups)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        print(result.stderr[-3000:], file=sys.stderr)
        raise RuntimeError("lightning-action run failed (see above)")
    return json.loads(result.stdout.strip().splitlines()[-1])


def seed_rows(args: argparse.Namespace, seed: int) -> tuple[dict, dict]:
    """Every (group, method) row of one seed, and the lightning-action errors."""
    root = args.output / f"seed{seed}"
    split = make_synthetic_corpus(root / "data", 4, 2, args.frames, 0.04, seed)
    groups = {"test": (root / "data", split["test"]), **make_pitfall_corpora(root, seed)}
    sessions = {g: load_sessions(folder, ids) for g, (folder, ids) in groups.items()}
    classes = split["class_names"]
    runs = {}
    for name, overrides in NEDS_HF_VARIANTS.items():
        out = root / name.replace(" ", "_").replace(",", "")
        timings = run_neds_hf(groups, out, args.epochs, seed, **overrides)
        runs[name] = (out, "best", timings)
    errors = {}
    if not args.skip_lightning_action:
        la_out = (root / "lightning_action").resolve()
        la = run_lightning_action(args, groups, split["train"], la_out, seed)
        errors = la["errors"]
        la_out, la_time = root / "lightning_action", la["timings"]
        runs["lightning-action best (reloaded, config fixed)"] = (la_out, "best", la_time)
        runs["lightning-action final (in memory)"] = (la_out, "final", la_time)
    rows: dict[str, dict] = {}
    frames = sum(s.num_frames for s in sessions["test"])
    for group in groups:
        for name, (out, which, timings) in runs.items():
            scores = score_predictions(
                out / f"pred_{which}_{group}",
                sessions[group],
                classes,
                tails_only=group == "tails",
            )
            rows[f"{group} | {name}"] = {
                **scores,
                "train_seconds": timings["train"],
                "train_cpu_seconds": timings["train_cpu"],
                "frames_per_s": frames / timings[f"{which}/test"],
            }
    # velocity features on: every neds_hf score above comes from a reloaded model folder;
    # lightning-action's reload as saved fails (then no frame gets a prediction)
    reload_rows = {"neds_hf default (reloaded folder)": rows["test | neds_hf default"]}
    if not args.skip_lightning_action:
        fixed = rows["test | lightning-action best (reloaded, config fixed)"]
        reload_rows["lightning-action best, config fixed by hand"] = fixed
        reload_rows["lightning-action best, config as saved"] = (
            score_predictions(root / "no_predictions", sessions["test"], classes)
            if errors.get("reload")
            else fixed
        )
    rows.update({f"velocity reload | {name}": row for name, row in reload_rows.items()})
    return rows, errors


def compare(args: argparse.Namespace) -> tuple[dict, dict]:
    """neds_hf vs lightning-action: `{row: {metric: [value per seed]}}` and the
    lightning-action errors per seed."""
    table: dict[str, dict[str, list]] = {}
    errors_per_seed = {}
    for seed in args.seeds:
        rows, errors = seed_rows(args, seed)
        errors_per_seed[seed] = errors
        for name, row in rows.items():
            for metric, value in row.items():
                table.setdefault(name, {}).setdefault(metric, []).append(value)
    return table, errors_per_seed


def held_out_variants(
    args: argparse.Namespace,
    num_train_sessions: int,
    labelled_fraction: float,
    variants: dict[str, dict],
) -> dict[str, dict[str, list]]:
    """neds_hf variants (training-argument overrides) on one synthetic corpus per seed, scored
    on its held-out sessions: `{variant: {metric: [value per seed]}}`."""
    table: dict[str, dict[str, list]] = {}
    for seed in args.seeds:
        data = args.output / f"seed{seed}" / "data"
        split = make_synthetic_corpus(
            data, num_train_sessions, 2, args.frames, labelled_fraction, seed
        )
        groups = {"test": (data, split["test"])}
        test = load_sessions(data, split["test"])
        frames = sum(s.num_frames for s in test)
        for name, overrides in variants.items():
            out = args.output / f"seed{seed}" / name.replace(" ", "")
            timings = run_neds_hf(groups, out, args.epochs, seed, **overrides)
            row = {
                **score_predictions(out / "pred_best_test", test, split["class_names"]),
                "train_seconds": timings["train"],
                "train_cpu_seconds": timings["train_cpu"],
                "frames_per_s": frames / timings["best/test"],
            }
            for metric, value in row.items():
                table.setdefault(name, {}).setdefault(metric, []).append(value)
    return table


def semi(args: argparse.Namespace) -> tuple[dict, dict]:
    """Position-only features, ~1 % labels: supervised vs semi-supervised switches."""
    common = {
        "use_velocity": False,
        "chunk_length": 250,
        "batch_size": 4,
        "anneal_start_epoch": args.epochs // 4,
        "anneal_end_epoch": args.epochs // 2,
    }
    variants = {
        "supervised": {},
        "pseudo-labels": {"weak_labels": "pseudo"},
        "next-step": {"next_step_weight": 1.0},
        "pseudo + next-step": {"weak_labels": "pseudo", "next_step_weight": 1.0},
    }
    variants = {name: {**common, **overrides} for name, overrides in variants.items()}
    return held_out_variants(args, 8, 0.01, variants), {}


def weight_norm_ablation(args: argparse.Namespace) -> tuple[dict, dict]:
    """neds_hf's default TCN without and with weight-normalised convolutions, on the corpus
    and held-out sessions of ``compare`` (same seeds give the same sessions)."""
    variants = {
        "neds_hf default": {"weight_norm": False},
        "neds_hf default + weight_norm": {"weight_norm": True},
    }
    return held_out_variants(args, 4, 0.04, variants), {}


def summary_table(table: dict[str, dict[str, list]]) -> str:
    """Markdown: one row per (group, method), each column mean ± sd over the seeds."""
    columns = [*TABLE_COLUMNS, "no_prediction", "train_seconds", "train_cpu_seconds"]
    columns.append("frames_per_s")
    header = ["group", "method", *columns]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for name, metrics in table.items():
        group, _, method = name.partition(" | ")
        cells = []
        for column in columns:
            values = np.asarray(metrics.get(column, []), dtype=float)
            if values.size == 0 or np.isnan(values).all():
                cells.append("n/a")
                continue
            digits = 3 if column in ("macro_f1", "accuracy", "no_prediction") else 1
            digits = 0 if column == "frames_per_s" else digits
            spread = values.std(ddof=1) if values.size > 1 else 0.0
            cells.append(f"{values.mean():.{digits}f} ± {spread:.{digits}f}")
        lines.append(f"| {group} | {method or group} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def merge_runs(paths: list[Path]) -> tuple[dict, dict]:
    """The rows and errors of saved runs (``compare.json``/``semi.json``), seeds pooled."""
    table: dict[str, dict[str, list]] = {}
    errors: dict = {}
    for path in paths:
        saved = json.loads(path.read_text())
        for name, metrics in saved["rows"].items():
            for metric, values in metrics.items():
                table.setdefault(name, {}).setdefault(metric, []).extend(values)
        errors.update(saved.get("lightning_action_errors", {}))
    return table, errors


def main() -> int:
    """Parse arguments, run the experiment, print and save the table."""
    parser = argparse.ArgumentParser(description=__doc__, allow_abbrev=False)
    parser.add_argument(
        "--experiment", choices=["compare", "semi", "weight_norm"], default="compare"
    )
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--frames", type=int, default=12000, help="frames per session")
    parser.add_argument(
        "--venv", type=Path, default=None, help="default: OUTPUT/.venv-lightning-action"
    )
    parser.add_argument("--skip-lightning-action", action="store_true")
    parser.add_argument(
        "--from-json",
        type=Path,
        nargs="+",
        default=None,
        help="print the table of saved runs (their seeds pooled) and write it to OUTPUT",
    )
    args = parser.parse_args()
    args.venv = args.venv or args.output / ".venv-lightning-action"
    if args.from_json:
        table, errors = merge_runs(args.from_json)
        args.output.mkdir(parents=True, exist_ok=True)
    else:
        experiments = {"compare": compare, "semi": semi, "weight_norm": weight_norm_ablation}
        table, errors = experiments[args.experiment](args)
    print(summary_table(table))
    for seed, messages in errors.items():
        for where, message in messages.items():
            print(f"seed {seed}: lightning-action {where}: {message}")
    result = {"arguments": {k: str(v) for k, v in vars(args).items()}, "rows": table}
    result["lightning_action_errors"] = errors
    (args.output / f"{args.experiment}.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

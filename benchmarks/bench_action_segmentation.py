"""Action segmentation side by side: neds_hf vs lightning-action 1.1.0, and semi-supervision.

Not a test: it trains several models and takes minutes. Two experiments:

* ``compare`` (default): on the same synthetic corpus (training sessions with sparse 50-frame
  labelled bouts, fully labelled held-out test sessions), the same TCN (32 channels, 2 layers,
  4 lags, velocity + z-score, Adam, chunks of 500, batch 8), trains neds_hf and
  lightning-action 1.1.0 and prints one table scored by neds_hf's metrics for both: macro F1,
  accuracy, edit, F1@k on the test sessions, training wall time, inference frames/s.
  lightning-action runs in its own virtualenv created here (``--venv``, by default inside
  ``--output``): the wheel is installed without its dependencies (its metadata requires a
  GPU-only video loader), with ``lightning``, ``torchmetrics`` and ``jaxtyping``; torch,
  numpy and pandas come from this interpreter through a ``.pth`` file; its video model module
  is replaced by a stub before import, so the video back-ends never load. Both its
  best-validation-loss checkpoint (what its ``predict`` picks) and its final model are scored;
  its rows past the last full sequence (no prediction) count as wrong.
* ``semi``: position-only features, ~1 % of frames labelled; a supervised TCN against
  pseudo-labels, a next-step loss and both.

Usage::

    python benchmarks/bench_action_segmentation.py --output bench_out [--seeds 0 1 2]
    python benchmarks/bench_action_segmentation.py --experiment semi --output bench_semi
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

from neds_hf.segmentation.evaluation import markdown_table
from neds_hf.segmentation.inference import load_model, predict_session
from neds_hf.segmentation.metrics import score_sessions
from neds_hf.segmentation.readers import load_sessions
from neds_hf.segmentation.synthetic import make_synthetic_corpus
from neds_hf.segmentation.training import SegmentationTrainingArguments, train_segmentation

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
    import json, sys, time, types
    stub = types.ModuleType("lightning_action.api.video_model")
    stub.VideoModel = None  # keep the video back-ends (DALI, torchvision, cv2) from importing
    sys.modules["lightning_action.api.video_model"] = stub
    from lightning_action.api.model import Model
    config, output, data, test, epochs, seed = sys.argv[1:7]
    config = json.loads(config)
    raw_input_size = config["model"]["input_size"]  # from_config doubles it in place
    start = time.perf_counter()
    model = Model.from_config(config)
    model.train(output_dir=output, post_inference=False)
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    model.predict(data_path=data, input_dir="markers", output_dir=output + "/pred_final",
                  expt_ids=json.loads(test))
    predict_seconds = time.perf_counter() - start
    # its reload doubles the velocity-doubled input size again: put the raw size back first
    import yaml
    saved = yaml.safe_load(open(output + "/config.yaml"))
    saved["model"]["input_size"] = raw_input_size
    yaml.safe_dump(saved, open(output + "/config.yaml", "w"))
    best = Model.from_dir(output)
    best.predict(data_path=data, input_dir="markers", output_dir=output + "/pred_best",
                 expt_ids=json.loads(test))
    print(json.dumps({"train_seconds": seconds, "predict_seconds": predict_seconds}))
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
            "sequence_length": 500,
            "num_workers": 1,
            "train_probability": 0.9,
            "val_probability": 0.1,
            "seed": seed,
        },
    }


def score_folder(folder: Path, test: list, classes: list[str]) -> dict:
    """Scores of lightning-action prediction CSVs (NaN rows count as wrong)."""
    predictions = []
    for session in test:
        table = pd.read_csv(folder / f"{session.session_id}_predictions.csv", index_col=0)
        probabilities = table[classes].to_numpy()
        missing = np.isnan(probabilities).any(axis=1)
        probabilities = np.nan_to_num(probabilities, nan=0.0)
        probabilities[:, 0] = -1.0  # never background
        labels = probabilities.argmax(axis=1)
        labels[missing] = 0  # no prediction: scored as wrong (background is never a true label)
        predictions.append(labels)
    return score_sessions([s.labels for s in test], predictions, len(classes))["average"]


def run_neds_hf(data: Path, out: Path, test: list, epochs: int, seed: int, **overrides) -> dict:
    """Train neds_hf's TCN and score its best checkpoint on the test sessions."""
    values = {
        "data_dir": str(data),
        "output_dir": str(out),
        "num_epochs": epochs,
        "seed": seed,
        "report_to": "none",
        "disable_progress_bar": True,
        **overrides,
    }
    start = time.perf_counter()
    train_segmentation(SegmentationTrainingArguments(**values))
    seconds = time.perf_counter() - start
    model, extractor = load_model(out / "best")
    start = time.perf_counter()
    predictions = [predict_session(model, extractor, s).argmax(axis=1) for s in test]
    frames_per_s = sum(s.num_frames for s in test) / (time.perf_counter() - start)
    scores = score_sessions([s.labels for s in test], predictions, model.config.num_labels_total)
    return {**scores["average"], "train_seconds": seconds, "frames_per_s": frames_per_s}


def compare(args: argparse.Namespace) -> dict:
    """neds_hf vs lightning-action on the same corpus, one row per (tool, seed)."""
    rows = {}
    for seed in args.seeds:
        data = args.output / f"seed{seed}" / "data"
        split = make_synthetic_corpus(data, 4, 2, args.frames, 0.04, seed)
        test = load_sessions(data, split["test"])
        rows[f"neds_hf seed {seed}"] = run_neds_hf(
            data, args.output / f"seed{seed}" / "neds_hf", test, args.epochs, seed
        )
        if args.skip_lightning_action:
            continue
        python = create_la_venv(args.venv)
        la_out = (args.output / f"seed{seed}" / "lightning_action").resolve()
        result = subprocess.run(
            [
                str(python),
                "-c",
                LA_RUNNER,
                json.dumps(la_config(data.resolve(), split["train"], args.epochs, seed)),
                str(la_out),
                str(data.resolve()),
                json.dumps(split["test"]),
                str(args.epochs),
                str(seed),
            ],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            print(result.stderr[-3000:], file=sys.stderr)
            raise RuntimeError("lightning-action run failed (see above)")
        timing = json.loads(result.stdout.strip().splitlines()[-1])
        frames = sum(s.num_frames for s in test)
        for which in ("best", "final"):
            scores = score_folder(la_out / f"pred_{which}", test, split["class_names"])
            rows[f"lightning-action {which} seed {seed}"] = {
                **scores,
                "train_seconds": timing["train_seconds"],
                "frames_per_s": frames / timing["predict_seconds"],
            }
    return rows


def semi(args: argparse.Namespace) -> dict:
    """Position-only features, ~1 % labels: supervised vs semi-supervised switches."""
    variants = {
        "supervised": {},
        "pseudo-labels": {"weak_labels": "pseudo"},
        "next-step": {"next_step_weight": 1.0},
        "pseudo + next-step": {"weak_labels": "pseudo", "next_step_weight": 1.0},
    }
    rows = {}
    for seed in args.seeds:
        data = args.output / f"seed{seed}" / "data"
        split = make_synthetic_corpus(data, 8, 2, args.frames, 0.01, seed)
        test = load_sessions(data, split["test"])
        for name, overrides in variants.items():
            rows[f"{name} seed {seed}"] = run_neds_hf(
                data,
                args.output / f"seed{seed}" / name.replace(" ", ""),
                test,
                args.epochs,
                seed,
                use_velocity=False,
                chunk_length=250,
                batch_size=4,
                anneal_start_epoch=args.epochs // 4,
                anneal_end_epoch=args.epochs // 2,
                **overrides,
            )
    return rows


def main() -> int:
    """Parse arguments, run the experiment, print and save the table."""
    parser = argparse.ArgumentParser(description=__doc__, allow_abbrev=False)
    parser.add_argument("--experiment", choices=["compare", "semi"], default="compare")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--frames", type=int, default=12000, help="frames per session")
    parser.add_argument(
        "--venv", type=Path, default=None, help="default: OUTPUT/.venv-lightning-action"
    )
    parser.add_argument("--skip-lightning-action", action="store_true")
    args = parser.parse_args()
    args.venv = args.venv or args.output / ".venv-lightning-action"
    rows = compare(args) if args.experiment == "compare" else semi(args)
    table = markdown_table(rows)
    extra = "\n".join(
        f"| {name} | train {row['train_seconds']:.1f} s | {row['frames_per_s']:.0f} frames/s |"
        for name, row in rows.items()
    )
    print(table + "\n| run | train time | inference |\n|---|---|---|\n" + extra)
    (args.output / f"{args.experiment}.json").write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

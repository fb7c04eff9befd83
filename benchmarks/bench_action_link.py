"""NEDS decodes segmented actions from spikes: the NEDS link recipe end to end, measured.

Not a test: it trains a segmentation model and a NEDS model and takes minutes. On a synthetic
IBL corpus whose neurons are tuned to the latent pose action (``--action-tuning``; 0 gives a
control where only the wheel-turn action, through the wheel tuning, is encoded), it runs the
recipe through the command line, exactly as documented:

1. ``neds-hf make-synthetic --action-tuning A`` (pose tables + true actions);
2. ``neds-hf prepare-data`` (the NEDS dataset);
3. ``neds-hf segment prepare-ibl --truth-labels`` (pose + wheel features through ONE, sparse
   labelled bouts in the training sessions, every frame labelled in the test sessions);
4. ``neds-hf segment train`` / ``predict`` / ``evaluate`` (the segmentation model, scored
   against the true actions of the test sessions);
5. ``neds-hf segment add-to-neds`` (predictions -> a per-bin ``action`` modality);
6. ``neds-hf train --modalities spikes wheel_speed action``;

then decodes the action of every bin of the NEDS test split from spikes alone and prints its
balanced accuracy against the segmentation labels NEDS was trained on and against the true
actions, with chance (0.25) and the majority-class accuracy.

Usage::

    python benchmarks/bench_action_link.py --output bench_link [--action-tuning 2.0]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import balanced_accuracy_score

NEDS = [sys.executable, "-m", "neds_hf.cli"]


def run(*argv: str) -> None:
    """Run one ``neds-hf`` command; stop on failure."""
    print("$ neds-hf", " ".join(argv), flush=True)
    subprocess.run([*NEDS, *argv], check=True)


def decode(model_dir: Path, dataset: Path, cache: Path) -> dict[str, float]:
    """Balanced accuracy of NEDS's per-bin action from spikes on the test split."""
    from neds_hf import NedsForMaskedModeling
    from neds_hf.data.synthetic import load_pose_truth
    from neds_hf.segmentation.neds_link import decode_actions

    decoded = decode_actions(NedsForMaskedModeling.from_pretrained(model_dir), dataset, "test")
    truths = {
        eid: load_pose_truth(cache, eid)["action_bins"] for eid in set(decoded["session_ids"])
    }
    true = np.stack(
        [truths[s][t] for s, t in zip(decoded["session_ids"], decoded["trial_ids"], strict=True)]
    ).ravel()
    predicted, labels = decoded["predicted"].ravel(), decoded["labels"].ravel()
    return {
        "bins": len(true),
        "balanced_accuracy_vs_segmentation": float(balanced_accuracy_score(labels, predicted)),
        "balanced_accuracy_vs_truth": float(balanced_accuracy_score(true, predicted)),
        "segmentation_vs_truth_balanced_accuracy": float(balanced_accuracy_score(true, labels)),
        "majority_class_accuracy": float(np.bincount(true).max() / len(true)),
        "chance_balanced_accuracy": 0.25,
    }


def main() -> int:
    """Run the recipe and print the measured figures (JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--action-tuning", type=float, default=2.0)
    parser.add_argument("--sessions", type=int, default=6)
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--neurons", type=int, default=40)
    parser.add_argument("--segmentation-epochs", type=int, default=20)
    parser.add_argument("--neds-steps", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out: Path = args.output
    cache, dataset, seg = out / "cache", out / "dataset", out / "segmentation"
    start = time.perf_counter()
    run("make-synthetic", "--output", str(cache), "--sessions", str(args.sessions),
        "--seed", str(args.seed), "--trials", str(args.trials),
        "--neurons-per-probe", str(args.neurons),
        "--action-tuning", str(args.action_tuning))  # fmt: skip
    eids = (cache / "eids.txt").read_text().split()
    run("prepare-data", "--cache-dir", str(cache), "--eids-file", str(cache / "eids.txt"),
        "--output", str(dataset), "--no-progress", "--overwrite")  # fmt: skip
    run("segment", "prepare-ibl", "--cache-dir", str(cache), "--eids-file",
        str(cache / "eids.txt"), "--truth-labels", "--test-sessions", *eids[-2:],
        "--output", str(seg))  # fmt: skip
    run("segment", "train", "--data_dir", str(seg), "--input_dir", "features",
        "--output_dir", str(out / "seg_model"), "--num_epochs", str(args.segmentation_epochs),
        "--report_to", "none", "--disable_progress_bar", "true")  # fmt: skip
    run("segment", "predict", str(out / "seg_model" / "best"), "--data-dir", str(seg),
        "--input-dir", "features", "--output", str(out / "predictions"))  # fmt: skip
    run("segment", "evaluate", str(out / "predictions"), "--labels-dir",
        str(seg / "labels-true"), "--output", str(out / "segmentation_scores"))  # fmt: skip
    run("segment", "add-to-neds", "--dataset", str(dataset), "--predictions",
        str(out / "predictions"), "--sessions-root", str(cache),
        "--output", str(out / "dataset_action"), "--overwrite")  # fmt: skip
    run("train", "--dataset", str(out / "dataset_action"), "--output_dir", str(out / "neds"),
        "--modalities", "spikes", "wheel_speed", "action", "--max_steps", str(args.neds_steps),
        "--hidden_size", "64", "--num_hidden_layers", "2", "--num_attention_heads", "4",
        "--intermediate_size", "128", "--spike_stitcher_size", "32",
        "--per_device_train_batch_size", "16", "--learning_rate", "3e-3",
        "--eval_steps", str(args.neds_steps), "--save_steps", str(args.neds_steps),
        "--report_to", "none", "--disable_progress_bar", "true",
        "--seed", str(args.seed))  # fmt: skip
    figures = decode(out / "neds" / "model", out / "dataset_action", cache)
    scores = json.loads((out / "segmentation_scores.json").read_text())
    per_session = dict(zip(scores["sessions"], scores["per_session"], strict=True))
    test_rows = [per_session[eid] for eid in eids[-2:]]
    figures["segmentation_test_scores"] = {
        metric: float(np.mean([row[metric] for row in test_rows])) for metric in test_rows[0]
    }
    figures["action_tuning"] = args.action_tuning
    figures["wall_time_s"] = round(time.perf_counter() - start, 1)
    print(json.dumps(figures, indent=2))
    (out / "figures.json").write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

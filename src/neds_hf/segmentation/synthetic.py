"""A synthetic pose corpus with known action segments, in the folder layout of :mod:`readers`.

Four markers (``paw_l``, ``paw_r``, ``nose``, ``tail``) at 60 frames/s; four actions with
distinct kinematics: ``still`` (a resting pose), ``walk`` (paws swing in antiphase at 3 Hz),
``groom`` (paws raised to the nose, fast 7 Hz strokes) and ``rear`` (the body rises, slow sway).
Bout lengths are gamma distributed (class means 60-150 frames); poses move smoothly between
bouts; markers carry Gaussian noise and dropouts (jumps with low likelihood).

Written files::

    OUT/markers/<session>.csv       DeepLabCut layout (scorer, bodyparts, coords)
    OUT/labels/<session>.csv        training sessions: sparse 50-frame labelled bouts;
                                    test sessions: every frame labelled
    OUT/labels-true/<session>.csv   every frame's true class, all sessions
    OUT/split.json                  {"train": [...], "test": [...]}
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.signal import lfilter

from ..atomic import atomic_directory
from .configuration_segmentation import BACKGROUND

#: The actions of the synthetic corpus (after background).
SYNTHETIC_ACTIONS = ("still", "walk", "groom", "rear")
SYNTHETIC_MARKERS = ("paw_l", "paw_r", "nose", "tail")
FRAME_RATE = 60.0
LABELLED_BOUT = 50
_REST = np.array([[-10.0, 0.0], [10.0, 0.0], [0.0, 20.0], [0.0, -25.0]])  # (M, 2) x, y
_MEAN_BOUT = {"still": 120.0, "walk": 90.0, "groom": 150.0, "rear": 60.0}


def _pose_and_motion(action: str) -> tuple[np.ndarray, float, np.ndarray]:
    """Target pose offset `(M, 2)`, oscillation frequency (Hz) and amplitude `(M, 2)`."""
    offset, amplitude = np.zeros((4, 2)), np.zeros((4, 2))
    if action == "walk":
        amplitude[:2, 0] = 8.0
        return offset, 3.0, amplitude
    if action == "groom":
        offset[0] = [8.0, 16.0]
        offset[1] = [-8.0, 16.0]
        amplitude[:2, 1] = 3.0
        return offset, 7.0, amplitude
    if action == "rear":
        offset[:3, 1] = 15.0
        amplitude[:3, 0] = 2.0
        return offset, 0.5, amplitude
    return offset, 0.0, amplitude


def sample_bouts(num_frames: int, rng: np.random.Generator) -> np.ndarray:
    """True action index per frame `(T,)` (1-based; 0 is background), gamma bout lengths."""
    labels = np.zeros(num_frames, dtype=np.int64)
    position, action = 0, int(rng.integers(len(SYNTHETIC_ACTIONS)))
    while position < num_frames:
        mean = _MEAN_BOUT[SYNTHETIC_ACTIONS[action]]
        length = max(20, int(rng.gamma(4.0, mean / 4.0)))
        labels[position : position + length] = action + 1
        position += length
        action = int(rng.choice([a for a in range(len(SYNTHETIC_ACTIONS)) if a != action]))
    return labels


def render_markers(labels: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Marker positions `(T, M, 2)` and likelihoods `(T, M)` for a label sequence."""
    num_frames = len(labels)
    tables = [_pose_and_motion(action) for action in SYNTHETIC_ACTIONS]
    offsets = np.stack([t[0] for t in tables])[labels - 1]  # (T, M, 2)
    frequency = np.array([t[1] for t in tables])[labels - 1]  # (T,)
    amplitude = np.stack([t[2] for t in tables])[labels - 1]  # (T, M, 2)
    phase = np.cumsum(2 * np.pi * frequency / FRAME_RATE)[:, None, None]  # (T, 1, 1)
    sign = np.array([1.0, -1.0, 1.0, 1.0])[None, :, None]  # paws in antiphase
    swing = amplitude * sign * np.sin(phase)
    # poses move gradually between bouts: first-order low-pass, time constant ~6 frames
    target = (_REST + offsets).reshape(num_frames, -1)
    smooth = lfilter([1 / 6.0], [1, -5 / 6.0], target, axis=0, zi=5 / 6.0 * target[:1])[0]
    smooth = smooth.reshape(num_frames, 4, 2)
    drift = np.cumsum(rng.normal(0, 0.05, size=(num_frames, 1, 2)), axis=0)
    positions = smooth + swing + drift + rng.normal(0, 0.5, size=(num_frames, 4, 2))
    likelihood = rng.uniform(0.9, 1.0, size=(num_frames, 4))
    dropouts = rng.random((num_frames, 4)) < 0.01
    positions[dropouts] += rng.uniform(-30, 30, size=(int(dropouts.sum()), 2))
    likelihood[dropouts] = rng.uniform(0.0, 0.3, size=int(dropouts.sum()))
    return positions, likelihood


def sparse_labels(
    labels: np.ndarray, fraction: float, rng: np.random.Generator, bout: int = LABELLED_BOUT
) -> np.ndarray:
    """Keep `bout`-frame stretches inside true bouts (classes in turn), about `fraction` of
    frames and at least one stretch; every other frame becomes background (0)."""
    sparse = np.zeros_like(labels)
    wanted = max(1, round(fraction * len(labels) / bout))
    change = np.flatnonzero(np.diff(labels)) + 1
    starts, stops = np.r_[0, change], np.r_[change, len(labels)]
    long_bouts = [(a, b) for a, b in zip(starts, stops, strict=True) if b - a >= bout]
    by_class: dict[int, list[tuple[int, int]]] = {}
    for a, b in long_bouts:
        by_class.setdefault(int(labels[a]), []).append((a, b))
    for lst in by_class.values():
        rng.shuffle(lst)
    order = sorted(by_class)
    shift = int(rng.integers(len(order))) if order else 0
    order = order[shift:] + order[:shift]  # sessions start the class rotation at different classes
    taken = 0
    while taken < wanted and any(by_class.values()):
        for label in order:
            if taken < wanted and by_class[label]:
                a, b = by_class[label].pop()
                start = int(rng.integers(a, b - bout + 1))
                sparse[start : start + bout] = labels[start : start + bout]
                taken += 1
    return sparse


def write_marker_csv(path: Path, positions: np.ndarray, likelihood: np.ndarray) -> None:
    """Write positions `(T, M, 2)` and likelihoods `(T, M)` as a DeepLabCut CSV."""
    columns, data = [], []
    for m, marker in enumerate(SYNTHETIC_MARKERS):
        for coord, values in (
            ("x", positions[:, m, 0]),
            ("y", positions[:, m, 1]),
            ("likelihood", likelihood[:, m]),
        ):
            columns.append(("synthetic", marker, coord))
            data.append(values)
    header = pd.MultiIndex.from_tuples(columns, names=["scorer", "bodyparts", "coords"])
    pd.DataFrame(np.stack(data, 1), columns=header).to_csv(path, float_format="%.3f")


def write_label_csv(path: Path, labels: np.ndarray, class_names: list[str]) -> None:
    """Write class indices `(T,)` as a one-hot CSV (first column background)."""
    one_hot = np.eye(len(class_names), dtype=np.int64)[labels]
    pd.DataFrame(one_hot, columns=class_names).to_csv(path)


def make_synthetic_corpus(
    output_dir: str | Path,
    num_train_sessions: int = 4,
    num_test_sessions: int = 2,
    num_frames: int = 3000,
    labelled_fraction: float = 0.04,
    seed: int = 0,
) -> dict[str, Any]:
    """Write the corpus (atomically) and return its description (sessions, classes, split)."""
    if not 0 < labelled_fraction <= 1:
        raise ValueError(f"labelled_fraction must be in (0, 1], got {labelled_fraction!r}")
    rng = np.random.default_rng(seed)
    class_names = [BACKGROUND, *SYNTHETIC_ACTIONS]
    train = [f"train_{i:02d}" for i in range(num_train_sessions)]
    test = [f"test_{i:02d}" for i in range(num_test_sessions)]
    with atomic_directory(output_dir) as tmp:
        for folder in ("markers", "labels", "labels-true"):
            (tmp / folder).mkdir()
        for session in train + test:
            labels = sample_bouts(num_frames, rng)
            positions, likelihood = render_markers(labels, rng)
            write_marker_csv(tmp / "markers" / f"{session}.csv", positions, likelihood)
            given = sparse_labels(labels, labelled_fraction, rng) if session in train else labels
            write_label_csv(tmp / "labels" / f"{session}.csv", given, class_names)
            write_label_csv(tmp / "labels-true" / f"{session}.csv", labels, class_names)
        description = {"train": train, "test": test, "class_names": class_names, "seed": seed}
        (tmp / "split.json").write_text(json.dumps(description, indent=2) + "\n")
    return description


def add_make_synthetic_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``neds-hf segment make-synthetic``."""
    parser.add_argument("--output", required=True, help="folder to write (replaced if present)")
    parser.add_argument("--train-sessions", type=int, default=4)
    parser.add_argument("--test-sessions", type=int, default=2)
    parser.add_argument("--frames", type=int, default=3000, help="frames per session")
    parser.add_argument(
        "--labelled-fraction", type=float, default=0.04, help="labelled frames in training sessions"
    )
    parser.add_argument("--seed", type=int, default=0)
    return parser


def run_make_synthetic(args: argparse.Namespace) -> int:
    """Run ``neds-hf segment make-synthetic``."""
    description = make_synthetic_corpus(
        args.output,
        args.train_sessions,
        args.test_sessions,
        args.frames,
        args.labelled_fraction,
        args.seed,
    )
    print(
        f"wrote {len(description['train'])} training and {len(description['test'])} test "
        f"sessions to {args.output}"
    )
    return 0


__all__ = [
    "SYNTHETIC_ACTIONS",
    "SYNTHETIC_MARKERS",
    "add_make_synthetic_arguments",
    "make_synthetic_corpus",
    "run_make_synthetic",
    "sample_bouts",
    "sparse_labels",
]

"""IBL sessions through ONE into the segmentation folder layout.

For each session id: the left camera's pose table (``_ibl_leftCamera.lightningPose.pqt``, else
``.dlc.pqt``), the camera times and the wheel are made local through ONE (downloaded when ONE
is online), then :func:`~.neds_link.load_ibl_pose_session` turns them into per-frame features
(paw and nose ``x``/``y``, low-likelihood positions interpolated and counted, plus the wheel
velocity at each frame's camera time). The features go to ``OUT/features/<eid>.csv``, the
folder layout of :mod:`.readers`, so ``neds-hf segment prepare --input-dir features`` builds
the Hugging Face dataset and ``neds-hf segment predict --input-dir features`` labels every
frame. For the synthetic IBL corpus (:mod:`neds_hf.data.synthetic`), whose pose is driven by
known actions, ``--truth-labels`` also writes ``labels/`` (sparse bouts in training sessions,
every frame in test sessions), ``labels-true/`` and ``split.json``, as
``segment make-synthetic`` does.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_directory
from .configuration_segmentation import BACKGROUND
from .neds_link import IBL_POSE_MARKERS, load_ibl_pose_session, write_feature_folder
from .readers import Session
from .synthetic import sparse_labels, write_label_csv

__all__ = [
    "add_prepare_ibl_arguments",
    "load_ibl_pose_via_one",
    "run_prepare_ibl",
    "write_ibl_pose_folder",
]


def _make_local(one: Any, eid: str, camera: str, revision: str | None) -> Path:
    """Download (when online) the pose table, camera times and wheel of session `eid`, and
    return the local session folder; raises FileNotFoundError naming the session and what it
    lacks."""
    obj = f"{camera}Camera"
    pose = [
        d
        for kind in ("lightningPose", "dlc")
        for d in one.list_datasets(
            eid, collection="alf", filename={"object": obj, "attribute": kind}
        )
    ]
    if not pose:
        raise FileNotFoundError(
            f"session {eid}: no alf/_ibl_{obj}.lightningPose.pqt or .dlc.pqt in the ONE cache"
        )
    wanted = [pose[0], f"alf/_ibl_{obj}.times.npy", "alf/_ibl_wheel.position.npy"]
    wanted.append("alf/_ibl_wheel.timestamps.npy")
    listed = set(one.list_datasets(eid, collection="alf"))
    absent = [name for name in wanted if name not in listed]
    if absent:
        raise FileNotFoundError(f"session {eid}: {absent} not in the ONE cache")
    paths = [
        Path(one.load_dataset(eid, Path(name).name, "alf", revision=revision, download_only=True))
        for name in wanted
    ]
    return paths[0].parent.parent  # <session>/alf/<file>


def load_ibl_pose_via_one(
    one: Any,
    eid: str,
    camera: str = "left",
    likelihood_threshold: float | None = 0.9,
    markers: Sequence[str] = IBL_POSE_MARKERS,
    revision: str | None = None,
) -> tuple[Session, np.ndarray]:
    """Pose + wheel-velocity features of IBL session `eid` through ONE (session id = `eid`),
    and the camera time of each frame (s)."""
    eid = str(eid)
    session_path = _make_local(one, eid, camera, revision)
    session, times = load_ibl_pose_session(
        session_path, camera, likelihood_threshold, markers, wheel=True
    )
    session.session_id = eid
    return session, times


def write_ibl_pose_folder(
    one: Any,
    eids: Sequence[str],
    data_dir: str | Path,
    camera: str = "left",
    likelihood_threshold: float | None = 0.9,
    truth_root: str | Path | None = None,
    test_sessions: Sequence[str] = (),
    labelled_fraction: float = 0.04,
    seed: int = 0,
    labelled_bout: int = 20,
) -> dict[str, Any]:
    """Write ``data_dir/features/<eid>.csv`` for `eids` (atomically); with `truth_root` (a
    synthetic corpus) also ``labels/``, ``labels-true/`` and ``split.json`` from its
    ``ground_truth/<eid>.pose.npz``: training sessions keep `labelled_bout`-frame stretches
    (about `labelled_fraction` of their frames; IBL wheel turns last a fraction of a second,
    hence shorter stretches than ``segment make-synthetic``'s), test sessions every frame.
    Returns the description (sessions, features, reports)."""
    from ..data.synthetic import POSE_ACTIONS, load_pose_truth

    unknown = sorted(set(test_sessions) - {str(e) for e in eids})
    if unknown:
        raise ValueError(f"test sessions {unknown} are not among the session ids")
    sessions = [load_ibl_pose_via_one(one, e, camera, likelihood_threshold)[0] for e in eids]
    class_names = [BACKGROUND, *POSE_ACTIONS]
    rng = np.random.default_rng(seed)
    with atomic_directory(data_dir) as tmp:
        write_feature_folder(sessions, tmp)
        if truth_root is not None:
            for folder in ("labels", "labels-true"):
                (tmp / folder).mkdir()
            for session in sessions:
                labels = 1 + load_pose_truth(truth_root, session.session_id)["actions"]
                if len(labels) != session.num_frames:
                    raise ValueError(
                        f"session {session.session_id}: {len(labels)} true actions for "
                        f"{session.num_frames} pose frames"
                    )
                given = (
                    labels
                    if session.session_id in test_sessions
                    else sparse_labels(labels, labelled_fraction, rng, labelled_bout)
                )
                write_label_csv(tmp / "labels" / f"{session.session_id}.csv", given, class_names)
                write_label_csv(
                    tmp / "labels-true" / f"{session.session_id}.csv", labels, class_names
                )
        description = {
            "train": [s.session_id for s in sessions if s.session_id not in test_sessions],
            "test": [s.session_id for s in sessions if s.session_id in test_sessions],
            "class_names": class_names if truth_root is not None else None,
            "feature_names": sessions[0].feature_names if sessions else [],
            "reports": {s.session_id: s.report for s in sessions},
        }
        (tmp / "split.json").write_text(json.dumps(description, indent=2) + "\n")
    return description


def add_prepare_ibl_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``neds-hf segment prepare-ibl``."""
    parser.add_argument("--cache-dir", required=True, help="local ONE cache directory")
    sessions = parser.add_mutually_exclusive_group(required=True)
    sessions.add_argument("--eids", nargs="+", metavar="ID", help="session ids")
    sessions.add_argument("--eids-file", metavar="F", help="text file, one session id per line")
    parser.add_argument("--output", required=True, help="folder to write (replaced if present)")
    parser.add_argument("--camera", default="left", choices=["left", "right", "body"])
    parser.add_argument("--likelihood-threshold", type=float, default=0.9)
    parser.add_argument(
        "--truth-labels",
        action="store_true",
        help="synthetic corpora only: labels from ground_truth/<eid>.pose.npz",
    )
    parser.add_argument("--test-sessions", nargs="*", default=[], help="fully labelled sessions")
    parser.add_argument("--labelled-fraction", type=float, default=0.04)
    parser.add_argument("--labelled-bout", type=int, default=20, help="frames per labelled bout")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def run_prepare_ibl(args: argparse.Namespace) -> int:
    """Run ``neds-hf segment prepare-ibl``."""
    from ..data.ibl import make_one

    eids = args.eids or Path(args.eids_file).read_text().split()
    description = write_ibl_pose_folder(
        make_one(args.cache_dir),
        eids,
        args.output,
        args.camera,
        args.likelihood_threshold,
        args.cache_dir if args.truth_labels else None,
        args.test_sessions,
        args.labelled_fraction,
        args.seed,
        args.labelled_bout,
    )
    print(
        f"wrote features of {len(eids)} sessions ({', '.join(description['feature_names'])})"
        f" to {args.output}/features" + (" with labels" if args.truth_labels else "")
    )
    return 0

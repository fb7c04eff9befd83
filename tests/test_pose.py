"""Paw speed from IBL pose (neds_hf.data.pose) and the two paw-speed modalities of a dataset."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from neds_hf.data.pose import (
    LIKELIHOOD_THRESHOLD,
    MAX_FRAME_GAP_S,
    PawPose,
    frame_pair_speed,
    paw_pose_from_table,
    paw_speeds_at,
)


def _table(n_frames: int, step_px: float = 3.0) -> pd.DataFrame:
    """Both paws moving right by `step_px` per frame, every likelihood 1."""
    x = step_px * np.arange(n_frames, dtype=np.float64)
    columns = {}
    for marker in ("paw_l", "paw_r"):
        columns |= {f"{marker}_x": x, f"{marker}_y": np.zeros(n_frames)}
        columns[f"{marker}_likelihood"] = np.ones(n_frames)
    return pd.DataFrame(columns)


def test_speed_is_pixels_per_second_between_frames():
    times = 10.0 + np.arange(61) / 60.0
    pose = paw_pose_from_table(_table(60), times, "x.pqt", "s1")
    assert pose.n_dropped_timestamps == 1  # the leading extra timestamp is dropped
    np.testing.assert_allclose(pose.times, times[1:])
    speeds = paw_speeds_at(pose, np.array([[10.2, 10.5], [9.0, 12.0]]))
    np.testing.assert_allclose(speeds["left_paw_speed"][0], 180.0, rtol=1e-6)  # 3 px * 60 Hz
    assert np.isnan(speeds["right_paw_speed"][1]).all()  # outside the video
    assert speeds["left_paw_speed"].dtype == np.float32


def test_low_likelihood_and_gaps_give_nan_never_interpolated():
    table = _table(60)
    table.loc[30, "paw_l_likelihood"] = LIKELIHOOD_THRESHOLD - 0.01
    table.loc[40, "paw_r_x"] = np.nan
    times = np.arange(60) / 60.0
    times[50:] += 2 * MAX_FRAME_GAP_S  # dropped frames between 49 and 50
    pose = paw_pose_from_table(table, times, "x.pqt", "s1")
    assert pose.n_invalid == {"paw_l": 1, "paw_r": 1}
    speed, mid = frame_pair_speed(pose.times, pose.positions["paw_l"])
    assert np.isnan(speed[[29, 30, 49]]).all() and np.isfinite(np.delete(speed, [29, 30, 49])).all()
    samples = np.array([[mid[29], mid[28] - 0.001, mid[49] + 0.05, mid[10]]])
    left = paw_speeds_at(pose, samples)["left_paw_speed"][0]
    assert np.isnan(left[0]) and np.isnan(left[2]) and np.isfinite(left[[1, 3]]).all()
    right = paw_speeds_at(pose, np.array([[mid[39] + 0.001]]))["right_paw_speed"]
    assert np.isnan(right).all()


def test_bad_pose_tables_name_the_session_and_file():
    with pytest.raises(ValueError, match=r"session s1: a\.pqt lacks the pose columns \['paw_r_x'"):
        paw_pose_from_table(_table(5).drop(columns="paw_r_x"), np.arange(5.0), "a.pqt", "s1")
    with pytest.raises(ValueError, match=r"session s1: a\.pqt has 5 frames but the camera times"):
        paw_pose_from_table(_table(5), np.arange(4.0), "a.pqt", "s1")


def test_absent_pose_gives_all_nan():
    absent = PawPose(np.empty(0), {}, absent="no pose table")
    for pose in (absent, None):
        speeds = paw_speeds_at(pose, np.zeros((2, 3)))
        assert set(speeds) == {"left_paw_speed", "right_paw_speed"}
        assert all(np.isnan(v).all() and v.shape == (2, 3) for v in speeds.values())
    assert absent.describe() == {"absent": "no pose table"}


def test_dataset_paw_speeds_follow_the_true_speed(synthetic_corpus):
    """Through ONE on the synthetic corpus: the binned paw speed tracks the noise-free speed
    of the generator, NaN only in a few bins (occlusions), reported per session."""
    from neds_hf.data import NedsTrialDataset, load_modalities
    from neds_hf.data.synthetic import load_pose_truth

    folder = synthetic_corpus["dataset_dir"]
    names = [m["name"] for m in load_modalities(folder)]
    left = names.index("left_paw_speed")
    assert names[left : left + 2] == ["left_paw_speed", "right_paw_speed"]
    report = json.loads((folder / "build_report.json").read_text())
    for entry in report["sessions"]:
        missing = entry["missing_modalities"]
        assert set(missing) == {"left_paw_speed", "right_paw_speed"}
        assert all(0 < fraction < 0.1 for fraction in missing.values())
        assert entry["pose"]["source"] == "alf/_ibl_leftCamera.lightningPose.pqt"
    trials = NedsTrialDataset(folder, "train", modalities=["left_paw_speed"])
    eid = synthetic_corpus["eids"][0]
    truth = load_pose_truth(synthetic_corpus["cache_dir"], eid)
    rows = [trials[i] for i in range(len(trials)) if trials[i]["session_id"] == eid]
    measured = np.stack([row["left_paw_speed"] for row in rows])  # (K, T)
    true = truth["left_paw_speed"][[row["trial_id"] for row in rows]]  # (K, T)
    valid = np.isfinite(measured)
    assert valid.mean() > 0.9
    assert np.corrcoef(measured[valid], true[valid])[0, 1] > 0.8


def test_session_without_pose_is_kept_all_nan_and_reported(tmp_path):
    from neds_hf.data import NedsTrialDataset, build_dataset
    from neds_hf.data.synthetic import make_synthetic_cache

    eids = make_synthetic_cache(
        tmp_path / "cache", 1, seed=4, n_trials=40, n_neurons_per_probe=8, cameras=("right",)
    )
    report = build_dataset(tmp_path / "cache", eids, tmp_path / "ds", progress=False)
    assert report.skipped == {}
    (entry,) = json.loads((tmp_path / "ds" / "build_report.json").read_text())["sessions"]
    assert entry["missing_modalities"] == {"left_paw_speed": 1.0, "right_paw_speed": 1.0}
    assert entry["pose"]["absent"].startswith("no pose table (alf/leftCamera.lightningPose")
    item = NedsTrialDataset(tmp_path / "ds", "train", modalities=["left_paw_speed", "wheel_speed"])[
        0
    ]
    assert np.isnan(item["left_paw_speed"]).all() and np.isfinite(item["wheel_speed"]).all()


def test_paw_speeds_are_opt_in_for_training():
    from neds_hf.data.preprocess import DATASET_MODALITIES
    from neds_hf.training.arguments import select_modalities

    default = [m["name"] for m in select_modalities(None, DATASET_MODALITIES, "d")]
    assert default == ["spikes", "wheel_speed", "whisker_motion_energy", "choice", "block"]
    chosen = select_modalities(["spikes", "left_paw_speed"], DATASET_MODALITIES, "d")
    left = next(spec for spec in DATASET_MODALITIES if spec["name"] == "left_paw_speed")
    assert chosen == [{"name": "spikes", "kind": "spikes"}, left]


def test_neds_trains_on_paw_speeds_with_missing_bins(synthetic_corpus, tmp_path):
    """Selected by name, the paw speeds train with finite losses although some bins are NaN
    (hidden on input, never scored)."""
    from training_helpers import tiny_args

    from neds_hf.training import train

    torch.manual_seed(0)
    modalities = ["spikes", "wheel_speed", "left_paw_speed", "right_paw_speed"]
    args = tiny_args(synthetic_corpus, tmp_path / "run", modalities=modalities, max_steps=6,
                     eval_steps=6, save_steps=6)  # fmt: skip
    result = train(args)
    # in the dataset's declared order: spikes, the BrainWideBench behaviours, the paper's
    assert [m["name"] for m in result.model.config.modalities] == [
        "spikes", "left_paw_speed", "right_paw_speed", "wheel_speed"
    ]  # fmt: skip
    paw_losses = [e["train/loss/left_paw_speed"] for e in result.history
                  if "train/loss/left_paw_speed" in e]  # fmt: skip
    assert len(paw_losses) == 6 and np.isfinite(paw_losses).all()

"""Pose in the synthetic IBL corpus: the Lightning Pose table, true actions, action tuning."""

import numpy as np
import pandas as pd
import pytest

from neds_hf.data import synthetic as syn
from neds_hf.data.load import file_sha256
from neds_hf.data.synthetic.pose import WHEEL_TURN_SPEED
from neds_hf.data.synthetic.task import wheel_kinematics

SMALL = {"n_trials": 60, "n_neurons_per_probe": 12}

#: sha256 of files of session 0 of `make_synthetic_cache(seed=5, n_trials=60,
#: n_neurons_per_probe=12)` as written before pose existed: pose draws from its own generators.
PINNED = {
    "alf/_ibl_wheel.position.npy":
        "89e5ede12d71c4387fe7c2a4db1fccba088d326ecfaf8feeda648aaf12bc2955",
    "alf/leftCamera.ROIMotionEnergy.npy":
        "eec97a48ec94c85ed077a91fad01e9a13873bbfd46ff081b0e9b8418d745b1ed",
    "alf/probe00/pykilosort/spikes.times.npy":
        "8cb2369e7e2e0d71acb42fbf0d2673c1f384d4d9e21aab90adcaf4ac97bb2641",
    "ground_truth.npz": "a667c71921ff3acd2a0d93450dcede2754385d47f72b2fcc40edcb6398d850f0",
    "ground_truth.json": "d07cad67504a9224a7f1e5b76f7e737e92c5a36f2fd3d60717f4ece13f5687f9",
}  # fmt: skip


@pytest.fixture(scope="module")
def pose_cache(tmp_path_factory):
    """Session 0 of seed 5 (plain) and a right-camera-only session, written with a ONE cache."""
    root = tmp_path_factory.mktemp("pose_cache")
    eids = syn.make_synthetic_cache(root, n_sessions=1, seed=5, **SMALL)
    right_only = syn.generate_session(
        syn.SyntheticSessionSpec(seed=6, index=0, cameras=("right",), **SMALL)
    )
    syn.write_alf_session(right_only, root)
    syn.write_one_cache(root)
    return {"root": root, "eid": eids[0], "right_only": right_only.eid}


def test_existing_files_are_byte_identical(pose_cache):
    root, eid = pose_cache["root"], pose_cache["eid"]
    session = root / "cortexlab/Subjects/SYN005_000/2023-01-02/001"
    for name, digest in PINNED.items():
        path = (
            root / "ground_truth" / f"{eid}.{name.split('.')[1]}"
            if name.startswith("ground_truth")
            else session / name
        )
        assert file_sha256(path) == digest, name


def test_pose_table_is_listed_by_one_and_follows_ibl_naming(pose_cache):
    from neds_hf.data.ibl import make_one

    one = make_one(pose_cache["root"])
    listed = one.list_datasets(pose_cache["eid"], collection="alf")
    assert "alf/_ibl_leftCamera.lightningPose.pqt" in listed
    assert "alf/_ibl_leftCamera.lightningPose.pqt" not in one.list_datasets(
        pose_cache["right_only"], collection="alf"
    )
    path = one.load_dataset(pose_cache["eid"], "_ibl_leftCamera.lightningPose.pqt", "alf")
    table = pd.read_parquet(path) if not isinstance(path, pd.DataFrame) else path
    expected = [f"{m}_{c}" for m in syn.POSE_MARKERS for c in ("x", "y", "likelihood")]
    assert list(table.columns) == expected
    times = one.load_dataset(pose_cache["eid"], "_ibl_leftCamera.times.npy", "alf")
    assert len(times) == len(table) + 3  # three extra leading timestamps, as older sessions
    likelihood = table[[f"{m}_likelihood" for m in syn.POSE_MARKERS]].to_numpy()
    assert ((likelihood >= 0) & (likelihood <= 1)).all()
    assert 0.001 < (likelihood < 0.9).mean() < 0.1  # occlusions, but few


def test_actions_have_bouts_distinct_kinematics_and_follow_the_wheel(pose_cache):
    root, eid = pose_cache["root"], pose_cache["eid"]
    truth = syn.load_pose_truth(root, eid)
    assert list(truth["action_names"]) == list(syn.POSE_ACTIONS)
    actions, times = truth["actions"], truth["frame_times"]
    counts = np.bincount(actions, minlength=4)
    assert (counts > 0).all()
    runs = np.diff(np.flatnonzero(np.diff(np.r_[-1, actions, -1]) != 0))  # bout lengths, frames
    assert 0.4 < runs.mean() / 60.0 < 3.0  # realistic bouts: around a second
    spec = syn.SyntheticSessionSpec(seed=5, index=0, **SMALL)
    from neds_hf.data.synthetic.task import generate_trials

    moves = generate_trials(spec, np.random.default_rng([5, 0, 20240506]))["moves"]
    _, velocity = wheel_kinematics(times, moves)
    turning = actions == syn.POSE_ACTIONS.index("wheel_turn")
    fast = np.abs(velocity) > WHEEL_TURN_SPEED
    assert turning[fast].all()  # every fast stretch, plus 0.1 s (6 frames) on each side
    near = np.convolve(fast, np.ones(13), "same") > 0
    np.testing.assert_array_equal(turning, near)
    turn_bouts = runs[actions[np.r_[0, np.flatnonzero(np.diff(actions)) + 1]] == 3]
    assert np.median(turn_bouts) >= 20  # labellable bouts
    speed = truth["paw_speed"].mean(axis=0)  # (F,) px/s, both paws
    median = [np.median(speed[actions == a]) for a in range(4)]
    still, move, groom, turn = median
    assert still < 10.0 < move and still < groom and still < turn
    assert truth["action_bins"].shape == truth["left_paw_speed"].shape == (60, 100)
    assert np.all(truth["cluster_action_weights"] == 0)  # no action tuning by default


def test_action_tuning_drives_half_of_the_neurons(pose_cache):
    plain = syn.generate_session(syn.SyntheticSessionSpec(seed=5, index=0, **SMALL))
    tuned = syn.generate_session(
        syn.SyntheticSessionSpec(seed=5, index=0, action_tuning=1.5, **SMALL)
    )
    np.testing.assert_array_equal(plain.pose.actions, tuned.pose.actions)
    np.testing.assert_array_equal(plain.wheel_position, tuned.wheel_position)
    assert tuned.info["spec"]["action_tuning"] == 1.5 and "action_tuning" not in plain.info["spec"]
    weights = tuned.pose_truth["cluster_action_weights"]  # (C, A)
    tuned_units = np.flatnonzero(np.abs(weights).sum(axis=1) > 0)
    assert len(tuned_units) == 6
    expected = tuned.ground_truth["expected_counts"]  # (n, C, T)
    bins = tuned.pose_truth["action_bins"]  # (n, T)
    agree = 0
    for unit in tuned_units:
        per_action = [expected[:, unit][bins == a].mean() for a in range(4)]
        agree += np.argmax(per_action) == np.argmax(weights[unit])
    assert agree >= 5  # the preferred action has the highest rate
    with pytest.raises(ValueError, match="action_tuning must be >= 0 and needs the left camera"):
        syn.SyntheticSessionSpec(action_tuning=1.0, cameras=("right",))

"""The IBL pose path of action segmentation through ONE, and NEDS decoding the actions, on a
synthetic IBL corpus whose neurons are tuned to the pose actions."""

import json

import numpy as np
import pytest
import torch

from neds_hf.data.synthetic import POSE_ACTIONS, load_pose_truth, make_synthetic_cache

CLASSES = ["background", *POSE_ACTIONS]


@pytest.fixture(scope="module")
def action_corpus(tmp_path_factory):
    """Three sessions with action-tuned neurons, a right-camera-only session (no pose), and
    the NEDS dataset of the first three."""
    from neds_hf.data import build_dataset

    root = tmp_path_factory.mktemp("action_corpus")
    cache = root / "cache"
    eids = make_synthetic_cache(
        cache, 3, seed=12, n_trials=100, n_neurons_per_probe=24, action_tuning=2.0
    )
    (no_pose,) = make_synthetic_cache(
        cache / "right_only", 1, seed=13, n_trials=30, n_neurons_per_probe=8, cameras=("right",)
    )
    report = build_dataset(cache, eids, root / "dataset", progress=False)
    assert report.skipped == {}
    return {"root": root, "cache": cache, "eids": eids, "no_pose": no_pose}


def test_prepare_ibl_writes_pose_and_wheel_features_aligned_to_camera_times(action_corpus):
    from neds_hf.data.ibl import make_one
    from neds_hf.segmentation.cli import main
    from neds_hf.segmentation.ibl import load_ibl_pose_via_one
    from neds_hf.segmentation.readers import load_session

    cache, eids, out = action_corpus["cache"], action_corpus["eids"], action_corpus["root"]
    argv = ["prepare-ibl", "--cache-dir", str(cache), "--eids", *eids, "--truth-labels"]
    argv += ["--test-sessions", eids[2], "--output", str(out / "segmentation")]
    assert main(argv) == 0
    assert main(["prepare", "--data-dir", str(out / "segmentation"), "--input-dir", "features",
                 "--output", str(out / "seg_dataset")]) == 0  # fmt: skip
    info = json.loads((out / "seg_dataset" / "segmentation_info.json").read_text())
    assert info["class_names"] == CLASSES
    assert info["splits"] == {"train": sorted(eids[:2]), "test": eids[2:]}
    names = ["paw_l_x", "paw_l_y", "paw_r_x", "paw_r_y", "nose_tip_x", "nose_tip_y"]
    assert info["feature_names"] == [*names, "wheel_velocity"]
    reports = json.loads((out / "segmentation" / "split.json").read_text())["reports"]
    assert all(r["low_likelihood_frames"] > 0 for r in reports.values())  # interpolated

    session, times = load_ibl_pose_via_one(make_one(cache), eids[0])
    truth = load_pose_truth(cache, eids[0])
    np.testing.assert_array_equal(times, truth["frame_times"])  # 3 leading timestamps dropped
    turning = truth["actions"] == POSE_ACTIONS.index("wheel_turn")
    wheel = np.abs(session.features[:, -1])  # rad/s at each frame's camera time
    assert np.median(wheel[turning]) > 0.3 > 3 * np.median(wheel[~turning])
    test = load_session(out / "segmentation", eids[2], input_dir="features")
    train = load_session(out / "segmentation", eids[0], input_dir="features")
    np.testing.assert_array_equal(test.labels, 1 + load_pose_truth(cache, eids[2])["actions"])
    assert 0 < (train.labels > 0).mean() < 0.1  # sparse labelled bouts in training sessions


def test_prepare_ibl_names_a_session_without_pose(action_corpus, tmp_path):
    from neds_hf.data.ibl import make_one
    from neds_hf.segmentation.ibl import write_ibl_pose_folder

    cache = action_corpus["cache"] / "right_only"
    eid = action_corpus["no_pose"]
    with pytest.raises(FileNotFoundError, match=rf"session {eid}: no alf/_ibl_leftCamera"):
        write_ibl_pose_folder(make_one(cache), [eid], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_neds_decodes_segmented_actions_from_spikes_above_chance(action_corpus):
    """Segmentation predictions (here: the true actions as prediction files) -> add-to-neds
    -> NEDS with the action modality decodes the per-bin action from spikes alone."""
    from sklearn.metrics import balanced_accuracy_score
    from training_helpers import tiny_args

    from neds_hf.segmentation.cli import main
    from neds_hf.segmentation.inference import predictions_table
    from neds_hf.segmentation.neds_link import decode_actions
    from neds_hf.training import train

    root, cache, eids = action_corpus["root"], action_corpus["cache"], action_corpus["eids"]
    (root / "predictions").mkdir()
    for eid in eids:
        actions = 1 + load_pose_truth(cache, eid)["actions"]
        probabilities = np.full((len(actions), len(CLASSES)), 0.02)
        probabilities[np.arange(len(actions)), actions] = 0.92
        table = predictions_table(probabilities, CLASSES)
        table.to_csv(root / "predictions" / f"{eid}_predictions.csv")
    argv = ["add-to-neds", "--dataset", str(root / "dataset"), "--predictions"]
    argv += [str(root / "predictions"), "--sessions-root", str(cache)]
    assert main([*argv, "--output", str(root / "with_action")]) == 0

    torch.manual_seed(0)
    corpus = {"dataset_dir": root / "with_action", "pretrain_eids": eids}
    args = tiny_args(
        corpus, root / "run", modalities=["spikes", "action"], max_steps=120,
        learning_rate=3e-3, eval_steps=120, save_steps=120, seed=0,
    )  # fmt: skip
    decoded = decode_actions(train(args).model, root / "with_action", "test")
    assert decoded["predicted"].shape == decoded["labels"].shape == (len(decoded["trial_ids"]), 100)
    balanced = balanced_accuracy_score(decoded["labels"].ravel(), decoded["predicted"].ravel())
    assert balanced > 0.4  # chance: 0.25 (4 classes); measured 0.47

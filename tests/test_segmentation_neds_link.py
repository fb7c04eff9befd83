"""NEDS link: IBL pose files, per-frame actions binned to NEDS trials, NEDS decodes them."""

import datasets
import numpy as np
import pytest
import torch

from neds_hf import DataCollatorForNedsMasking, NedsConfig, NedsForMaskedModeling
from neds_hf.segmentation.neds_link import (
    action_modality_spec,
    add_action_modality,
    bin_frame_labels,
    load_ibl_pose_session,
    write_feature_folder,
    write_synthetic_ibl_pose,
)
from neds_hf.segmentation.readers import load_session
from neds_hf.segmentation.synthetic import SYNTHETIC_ACTIONS

CLASSES = ["background", *SYNTHETIC_ACTIONS]
NUM_BINS = 10


@pytest.fixture
def ibl_session(tmp_path):
    """A minimal ALF session: left camera times (60 Hz, 40 s) and the wheel."""
    alf = tmp_path / "lab" / "Subjects" / "mouse" / "2024-01-01" / "001" / "alf"
    alf.mkdir(parents=True)
    np.save(alf / "_ibl_leftCamera.times.npy", 5.0 + np.arange(2400) / 60.0)
    stamps = np.linspace(0, 50, 5001)
    np.save(alf / "_ibl_wheel.timestamps.npy", stamps)
    np.save(alf / "_ibl_wheel.position.npy", 2.0 * stamps)  # 2 rad/s
    return alf.parent


def test_synthetic_pose_file_reads_back_with_wheel_velocity(ibl_session):
    path, truth = write_synthetic_ibl_pose(ibl_session)
    assert path.name == "_ibl_leftCamera.lightningPose.pqt" and len(truth) == 2400
    session, times = load_ibl_pose_session(ibl_session)
    assert session.feature_names == [
        "paw_l_x", "paw_l_y", "paw_r_x", "paw_r_y", "nose_tip_x", "nose_tip_y", "wheel_velocity"
    ]  # fmt: skip
    assert session.features.shape == (2400, 7) and np.isfinite(session.features).all()
    np.testing.assert_allclose(session.features[:, -1], 2.0, rtol=1e-6)
    assert session.report["low_likelihood_frames"] > 0  # dropouts were interpolated
    assert times[0] == 5.0
    (path,) = write_feature_folder([session], ibl_session / "segmentation")
    back = load_session(ibl_session / "segmentation", session.session_id, input_dir="features")
    assert back.feature_names == session.feature_names
    np.testing.assert_allclose(back.features, session.features)


def test_bins_take_the_label_of_the_nearest_frame():
    times = np.arange(60) / 60.0
    labels = np.arange(60)
    binned = bin_frame_labels(times, labels, np.array([0.1]), num_bins=3, bin_size=0.02)
    # bin centres 0.11, 0.13, 0.15 s -> frames 6.6, 7.8, 9.0 -> 7, 8, 9
    assert binned.tolist() == [[7, 8, 9]]
    with pytest.raises(ValueError, match="outside the camera recording"):
        bin_frame_labels(times, labels, np.array([2.0]), num_bins=3)


def test_neds_trains_on_and_decodes_the_action_modality(ibl_session):
    _, truth = write_synthetic_ibl_pose(ibl_session)
    _, times = load_ibl_pose_session(ibl_session)
    rng = np.random.default_rng(0)
    stim_on = np.array([10.0, 17.3, 30.1, 38.0])
    trials = datasets.Dataset.from_dict(
        {
            "session_id": ["s1"] * 4,
            "spikes": rng.poisson(1.0, size=(4, 6, NUM_BINS)).tolist(),
            "stim_on_time": stim_on.tolist(),
        }
    )
    trials = add_action_modality(trials, {"s1": (times, truth)}, window_start=-0.1)
    first_bin_frame = int(np.argmin(np.abs(times - (10.0 - 0.1 + 0.01))))
    assert trials[0]["action"][0] == truth[first_bin_frame] - 1
    spec = action_modality_spec(CLASSES)
    assert spec == {"name": "action", "kind": "categorical", "num_classes": 4, "trial_level": False}
    config = NedsConfig(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        num_time_bins=NUM_BINS,
        spike_stitcher_size=8,
        sessions={"s1": 6},
        modalities=[{"name": "spikes", "kind": "spikes"}, spec],
    )
    model = NedsForMaskedModeling(config)
    collator = DataCollatorForNedsMasking(config, eval_protocol="decoding")
    batch = collator([trials[i] for i in range(4)])
    assert torch.equal(batch["behavior_labels"][..., 0], torch.tensor(trials["action"]))
    out = model(**batch)
    assert out.behavior_predictions["action"].shape == (4, NUM_BINS, 4)
    assert torch.isfinite(out.modality_losses["action"]) and out.modality_losses["action"] > 0
    out.loss.backward()

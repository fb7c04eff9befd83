"""NEDS link: IBL pose files, per-frame actions binned to NEDS trials, NEDS decodes them."""

import json

import datasets
import numpy as np
import pytest
import torch

from neds_hf import DataCollatorForNedsMasking, NedsConfig, NedsForMaskedModeling
from neds_hf.segmentation.neds_link import (
    action_modality_spec,
    add_action_modality,
    add_actions_to_dataset,
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


# ---- the recipe end to end on the synthetic IBL corpus: pose -> actions -> dataset -> NEDS

#: Actions of the end-to-end tests: "turning" = wheel speed above 0.5 rad/s. The synthetic
#: neurons are not driven by the synthetic pose actions (SYNTHETIC_ACTIONS), so these labels,
#: taken from the wheel-velocity feature of the pose sessions, stand in for a segmentation
#: model's output.
WHEEL_CLASSES = ["background", "still", "turning"]


def _wheel_action_predictions(session, rng) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame labels (1-based) from the wheel velocity, and class probabilities whose
    arg-max is background on some frames (add-to-neds takes the best real action)."""
    labels = 1 + (np.abs(session.features[:, -1]) > 0.5).astype(np.int64)
    probabilities = np.full((len(labels), 3), 0.1)
    probabilities[np.arange(len(labels)), labels] = 0.8
    probabilities[rng.random(len(labels)) < 0.1, 0] = 0.9
    return labels, probabilities / probabilities.sum(1, keepdims=True)


@pytest.fixture(scope="module")
def action_dataset(synthetic_corpus, tmp_path_factory):
    """The shared synthetic dataset plus per-bin actions, written by ``neds-hf segment
    add-to-neds`` from prediction files; pose files go into a copy of each session folder."""
    import shutil

    import pandas as pd

    from neds_hf.data.synthetic import session_rel_path
    from neds_hf.segmentation.cli import main
    from neds_hf.segmentation.inference import predictions_table

    root = tmp_path_factory.mktemp("actions")
    cache_dir = synthetic_corpus["cache_dir"]
    sessions = pd.read_parquet(cache_dir / "sessions.pqt")
    (root / "predictions").mkdir()
    rng = np.random.default_rng(0)
    frames = {}
    for seed, eid in enumerate(synthetic_corpus["eids"]):
        row = sessions.loc[eid]
        source = cache_dir / session_rel_path(row.lab, row.subject, str(row.date), row.number)
        folder = root / "sessions" / eid
        shutil.copytree(source / "alf", folder / "alf")
        write_synthetic_ibl_pose(folder, seed=seed)
        session, times = load_ibl_pose_session(folder)
        labels, probabilities = _wheel_action_predictions(session, rng)
        table = predictions_table(probabilities, WHEEL_CLASSES)
        table.to_csv(root / "predictions" / f"{eid}_predictions.csv")
        frames[eid] = (times, labels)
    output = root / "with_action"
    argv = ["add-to-neds", "--dataset", str(synthetic_corpus["dataset_dir"])]
    argv += ["--predictions", str(root / "predictions"), "--sessions-root", str(root / "sessions")]
    assert main([*argv, "--output", str(output)]) == 0
    return {"dataset_dir": output, "frames": frames, "eids": synthetic_corpus["eids"]}


def test_actions_are_added_as_a_verified_per_bin_modality(synthetic_corpus, action_dataset):
    from neds_hf.data import NedsTrialDataset, load_modalities, verify_dataset
    from neds_hf.data.load import file_record
    from neds_hf.data.schema import trial_features

    folder = action_dataset["dataset_dir"]
    modalities = load_modalities(folder)
    assert modalities[:-1] == load_modalities(synthetic_corpus["dataset_dir"])
    assert modalities[-1] == action_modality_spec(WHEEL_CLASSES)
    assert trial_features(modalities)["action"] == datasets.List(datasets.Value("int64"))
    report = json.loads((folder / "build_report.json").read_text())
    assert sorted(verify_dataset(folder)["sessions"]) == sorted(action_dataset["eids"])
    assert len(report["files"]) == len(list(folder.rglob("*.parquet")))
    for relative, record in report["files"].items():
        assert file_record(folder / relative, record["rows"]) == record
    assert report["derived_from"][0]["dataset"] == str(synthetic_corpus["dataset_dir"].resolve())
    assert "`action` (2 classes, one per bin)" in (folder / "README.md").read_text()
    assert report["derived_from"][0]["description"].startswith("classes 0 = still, 1 = turning;")
    item = NedsTrialDataset(folder, "train", extra_columns=("stim_on_time",))[3]
    times, truth = action_dataset["frames"][item["session_id"]]
    centre = item["stim_on_time"] - 0.5 + 0.01  # the window starts 0.5 s before stimulus onset
    assert item["action"].shape == item["wheel_speed"].shape
    assert item["action"][0] == truth[np.argmin(np.abs(times - centre))] - 1
    # the source dataset is untouched
    assert "action" not in NedsTrialDataset(synthetic_corpus["dataset_dir"], "train")[3]


def test_adding_actions_refuses_bad_input_and_leaves_no_folder(synthetic_corpus, tmp_path):
    from neds_hf.data.derive import add_categorical_modality

    source = synthetic_corpus["dataset_dir"]
    with pytest.raises(ValueError, match="no frame labels for session"):
        add_actions_to_dataset(source, tmp_path / "out", {}, CLASSES)
    assert not (tmp_path / "out").exists() and list(tmp_path.iterdir()) == []

    def out_of_range(session_id, split, trials):
        return np.full((trials.num_rows, 100), 7)

    spec = action_modality_spec(CLASSES)
    with pytest.raises(ValueError, match=r"action labels must lie in \[0, 4\), got \[7\]"):
        add_categorical_modality(source, tmp_path / "out", spec, out_of_range)
    with pytest.raises(ValueError, match=r"must be a new column name"):
        add_categorical_modality(source, tmp_path / "out", {**spec, "name": "choice"}, out_of_range)
    with pytest.raises(ValueError, match="only categorical modalities"):
        add_categorical_modality(
            source, tmp_path / "out", {"name": "x", "kind": "continuous"}, out_of_range
        )
    with pytest.raises(ValueError, match=r"shape \[.*\], expected"):
        add_categorical_modality(source, tmp_path / "out", spec, lambda s, p, t: np.zeros(3, int))
    assert list(tmp_path.iterdir()) == []


def test_a_trial_level_label_can_be_added_too(synthetic_corpus, tmp_path):
    from neds_hf.data import NedsTrialDataset, load_modalities
    from neds_hf.data.derive import add_categorical_modality

    spec = {"name": "rewarded", "kind": "categorical", "num_classes": 2, "trial_level": True}
    output = add_categorical_modality(
        synthetic_corpus["dataset_dir"],
        tmp_path / "out",
        spec,
        lambda session_id, split, trials: trials.column("reward").to_numpy(),
    )
    assert load_modalities(output)[-1] == spec
    trials = NedsTrialDataset(output, "validation", extra_columns=("reward",))
    assert all(trials[i]["rewarded"] == trials[i]["reward"] for i in range(len(trials)))
    assert isinstance(trials[0]["rewarded"], int)


def test_add_to_neds_names_a_session_without_predictions(synthetic_corpus, tmp_path):
    from neds_hf.data import load_sessions
    from neds_hf.segmentation.cli import main

    (tmp_path / "predictions").mkdir()
    argv = ["add-to-neds", "--dataset", str(synthetic_corpus["dataset_dir"])]
    argv += ["--predictions", str(tmp_path / "predictions"), "--sessions-root", str(tmp_path)]
    first = load_sessions(synthetic_corpus["dataset_dir"])["session_id"][0]
    with pytest.raises(FileNotFoundError, match=rf"session {first}: .*_predictions.csv not found"):
        main([*argv, "--output", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_training_reads_the_modality_table_of_the_dataset(action_dataset, tmp_path):
    from neds_hf.training import NedsTrainingArguments, build_config

    args = NedsTrainingArguments(
        output_dir=str(tmp_path), dataset=str(action_dataset["dataset_dir"]),
        modalities=["spikes", "pupil"],
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"unknown modalities \['pupil'\]; dataset .* declares "
                       r"\['spikes', .*'block', .*'action'\]"):  # fmt: skip
        args.validate()
    args.modalities = None
    config = build_config(args, {"s": 4})
    assert [m["name"] for m in config.modalities][-1] == "action"
    args.modalities = ["action", "spikes"]
    assert [m["name"] for m in build_config(args, {"s": 4}).modalities] == ["spikes", "action"]


def test_neds_trains_on_the_added_actions_and_decodes_them(action_dataset, tmp_path):
    from training_helpers import tiny_args

    from neds_hf.data import NedsTrialDataset
    from neds_hf.training import train

    torch.manual_seed(0)
    corpus = {"dataset_dir": action_dataset["dataset_dir"], "pretrain_eids": action_dataset["eids"]}
    args = tiny_args(
        corpus,
        tmp_path / "run",
        modalities=["spikes", "wheel_speed", "action"],
        max_steps=40,
        learning_rate=3e-3,
        eval_steps=40,
        save_steps=40,
    )
    result = train(args)
    action_losses = [e["train/loss/action"] for e in result.history if "train/loss/action" in e]
    assert len(action_losses) == 40
    # towards the entropy of the still/turning proportions (measured: 0.58 -> 0.31)
    assert np.mean(action_losses[-10:]) < 0.75 * np.mean(action_losses[:5])
    model = result.model
    assert [m["name"] for m in model.config.modalities] == ["spikes", "wheel_speed", "action"]
    trials = NedsTrialDataset(action_dataset["dataset_dir"], "test")
    items = [trials[i] for i in range(6)]
    spikes = torch.stack([torch.as_tensor(item["spikes"].T, dtype=torch.float32) for item in items])
    session_index = torch.tensor(
        [list(model.config.sessions).index(item["session_id"]) for item in items]
    )
    # sessions in one batch share a neuron count in this corpus
    decoded = model.predict_behavior(spikes, session_index)
    assert decoded["action"].shape == (6, spikes.shape[1], 2)
    torch.testing.assert_close(decoded["action"].sum(-1), torch.ones(6, spikes.shape[1]))

"""BrainWideBench interop: ground truth, predictions, the submission rules and scoring, all
through the benchmark's own package on the shared synthetic corpus."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

pytest.importorskip(
    "ibl_bwb_eval.metrics",
    reason="ibl-bwb-eval is not installed (pip install --no-deps ibl-bwb-eval==0.1.0)",
)

from ibl_bwb_eval.entity_ids import decode_entity_ids
from ibl_bwb_eval.scoring import ts1 as ts1_scoring
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from training_helpers import tiny_args

from neds_hf import NedsForMaskedModeling
from neds_hf.brainwidebench.ground_truth import (
    BwbTargets,
    collect_targets,
    ground_truth_files,
)
from neds_hf.brainwidebench.predictions import (
    export_predictions,
    resolve_seeds,
    seed_predictions,
)
from neds_hf.brainwidebench.recordings import load_recordings
from neds_hf.brainwidebench.tasks import (
    RecordingWindows,
    cosmoothing_units,
    ts1_targets,
    unit_id,
)
from neds_hf.brainwidebench.validation import (
    BwbValidationError,
    ExpectedFile,
    PredictionFile,
    validate_predictions,
)
from neds_hf.cli import main as cli_main
from neds_hf.data.training_data import NedsTrialDataset
from neds_hf.metrics import bits_per_spike
from neds_hf.training import train

SEEDS = ["43", "44", "45"]


@pytest.fixture(scope="module")
def model_dir(synthetic_corpus, tmp_path_factory):
    """A tiny NEDS model trained for a few steps on every session of the corpus."""
    output = tmp_path_factory.mktemp("bwb-model")
    args = tiny_args(
        synthetic_corpus,
        output,
        sessions=list(synthetic_corpus["eids"]),
        max_steps=12,
        learning_rate=3e-3,
        save_total_limit=0,
    )
    return train(args).model_dir


@pytest.fixture(scope="module")
def exported(model_dir, synthetic_corpus, tmp_path_factory):
    """Ground truth, predictions (one model replicated over 3 seeds) and their scores."""
    root = tmp_path_factory.mktemp("bwb")
    dataset = str(synthetic_corpus["dataset_dir"])
    assert cli_main(["export-bwb-gt", "--dataset", dataset, "--output", str(root / "gt")]) == 0
    code = cli_main(
        [
            *["export-bwb", model_dir, "--dataset", dataset, "--output", str(root / "pred")],
            *["--label", "neds", "--replicate-seeds", "--seeds", *SEEDS],
        ]
    )
    assert code == 0
    score_args = ["--pred", str(root / "pred"), "--gt", str(root / "gt")]
    assert cli_main(["score-bwb", *score_args, "--output", str(root / "scores.json")]) == 0
    return root


def metadata_of(path):
    with safe_open(str(path), framework="pt") as handle:
        return handle.metadata()


# ---------------------------------------------------------------------------------------------
# Export + score end to end
# ---------------------------------------------------------------------------------------------


def test_export_writes_every_task_recording_and_seed(exported, synthetic_corpus):
    eids = synthetic_corpus["eids"]
    tasks = ["ts1-choice", "ts1-wheel_speed", "ts1-whisker_motion_energy"]
    tasks += ["ts2-co_smoothing", "ts2-forecasting"]
    for task in tasks:
        for eid in eids:
            assert (exported / "gt" / task / eid / "ground_truth.safetensors").is_file()
            for seed in SEEDS:
                path = exported / "pred" / "neds" / task / eid / f"seed_{seed}.safetensors"
                meta = metadata_of(path)
                assert meta["task"] == task and meta["seed"] == seed
                assert meta["label"] == "neds" and meta["recording_id"] == eid
                assert meta["replicated_model"] == "true"
                assert meta["ibl_bwb_eval_version"] == "0.1.0"
                assert meta["unit_filtering"] == (
                    "all_units" if task[:3] == "ts1" else "selected_units"
                )
                if task.startswith("ts2"):
                    assert float(meta["bin_size"]) == 0.02
                    assert float(meta["context_window"]) == pytest.approx(2.0)
    ts3 = exported / "pred" / "neds" / "ts3-unit_cosmos" / "seed_44.safetensors"
    assert metadata_of(ts3)["label_names"].split(",")[0] == "CB"
    summary = json.loads((exported / "pred" / "neds" / "bwb_export.json").read_text())
    assert summary["seeds"] == [43, 44, 45] and summary["replicated_model"] is True
    assert set(summary["skipped_tasks"]) == {
        "ts1-reward",
        "ts1-stimulus_contrast",
        "ts1-right_paw_speed",
        "ts1-left_paw_speed",
        "ts1-licking_rate",
    }


def test_scores_come_from_the_package_for_every_task_and_seed(exported):
    scores = json.loads((exported / "scores.json").read_text())
    assert scores["unscored"] == []
    per_task = {entry["task"]: entry for entry in scores["per_task"]}
    assert set(per_task) == {
        "ts1-choice",
        "ts1-wheel_speed",
        "ts1-whisker_motion_energy",
        "ts2-co_smoothing",
        "ts2-forecasting",
        "ts3-unit_cosmos",
    }
    assert per_task["ts1-choice"]["primary_metric"] == "bacc"
    assert per_task["ts2-co_smoothing"]["primary_metric"] == "poisson_d2"
    assert per_task["ts3-unit_cosmos"]["primary_metric"] == "macro/f1-score"
    for entry in per_task.values():
        primary = entry["metrics"][entry["primary_metric"]]
        assert primary["n"] == 3 and primary["mean"] is not None
    # 4 recordings x 3 seeds for TS1 / TS2 tasks, 3 seeds for TS3
    assert len(scores["per_seed"]) == 5 * 4 * 3 + 3


def test_ts2_scores_match_an_independent_bits_per_spike(exported, synthetic_corpus):
    """The package's pooled bps of one file equals neds_hf's on the aligned arrays: the
    predictions are log-rates of the same windows, bins and units as the ground truth."""
    eid = synthetic_corpus["eids"][0]
    scores = json.loads((exported / "scores.json").read_text())
    for task in ("ts2-co_smoothing", "ts2-forecasting"):
        pred = load_file(exported / "pred" / "neds" / task / eid / "seed_43.safetensors")
        gt = load_file(exported / "gt" / task / eid / "ground_truth.safetensors")
        assert pred["predictions"].shape == gt["targets"].shape
        ours = bits_per_spike(
            pred["predictions"].numpy(), gt["targets"].numpy(), log_input=True, convention="pooled"
        )
        theirs = next(
            e["metrics"]["bps"]
            for e in scores["per_seed"]
            if e["task"] == task and e["recording_id"] == eid and e["seed"] == 43
        )
        assert theirs == pytest.approx(ours, rel=1e-4, abs=1e-6)


def test_window_timestamps_are_bit_exact(exported, synthetic_corpus):
    dataset = NedsTrialDataset(
        synthetic_corpus["dataset_dir"], "test", extra_columns=("stim_on_time",)
    )
    for eid in synthetic_corpus["eids"]:
        rows = [dataset[int(i)] for i in dataset.session_indices()[eid]]
        starts = np.array([row["stim_on_time"] - 0.5 for row in rows]).astype(np.float32)
        for task in ("ts2-co_smoothing", "ts2-forecasting"):
            gt = load_file(exported / "gt" / task / eid / "ground_truth.safetensors")
            gt_stamps = gt["window_timestamps"].numpy()
            assert gt_stamps.dtype == np.float32
            assert gt_stamps.view(np.uint32).tolist() == starts.view(np.uint32).tolist()
            for seed in SEEDS:
                pred = load_file(
                    exported / "pred" / "neds" / task / eid / f"seed_{seed}.safetensors"
                )
                stamps = pred["window_timestamps"].numpy()
                assert stamps.tobytes() == gt_stamps.tobytes()


def test_a_missing_ground_truth_file_is_listed_not_dropped(exported, tmp_path, capsys):
    import shutil

    gt = tmp_path / "gt"
    shutil.copytree(exported / "gt", gt)
    removed = next((gt / "ts1-choice").iterdir())
    shutil.rmtree(removed)
    code = cli_main(
        [
            *["score-bwb", "--pred", str(exported / "pred"), "--gt", str(gt)],
            *["--output", str(tmp_path / "s.json")],
        ]
    )
    assert code == 1
    unscored = json.loads((tmp_path / "s.json").read_text())["unscored"]
    assert len(unscored) == 3
    assert all(removed.name in e["file"] and "no ground truth" in e["reason"] for e in unscored)
    assert "unscored:" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# What is scored: held-out units, skipped and masked entries
# ---------------------------------------------------------------------------------------------


def test_cosmoothing_holds_out_ten_percent_by_sha256_rank(synthetic_corpus):
    data = load_recordings(synthetic_corpus["dataset_dir"], "test")
    for recording in data.recordings:
        held = cosmoothing_units(recording)
        ids = [unit_id(u) for u in recording.units]
        ranked = sorted(range(len(ids)), key=lambda i: hashlib.sha256(ids[i].encode()).hexdigest())
        count = max(1, int(np.ceil(0.1 * len(ids))))
        assert held.tolist() == sorted(ranked[:count])


def test_cosmoothing_predictions_never_see_the_held_out_units(model_dir, synthetic_corpus):
    model = NedsForMaskedModeling.from_pretrained(model_dir, dtype=torch.float32)
    data = load_recordings(synthetic_corpus["dataset_dir"], "test", synthetic_corpus["eids"][:1])
    targets = collect_targets(data, [], ts2_tasks=("co_smoothing",), with_ts3=False)
    recording = data.recordings[0]
    held = cosmoothing_units(recording)
    other = next(u for u in range(len(recording.units)) if u not in held)

    def predictions(change):
        trials = [dict(t, spikes=t["spikes"].copy()) for t in recording.trials]
        for trial in trials:
            trial["spikes"][change] = 7
        recording_copy = RecordingWindows(
            recording.recording_id, trials, recording.window, recording.bin_size, recording.units
        )
        data.recordings = [recording_copy]
        (file,) = seed_predictions(model, 43, "x", data, targets, {"dataset_version": "v"})
        return file.tensors["predictions"]

    baseline = predictions([])
    assert torch.equal(predictions(list(held)), baseline)
    assert not torch.equal(predictions([other]), baseline)


def _recording_with_invalid_entries() -> RecordingWindows:
    """4 trials of 100 bins (window -0.5..1.5 s): invalid classes and NaN samples."""
    values = np.ones((4, 100), dtype=np.float32)
    values[1, 10] = np.nan  # before the scored second: still scored
    values[2, 30] = np.nan  # inside it
    values[3, 25:75] = np.nan  # the whole scored second
    trials = [
        {
            "trial_id": i,
            "choice": c,
            "wheel_speed": v,
            "left_paw_speed": v,
            "stim_on_time": 10.0 + i,
        }
        for i, (c, v) in enumerate(zip([0, -1, 1, 1], values))
    ]
    return RecordingWindows("rec", trials, (-0.5, 1.5), 0.02)


def test_ts1_skips_and_masks_invalid_entries_consistently():
    recording = _recording_with_invalid_entries()
    choice = ts1_targets("choice", recording)
    assert choice.trial_ids.tolist() == [0, 2, 3] and choice.skipped_trials == 1
    assert choice.values.tolist() == [[0], [1], [1]]
    wheel = ts1_targets("wheel_speed", recording)  # scored without a mask: NaN trials skipped
    assert wheel.trial_ids.tolist() == [0, 1] and wheel.skipped_trials == 2
    assert wheel.values.shape == (2, 50, 1) and wheel.mask is None
    paw = ts1_targets("left_paw_speed", recording)  # scored with a mask, as BrainWideBench does
    assert paw.trial_ids.tolist() == [0, 1, 2] and paw.skipped_trials == 1
    assert paw.mask.shape == (3, 50) and paw.masked_samples == 1
    assert not paw.mask[2, 5] and paw.mask[2].sum() == 49
    assert np.isfinite(paw.values).all()


def test_masked_samples_are_left_out_by_the_package_scorer(tmp_path):
    """A prediction that is exact on the valid samples and wild on the masked one scores R² 1:
    the ground truth's mask reaches the package's scorer."""
    recording = _recording_with_invalid_entries()
    recording.trials[0]["left_paw_speed"] = np.linspace(0, 5, 100, dtype=np.float32)
    target = ts1_targets("left_paw_speed", recording)
    files = ground_truth_files(BwbTargets(ts1={("left_paw_speed", "rec"): target}))
    ((relative, (tensors, metadata)),) = files.items()
    gt_path = tmp_path / relative
    gt_path.parent.mkdir(parents=True)
    save_file(tensors, str(gt_path), metadata=metadata)
    predictions = torch.from_numpy(target.values.copy())
    predictions[~torch.from_numpy(target.mask)] = 1e6
    pred_path = tmp_path / "seed_43.safetensors"
    save_file({"trial_id": tensors["trial_id"], "predictions": predictions}, str(pred_path))
    scores = ts1_scoring.score_file("ts1-left_paw_speed", pred_path, gt_path)
    assert scores["r2"] == pytest.approx(1.0)
    assert scores["mae"] == pytest.approx(0.0, abs=1e-6)


# ---------------------------------------------------------------------------------------------
# The submission rules, each checked before anything is written
# ---------------------------------------------------------------------------------------------


def _valid_files(seeds=(43, 44, 45)):
    files = []
    for seed in seeds:
        files.append(
            PredictionFile(
                "ts1",
                "choice",
                seed,
                "rec",
                "label",
                {"recording_id": "rec", "unit_filtering": "all_units", "dataset_version": "v"},
                {"trial_id": torch.tensor([3, 5, 9]), "predictions": torch.zeros(3, 1, 2)},
            )
        )
    return files


EXPECTED = {("ts1-choice", "rec"): ExpectedFile(np.array([3, 5, 9]), (3, 1, 2))}


def _problems(files, seeds=(43, 44, 45)):
    with pytest.raises(BwbValidationError) as error:
        validate_predictions(files, EXPECTED, seeds)
    return error.value


def test_valid_predictions_pass():
    validate_predictions(_valid_files(), EXPECTED, (43, 44, 45))


def test_missing_metadata_is_e001():
    files = _valid_files()
    del files[1].metadata["dataset_version"]
    error = _problems(files)
    assert error.codes == ["E001"]
    assert "task ts1-choice, recording rec, seed 44: missing metadata 'dataset_version'" in str(
        error
    )


def test_wrong_dimension_is_e006():
    files = _valid_files()
    files[0].tensors["predictions"] = torch.zeros(3, 1, 3)
    error = _problems(files)
    assert error.codes == ["E006"] and "shape (3, 1, 3), expected (3, 1, 2)" in str(error)


def test_trial_set_mismatch_is_e012():
    files = _valid_files()
    files[2].tensors["trial_id"] = torch.tensor([3, 5, 8])
    error = _problems(files)
    assert error.codes == ["E012"] and "seed 45" in str(error) and "1 missing" in str(error)


def test_too_few_or_non_contiguous_seeds_are_e101_and_e102():
    assert _problems(_valid_files((43, 44)), (43, 44)).codes == ["E101"]
    assert _problems(_valid_files((43, 45, 46)), (43, 45, 46)).codes == ["E102"]
    # a task / recording lacking one of the seeds
    assert _problems(_valid_files((43, 44)), (43, 44, 45)).codes == ["E101"]


def test_nan_predictions_are_e107_naming_task_recording_and_seed():
    files = _valid_files()
    files[1].tensors["predictions"][1, 0, 0] = float("nan")
    error = _problems(files)
    assert error.codes == ["E107"]
    assert "task ts1-choice, recording rec, seed 44: 1 non-finite (NaN/inf)" in str(error)


def test_a_model_predicting_nan_writes_nothing(model_dir, synthetic_corpus, tmp_path):
    """(Loading refuses a checkpoint with NaN weights, so the model is given in memory.)"""
    model = NedsForMaskedModeling.from_pretrained(model_dir, dtype=torch.float32)
    with torch.no_grad():
        next(p for n, p in model.named_parameters() if "spike_readout" in n).fill_(float("nan"))
    eid = synthetic_corpus["eids"][0]
    with pytest.raises(BwbValidationError) as error:
        export_predictions(
            [model],
            synthetic_corpus["dataset_dir"],
            tmp_path / "pred",
            label="broken",
            replicate_seeds=True,
            seeds=[43, 44, 45],
            sessions=[eid],
        )
    assert "E107" in error.value.codes
    assert f"task ts2-co_smoothing, recording {eid}, seed 43: " in str(error.value)
    assert "nothing was written" in str(error.value)
    assert not (tmp_path / "pred" / "broken").exists()


def test_seed_assignment_rules():
    assert resolve_seeds(3, None, False) == [43, 44, 45]
    assert resolve_seeds(1, None, True) == [43, 44, 45, 46, 47]
    with pytest.raises(ValueError, match="--replicate-seeds"):
        resolve_seeds(1, [43, 44, 45], False)
    with pytest.raises(ValueError, match="not benchmark seeds"):
        resolve_seeds(2, [42, 43], False)
    with pytest.raises(ValueError, match="repeat"):
        resolve_seeds(2, [43, 43], False)


def test_one_model_under_several_seeds_needs_the_flag(
    model_dir, synthetic_corpus, tmp_path, capsys
):
    code = cli_main(
        [
            *["export-bwb", model_dir, "--dataset", str(synthetic_corpus["dataset_dir"])],
            *["--output", str(tmp_path / "pred"), "--seeds", *SEEDS],
        ]
    )
    assert code == 2
    assert "--replicate-seeds" in capsys.readouterr().err
    assert not (tmp_path / "pred").exists()


def test_ts3_ids_round_trip(exported):
    pred = load_file(exported / "pred" / "neds" / "ts3-unit_cosmos" / "seed_43.safetensors")
    gt = load_file(exported / "gt" / "ts3-unit_cosmos" / "ground_truth.safetensors")
    assert sorted(decode_entity_ids(pred["entity_ids"])) == sorted(
        decode_entity_ids(gt["entity_ids"])
    )
    probabilities = pred["pred_proba"].numpy()
    assert probabilities.shape[1] == 10
    assert np.allclose(probabilities.sum(1), 1.0, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# A BrainWideBench behaviour the IBL preprocessing does not produce, found by its name
# ---------------------------------------------------------------------------------------------

#: The absolute contrasts of IBL stimuli, in class order (stimulus_contrast's 5 classes).
CONTRASTS = np.array([0.0, 0.0625, 0.125, 0.25, 1.0])


def contrast_class(contrast: np.ndarray) -> np.ndarray:
    """The class of each signed contrast: the nearest absolute IBL contrast."""
    return np.abs(np.abs(contrast)[:, None] - CONTRASTS[None, :]).argmin(1)


def test_a_bwb_modality_the_dataset_declares_is_exported_and_scored_by_its_name(
    synthetic_corpus, tmp_path
):
    from neds_hf import IBL_MODALITIES, NedsConfig
    from neds_hf.data.load import load_modalities

    dataset = synthetic_corpus["dataset_dir"]
    declared = {spec["name"]: spec for spec in load_modalities(dataset)}
    spec = declared["stimulus_contrast"]
    eid = synthetic_corpus["eids"][0]
    data = NedsTrialDataset(
        dataset, "test", sessions=[eid], extra_columns=("contrast",), modalities=list(declared)
    )
    torch.manual_seed(0)
    config = NedsConfig(
        sessions=data.n_neurons,
        modalities=[*IBL_MODALITIES, spec],
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=4,
        intermediate_size=32,
        spike_stitcher_size=16,
    )
    NedsForMaskedModeling(config).save_pretrained(tmp_path / "model")
    run = ["--dataset", str(dataset), "--sessions", eid]
    assert cli_main(["export-bwb-gt", *run, "--output", str(tmp_path / "gt")]) == 0
    export = ["export-bwb", str(tmp_path / "model"), *run, "--output", str(tmp_path / "pred")]
    assert cli_main([*export, "--replicate-seeds", "--seeds", *SEEDS]) == 0
    task_dir = tmp_path / "pred" / "model" / "ts1-stimulus_contrast" / eid
    predictions = load_file(task_dir / "seed_43.safetensors")["predictions"]
    gt = load_file(tmp_path / "gt" / "ts1-stimulus_contrast" / eid / "ground_truth.safetensors")
    assert predictions.shape == (len(data), 1, 5)
    expected = contrast_class(np.array([data[i]["contrast"] for i in range(len(data))]))
    assert gt["values"][:, 0].tolist() == expected.tolist()
    pred, truth = str(tmp_path / "pred"), str(tmp_path / "gt")
    out = tmp_path / "scores.json"
    assert cli_main(["score-bwb", "--pred", pred, "--gt", truth, "--output", str(out)]) == 0
    per_task = {e["task"]: e for e in json.loads(out.read_text())["per_task"]}
    assert per_task["ts1-stimulus_contrast"]["metrics"]["bacc"]["n"] == 3


def test_a_model_of_other_neuron_counts_is_refused(synthetic_corpus, tmp_path):
    from neds_hf import NedsConfig

    eid = synthetic_corpus["eids"][0]
    config = NedsConfig(sessions={eid: 3}, hidden_size=32, num_attention_heads=4)
    with pytest.raises(ValueError, match=f"session {eid}: model 1 has 3 neurons, the dataset"):
        export_predictions(
            [NedsForMaskedModeling(config)],
            synthetic_corpus["dataset_dir"],
            tmp_path / "pred",
            label="x",
            replicate_seeds=True,
        )
    assert not (tmp_path / "pred").exists()


def test_cosmos_probabilities_are_out_of_fold_over_the_ten_labels():
    from neds_hf.brainwidebench.predictions import cosmos_probabilities

    rng = np.random.default_rng(0)
    targets = np.repeat([1, 4, 9], 10)  # CNU, HPF, TH
    embeddings = rng.normal(size=(30, 3)) * 0.1 + np.eye(3)[np.repeat([0, 1, 2], 10)] * 5
    probabilities = cosmos_probabilities(embeddings, targets, seed=43)
    assert probabilities.shape == (30, 10)
    assert np.allclose(probabilities.sum(1), 1.0)
    assert (probabilities[:, [0, 2, 3, 5, 6, 7, 8]] == 0).all()  # classes no unit has
    assert (probabilities.argmax(1) == targets).all()
    with pytest.raises(ValueError, match="at least 2 labelled units"):
        cosmos_probabilities(embeddings[:1], targets[:1], seed=43)


def test_several_labels_are_ranked_by_the_package(exported, synthetic_corpus, tmp_path):
    import shutil

    from neds_hf import NedsConfig

    pred = tmp_path / "pred"
    shutil.copytree(exported / "pred", pred)
    sizes = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=32)
    data = NedsTrialDataset(synthetic_corpus["dataset_dir"], "test")
    torch.manual_seed(1)
    untrained = NedsForMaskedModeling(NedsConfig(sessions=data.n_neurons, **sizes))
    untrained.save_pretrained(tmp_path / "untrained")
    code = cli_main(
        [
            *["export-bwb", str(tmp_path / "untrained"), "--output", str(pred)],
            *["--dataset", str(synthetic_corpus["dataset_dir"]), "--replicate-seeds"],
            *["--seeds", *SEEDS],
        ]
    )
    assert code == 0
    assert sorted(p.name for p in pred.iterdir() if p.is_dir()) == ["neds", "untrained"]
    out = tmp_path / "scores.json"
    assert (
        cli_main(
            ["score-bwb", "--pred", str(pred), "--gt", str(exported / "gt"), "--output", str(out)]
        )
        == 0
    )
    ranks = json.loads(out.read_text())["ranks"]
    assert set(ranks) == {
        "ts1-choice",
        "ts1-wheel_speed",
        "ts1-whisker_motion_energy",
        "ts2-co_smoothing",
        "ts2-forecasting",
        "ts3-unit_cosmos",
    }
    assert all(set(per_label) == {"neds", "untrained"} for per_label in ranks.values())
    assert all(1 <= rank <= 2 for per_label in ranks.values() for rank in per_label.values())

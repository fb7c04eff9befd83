"""Continuous windows: the rules of neds_hf.data.windows, the windows table of a build, its
checks and loading, prepare-data's options, and training on windows."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from training_helpers import tiny_args

from neds_hf.data import build_dataset
from neds_hf.data.load import (
    DatasetIntegrityError,
    load_modalities,
    load_windows,
    verify_dataset,
)
from neds_hf.data.preprocess import PreprocessingConfig, bin_sample_times, preprocess_session
from neds_hf.data.schema import BUILD_REPORT_FILE, WINDOWS_DIR, trial_file, window_file
from neds_hf.data.windows import (
    CONTINUOUS_SAMPLERS,
    WindowConfig,
    WindowLongerThanRecordingError,
    _window_spikes,
    assign_trials,
    interval_overlaps,
    make_session_windows,
    window_splits,
    window_starts,
)

WINDOWS = WindowConfig(length=2.0, stride=1.0)


@pytest.fixture(scope="module")
def windows_corpus(tmp_path_factory) -> dict:
    """Two small synthetic sessions built twice: trial rows only, and with windows."""
    from neds_hf.data.synthetic import make_synthetic_cache

    root = tmp_path_factory.mktemp("windows_corpus")
    cache_dir = root / "one_cache"
    eids = make_synthetic_cache(cache_dir, n_sessions=2, seed=5, n_trials=40, n_neurons_per_probe=8)
    trials_only = build_dataset(cache_dir, eids, root / "trials_only", progress=False)
    with_windows = build_dataset(cache_dir, eids, root / "dataset", progress=False, windows=WINDOWS)
    assert trials_only.skipped == {} and with_windows.skipped == {}
    return {
        "cache_dir": cache_dir,
        "eids": eids,
        "pretrain_eids": eids,  # training_helpers.tiny_args trains on these
        "trials_only": root / "trials_only",
        "dataset_dir": root / "dataset",
        "report": with_windows,
    }


def _raw_and_session(corpus: dict, index: int = 0):
    from neds_hf.data.ibl import load_session, make_one

    raw = load_session(make_one(corpus["cache_dir"]), corpus["eids"][index])
    return raw, preprocess_session(raw, PreprocessingConfig())


# ---------------------------------------------------------------------------------------------
# The rules, on hand-checked numbers
# ---------------------------------------------------------------------------------------------


def test_windows_tile_the_recording_and_leave_a_reported_tail():
    starts = window_starts("s0", (0.5, 10.3), WINDOWS)
    # duration 9.8 s: windows start every second while they end by 10.3 s: 0.5 .. 7.5
    np.testing.assert_allclose(starts, [0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5])
    assert window_starts("s0", (0.0, 2.0), WINDOWS).tolist() == [0.0]  # exactly one fits


def test_a_window_longer_than_the_recording_is_an_error_naming_session_and_lengths():
    with pytest.raises(WindowLongerThanRecordingError) as error:
        window_starts("session-x", (1.0, 2.5), WindowConfig(length=2.0, stride=1.0))
    message = str(error.value)
    assert "session-x" in message and "1.500 s" in message and "2 s long" in message


@pytest.mark.parametrize(
    ("length", "stride", "message"),
    [(0.0, 1.0, "length must be a positive"), (2.0, -1.0, "stride must be a positive")],
)
def test_window_config_refuses_non_positive_lengths(length, stride, message):
    with pytest.raises(ValueError, match=message):
        WindowConfig(length, stride)


def test_window_length_and_stride_must_be_whole_bins():
    assert WindowConfig(2.0, 1.0).n_bins(0.02) == 100
    with pytest.raises(ValueError, match=r"stride 0\.01 s is not a whole number of 0\.02 s bins"):
        WindowConfig(2.0, 0.01).n_bins(0.02)


def test_assignment_takes_the_largest_overlap_ties_to_the_earlier_trial():
    # trials (sorted by id) occupy [0.5, 2.5) and [2.5, 4.5)
    trial_starts, trial_ends = np.array([0.5, 2.5]), np.array([2.5, 4.5])
    starts = np.array([0.0, 1.0, 2.0, 1.5, 6.0])
    overlaps = interval_overlaps(starts, starts + 2.0, trial_starts, trial_ends)
    # by hand: [0,2): 1.5 / 0; [1,3): 1.5 / 0.5; [2,4): 0.5 / 1.5; [1.5,3.5): 1 / 1; [6,8): 0 / 0
    np.testing.assert_allclose(overlaps, [[1.5, 0], [1.5, 0.5], [0.5, 1.5], [1, 1], [0, 0]])
    assigned, overlap = assign_trials(overlaps)
    assert assigned.tolist() == [0, 0, 1, 0, -1]
    np.testing.assert_allclose(overlap, [1.5, 1.5, 1.5, 1.0, 0.0])
    assert assign_trials(np.zeros((3, 0)))[0].tolist() == [-1, -1, -1]


def test_a_window_touching_a_validation_or_test_trial_is_never_train():
    # trials: train [0, 2), validation [2, 4), test [5, 7)
    trial_splits = np.array(["train", "validation", "test"])
    overlaps = interval_overlaps(
        np.array([0.0, 1.0, 3.5, 4.0, 8.0]),
        np.array([2.0, 3.0, 5.5, 5.0, 10.0]),
        np.array([0.0, 2.0, 5.0]),
        np.array([2.0, 4.0, 7.0]),
    )
    labels = window_splits(overlaps, trial_splits)
    # [0,2) train only; [1,3) touches validation; [3.5,5.5) touches validation and test;
    # [4,5) touches nothing (half-open intervals); [8,10) no trial -> train
    assert labels.tolist() == ["train", "validation", "test", "train", "train"]


# ---------------------------------------------------------------------------------------------
# A session's windows agree with its trial rows
# ---------------------------------------------------------------------------------------------


def test_a_window_on_a_trial_reproduces_its_trial_row(windows_corpus):
    raw, session = _raw_and_session(windows_corpus)
    config = session.config
    trial_starts = session.stim_on_time + config.window[0]  # (K,)
    spikes = _window_spikes(raw, session, trial_starts, config.n_bins)
    np.testing.assert_array_equal(spikes, session.spikes)  # same neurons, order and bins
    columns = session.trial_columns()
    for name in CONTINUOUS_SAMPLERS:
        sampled = CONTINUOUS_SAMPLERS[name](raw, config, trial_starts, config.n_bins)
        np.testing.assert_array_equal(sampled.astype(np.float32), columns[name])


def test_behaviour_before_the_wheel_starts_is_nan_and_labels_are_minus_one(windows_corpus):
    raw, session = _raw_and_session(windows_corpus)
    late = raw.wheel_timestamps >= 30.0
    raw.wheel_timestamps, raw.wheel_position = raw.wheel_timestamps[late], raw.wheel_position[late]
    windows = make_session_windows(raw, session, WINDOWS, _modalities())
    columns = windows.columns
    sample_times = bin_sample_times(columns["start_time"], 100, 0.02, "center")  # (W, T)
    before = sample_times < raw.wheel_timestamps[0]
    assert before.any() and np.isnan(columns["wheel_speed"][before]).all()
    assert np.isfinite(columns["wheel_speed"][sample_times > raw.wheel_timestamps[0] + 0.1]).all()
    assert windows.summary["missing_modalities"]["wheel_speed"] == pytest.approx(before.mean())
    no_trial = columns["trial_id"] < 0
    assert no_trial.any() and (columns["choice"][no_trial] == -1).all()
    assert (columns["block"][no_trial] == -1).all()
    with_trial = ~no_trial
    position = {int(t): i for i, t in enumerate(session.trial_ids)}
    rows = [position[int(t)] for t in columns["trial_id"][with_trial]]
    np.testing.assert_array_equal(columns["choice"][with_trial], session.choice[rows])
    np.testing.assert_array_equal(columns["block"][with_trial], session.block[rows])


def _modalities():
    from neds_hf.data.preprocess import DATASET_MODALITIES

    return DATASET_MODALITIES


def test_a_modality_without_a_window_form_is_refused(windows_corpus):
    raw, session = _raw_and_session(windows_corpus)
    labels = {"name": "action", "kind": "categorical", "num_classes": 3, "trial_level": False}
    with pytest.raises(ValueError, match=r"modality 'action' .* has no continuous-window form"):
        make_session_windows(raw, session, WINDOWS, [*_modalities(), labels])


# ---------------------------------------------------------------------------------------------
# The built dataset
# ---------------------------------------------------------------------------------------------


def _trial_extents(dataset_dir: Path, session_id: str, split: str) -> np.ndarray:
    path = dataset_dir / trial_file(session_id, split)
    stim_on = pq.read_table(path, columns=["stim_on_time"]).column(0).to_numpy()
    return np.stack([stim_on - 0.5, stim_on + 1.5], axis=1)  # (K, 2)


def test_no_training_window_overlaps_a_validation_or_test_trial(windows_corpus):
    dataset_dir = windows_corpus["dataset_dir"]
    for session_id in windows_corpus["eids"]:
        held_out = np.concatenate(
            [_trial_extents(dataset_dir, session_id, s) for s in ("validation", "test")]
        )
        train = pq.read_table(dataset_dir / window_file(session_id, "train")).to_pandas()
        overlaps = interval_overlaps(
            train["start_time"].to_numpy(),
            train["end_time"].to_numpy(),
            held_out[:, 0],
            held_out[:, 1],
        )
        assert len(train) > 10 and not (overlaps > 0).any()
        validation = pq.read_table(dataset_dir / window_file(session_id, "validation"))
        assert validation.num_rows > 0


def test_windows_build_keeps_the_trial_rows_byte_identical(windows_corpus):
    report = json.loads((windows_corpus["trials_only"] / BUILD_REPORT_FILE).read_text())
    assert "windows" not in report
    assert not (windows_corpus["trials_only"] / WINDOWS_DIR).exists()
    card = (windows_corpus["trials_only"] / "README.md").read_text()
    assert "config_name: windows" not in card and "Continuous windows" not in card
    with_windows = json.loads((windows_corpus["dataset_dir"] / BUILD_REPORT_FILE).read_text())
    trials_files = {k: v for k, v in report["files"].items() if not k.startswith(WINDOWS_DIR)}
    assert trials_files == {
        k: v for k, v in with_windows["files"].items() if not k.startswith(WINDOWS_DIR)
    }


def test_windows_are_described_in_the_report_and_the_card(windows_corpus):
    dataset_dir = windows_corpus["dataset_dir"]
    report = json.loads((dataset_dir / BUILD_REPORT_FILE).read_text())
    assert report["windows"]["length_s"] == 2.0 and report["windows"]["stride_s"] == 1.0
    assert report["windows"]["n_bins"] == 100
    card = (dataset_dir / "README.md").read_text()
    assert "config_name: windows" in card and "## Continuous windows" in card
    for entry in report["sessions"]:
        summary = entry["windows"]
        rows = {
            split: pq.read_metadata(dataset_dir / window_file(entry["session_id"], split)).num_rows
            for split in ("train", "validation", "test")
        }
        assert rows == {split: summary[split] for split in rows}
        assert sum(rows.values()) == summary["n_windows"]
        duration = summary["recording_end_s"] - summary["recording_start_s"]
        assert summary["n_windows"] == int((duration - 2.0) // 1.0) + 1
        assert 0 <= summary["uncovered_tail_s"] < 1.0
        assert 0 < summary["missing_modalities"]["choice"] < 1
        assert entry["session_id"] in card


def test_windows_load_with_the_trials_neurons(windows_corpus):
    dataset_dir = windows_corpus["dataset_dir"]
    session_id = windows_corpus["eids"][1]
    windows = load_windows(dataset_dir, sessions=[session_id])
    assert set(windows["train"]["session_id"]) == {session_id}
    trials = pq.read_table(dataset_dir / trial_file(session_id, "train")).to_pylist()
    first = windows["train"][0]
    assert len(first["spikes"]) == len(trials[0]["spikes"]) and len(first["spikes"][0]) == 100
    with pytest.raises(KeyError, match="sessions without continuous windows"):
        load_windows(dataset_dir, sessions=["not-a-session"])


def test_loading_windows_of_a_trial_only_dataset_says_how_to_build_them(windows_corpus):
    with pytest.raises(ValueError, match="--windows continuous"):
        load_windows(windows_corpus["trials_only"])


def test_a_changed_windows_file_fails_verification_naming_the_session(windows_corpus, tmp_path):
    copy = tmp_path / "dataset"
    shutil.copytree(windows_corpus["dataset_dir"], copy)
    session_id = windows_corpus["eids"][0]
    (copy / window_file(session_id, "test")).unlink()
    with pytest.raises(DatasetIntegrityError, match=f"session {session_id}: .* is missing"):
        verify_dataset(copy)


def test_a_too_long_window_stops_the_build_and_keeps_the_old_dataset(windows_corpus, tmp_path):
    output = tmp_path / "dataset"
    shutil.copytree(windows_corpus["dataset_dir"], output)
    before = {p: p.read_bytes() for p in output.rglob("*") if p.is_file()}
    with pytest.raises(WindowLongerThanRecordingError, match=r"recording lasts .* 5000 s long"):
        build_dataset(
            windows_corpus["cache_dir"],
            windows_corpus["eids"],
            output,
            progress=False,
            overwrite=True,
            windows=WindowConfig(5000.0, 1.0),
        )
    assert {p: p.read_bytes() for p in output.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset"]  # no staging left


def test_prepare_data_window_options(windows_corpus, tmp_path, capsys):
    from neds_hf.data.cli_prepare import main

    eids = windows_corpus["eids"][:1]
    common = ["--cache-dir", str(windows_corpus["cache_dir"]), "--eids", *eids, "--no-progress"]
    assert main([*common, "--output", str(tmp_path / "a"), "--window-length", "3"]) == 1
    assert "--window-length / --window-stride need --windows continuous" in capsys.readouterr().err
    windows = ["--windows", "continuous", "--window-length", "1.0", "--window-stride", "0.5"]
    code = main([*common, "--output", str(tmp_path / "b"), *windows])
    assert code == 0
    report = json.loads((tmp_path / "b" / BUILD_REPORT_FILE).read_text())
    assert (report["windows"]["length_s"], report["windows"]["stride_s"]) == (1.0, 0.5)
    too_long = ["--windows", "continuous", "--window-length", "5000"]
    assert main([*common, "--output", str(tmp_path / "c"), *too_long]) == 1
    assert f"session {eids[0]}: the recording lasts" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Training on windows, then fine-tuning on trials
# ---------------------------------------------------------------------------------------------


def _pretrain_on_windows(corpus: dict, output_dir: Path, **overrides):
    from neds_hf.training import train

    values = dict(dataset_config="windows", max_steps=6, eval_steps=6, learning_rate=3e-3)
    return train(tiny_args(corpus, output_dir, **{**values, **overrides}))


def test_windows_dataset_serves_windows_with_their_ids(windows_corpus):
    from neds_hf.data.training_data import NedsTrialDataset

    data = NedsTrialDataset(
        windows_corpus["dataset_dir"], "train", table="windows", extra_columns=["start_time"]
    )
    report = windows_corpus["report"]
    assert len(data) == sum(entry["windows"]["train"] for entry in report.sessions)
    item = data[0]
    assert list(item)[:3] == ["session_id", "trial_id", "window_id"]
    assert item["spikes"].shape == (data.n_neurons[item["session_id"]], 100)
    assert isinstance(item["start_time"], float)
    with pytest.raises(
        ValueError, match="unknown extra columns \\['stim_on_time'\\] of the windows"
    ):
        NedsTrialDataset(
            windows_corpus["dataset_dir"], "train", table="windows", extra_columns=["stim_on_time"]
        )


def test_window_masks_differ_between_windows_without_a_trial(windows_corpus):
    from neds_hf import NedsConfig
    from neds_hf.collator import DataCollatorForNedsMasking
    from neds_hf.data.training_data import NedsTrialDataset
    from neds_hf.training.loop import _SeededMasking

    data = NedsTrialDataset(windows_corpus["dataset_dir"], "train", table="windows")
    no_trial = [i for i in range(len(data)) if data[i]["trial_id"] == -1][:2]
    first, second = (data[i] for i in no_trial)
    assert first["session_id"] == second["session_id"]
    config = NedsConfig.for_mtm(dict(data.n_neurons), hidden_size=32, num_attention_heads=4)
    collator = DataCollatorForNedsMasking(config, neuron_regions=data.neuron_regions)
    collate = _SeededMasking(collator, seed=0, rank=0)
    masks = [collate([dict(item, spikes=first["spikes"])]) for item in (first, second)]
    assert not all(torch_equal(masks[0][k], masks[1][k]) for k in masks[0] if "mask" in k)


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b)) if isinstance(a, torch.Tensor) else a == b


def test_training_on_windows_needs_a_windows_dataset(windows_corpus, tmp_path):
    from neds_hf.training import train

    with pytest.raises(ValueError, match="dataset_config must be one of"):
        tiny_args(windows_corpus, tmp_path / "b", dataset_config="segments").validate()
    trials_only = str(windows_corpus["trials_only"])
    for streaming in (False, True):
        args = tiny_args(
            windows_corpus,
            tmp_path / f"c{streaming}",
            dataset=trials_only,
            dataset_config="windows",
            streaming=streaming,
            max_steps=1,
        )
        with pytest.raises(ValueError, match="has no continuous windows"):
            train(args)


def test_streamed_windows_are_the_in_memory_windows(windows_corpus, tmp_path):
    from neds_hf.data.streaming import NedsStreamingTrials
    from neds_hf.data.training_data import NedsTrialDataset

    dataset_dir = windows_corpus["dataset_dir"]
    in_memory = NedsTrialDataset(dataset_dir, "validation", table="windows")
    stream = NedsStreamingTrials(dataset_dir, "validation", shuffle_buffer_size=0, table="windows")
    streamed = {(i["session_id"], i["window_id"]): i for i in stream.iter_all()}
    expected = {(i["session_id"], i["window_id"]): i for i in in_memory}
    assert len(stream) == len(in_memory) == len(streamed) and streamed.keys() == expected.keys()
    for key, item in streamed.items():
        np.testing.assert_array_equal(item["spikes"], expected[key]["spikes"])
        np.testing.assert_array_equal(item["wheel_speed"], expected[key]["wheel_speed"])
        assert item["choice"] == expected[key]["choice"]
    from neds_hf.training import train

    args = tiny_args(
        windows_corpus, tmp_path, dataset_config="windows", streaming=True, max_steps=2
    )
    assert train(args).global_step == 2


def test_pretrain_on_windows_then_finetune_on_trials_spike_only(windows_corpus, tmp_path):
    import torch

    from neds_hf import NedsForMaskedModeling
    from neds_hf.training import train

    pretrained = _pretrain_on_windows(windows_corpus, tmp_path / "pretrain", spike_only=True)
    report = windows_corpus["report"]
    n_train_windows = sum(entry["windows"]["train"] for entry in report.sessions)
    assert pretrained.global_step == 6 and pretrained.samples_seen == min(6 * 8, n_train_windows)
    state = json.loads((tmp_path / "pretrain" / "checkpoint-6" / "trainer_state.json").read_text())
    assert state["fingerprint"]["dataset_config"] == "windows"
    base = NedsForMaskedModeling.from_pretrained(pretrained.model_dir)
    finetuned = train(
        tiny_args(
            windows_corpus,
            tmp_path / "finetune",
            mode="finetune",
            model_name_or_path=pretrained.model_dir,
            freeze_encoder="all",
            max_steps=3,
            learning_rate=1e-2,
        )
    )
    assert finetuned.global_step == 3
    assert finetuned.model.config.session_ids == windows_corpus["eids"]
    tuned = finetuned.model.state_dict()
    for name, value in base.state_dict().items():
        if name.startswith(("neds.layers.", "neds.final_norm.")):
            assert torch.equal(tuned[name], value), name
    assert np.isfinite(finetuned.history[-1]["eval/bps"])


def test_windows_behaviours_reach_the_model_as_missing_entries(windows_corpus):
    from neds_hf import NedsConfig
    from neds_hf.collator import DataCollatorForNedsMasking
    from neds_hf.data.training_data import NedsTrialDataset

    declared = load_modalities(windows_corpus["dataset_dir"])
    assert [spec.get("allow_missing", False) for spec in declared] == [False] + [True] * 9
    names = [spec["name"] for spec in declared]
    data = NedsTrialDataset(
        windows_corpus["dataset_dir"], "train", table="windows", modalities=names
    )
    items = [data[i] for i in range(len(data)) if data[i]["session_id"] == data[0]["session_id"]]
    batch_items = [items[0], *(item for item in items if item["trial_id"] >= 0)][:4]
    assert batch_items[0]["trial_id"] == -1 and batch_items[0]["window_id"] == 0
    config = NedsConfig(modalities=declared, sessions=dict(data.n_neurons))
    batch = DataCollatorForNedsMasking(config, normalization=data.normalization, seed=0)(
        batch_items
    )
    valid = batch["behavior_valid"].numpy()  # (B, T, M) behaviours in config order
    for position, spec in enumerate(config.behavior_modalities):
        values = [item[spec["name"]] for item in batch_items]
        if spec["kind"] == "continuous":
            expected = np.stack([np.isfinite(v) for v in values])  # (B, T)
        else:
            expected = np.repeat([[v != -1] for v in values], valid.shape[1], axis=1)  # (B, T)
        np.testing.assert_array_equal(valid[:, :, position], expected, err_msg=spec["name"])
    labels = [names.index(name) - 1 for name in ("choice", "block")]
    assert not valid[0][:, labels].any() and valid[1:][:, :, labels].all()


def test_pretrain_on_windows_then_finetune_on_trials_with_behaviours(windows_corpus, tmp_path):
    from neds_hf.training import train

    pretrained = _pretrain_on_windows(windows_corpus, tmp_path / "pretrain", modalities=["all"])
    losses = [entry["train/loss"] for entry in pretrained.history if "train/loss" in entry]
    assert len(losses) == 6 and np.isfinite(losses).all()
    behaviours = pretrained.model.config.behavior_modalities
    declared = load_modalities(windows_corpus["dataset_dir"])
    assert [spec["name"] for spec in behaviours] == [spec["name"] for spec in declared[1:]]
    assert {spec["name"] for spec in behaviours} == {
        "wheel_speed",
        "whisker_motion_energy",
        "choice",
        "block",
        "reward",
        "stimulus_contrast",
        "licking_rate",
        "left_paw_speed",
        "right_paw_speed",
    }
    assert all(spec["allow_missing"] for spec in behaviours)
    windows_scores = pretrained.history[-1]  # validation windows, missing entries skipped
    assert np.isfinite([windows_scores["eval/choice_accuracy"], windows_scores["eval/bps"]]).all()
    finetuned = train(
        tiny_args(
            windows_corpus,
            tmp_path / "finetune",
            mode="finetune",
            model_name_or_path=pretrained.model_dir,
            max_steps=3,
            eval_steps=3,
        )
    )
    assert finetuned.global_step == 3
    scores = finetuned.history[-1]
    assert {"eval/bps", "eval/wheel_speed_r2", "eval/reward_accuracy"} <= set(scores)
    assert np.isfinite([scores["eval/bps"], scores["eval/wheel_speed_r2"]]).all()


def test_a_rebuild_reuses_sessions_only_with_the_same_windows(windows_corpus, tmp_path):
    output = tmp_path / "dataset"
    shutil.copytree(windows_corpus["dataset_dir"], output)
    cache_dir, eids = windows_corpus["cache_dir"], windows_corpus["eids"]
    same = build_dataset(cache_dir, eids, output, progress=False, overwrite=True, windows=WINDOWS)
    assert all(entry.get("reused") for entry in same.sessions)
    assert same.to_dict()["windows"] == windows_corpus["report"].to_dict()["windows"]
    verify_dataset(output)
    assert len(load_windows(output)["train"]) == sum(e["windows"]["train"] for e in same.sessions)
    other = WindowConfig(length=1.0, stride=1.0)
    rebuilt = build_dataset(cache_dir, eids, output, progress=False, overwrite=True, windows=other)
    assert not any(entry.get("reused") for entry in rebuilt.sessions)
    assert len(load_windows(output)["train"][0]["spikes"][0]) == 50  # 1 s windows
    trials_only = build_dataset(cache_dir, eids, output, progress=False, overwrite=True)
    assert not any(entry.get("reused") for entry in trials_only.sessions)
    assert not (output / WINDOWS_DIR).exists()


def test_the_windows_config_lists_only_splits_that_hold_windows():
    from types import SimpleNamespace

    from neds_hf.data.card import _window_splits, card_configs

    report = SimpleNamespace(
        sessions=[
            {"status": "ok", "windows": {"train": 3, "validation": 0, "test": 1}},
            {"status": "ok", "windows": {"train": 2, "validation": 0, "test": 0}},
            {"status": "skipped"},
        ]
    )
    assert _window_splits(report) == ["train", "test"]
    configs = {c["config_name"]: c for c in card_configs(["s1"], window_splits=["train", "test"])}
    assert [f["split"] for f in configs["windows"]["data_files"]] == ["train", "test"]
    assert "windows" not in {c["config_name"] for c in card_configs(["s1"])}


def test_a_split_without_windows_is_a_clear_error(windows_corpus, monkeypatch):
    from datasets import DatasetDict

    from neds_hf.data import training_data

    only_train = DatasetDict({"train": load_windows(windows_corpus["dataset_dir"])["train"]})
    monkeypatch.setattr(training_data, "load_windows", lambda *args, **kwargs: only_train)
    with pytest.raises(ValueError, match=r"has no validation windows \(splits: \['train'\]\)"):
        training_data.NedsTrialDataset(windows_corpus["dataset_dir"], "validation", table="windows")


@pytest.mark.slow
def test_worker_processes_build_the_same_windows_and_raise_the_same_error(windows_corpus, tmp_path):
    cache_dir, eids = windows_corpus["cache_dir"], windows_corpus["eids"]
    pooled = build_dataset(
        cache_dir, eids, tmp_path / "pooled", progress=False, num_proc=2, windows=WINDOWS
    )
    assert pooled.files == windows_corpus["report"].files
    with pytest.raises(WindowLongerThanRecordingError, match=r"5000 s long") as error:
        build_dataset(
            cache_dir,
            eids,
            tmp_path / "too_long",
            progress=False,
            num_proc=2,
            windows=WindowConfig(5000.0, 1.0),
        )
    assert error.value.session_id in eids and error.value.window_s == 5000.0

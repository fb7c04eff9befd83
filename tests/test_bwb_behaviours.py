"""The BrainWideBench behaviours as data: reward, stimulus contrast and licking rate from the
IBL files (and the synthetic generator), a session without licks kept with the behaviour
missing and reported, selecting modalities for training, and a model trained on them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_preprocess import make_raw_session, make_trials

from neds_hf.data import ibl
from neds_hf.data import synthetic as syn
from neds_hf.data.preprocess import (
    DATASET_MODALITIES,
    PreprocessingConfig,
    lick_counts,
    preprocess_session,
)
from neds_hf.training.arguments import select_modalities

SMALL = dict(n_trials=60, n_neurons_per_probe=8)
PAPER = ["spikes", "wheel_speed", "whisker_motion_energy", "choice", "block"]


# ---------------------------------------------------------------------------------------------
# Preprocessing, hand-checked
# ---------------------------------------------------------------------------------------------


#: What a session without a pose table (every hand-made session here) misses: the paw speeds.
NO_POSE = {"left_paw_speed": 1.0, "right_paw_speed": 1.0}


def test_reward_and_stimulus_contrast_classes():
    trials = make_trials(12, np.random.default_rng(1))
    # the shown side's contrast: 0, 0.0625, 0.125, 0.25, 1 -> 0..4; neither side -> missing
    left = [0.0, np.nan, 0.125, np.nan, 1.0, np.nan, 0.0625, np.nan, 0.25, np.nan, 0.0, np.nan]
    right = [np.nan, 0.0625, np.nan, 0.25, np.nan, 1.0, np.nan, 0.0, np.nan, 0.125, np.nan, np.nan]
    trials["contrastLeft"], trials["contrastRight"] = left, right
    trials["feedbackType"] = [1.0, -1.0] * 6
    session = preprocess_session(make_raw_session(trials=trials), PreprocessingConfig())
    assert session.n_trials == 12  # a trial without a contrast is kept, its class missing
    columns = session.trial_columns()
    assert columns["stimulus_contrast"].tolist() == [0, 1, 2, 3, 4, 4, 1, 0, 3, 2, 0, -1]
    assert columns["reward"].tolist() == [1, 0] * 6
    # (the hand-made session has no lick times at all)
    assert session.missing_fractions() == {
        "stimulus_contrast": pytest.approx(1 / 12),
        "licking_rate": 1.0,
        **NO_POSE,
    }


def test_an_unknown_contrast_names_session_and_trial():
    trials = make_trials(10, np.random.default_rng(2))
    trials.loc[3, ["contrastLeft", "contrastRight"]] = [0.5, np.nan]
    raw = make_raw_session(session_id="session-odd-contrast", trials=trials)
    with pytest.raises(ValueError, match=r"session-odd-contrast: trial 3 .*contrast 0\.5"):
        preprocess_session(raw, PreprocessingConfig())


def test_licking_rate_counts_licks_per_bin():
    config = PreprocessingConfig()  # window (-0.5, 1.5) around stimOn, 20 ms bins
    raw = make_raw_session(n_trials=12, seed=3)
    stim_on = raw.trials["stimOn_times"].to_numpy()
    # trial 0: two licks in bin 30 (0.10..0.12 s after stimOn), one on the edge of bin 50
    raw.lick_times = np.sort(np.array([stim_on[0] + 0.105, stim_on[0] + 0.115, stim_on[0] + 0.5]))
    session = preprocess_session(raw, config)
    licking = session.trial_columns()["licking_rate"]  # (K, T)
    expected = np.zeros(config.n_bins, dtype=np.float32)
    expected[30], expected[50] = 2, 1
    assert session.trial_ids[0] == 0
    np.testing.assert_array_equal(licking[0], expected)
    assert licking[1:].sum() == 0 and licking.dtype == np.float32
    assert "licking_rate" in session.normalization
    assert session.missing_fractions() == NO_POSE


def test_a_session_without_licks_is_kept_with_licking_rate_missing():
    raw = make_raw_session(n_trials=12, seed=4)
    with_licks = preprocess_session(make_raw_session(n_trials=12, seed=4), PreprocessingConfig())
    assert raw.lick_times is None
    session = preprocess_session(raw, PreprocessingConfig())
    assert session.n_trials == with_licks.n_trials  # nothing dropped
    assert np.isnan(session.trial_columns()["licking_rate"]).all()
    # no constants from nothing, but listed like in every session
    assert all(np.isnan(v) for v in session.normalization["licking_rate"].values())
    assert session.missing_fractions() == {"licking_rate": 1.0, **NO_POSE}
    licking = [e for e in session.session["normalization"] if e["modality"] == "licking_rate"]
    assert len(licking) == 1 and np.isnan(licking[0]["mean"])


def test_lick_counts_without_licks_are_missing():
    counts = lick_counts(None, np.array([0.0, 1.0]), 4, 0.25)
    assert counts.shape == (2, 4) and np.isnan(counts).all()


# ---------------------------------------------------------------------------------------------
# Synthetic licks and the ONE loader
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lick_cache(tmp_path_factory):
    """Two sessions, the second without licks.times, in a ONE cache."""
    root = tmp_path_factory.mktemp("lick_cache")
    eids = syn.make_synthetic_cache(root, 2, seed=8, faults={1: "no_licks"}, **SMALL)
    return {"root": root, "eids": eids}


def test_synthetic_licks_follow_rewards(lick_cache):
    session = syn.generate_session(syn.SyntheticSessionSpec(seed=8, index=0, **SMALL))
    licks = session.lick_times
    assert licks.dtype == np.float64 and np.all(np.diff(licks) >= 0)
    feedback = session.trials["feedback_times"].to_numpy()
    rewarded = session.trials["feedbackType"].to_numpy() == 1
    after = np.array(
        [np.sum((licks >= t) & (licks < t + 1.5)) if np.isfinite(t) else 0 for t in feedback]
    )
    assert after[rewarded].mean() > 5 * max(after[~rewarded].mean(), 0.2)
    # the licks draw from their own stream: the same spec gives the same licks
    again = syn.generate_session(syn.SyntheticSessionSpec(seed=8, index=0, **SMALL))
    np.testing.assert_array_equal(again.lick_times, licks)


def test_loader_reads_licks_and_tolerates_their_absence(lick_cache, strict_warnings):
    with strict_warnings():
        one = ibl.make_one(lick_cache["root"])
        with_licks = ibl.load_session(one, lick_cache["eids"][0])
        without = ibl.load_session(one, lick_cache["eids"][1])
    written = np.load(next(lick_cache["root"].rglob("licks.times.npy")))
    expected = syn.generate_session(syn.SyntheticSessionSpec(seed=8, index=0, **SMALL)).lick_times
    np.testing.assert_array_equal(with_licks.lick_times, expected)
    np.testing.assert_array_equal(written, expected)
    assert with_licks.metadata["licks_absent"] is False
    assert without.lick_times is None and without.metadata["licks_absent"] is True


def test_build_keeps_a_session_without_licks_and_reports_it(lick_cache, tmp_path):
    from neds_hf.data import build_dataset, load_modalities
    from neds_hf.data.training_data import NedsTrialDataset

    output = tmp_path / "dataset"
    report = build_dataset(lick_cache["root"], lick_cache["eids"], output, progress=False)
    assert report.skipped == {}
    entries = {
        e["session_id"]: e
        for e in json.loads((output / "build_report.json").read_text())["sessions"]
    }
    first, second = lick_cache["eids"]
    assert entries[second]["missing_modalities"]["licking_rate"] == 1.0
    # the synthetic pose has occlusions: a few paw-speed bins are missing, nothing else
    assert set(entries[second]["missing_modalities"]) <= {"licking_rate", *NO_POSE}
    assert all(entries[second]["missing_modalities"][name] < 0.05 for name in NO_POSE)
    assert "licking_rate" not in entries[first]["missing_modalities"]
    assert load_modalities(output) == [dict(spec) for spec in DATASET_MODALITIES]
    card = (output / "README.md").read_text()
    assert f"- {second}: licking_rate missing" in card
    assert "| `stimulus_contrast` | categorical | 5 |" in card
    assert set(NedsTrialDataset(output, "train")[0]) == {"session_id", "trial_id", *PAPER}
    names = [spec["name"] for spec in DATASET_MODALITIES]
    trials = NedsTrialDataset(output, "train", modalities=names)  # both sessions together
    trial = trials[int(trials.session_indices()[second][0])]
    assert np.isnan(np.asarray(trial["licking_rate"], dtype=np.float64)).all()
    assert trial["reward"] in (0, 1) and 0 <= trial["stimulus_contrast"] < 5


# ---------------------------------------------------------------------------------------------
# Selecting modalities
# ---------------------------------------------------------------------------------------------


def test_the_paper_modalities_stay_the_default_and_bwb_is_a_named_set():
    declared = [dict(spec) for spec in DATASET_MODALITIES]
    names = lambda specs: [spec["name"] for spec in specs]  # noqa: E731
    assert names(select_modalities(None, declared, "d")) == PAPER
    assert names(select_modalities(["paper"], declared, "d")) == PAPER
    bwb = select_modalities(["bwb"], declared, "d")
    assert names(bwb) == [spec["name"] for spec in DATASET_MODALITIES]
    assert {"name": "licking_rate", "kind": "continuous", "allow_missing": True} in bwb
    assert names(select_modalities(["reward", "spikes"], declared, "d")) == ["spikes", "reward"]
    assert DATASET_MODALITIES[0]["name"] == "spikes" and DATASET_MODALITIES[-1]["name"] == "block"
    with pytest.raises(ValueError, match=r"unknown modalities \['left_paw'\]; dataset d declares"):
        select_modalities(["paper", "left_paw"], declared, "d")


def test_a_model_whose_modalities_disagree_with_the_dataset_is_named(tmp_path):
    from neds_hf.configuration_neds import check_declared_modalities

    declared = [dict(spec) for spec in DATASET_MODALITIES]
    paper = [spec for spec in declared if spec["name"] in PAPER]
    model = [*paper, {"name": "stimulus_contrast", "kind": "categorical", "num_classes": 3}]
    with pytest.raises(ValueError) as error:
        check_declared_modalities(model, declared, "my-dataset")
    message = str(error.value)
    assert (
        "stimulus_contrast is stimulus_contrast (categorical, 3 classes) in the model but "
        "stimulus_contrast (categorical, 5 classes) in the dataset" in message
    )
    assert "the model's modalities ['spikes (spikes)'" in message
    assert "disagree with those dataset my-dataset declares ['spikes (spikes)'" in message
    with pytest.raises(ValueError, match="pupil is not declared"):
        check_declared_modalities(
            [*declared, {"name": "pupil", "kind": "continuous"}], declared, "d"
        )
    check_declared_modalities(declared[:3], declared, "d")  # a subset is fine


def test_finetuning_a_model_on_a_dataset_it_does_not_fit_is_an_error(synthetic_corpus, tmp_path):
    from training_helpers import tiny_args

    from neds_hf import NedsConfig, NedsForMaskedModeling
    from neds_hf.training import train

    modalities = [
        {"name": "spikes", "kind": "spikes"},
        {"name": "choice", "kind": "categorical", "num_classes": 3},
    ]
    model = NedsForMaskedModeling(
        NedsConfig(
            hidden_size=16,
            num_attention_heads=2,
            num_hidden_layers=1,
            intermediate_size=16,
            modalities=modalities,
            sessions={"x": 3},
        )
    )
    model.save_pretrained(tmp_path / "model")
    args = tiny_args(
        synthetic_corpus,
        tmp_path / "run",
        mode="finetune",
        model_name_or_path=str(tmp_path / "model"),
        max_steps=1,
    )
    with pytest.raises(
        ValueError,
        match=r"choice is choice \(categorical, 3 classes\) in the "
        r"model but choice \(categorical, 2 classes\) in the dataset",
    ):
        train(args)


def test_training_with_the_bwb_behaviours_has_a_finite_loss(synthetic_corpus, tmp_path):
    from training_helpers import tiny_args

    from neds_hf.training import train

    torch.manual_seed(0)
    args = tiny_args(
        synthetic_corpus,
        tmp_path / "run",
        modalities=["bwb"],
        max_steps=4,
        eval_steps=4,
        save_steps=4,
    )
    args.validate()
    result = train(args)
    names = [spec["name"] for spec in result.model.config.modalities]
    assert names == [spec["name"] for spec in DATASET_MODALITIES]
    assert result.model.config.behaviors_with_missing == [
        "reward",
        "stimulus_contrast",
        "licking_rate",
        "left_paw_speed",
        "right_paw_speed",
    ]
    losses = [e["train/loss"] for e in result.history if "train/loss" in e]
    assert len(losses) == 4 and all(np.isfinite(losses))
    licking = [
        e["train/loss/licking_rate"] for e in result.history if "train/loss/licking_rate" in e
    ]
    assert licking and all(np.isfinite(licking))
    # fine-tuning from it with fitted readouts: the fit runs the encoding protocol on trials
    # with missing entries (masked, never read as values)
    finetuned = train(
        tiny_args(
            synthetic_corpus,
            tmp_path / "finetune",
            mode="finetune",
            sessions=synthetic_corpus["heldout_eids"],
            model_name_or_path=result.model_dir,
            fit_session_readouts=True,
            max_steps=2,
        )
    )
    losses = [e["train/loss"] for e in finetuned.history if "train/loss" in e]
    readout = finetuned.model.spike_readout.session_neurons.neuron_weight
    assert len(losses) == 2 and all(np.isfinite(losses)) and bool(torch.isfinite(readout).all())

"""Evaluation protocols, per-session scores, reports and the evaluate command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from neds_hf import NedsConfig, NedsForMaskedModeling
from neds_hf.cli import main as cli_main
from neds_hf.data.training_data import NedsTrialDataset
from neds_hf.evaluation import (
    average_score,
    evaluate_model,
    evaluate_trials,
    neuron_embeddings,
    predict_session,
    report_to_eval_results,
)
from neds_hf.hub import to_eval_results
from neds_hf.metrics import bits_per_spike, r2_flattened


@pytest.fixture(scope="module")
def test_data(synthetic_corpus):
    return NedsTrialDataset(synthetic_corpus["dataset_dir"], "test")


def tiny_config(sessions, **overrides) -> NedsConfig:
    """The small NEDS configuration of the evaluation tests."""
    sizes = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=32)
    return NedsConfig(**{**sizes, "spike_stitcher_size": 16, "sessions": sessions, **overrides})


@pytest.fixture(scope="module")
def model(test_data):
    torch.manual_seed(0)
    return NedsForMaskedModeling(tiny_config(test_data.n_neurons)).eval()


def session_trials(dataset, session_id):
    return [dataset[int(i)] for i in dataset.session_indices()[session_id]]


def test_protocols_hide_what_they_should(model, test_data):
    session_id = test_data.session_ids[0]
    trials = session_trials(test_data, session_id)
    shuffled_spikes = [
        {**t, "spikes": np.random.default_rng(1).permutation(t["spikes"], axis=1)} for t in trials
    ]
    other_behaviour = [
        {**t, "wheel_speed": t["wheel_speed"][::-1].copy(), "choice": 1 - t["choice"]}
        for t in trials
    ]
    normalization = test_data.normalization
    encoding = predict_session(model, trials, "encoding", normalization)
    # encoding never sees spikes: changing them leaves the predicted rates unchanged ...
    np.testing.assert_allclose(
        predict_session(model, shuffled_spikes, "encoding", normalization).rates,
        encoding.rates,
        rtol=1e-6,
    )
    # ... but it does see behaviour
    assert not np.allclose(
        predict_session(model, other_behaviour, "encoding", normalization).rates, encoding.rates
    )
    decoding = predict_session(model, trials, "decoding", normalization)
    changed = predict_session(model, other_behaviour, "decoding", normalization)
    for name in decoding.behavior_predictions:
        np.testing.assert_allclose(
            changed.behavior_predictions[name], decoding.behavior_predictions[name], rtol=1e-6
        )
    assert encoding.rates.shape == (len(trials), 100, test_data.n_neurons[session_id])
    assert decoding.behavior_predictions["choice"].shape == (len(trials), 2)
    assert decoding.behavior_targets["choice"].tolist() == [t["choice"] for t in trials]


def test_scores_match_the_metric_functions(model, test_data):
    report = evaluate_trials(
        model,
        [test_data[i] for i in range(len(test_data))],
        normalization=test_data.normalization,
        per_behavior_encoding=True,
    )
    assert set(report.per_session) == set(test_data.session_ids)
    session_id = test_data.session_ids[1]
    trials = session_trials(test_data, session_id)
    encoding = predict_session(model, trials, "encoding", test_data.normalization)
    decoding = predict_session(model, trials, "decoding", test_data.normalization)
    scores = report.per_session[session_id]
    assert scores["bps"] == pytest.approx(
        bits_per_spike(encoding.rates, encoding.spikes, log_input=False)
    )
    assert scores["bps_pooled"] == pytest.approx(
        bits_per_spike(encoding.rates, encoding.spikes, log_input=False, convention="pooled")
    )
    assert scores["wheel_speed_r2"] == pytest.approx(
        r2_flattened(
            decoding.behavior_predictions["wheel_speed"], decoding.behavior_targets["wheel_speed"]
        )
    )
    assert {
        "bps_wheel_speed_only",
        "bps_choice_only",
        "choice_balanced_accuracy",
        "block_accuracy",
        "whisker_motion_energy_r2_psth",
    } <= set(scores)
    assert scores["avg"] == pytest.approx(average_score(scores))
    expected_avg = np.mean(
        [
            scores[k]
            for k in (
                "bps",
                "wheel_speed_r2",
                "whisker_motion_energy_r2",
                "choice_balanced_accuracy",
                "block_balanced_accuracy",
            )
        ]
    )
    assert scores["avg"] == pytest.approx(expected_avg)
    for metric, value in report.average.items():
        per_session = [s[metric] for s in report.per_session.values()]
        assert value == pytest.approx(np.nanmean(per_session)), metric


def test_reports_and_model_index_entries(model, test_data, tmp_path):
    report = evaluate_trials(
        model, [test_data[i] for i in range(len(test_data))], normalization=test_data.normalization
    )
    json_path, markdown_path = report.save(tmp_path)
    saved = json.loads(json_path.read_text())
    assert saved["split"] == "test" and set(saved["per_session"]) == set(test_data.session_ids)
    markdown = markdown_path.read_text()
    assert markdown.count("\n|") == len(test_data.session_ids) + 2 and "**average**" in markdown
    entries = report_to_eval_results(report, "org/dataset")
    assert {e["metric_type"] for e in entries} == {
        k for k, v in report.average.items() if np.isfinite(v)
    }
    assert len(to_eval_results(entries)) == len(entries)  # valid model-index entries


def test_region_probe_embeddings(model, test_data):
    session_id = test_data.session_ids[0]
    embeddings = neuron_embeddings(model, session_id)
    assert embeddings.shape == (test_data.n_neurons[session_id], 16 + 32 + 1)
    with pytest.raises(ValueError, match="does not know session 'nope'"):
        neuron_embeddings(model, "nope")


def test_unknown_sessions_are_clear_errors(model, test_data):
    other = NedsForMaskedModeling(
        NedsConfig(
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=4,
            intermediate_size=32,
            sessions={"someone-else": 3},
        )
    )
    with pytest.raises(ValueError, match=r"does not know sessions \["):
        evaluate_trials(other, [test_data[0]], normalization=test_data.normalization)


def test_evaluate_command(model, synthetic_corpus, tmp_path, capsys):
    model.save_pretrained(tmp_path / "model")
    code = cli_main(
        [
            "evaluate",
            str(tmp_path / "model"),
            "--dataset",
            str(synthetic_corpus["dataset_dir"]),
            "--split",
            "validation",
            "--region-probe",
            "--output",
            str(tmp_path / "eval"),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "| **average** |" in printed and "region_beryl: accuracy" in printed
    saved = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert saved["split"] == "validation" and set(saved["region_probe"]) == {
        "region_beryl",
        "region_cosmos",
    }
    report = evaluate_model(
        str(tmp_path / "model"), str(synthetic_corpus["dataset_dir"]), split="validation"
    )
    assert report.average["bps"] == pytest.approx(saved["average"]["bps"])


def test_decoded_behaviour_goes_back_to_physical_units(model, test_data):
    """The demo's behaviour plot de-normalises with the model's normalisation (z-scoring)."""
    from neds_hf.demo import physical_behavior
    from neds_hf.evaluation import denormalize_behavior

    assert model.config.behavior_normalization == "zscore"
    session_id = test_data.session_ids[0]
    trials = session_trials(test_data, session_id)
    stats = test_data.normalization[session_id]
    decoding = predict_session(model, trials, "decoding", test_data.normalization)
    # the targets went through the collator's normalisation; back through the demo's plot path
    plotted = physical_behavior(model.config, decoding.behavior_targets, stats)
    assert set(plotted) == {"wheel_speed", "whisker_motion_energy"}
    for name, values in plotted.items():
        raw = np.stack([t[name] for t in trials])  # (trials, T) physical units
        np.testing.assert_allclose(values, raw, rtol=1e-5, atol=1e-5 * np.abs(raw).max())
        # the inverse min-max the plot used before gives other values for a z-scored model
        assert not np.allclose(
            denormalize_behavior(decoding.behavior_targets[name], stats[name], "minmax"), raw
        )
    with pytest.raises(ValueError, match="must be one of"):
        denormalize_behavior(raw, stats["wheel_speed"], "log")


@pytest.mark.parametrize("method", ["minmax", "zscore", "none"])
def test_denormalize_inverts_the_collator(test_data, method):
    from neds_hf.collator import DataCollatorForNedsMasking
    from neds_hf.evaluation import denormalize_behavior

    config = tiny_config(test_data.n_neurons, behavior_normalization=method)
    session_id = test_data.session_ids[0]
    trials = session_trials(test_data, session_id)[:4]
    batch = DataCollatorForNedsMasking(
        config, eval_protocol="decoding", normalization=test_data.normalization
    )(trials)
    for column, spec in enumerate(config.continuous_modalities):
        name = spec["name"]
        restored = denormalize_behavior(
            batch["behavior_values"][..., column].numpy(),
            test_data.normalization[session_id][name],
            method,
        )
        raw = np.stack([t[name] for t in trials])
        np.testing.assert_allclose(restored, raw, rtol=1e-5, atol=1e-5 * np.abs(raw).max())


def test_modalities_come_from_the_model_config(test_data):
    """A model with two of the five IBL behaviours is scored, tabled and carded on those two."""
    from neds_hf.demo import table_metrics
    from neds_hf.evaluation import card_metric, trial_conditions

    torch.manual_seed(0)
    config = tiny_config(
        test_data.n_neurons,
        modalities=[
            {"name": "spikes", "kind": "spikes"},
            {"name": "wheel_speed", "kind": "continuous"},
            {"name": "choice", "kind": "categorical", "num_classes": 2},
        ],
    )
    small = NedsForMaskedModeling(config).eval()
    trials = [test_data[i] for i in range(len(test_data))]
    report = evaluate_trials(small, trials, normalization=test_data.normalization)
    assert set(report.average) == {
        "bps",
        "bps_pooled",
        "wheel_speed_r2",
        "wheel_speed_r2_psth",
        "choice_accuracy",
        "choice_balanced_accuracy",
        "avg",
    }
    assert trial_conditions(config, trials).shape == (len(trials), 1)  # choice only
    assert list(table_metrics(config.behavior_modalities)) == [
        "bps",
        "bps_pooled",
        "wheel_speed_r2",
        "choice_balanced_accuracy",
    ]
    entries = report_to_eval_results(report, "org/dataset", metrics=["bps", "wheel_speed_r2"])
    assert [(e["task_type"], e["metric_type"], e["metric_name"]) for e in entries] == [
        ("neural-encoding", "bps", "bits per spike"),
        ("neural-decoding", "wheel_speed_r2", "wheel speed R²"),
    ]
    assert card_metric("avg")["task_type"] == "neural-encoding-decoding"
    assert card_metric("bps_choice_only")["metric_name"] == "bits per spike (choice only)"


def test_evaluate_command_with_region_probe_first(model, synthetic_corpus, tmp_path, capsys):
    """``--region-probe`` before the model path is a flag and does not take the path."""
    model.save_pretrained(tmp_path / "model")
    argv = ["evaluate", "--region-probe", str(tmp_path / "model")]
    argv += ["--dataset", str(synthetic_corpus["dataset_dir"]), "--split", "validation"]
    assert cli_main(argv) == 0
    assert "region_cosmos: accuracy" in capsys.readouterr().out

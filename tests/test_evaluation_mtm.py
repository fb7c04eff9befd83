"""The MtM spike-prediction tasks of ``neds-hf evaluate``: held-out sets, masks, scores, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from neds_hf import NedsConfig, NedsForMaskedModeling
from neds_hf.cli import main as cli_main
from neds_hf.data.training_data import NedsTrialDataset
from neds_hf.evaluation import (
    MTM_TASK_METRICS,
    choose_heldout_neurons,
    evaluate_trials,
    mtm_task_scores,
    predict_mtm_task,
    report_to_eval_results,
)
from neds_hf.hub import load_eval_results, to_eval_results
from neds_hf.masking import (
    FORWARD_PREDICTION_BINS,
    MTM_EVAL_TASKS,
    heldout_masks,
    mtm_heldout_sets,
)
from neds_hf.metrics import encoding_scores, r2_flattened
from neds_hf.report import SPIKE_TASK_NAMES, evaluation_markdown

SIZES = dict(
    hidden_size=32,
    num_hidden_layers=1,
    num_attention_heads=4,
    intermediate_size=32,
    spike_stitcher_size=16,
)
REGIONS = ["A", "A", "B", "B", "C"]


# ---------------------------------------------------------------------------------------------
# Held-out sets and masks (hand-checkable, 5 neurons in regions A A B B C)
# ---------------------------------------------------------------------------------------------


def test_co_smoothing_hides_and_scores_one_neuron_per_sample():
    config = NedsConfig(sessions={"s": 5}, **SIZES)
    sets = mtm_heldout_sets("co_smoothing", 5, 100, heldout_neurons=[1, 3])
    assert [(s.hidden_neurons, s.scored_neurons, s.first_bin) for s in sets] == [
        ((1,), (1,), 0),
        ((3,), (3,), 0),
    ]
    masks = heldout_masks(config, sets, num_neurons=7)  # 2 padding neurons
    expected = torch.zeros(2, 100, 7, dtype=torch.bool)
    expected[0, :, 1] = True
    expected[1, :, 3] = True
    assert torch.equal(masks.spike_mask, expected)
    assert torch.equal(masks.spike_target_mask, expected)
    assert not masks.behavior_mask.any() and not masks.causal_attention.any()
    assert len(mtm_heldout_sets("co_smoothing", 5, 100)) == 5  # default: every neuron


def test_forward_prediction_hides_the_last_bins_of_every_neuron():
    sets = mtm_heldout_sets("forward_prediction", 5, 100)
    assert len(sets) == 1 and sets[0].first_bin == 100 - FORWARD_PREDICTION_BINS == 90
    # multimodal NEDS: per-bin behaviour hidden in the forecast bins, the one-token trial-level
    # variables (choice, block) shown; NEDS schemes have no causal one -> bidirectional
    neds = NedsConfig(sessions={"s": 5}, **SIZES)
    masks = heldout_masks(neds, sets, num_neurons=6)
    expected = torch.zeros(1, 100, 6, dtype=torch.bool)
    expected[0, 90:, :5] = True
    assert torch.equal(masks.spike_mask, expected)
    assert torch.equal(masks.spike_target_mask, expected)
    names = [spec["name"] for spec in neds.behavior_modalities]
    for column, name in enumerate(names):
        hidden = masks.behavior_mask[0, :, column]
        if name in ("wheel_speed", "whisker_motion_energy"):
            assert hidden[90:].all() and not hidden[:90].any()
        else:
            assert not hidden.any()
    assert masks.causal_attention.tolist() == [False]
    # MtM (trained with the causal scheme): causal attention
    mtm = NedsConfig.for_mtm({"s": 5}, **SIZES)
    assert heldout_masks(mtm, sets, 5).causal_attention.tolist() == [True]


def test_inter_region_hides_and_scores_whole_regions():
    sets = mtm_heldout_sets("inter_region", 5, 100, regions=REGIONS)
    assert [(s.region, s.hidden_neurons, s.scored_neurons) for s in sets] == [
        ("A", (0, 1), (0, 1)),
        ("B", (2, 3), (2, 3)),
        ("C", (4,), (4,)),
    ]
    masks = heldout_masks(NedsConfig.for_mtm({"s": 5}, **SIZES), sets, 5)
    assert masks.spike_mask[:, 0, :].tolist() == [
        [True, True, False, False, False],
        [False, False, True, True, False],
        [False, False, False, False, True],
    ]
    assert torch.equal(masks.spike_mask, masks.spike_target_mask)
    assert masks.spike_mask.all(1).eq(masks.spike_mask.any(1)).all()  # every bin


def test_intra_region_hides_other_regions_and_scores_one_neuron():
    sets = mtm_heldout_sets("intra_region", 5, 100, regions=REGIONS, heldout_neurons=[0, 3])
    assert [(s.region, s.hidden_neurons, s.scored_neurons) for s in sets] == [
        ("A", (0, 2, 3, 4), (0,)),
        ("B", (0, 1, 3, 4), (3,)),
    ]
    masks = heldout_masks(NedsConfig.for_mtm({"s": 5}, **SIZES), sets, 5)
    assert masks.spike_mask[:, 50, :].tolist() == [
        [True, False, True, True, True],
        [True, True, False, True, True],
    ]
    assert masks.spike_target_mask[:, 50, :].tolist() == [
        [True, False, False, False, False],
        [False, False, False, True, False],
    ]


def test_heldout_sets_reject_bad_input():
    with pytest.raises(ValueError, match="unknown MtM task 'neuron'"):
        mtm_heldout_sets("neuron", 5, 100)
    with pytest.raises(ValueError, match=r"heldout_neurons \[5\] lie outside \[0, 5\)"):
        mtm_heldout_sets("co_smoothing", 5, 100, heldout_neurons=[5])
    with pytest.raises(ValueError, match="needs the region of each of the 5 neurons, got 4"):
        mtm_heldout_sets("inter_region", 5, 100, regions=REGIONS[:4])
    with pytest.raises(ValueError, match="needs more than that per trial, got 10 bins"):
        mtm_heldout_sets("forward_prediction", 5, 10)


def test_heldout_neuron_choice_is_seeded_and_capped():
    chosen = choose_heldout_neurons("s1", 40, 7, seed=3)
    assert len(chosen) == 7 == len(set(chosen)) and chosen == sorted(chosen)
    assert chosen == choose_heldout_neurons("s1", 40, 7, seed=3)
    assert chosen != choose_heldout_neurons("s1", 40, 7, seed=4)
    assert choose_heldout_neurons("s1", 5, 7) == [0, 1, 2, 3, 4]
    assert choose_heldout_neurons("s1", 5, None) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="max_heldout_neurons must be >= 1"):
        choose_heldout_neurons("s1", 5, 0)


def test_task_scores_use_only_the_scored_block():
    rng = np.random.default_rng(0)
    spikes = rng.poisson(2.0, (6, 100, 4)).astype(float)
    rates = rng.uniform(1.0, 3.0, spikes.shape)
    scored = np.zeros((100, 4), dtype=bool)
    scored[90:, :] = True
    rates[:, :90, :] = np.nan  # never predicted: must not be read

    from neds_hf.evaluation import SessionPredictions

    scores = mtm_task_scores(
        "forward_prediction", SessionPredictions("s", spikes=spikes, rates=rates), scored
    )
    expected = encoding_scores(rates[:, 90:], spikes[:, 90:])
    assert scores["forward_prediction_bps"] == pytest.approx(expected["bps"])
    assert scores["forward_prediction_bps_pooled"] == pytest.approx(expected["bps_pooled"])
    assert scores["forward_prediction_r2_trial"] == pytest.approx(
        r2_flattened(rates[:, 90:], spikes[:, 90:])
    )
    psth = r2_flattened(rates[:, 90:].mean(0, keepdims=True), spikes[:, 90:].mean(0, keepdims=True))
    assert scores["forward_prediction_r2_psth"] == pytest.approx(psth)
    assert sorted(scores) == sorted(f"forward_prediction_{m}" for m in MTM_TASK_METRICS)


def test_report_names_every_task():
    assert list(SPIKE_TASK_NAMES) == list(MTM_EVAL_TASKS)


# ---------------------------------------------------------------------------------------------
# Tiny models end to end on the synthetic corpus
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def test_data(synthetic_corpus):
    return NedsTrialDataset(synthetic_corpus["dataset_dir"], "test")


@pytest.fixture(scope="module")
def models(test_data):
    torch.manual_seed(0)
    return {
        "mtm": NedsForMaskedModeling(NedsConfig.for_mtm(test_data.n_neurons, **SIZES)).eval(),
        "neds": NedsForMaskedModeling(NedsConfig(sessions=test_data.n_neurons, **SIZES)).eval(),
    }


def session_trials(dataset, session_id, count=6):
    return [dataset[int(i)] for i in dataset.session_indices()[session_id][:count]]


def with_neuron_changed(trials, neuron):
    return [
        {**t, "spikes": np.where(np.arange(len(t["spikes"]))[:, None] == neuron, 9, t["spikes"])}
        for t in trials
    ]


def task_rates(model, trials, task, regions, neurons, batch_size=64):
    predictions, scored = predict_mtm_task(
        model,
        trials,
        task,
        neuron_regions=regions,
        heldout_neurons=neurons,
        batch_size=batch_size,
    )
    return predictions.rates, scored


@pytest.mark.parametrize("kind", ["mtm", "neds"])
def test_leave_one_out_sees_everything_but_the_held_out_neuron(models, test_data, kind):
    model = models[kind]
    session_id = test_data.session_ids[0]
    trials = session_trials(test_data, session_id)
    regions = test_data.neuron_regions[session_id]
    rates, scored = task_rates(model, trials, "co_smoothing", regions, [2, 5], batch_size=5)
    assert scored.all(0).tolist() == [n in (2, 5) for n in range(len(regions))]
    assert np.isfinite(rates[:, :, [2, 5]]).all() and np.isnan(np.delete(rates, [2, 5], 2)).all()
    # batching does not change predictions
    one_by_one, _ = task_rates(model, trials, "co_smoothing", regions, [2, 5], batch_size=1)
    np.testing.assert_allclose(one_by_one, rates, rtol=1e-5, equal_nan=True)
    # neuron 2's own counts are hidden from its prediction; neuron 5's are not
    changed, _ = task_rates(model, with_neuron_changed(trials, 2), "co_smoothing", regions, [2, 5])
    np.testing.assert_allclose(changed[:, :, 2], rates[:, :, 2], rtol=1e-5)
    assert not np.allclose(changed[:, :, 5], rates[:, :, 5])


def test_intra_region_sees_only_its_region(models, test_data):
    model = models["mtm"]
    session_id = test_data.session_ids[0]
    trials = session_trials(test_data, session_id)
    regions = test_data.neuron_regions[session_id]
    names, counts = np.unique(regions, return_counts=True)
    region = names[counts >= 2][0]
    target, peer = [n for n, r in enumerate(regions) if r == region][:2]
    outsider = next(n for n, r in enumerate(regions) if r != region)
    rates, _ = task_rates(model, trials, "intra_region", regions, [target])
    other_region, _ = task_rates(
        model, with_neuron_changed(trials, outsider), "intra_region", regions, [target]
    )
    np.testing.assert_allclose(other_region[:, :, target], rates[:, :, target], rtol=1e-5)
    same_region, _ = task_rates(
        model, with_neuron_changed(trials, peer), "intra_region", regions, [target]
    )
    assert not np.allclose(same_region[:, :, target], rates[:, :, target])


def test_inter_region_predicts_a_region_from_the_others(models, test_data):
    model = models["neds"]
    session_id = test_data.session_ids[0]
    trials = session_trials(test_data, session_id)
    regions = test_data.neuron_regions[session_id]
    rates, scored = task_rates(model, trials, "inter_region", regions, None)
    assert scored.all() and np.isfinite(rates).all()
    first = [n for n, r in enumerate(regions) if r == regions[0]]
    outsider = next(n for n, r in enumerate(regions) if r != regions[0])
    changed, _ = task_rates(
        model, with_neuron_changed(trials, first[-1]), "inter_region", regions, None
    )
    np.testing.assert_allclose(changed[:, :, first], rates[:, :, first], rtol=1e-5)
    assert not np.allclose(changed[:, :, outsider], rates[:, :, outsider])


@pytest.mark.parametrize("kind", ["mtm", "neds"])
def test_forward_prediction_never_sees_the_forecast_bins(models, test_data, kind):
    model = models[kind]
    session_id = test_data.session_ids[0]
    trials = session_trials(test_data, session_id)
    rates, scored = task_rates(model, trials, "forward_prediction", None, None)
    assert scored[90:].all() and not scored[:90].any()
    future = [
        {**t, "spikes": np.concatenate([t["spikes"][:, :90], t["spikes"][:, 90:] + 5], 1)}
        for t in trials
    ]
    changed, _ = task_rates(model, future, "forward_prediction", None, None)
    np.testing.assert_allclose(changed, rates, rtol=1e-5, equal_nan=True)
    past = [
        {**t, "spikes": np.concatenate([t["spikes"][:, :90] + 5, t["spikes"][:, 90:]], 1)}
        for t in trials
    ]
    assert not np.allclose(
        task_rates(model, past, "forward_prediction", None, None)[0][:, 90:], rates[:, 90:]
    )


@pytest.mark.parametrize("kind", ["mtm", "neds"])
def test_every_task_is_scored_per_session_and_averaged(models, test_data, kind):
    model = models[kind]
    trials = [t for s in test_data.session_ids[:2] for t in session_trials(test_data, s, 4)]
    report = evaluate_trials(
        model,
        trials,
        normalization=test_data.normalization,
        protocols=list(MTM_EVAL_TASKS),
        neuron_regions=test_data.neuron_regions,
        max_heldout_neurons=3,
        condition_fields=["choice"],
    )
    keys = {f"{task}_{metric}" for task in MTM_EVAL_TASKS for metric in MTM_TASK_METRICS}
    assert set(report.average) == keys  # no encoding / decoding / avg when not asked
    for scores in report.per_session.values():
        assert all(np.isfinite(scores[key]) for key in keys)
    first, second = report.per_session.values()
    assert report.average["co_smoothing_bps"] == pytest.approx(
        (first["co_smoothing_bps"] + second["co_smoothing_bps"]) / 2
    )
    assert {s: len(n) for s, n in report.heldout_neurons.items()} == dict.fromkeys(
        test_data.session_ids[:2], 3
    )
    # the card: one model-index task per MtM task, accepted by the hub's checks
    entries = report_to_eval_results(report, "synthetic")
    assert {e["task_type"] for e in entries} == {
        "spike-co-smoothing",
        "spike-forward-prediction",
        "spike-inter-region",
        "spike-intra-region",
    }
    assert len(to_eval_results(entries)) == len(keys)
    names = {e["metric_type"]: e["metric_name"] for e in entries}
    assert names["co_smoothing_r2_trial"] == "co-smoothing R² per trial"
    markdown = evaluation_markdown(report.per_session, report.average)
    assert "| **average** | inter-region |" in markdown and "PSTH R²" in markdown


def test_missing_prompt_or_regions_are_clear_errors(test_data):
    session_id = test_data.session_ids[0]
    trials = session_trials(test_data, session_id, 2)
    config = NedsConfig.for_mtm(test_data.n_neurons, prompt_schemes=["neuron", "causal"], **SIZES)
    model = NedsForMaskedModeling(config).eval()
    with pytest.raises(ValueError, match="'inter_region' prompt, which the model lacks"):
        evaluate_trials(model, trials, protocols=["inter_region"])
    mtm = NedsForMaskedModeling(NedsConfig.for_mtm(test_data.n_neurons, **SIZES)).eval()
    with pytest.raises(ValueError, match=f"session {session_id}: task 'intra_region' needs"):
        evaluate_trials(mtm, trials, protocols=["intra_region"])


def test_existing_protocols_are_unchanged_by_the_new_ones(models, test_data):
    trials = session_trials(test_data, test_data.session_ids[0], 4)
    common = dict(normalization=test_data.normalization)
    plain = evaluate_trials(models["neds"], trials, **common)
    both = evaluate_trials(
        models["neds"],
        trials,
        protocols=["encoding", "decoding", "forward_prediction"],
        **common,
    )
    for key, value in plain.average.items():
        assert both.average[key] == pytest.approx(value, nan_ok=True)
    assert plain.heldout_neurons is None and "heldout_neurons" not in plain.to_dict()


def test_evaluate_command_runs_the_mtm_tasks(models, synthetic_corpus, tmp_path, capsys):
    models["mtm"].save_pretrained(tmp_path / "model")
    code = cli_main(
        [
            "evaluate",
            str(tmp_path / "model"),
            "--dataset",
            str(synthetic_corpus["dataset_dir"]),
            "--protocols",
            "mtm",
            "--max-heldout-neurons",
            "2",
            "--seed",
            "5",
            "--output",
            str(tmp_path / "eval"),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "| **average** | co-smoothing |" in printed
    saved = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert saved["protocols"] == list(MTM_EVAL_TASKS)
    assert all(len(neurons) == 2 for neurons in saved["heldout_neurons"].values())
    assert saved["heldout_neurons"] == {
        session_id: choose_heldout_neurons(session_id, count, 2, seed=5)
        for session_id, count in models["mtm"].config.sessions.items()
    }
    assert "intra-region" in (tmp_path / "eval" / "evaluation.md").read_text()
    # the saved report feeds the card's model-index as it is (neds-hf push --eval-results)
    entries = load_eval_results(tmp_path / "eval" / "evaluation.json")
    assert {e["metric_type"] for e in entries} == set(saved["average"])
    assert {e["dataset_name"] for e in entries} == {str(synthetic_corpus["dataset_dir"])}


def test_evaluate_command_rejects_a_bad_cap(models, synthetic_corpus, tmp_path, capsys):
    models["mtm"].save_pretrained(tmp_path / "model")
    arguments = ["evaluate", str(tmp_path / "model"), "--dataset"]
    arguments += [str(synthetic_corpus["dataset_dir"]), "--protocols", "co_smoothing"]
    assert cli_main([*arguments, "--max-heldout-neurons", "0"]) == 2
    assert "--max-heldout-neurons must be >= 1, got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_main([*arguments[:-1], "smoothing"])

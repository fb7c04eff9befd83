"""Tests of neds_hf.metrics and its evaluate-library modules."""

from __future__ import annotations

import logging
import math
import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, balanced_accuracy_score, r2_score

from neds_hf.metrics import (
    accuracy,
    balanced_accuracy,
    bits_per_spike,
    evaluate_metric_path,
    poisson_nll,
    r2_flattened,
    r2_psth,
    region_probe,
)

# ---------------------------------------------------------------------------------------------
# Independent brute-force reference (plain Python loops, math module only)
# ---------------------------------------------------------------------------------------------


def brute_force_bits_per_spike(log_rates, counts, eval_mask=None):
    """Per-neuron bits per spike and the pooled value, by explicit loops over entries."""
    num_neurons = counts.shape[-1]
    flat_log_rates = log_rates.reshape(-1, num_neurons)
    flat_counts = counts.reshape(-1, num_neurons)
    flat_mask = (
        np.ones_like(flat_counts, dtype=bool)
        if eval_mask is None
        else np.broadcast_to(eval_mask, counts.shape).reshape(-1, num_neurons)
    )
    per_neuron = []
    pooled_null = pooled_model = pooled_spikes = 0.0
    for neuron in range(num_neurons):
        entries = [
            (float(flat_log_rates[row, neuron]), float(flat_counts[row, neuron]))
            for row in range(flat_counts.shape[0])
            if flat_mask[row, neuron] and not math.isnan(flat_counts[row, neuron])
        ]
        spikes = sum(count for _, count in entries)
        if not entries or spikes == 0:
            per_neuron.append(float("nan"))
            continue
        null_rate = spikes / len(entries)
        nll_model = sum(
            math.exp(log_rate) - count * log_rate + math.lgamma(count + 1)
            for log_rate, count in entries
        )
        nll_null = sum(
            null_rate - count * math.log(null_rate) + math.lgamma(count + 1) for _, count in entries
        )
        per_neuron.append((nll_null - nll_model) / (spikes * math.log(2)))
        pooled_null += nll_null
        pooled_model += nll_model
        pooled_spikes += spikes
    pooled = (pooled_null - pooled_model) / (pooled_spikes * math.log(2))
    return np.array(per_neuron), pooled


def make_poisson_data(seed=0, shape=(12, 20, 7), noise=0.3):
    """True log-rates, Poisson counts, and noisy predicted log-rates."""
    rng = np.random.default_rng(seed)
    true_log_rates = rng.normal(-0.5, 0.7, size=shape)  # (trials, T, N)
    counts = rng.poisson(np.exp(true_log_rates)).astype(np.float64)
    predicted_log_rates = true_log_rates + rng.normal(0.0, noise, size=shape)
    return true_log_rates, counts, predicted_log_rates


# ---------------------------------------------------------------------------------------------
# Bits per spike
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bits_per_spike_matches_brute_force(seed):
    _, counts, predicted = make_poisson_data(seed)
    counts[:, :, 3] = 0  # a silent neuron: NaN per neuron, excluded from both conventions
    expected_per_neuron, expected_pooled = brute_force_bits_per_spike(predicted, counts)

    mean_score, per_neuron = bits_per_spike(predicted, counts, return_per_neuron=True)
    np.testing.assert_allclose(per_neuron, expected_per_neuron, rtol=1e-10, equal_nan=True)
    assert np.isnan(per_neuron[3])
    assert mean_score == pytest.approx(np.nanmean(expected_per_neuron), rel=1e-10)

    pooled = bits_per_spike(predicted, counts, convention="pooled")
    assert pooled == pytest.approx(expected_pooled, rel=1e-10)


def test_bits_per_spike_rates_input_equals_log_input():
    _, counts, predicted = make_poisson_data(3)
    from_logs = bits_per_spike(predicted, counts, convention="pooled")
    from_rates = bits_per_spike(np.exp(predicted), counts, log_input=False, convention="pooled")
    assert from_rates == pytest.approx(from_logs, rel=1e-12)


def test_bits_per_spike_null_model_scores_zero():
    _, counts, _ = make_poisson_data(4)
    null_log_rates = np.broadcast_to(np.log(counts.mean(axis=(0, 1))), counts.shape)
    for convention in ("mean", "pooled"):
        assert bits_per_spike(null_log_rates, counts, convention=convention) == pytest.approx(
            0.0, abs=1e-12
        )
    # A worse-than-null model is negative.
    assert bits_per_spike(null_log_rates + 0.5, counts) < 0


def test_bits_per_spike_true_rates_match_expected_information():
    # Each neuron alternates between two rates; with the true rates as the model and a large
    # sample, bits per spike tends to the expected information per spike:
    # (low * ln(low / mean) + high * ln(high / mean)) / 2 / (mean * ln 2).
    rng = np.random.default_rng(5)
    low, high = np.array([0.2, 0.5, 4.0]), np.array([1.8, 1.5, 4.4])  # (N,)
    num_samples = 200_000
    is_high = (np.arange(num_samples) % 2).astype(bool)[:, None]  # (S, 1)
    rates = np.where(is_high, high, low)  # (S, N)
    counts = rng.poisson(rates).astype(np.float64)
    mean_rate = (low + high) / 2
    expected = (low * np.log(low / mean_rate) + high * np.log(high / mean_rate)) / 2
    expected = expected / (mean_rate * np.log(2))  # (N,)

    score, per_neuron = bits_per_spike(np.log(rates), counts, return_per_neuron=True)
    np.testing.assert_allclose(per_neuron, expected, rtol=0.03, atol=5e-4)
    assert score == pytest.approx(expected.mean(), rel=0.03)
    expected_pooled = (expected * mean_rate).sum() / mean_rate.sum()  # spike-weighted
    pooled = bits_per_spike(np.log(rates), counts, convention="pooled")
    assert pooled == pytest.approx(expected_pooled, rel=0.03)
    # Spike weighting makes the conventions differ here by design (0.12 vs 0.24 expected).
    assert abs(expected_pooled - expected.mean()) > 0.1
    assert abs(pooled - score) > 0.1


def test_bits_per_spike_eval_mask_equals_subset():
    _, counts, predicted = make_poisson_data(6)
    bin_mask = np.zeros((1, counts.shape[1], 1), dtype=bool)
    bin_mask[:, 5:] = True  # evaluate bins 5.. only, broadcast over trials and neurons
    for convention in ("mean", "pooled"):
        masked = bits_per_spike(predicted, counts, convention=convention, eval_mask=bin_mask)
        subset = bits_per_spike(predicted[:, 5:], counts[:, 5:], convention=convention)
        assert masked == pytest.approx(subset, rel=1e-12)


def test_bits_per_spike_entrywise_mask_matches_brute_force():
    _, counts, predicted = make_poisson_data(7)
    rng = np.random.default_rng(7)
    eval_mask = rng.random(counts.shape) < 0.6  # different entries per neuron
    expected_per_neuron, expected_pooled = brute_force_bits_per_spike(predicted, counts, eval_mask)
    score, per_neuron = bits_per_spike(
        predicted, counts, eval_mask=eval_mask, return_per_neuron=True
    )
    np.testing.assert_allclose(per_neuron, expected_per_neuron, rtol=1e-10)
    assert score == pytest.approx(np.mean(expected_per_neuron), rel=1e-10)
    pooled = bits_per_spike(predicted, counts, eval_mask=eval_mask, convention="pooled")
    assert pooled == pytest.approx(expected_pooled, rel=1e-10)
    # NaN counts are not evaluated: same result as masking those entries out.
    counts_with_nan = np.where(eval_mask, counts, np.nan)
    assert bits_per_spike(predicted, counts_with_nan, convention="pooled") == pytest.approx(
        expected_pooled, rel=1e-12
    )


def test_bits_per_spike_neuron_mask_equals_neuron_subset():
    _, counts, predicted = make_poisson_data(8)
    neuron_mask = np.array([True, False, True, True, False, False, True])
    for convention in ("mean", "pooled"):
        score, per_neuron = bits_per_spike(
            predicted,
            counts,
            convention=convention,
            neuron_mask=neuron_mask,
            return_per_neuron=True,
        )
        subset = bits_per_spike(
            predicted[..., neuron_mask], counts[..., neuron_mask], convention=convention
        )
        assert score == pytest.approx(subset, rel=1e-12)
        assert np.isnan(per_neuron[~neuron_mask]).all()
        assert not np.isnan(per_neuron[neuron_mask]).any()
    with pytest.raises(ValueError, match="neuron_mask must have shape"):
        bits_per_spike(predicted, counts, neuron_mask=neuron_mask[:3])


def test_bits_per_spike_shapes_and_torch_input():
    _, counts, predicted = make_poisson_data(9)
    score_3d = bits_per_spike(predicted, counts)
    score_2d = bits_per_spike(predicted.reshape(-1, 7), counts.reshape(-1, 7))
    assert score_2d == pytest.approx(score_3d, rel=1e-12)
    predicted_f32 = predicted.astype(np.float32)
    score_torch = bits_per_spike(torch.from_numpy(predicted_f32), torch.from_numpy(counts))
    assert score_torch == pytest.approx(bits_per_spike(predicted_f32, counts), rel=1e-12)
    score_bf16 = bits_per_spike(torch.from_numpy(predicted).to(torch.bfloat16), counts)
    assert score_bf16 == pytest.approx(score_3d, abs=0.05)  # bf16 rounding of the log-rates
    with pytest.raises(ValueError, match="does not match spike_counts shape"):
        bits_per_spike(predicted[:, :-1], counts)
    with pytest.raises(ValueError, match="cannot be broadcast"):
        bits_per_spike(predicted, counts, eval_mask=np.ones((3, 3), dtype=bool))
    with pytest.raises(ValueError, match="convention"):
        bits_per_spike(predicted, counts, convention="median")


def test_bits_per_spike_nan_and_infinite_handling():
    _, counts, predicted = make_poisson_data(10)
    # Infinite predicted rate -> that neuron is NaN and excluded from the mean; pooled is NaN.
    predicted_inf = predicted.copy()
    predicted_inf[0, 0, 2] = np.inf
    score, per_neuron = bits_per_spike(predicted_inf, counts, return_per_neuron=True)
    assert np.isnan(per_neuron[2])
    others = np.delete(bits_per_spike(predicted, counts, return_per_neuron=True)[1], 2)
    assert score == pytest.approx(others.mean(), rel=1e-12)
    assert math.isnan(bits_per_spike(predicted_inf, counts, convention="pooled"))
    # No spikes at all -> NaN in both conventions, without warnings.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert math.isnan(bits_per_spike(predicted, np.zeros_like(counts)))
        assert math.isnan(bits_per_spike(predicted, np.zeros_like(counts), convention="pooled"))
    # Bad input is an error, not a number.
    predicted_nan = predicted.copy()
    predicted_nan[1, 1, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        bits_per_spike(predicted_nan, counts)
    with pytest.raises(ValueError, match="non-negative"):
        bits_per_spike(predicted, -counts - 1)
    with pytest.raises(ValueError, match="non-negative"):
        bits_per_spike(-np.exp(predicted), counts, log_input=False)


def test_zero_rates_are_floored():
    counts = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 1.0]])  # (S, N)
    rates = np.array([[0.0, 0.5], [0.5, 1.0], [2.0, 0.0]])
    floored = np.where(rates == 0, 1e-9, rates)
    expected_per_neuron, _ = brute_force_bits_per_spike(np.log(floored), counts)
    _, per_neuron = bits_per_spike(rates, counts, log_input=False, return_per_neuron=True)
    np.testing.assert_allclose(per_neuron, expected_per_neuron, rtol=1e-10)
    # Underflowing log-rates are floored the same way.
    log_rates = np.where(rates == 0, -1000.0, np.log(np.where(rates == 0, 1.0, rates)))
    _, per_neuron_logs = bits_per_spike(log_rates, counts, return_per_neuron=True)
    np.testing.assert_allclose(per_neuron_logs, expected_per_neuron, rtol=1e-10)


def test_poisson_nll_matches_loop():
    _, counts, predicted = make_poisson_data(11, shape=(4, 5, 3))
    expected = [
        sum(
            math.exp(lr) - y * lr + math.lgamma(y + 1)
            for lr, y in zip(predicted[..., n].ravel(), counts[..., n].ravel())
        )
        for n in range(3)
    ]
    np.testing.assert_allclose(
        poisson_nll(predicted, counts, per_neuron=True), expected, rtol=1e-12
    )
    assert poisson_nll(predicted, counts) == pytest.approx(sum(expected), rel=1e-12)


def test_pooled_bits_per_spike_matches_ibl_bwb_eval():
    bwb_metrics = pytest.importorskip(
        "ibl_bwb_eval.metrics",
        reason="ibl-bwb-eval is not installed (install with: "
        "pip install torchmetrics rich && pip install --no-deps ibl-bwb-eval==0.1.0)",
    )
    rng = np.random.default_rng(12)
    shape = (30, 50, 16)  # (trials, T, N)
    # Heterogeneous units (mean rates and prediction quality differ) so that the pooled and the
    # mean-over-neurons conventions give clearly different numbers.
    true_log_rates = rng.normal(np.linspace(-2.5, 1.0, 16), 0.7, size=shape)
    counts = rng.poisson(np.exp(true_log_rates)).astype(np.float64)
    predicted = true_log_rates + rng.normal(0.0, np.linspace(0.9, 0.05, 16), size=shape)
    counts[..., 5] = 0  # a silent unit, excluded by both (null rate < 1e-9)
    metric = bwb_metrics.BPS()
    for trial in range(counts.shape[0]):  # BPS updates on (T, N)
        metric.update(
            torch.from_numpy(predicted[trial]).float(), torch.from_numpy(counts[trial]).float()
        )
    reference = float(metric.compute())
    ours = bits_per_spike(predicted, counts, convention="pooled")
    assert ours == pytest.approx(reference, rel=1e-4)
    # The mean-over-neurons convention is a different number on the same data.
    assert abs(bits_per_spike(predicted, counts, convention="mean") - reference) > 0.02


# ---------------------------------------------------------------------------------------------
# R², accuracy
# ---------------------------------------------------------------------------------------------


def test_r2_flattened_matches_sklearn():
    rng = np.random.default_rng(13)
    target = rng.normal(size=(15, 40))  # (trials, T)
    pred = 0.7 * target + rng.normal(scale=0.5, size=target.shape)
    assert r2_flattened(pred, target) == pytest.approx(
        r2_score(target.ravel(), pred.ravel()), rel=1e-12
    )
    target_3d = rng.normal(size=(15, 40, 3))  # (trials, T, D)
    pred_3d = target_3d + rng.normal(scale=[0.2, 0.6, 1.5], size=target_3d.shape)
    flat_target, flat_pred = target_3d.reshape(-1, 3), pred_3d.reshape(-1, 3)
    assert r2_flattened(pred_3d, target_3d) == pytest.approx(
        r2_score(flat_target, flat_pred), rel=1e-12
    )
    np.testing.assert_allclose(
        r2_flattened(pred_3d, target_3d, multioutput="raw_values"),
        r2_score(flat_target, flat_pred, multioutput="raw_values"),
        rtol=1e-12,
    )
    # Constant targets follow r2_score's force_finite rule.
    constant = np.full((3, 4), 2.0)
    assert r2_flattened(constant, constant) == r2_score(constant.ravel(), constant.ravel()) == 1.0
    assert (
        r2_flattened(constant + 1, constant)
        == r2_score(constant.ravel(), constant.ravel() + 1)
        == 0.0
    )
    # Torch input.
    assert r2_flattened(torch.from_numpy(pred), torch.from_numpy(target)) == pytest.approx(
        r2_flattened(pred, target), rel=1e-12
    )
    with pytest.raises(ValueError, match="does not match"):
        r2_flattened(pred[:, :-1], target)
    with pytest.raises(ValueError, match="finite"):
        r2_flattened(np.full_like(pred, np.nan), target)


def test_r2_psth_hand_computed():
    # 4 trials of 2 bins; conditions (choice, block): trials 0 and 2 share (0, 1); 1 and 3 (1, 0).
    target = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 5.0], [4.0, 6.0]])
    pred = np.array([[2.0, 4.0], [3.0, 3.0], [2.0, 4.0], [3.0, 5.0]])
    conditions = np.array([[0, 1], [1, 0], [0, 1], [1, 0]])
    # Condition means in sorted condition order: (0, 1) -> rows 0 and 2; (1, 0) -> rows 1 and 3.
    # (0, 1): target [2, 4], pred [2, 4]; (1, 0): target [3, 4], pred [3, 4].
    # Perfect match of the means -> R² = 1.
    assert r2_psth(pred, target, conditions) == pytest.approx(1.0)
    pred_off = pred.copy()
    pred_off[[1, 3]] += 1.0  # (1, 0) mean prediction becomes [4, 5]
    # Concatenated target means [2, 4, 3, 4] (mean 3.25, SS_tot 2.75); predictions [2, 4, 4, 5]:
    # SS_res = 0 + 0 + 1 + 1 = 2 -> R² = 1 - 2 / 2.75.
    assert r2_psth(pred_off, target, conditions) == pytest.approx(1 - 2 / 2.75)
    # Single-trial R² of the same predictions is a different number.
    assert r2_flattened(pred_off, target) != pytest.approx(1 - 2 / 2.75)
    # String and object labels group the same way.
    named = np.array([["left", "high"], ["right", "low"], ["left", "high"], ["right", "low"]])
    assert r2_psth(pred_off, target, named) == pytest.approx(1 - 2 / 2.75)
    assert r2_psth(pred_off, target, named.astype(object)) == pytest.approx(1 - 2 / 2.75)
    with pytest.raises(ValueError, match="conditions"):
        r2_psth(pred, target, conditions[:3])


def test_accuracy_and_balanced_accuracy_match_sklearn():
    rng = np.random.default_rng(14)
    target = rng.choice(3, size=200, p=[0.6, 0.3, 0.1])
    pred = np.where(rng.random(200) < 0.7, target, rng.integers(0, 3, size=200))
    assert accuracy(pred, target) == pytest.approx(accuracy_score(target, pred))
    assert balanced_accuracy(pred, target) == pytest.approx(balanced_accuracy_score(target, pred))
    # Logits are reduced by argmax.
    logits = np.eye(3)[pred] + rng.normal(scale=0.01, size=(200, 3))
    assert balanced_accuracy(logits, target) == pytest.approx(balanced_accuracy_score(target, pred))
    assert accuracy(torch.from_numpy(logits), torch.from_numpy(target)) == pytest.approx(
        accuracy_score(target, pred)
    )
    # A class never predicted counts with recall 0.
    never_predicted = np.array([0, 0, 1, 1, 2, 2])
    preds = np.array([0, 0, 1, 0, 0, 1])
    assert balanced_accuracy(preds, never_predicted) == pytest.approx(
        balanced_accuracy_score(never_predicted, preds)
    )
    assert balanced_accuracy(preds, never_predicted) == pytest.approx((1 + 0.5 + 0) / 3)
    # A class only predicted (absent from the targets) is left out of the mean, as in sklearn.
    targets_two = np.array([0, 0, 1, 1])
    preds_three = np.array([0, 2, 1, 1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        expected = balanced_accuracy_score(targets_two, preds_three)
    assert balanced_accuracy(preds_three, targets_two) == pytest.approx(expected)
    assert expected == pytest.approx((0.5 + 1.0) / 2)
    with pytest.raises(ValueError, match="predictions for"):
        accuracy(pred[:-1], target)


# ---------------------------------------------------------------------------------------------
# Region probe
# ---------------------------------------------------------------------------------------------


def test_region_probe_separable_embeddings():
    rng = np.random.default_rng(15)
    labels = np.repeat(np.array(["CA1", "DG", "LP", "PO", "VISa"]), 30)
    centres = rng.normal(scale=4.0, size=(5, 8))
    embeddings = centres[np.repeat(np.arange(5), 30)] + rng.normal(size=(150, 8))
    result = region_probe(embeddings, labels, n_splits=5, seed=0)
    assert result["accuracy"] > 0.95
    assert result["macro_f1"] > 0.95
    assert result["n_neurons"] == 150 and result["n_classes"] == 5
    assert result["dropped_classes"] == {}
    assert result["chance_accuracy"] == pytest.approx(0.2)
    svm = region_probe(embeddings, labels, classifier="linear_svm")
    assert svm["accuracy"] > 0.95
    # Deterministic for a seed.
    assert region_probe(embeddings, labels, seed=0) == result


def test_region_probe_random_embeddings_near_chance():
    rng = np.random.default_rng(16)
    labels = rng.choice(["CA1", "DG", "LP", "PO"], size=400)
    embeddings = rng.normal(size=(400, 6))
    result = region_probe(embeddings, labels)
    assert abs(result["accuracy"] - 0.25) < 0.08
    assert result["accuracy"] < 0.35


def test_region_probe_reports_dropped_classes(caplog):
    rng = np.random.default_rng(17)
    labels = np.array(["CA1"] * 20 + ["DG"] * 20 + ["LP"] * 3 + ["PO"] * 1)
    embeddings = rng.normal(size=(44, 4))
    with caplog.at_level(logging.WARNING, logger="neds_hf.metrics"):
        result = region_probe(embeddings, labels, n_splits=5)
    assert result["dropped_classes"] == {"LP": 3, "PO": 1}
    assert result["n_neurons_dropped"] == 4
    assert result["n_neurons"] == 40 and result["classes"] == ["CA1", "DG"]
    assert "LP" in caplog.text and "PO" in caplog.text
    with pytest.raises(ValueError, match="at least 2 classes"):
        region_probe(embeddings[20:], labels[20:], n_splits=5)
    with pytest.raises(ValueError, match="one label per neuron"):
        region_probe(embeddings, labels[:-1])


# ---------------------------------------------------------------------------------------------
# evaluate modules
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def offline_evaluate(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_EVALUATE_OFFLINE", "1")
    evaluate = pytest.importorskip("evaluate")
    monkeypatch.setattr(evaluate.config, "HF_EVALUATE_OFFLINE", True)
    return evaluate


def test_evaluate_bits_per_spike_module(offline_evaluate):
    _, counts, predicted = make_poisson_data(18)
    metric = offline_evaluate.load(evaluate_metric_path("bits_per_spike"))
    for convention in ("mean", "pooled"):
        result = metric.compute(predictions=predicted, references=counts, convention=convention)
        assert result["bits_per_spike"] == pytest.approx(
            bits_per_spike(predicted, counts, convention=convention), rel=1e-12
        )
    # Batched accumulation over trials gives the same value.
    for start in range(0, counts.shape[0], 5):
        metric.add_batch(
            predictions=predicted[start : start + 5], references=counts[start : start + 5]
        )
    batched = metric.compute(convention="pooled", return_per_neuron=True)
    assert batched["bits_per_spike"] == pytest.approx(
        bits_per_spike(predicted, counts, convention="pooled"), rel=1e-12
    )
    assert len(batched["per_neuron"]) == counts.shape[-1]
    # One example per sample (N,) works as well.
    flat = metric.compute(predictions=predicted.reshape(-1, 7), references=counts.reshape(-1, 7))
    assert flat["bits_per_spike"] == pytest.approx(bits_per_spike(predicted, counts), rel=1e-12)


def test_evaluate_r2_and_accuracy_modules(offline_evaluate):
    rng = np.random.default_rng(19)
    target = rng.normal(size=(12, 30))
    pred = target + rng.normal(size=target.shape)
    conditions = np.arange(12) % 3
    r2_metric = offline_evaluate.load(evaluate_metric_path("r2"))
    result = r2_metric.compute(predictions=pred, references=target, conditions=conditions)
    assert result["r2"] == pytest.approx(r2_flattened(pred, target), rel=1e-12)
    assert result["r2_psth"] == pytest.approx(r2_psth(pred, target, conditions), rel=1e-12)
    flat = r2_metric.compute(predictions=pred.ravel(), references=target.ravel())
    assert flat["r2"] == pytest.approx(r2_flattened(pred, target), rel=1e-12)

    labels = rng.integers(0, 3, size=50)
    predicted_labels = np.where(rng.random(50) < 0.6, labels, 0)
    balanced = offline_evaluate.load(evaluate_metric_path("balanced_accuracy"))
    assert balanced.compute(predictions=predicted_labels, references=labels)[
        "balanced_accuracy"
    ] == pytest.approx(balanced_accuracy(predicted_labels, labels))
    plain = offline_evaluate.load(evaluate_metric_path("accuracy"))
    assert plain.compute(predictions=predicted_labels, references=labels)[
        "accuracy"
    ] == pytest.approx(accuracy(predicted_labels, labels))


def test_evaluate_metric_path_unknown_name():
    with pytest.raises(ValueError, match="available"):
        evaluate_metric_path("perplexity")


_BLOCKED_LOAD = """
import importlib.abc, importlib.util, sys

class BlockNedsHf(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "neds_hf" or name.startswith("neds_hf."):
            raise ImportError(f"neds_hf import blocked: {name}")
        return None

sys.meta_path.insert(0, BlockNedsHf())
spec = importlib.util.spec_from_file_location("standalone_metric", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
print("loaded", sys.argv[1])
"""


@pytest.mark.parametrize("name", ["accuracy", "balanced_accuracy", "bits_per_spike", "r2"])
def test_evaluate_module_loads_without_neds_hf(name):
    """Each metric module loads on its own (evaluate copies it out of the package)."""
    import subprocess
    import sys

    module_file = f"{evaluate_metric_path(name)}/{name}.py"
    completed = subprocess.run(
        [sys.executable, "-c", _BLOCKED_LOAD, module_file],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "loaded" in completed.stdout


def test_evaluate_bits_per_spike_module_masks_match(offline_evaluate):
    """The stand-alone module's masks and per-neuron values agree with neds_hf.metrics."""
    _, counts, predicted = make_poisson_data(21)
    neuron_mask = np.arange(counts.shape[-1]) % 2 == 0
    eval_mask = np.random.default_rng(21).random(counts.shape) < 0.7
    metric = offline_evaluate.load(evaluate_metric_path("bits_per_spike"))
    for convention in ("mean", "pooled"):
        result = metric.compute(
            predictions=predicted,
            references=counts,
            convention=convention,
            neuron_mask=neuron_mask,
            eval_mask=eval_mask,
            return_per_neuron=True,
        )
        expected, per_neuron = bits_per_spike(
            predicted,
            counts,
            convention=convention,
            neuron_mask=neuron_mask,
            eval_mask=eval_mask,
            return_per_neuron=True,
        )
        assert result["bits_per_spike"] == pytest.approx(expected, rel=1e-12)
        np.testing.assert_allclose(result["per_neuron"], per_neuron, rtol=1e-12)

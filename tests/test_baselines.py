"""Tests of neds_hf.baselines on synthetic data with a known linear structure."""

from __future__ import annotations

import numpy as np
import pytest

from neds_hf.baselines import (
    GLM_L2_GRID,
    fit_linear_baselines,
    fit_linear_encoder,
    fit_logistic_decoder,
    fit_poisson_glm_encoder,
    fit_ridge_decoder,
    neuron_features,
)
from neds_hf.metrics import balanced_accuracy, bits_per_spike, r2_flattened, region_probe

NUM_TRIALS, NUM_BINS, NUM_NEURONS = 120, 25, 20


def make_encoding_data(seed=0, num_trials=NUM_TRIALS):
    """Rates linear (rank 2) in two smooth behaviours plus a choice offset; Poisson counts."""
    rng = np.random.default_rng(seed)
    time = np.linspace(0, 1, NUM_BINS)
    phases = rng.uniform(0, 2 * np.pi, size=(num_trials, 2, 1))
    speeds = rng.uniform(1, 3, size=(num_trials, 2, 1))
    behaviours = np.sin(2 * np.pi * speeds * time + phases).transpose(0, 2, 1)  # (trials, T, 2)
    choice = rng.integers(0, 2, size=num_trials)  # (trials,)
    loadings = rng.normal(0, 0.6, size=(2, NUM_NEURONS))  # rank-2 behaviour -> neuron map
    choice_effect = rng.normal(0, 0.4, size=NUM_NEURONS)
    baseline = rng.uniform(1.5, 3.0, size=NUM_NEURONS)
    rates = (
        baseline + behaviours @ loadings + choice[:, None, None] * choice_effect
    )  # (trials, T, N)
    rates = np.clip(rates, 0.05, None)
    counts = rng.poisson(rates).astype(np.float64)
    return behaviours, choice, rates, counts


@pytest.mark.parametrize("method", ["rrr", "ridge"])
def test_linear_encoder_recovers_rates(method):
    behaviours, choice, true_rates, counts = make_encoding_data(0)
    train, test = slice(0, 90), slice(90, None)
    encoder = fit_linear_encoder(
        behaviours[train],
        counts[train],
        trial_labels=choice[train],
        method=method,
        rank=3,
        l2=10.0,
        smooth_sigma=None,
        include_time=False,
    )
    predicted = encoder.predict_rates(behaviours[test], trial_labels=choice[test])
    assert predicted.shape == counts[test].shape
    assert predicted.min() >= 1e-3
    # Held-out predicted rates explain most of the variance of the true rates.
    assert (
        r2_flattened(predicted.reshape(-1, NUM_NEURONS), true_rates[test].reshape(-1, NUM_NEURONS))
        > 0.9
    )
    # Bits per spike close to the oracle (true rates) and far above the null (0).
    oracle = bits_per_spike(true_rates[test], counts[test], log_input=False)
    score = bits_per_spike(predicted, counts[test], log_input=False)
    assert oracle > 0.05
    assert score > 0.9 * oracle
    if method == "rrr":
        # The true map has rank 3 (two behaviours and the choice): rank 1 cannot capture it.
        rank_one = fit_linear_encoder(
            behaviours[train],
            counts[train],
            trial_labels=choice[train],
            rank=1,
            l2=10.0,
            smooth_sigma=None,
            include_time=False,
        )
        predicted_rank_one = rank_one.predict_rates(behaviours[test], trial_labels=choice[test])
        assert bits_per_spike(predicted_rank_one, counts[test], log_input=False) < 0.8 * score


def test_rrr_rank_and_smoothing_options():
    behaviours, choice, _, counts = make_encoding_data(1)
    encoder = fit_linear_encoder(behaviours, counts, trial_labels=choice, rank=2, smooth_sigma=2.0)
    # include_time=True adds one column per bin to the design: 2 behaviours + 2 choices + T bins.
    assert encoder.coefficients.shape == (2 + 2 + NUM_BINS, NUM_NEURONS)
    assert np.linalg.matrix_rank(encoder.coefficients, tol=1e-8) == 2
    rates = encoder.predict_rates(behaviours, trial_labels=choice)
    assert rates.shape == counts.shape and np.isfinite(rates).all()
    # Deterministic.
    again = fit_linear_encoder(behaviours, counts, trial_labels=choice, rank=2, smooth_sigma=2.0)
    np.testing.assert_array_equal(again.coefficients, encoder.coefficients)


def test_linear_encoder_bad_input():
    behaviours, choice, _, counts = make_encoding_data(2, num_trials=20)
    with pytest.raises(ValueError, match="does not match"):
        fit_linear_encoder(behaviours[:10], counts)
    with pytest.raises(ValueError, match="rank"):
        fit_linear_encoder(behaviours, counts, rank=NUM_NEURONS + 1)
    encoder = fit_linear_encoder(behaviours, counts, trial_labels=choice)
    with pytest.raises(ValueError, match="not in the training trials"):
        encoder.predict_rates(behaviours, trial_labels=np.full(20, 7))
    with pytest.raises(ValueError, match="trial-label columns"):
        encoder.predict_rates(behaviours)
    with pytest.raises(ValueError, match="NaN"):
        fit_linear_encoder(np.full_like(behaviours, np.nan), counts)


def make_decoding_data(seed=0, num_trials=NUM_TRIALS):
    """Counts whose rates are linear in a wheel-like behaviour and in a binary choice."""
    rng = np.random.default_rng(seed)
    time = np.linspace(0, 1, NUM_BINS)
    wheel = np.sin(2 * np.pi * rng.uniform(0.5, 2, size=(num_trials, 1)) * time)  # (trials, T)
    choice = rng.integers(0, 2, size=num_trials)  # (trials,)
    wheel_loading = rng.normal(0, 1.5, size=NUM_NEURONS)
    choice_loading = rng.normal(0, 1.0, size=NUM_NEURONS)
    rates = 4.0 + wheel[:, :, None] * wheel_loading + choice[:, None, None] * choice_loading
    counts = rng.poisson(np.clip(rates, 0.05, None)).astype(np.float64)  # (trials, T, N)
    return counts, wheel, choice


def test_ridge_decoder_recovers_behaviour():
    counts, wheel, _ = make_decoding_data(3)
    train, test = slice(0, 90), slice(90, None)
    decoder = fit_ridge_decoder(counts[train], wheel[train])
    predicted = decoder.predict(counts[test])
    assert predicted.shape == wheel[test].shape
    score = r2_flattened(predicted, wheel[test])
    assert score > 0.7
    assert decoder.alphas.shape == (NUM_BINS,)
    # Neighbouring bins add evidence.
    with_context = fit_ridge_decoder(counts[train], wheel[train], context_bins=1)
    assert r2_flattened(with_context.predict(counts[test]), wheel[test]) > 0.7
    # With trials shuffled against the behaviour only the per-bin mean trace is learnt.
    rng = np.random.default_rng(0)
    shuffled = fit_ridge_decoder(counts[train][rng.permutation(90)], wheel[train])
    assert r2_flattened(shuffled.predict(counts[test]), wheel[test]) < score - 0.3
    with pytest.raises(ValueError, match="decoder expects"):
        decoder.predict(counts[test][:, :, :5])


def test_logistic_decoder_beats_chance():
    counts, _, choice = make_decoding_data(4)
    train, test = slice(0, 90), slice(90, None)
    decoder = fit_logistic_decoder(counts[train], choice[train], seed=0)
    predicted = decoder.predict(counts[test])
    assert balanced_accuracy(predicted, choice[test]) > 0.8
    probabilities = decoder.predict_proba(counts[test])
    assert probabilities.shape == (30, 2)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)
    np.testing.assert_array_equal(decoder.classes, [0, 1])
    # Deterministic for a seed.
    again = fit_logistic_decoder(counts[train], choice[train], seed=0)
    np.testing.assert_array_equal(again.predict_proba(counts[test]), probabilities)
    # Labels unrelated to activity stay near chance.
    random_labels = np.random.default_rng(1).integers(0, 2, size=NUM_TRIALS)
    chance = fit_logistic_decoder(counts[train], random_labels[train])
    assert balanced_accuracy(chance.predict(counts[test]), random_labels[test]) < 0.75


def test_logistic_decoder_bad_input():
    counts, _, choice = make_decoding_data(5, num_trials=20)
    with pytest.raises(ValueError, match="at least 2 classes"):
        fit_logistic_decoder(counts, np.zeros(20, dtype=int))
    with pytest.raises(ValueError, match="labels for"):
        fit_logistic_decoder(counts, choice[:10])
    labels = np.zeros(20, dtype=int)
    labels[0] = 1
    with pytest.raises(ValueError, match="at least 2 trials"):
        fit_logistic_decoder(counts, labels)


def test_oracle_expected_counts_names_a_missing_ground_truth_array():
    import pandas as pd

    from neds_hf.baselines import oracle_expected_counts

    truth = {
        "eid": "abc",
        "cluster_probe": np.array(["probe00", "probe00"]),
        "cluster_id": np.array([0, 1]),
        "expected_counts": np.arange(2 * 2 * 3, dtype=float).reshape(2, 2, 3),  # (n, C, T)
    }
    neurons = pd.DataFrame({"probe": ["probe00"], "cluster_id": [1]})
    counts = oracle_expected_counts(truth, neurons, np.array([1]))
    assert counts.shape == (1, 3, 1)
    np.testing.assert_array_equal(counts[0, :, 0], truth["expected_counts"][1, 1])
    with pytest.raises(ValueError, match=r"abc.*no 'expected_counts_observed'"):
        oracle_expected_counts(truth, neurons, np.array([1]), array="expected_counts_observed")


def test_true_neuron_parameters_follow_the_dataset_neurons():
    """Rows are the dataset's neurons, matched by (probe, cluster_id) whatever their order."""
    import pandas as pd

    from neds_hf.baselines import true_neuron_parameters

    truth = {
        "eid": "abc",
        "cluster_probe": np.array(["probe00", "probe00", "probe01"]),
        "cluster_id": np.array([0, 1, 0]),
        "cluster_base_rate_hz": np.array([1.0, 2.0, 4.0]),
        "cluster_covariate_weights": np.arange(6, dtype=float).reshape(3, 2),  # (C, covariates)
        "cluster_latent_loadings": -np.arange(3, dtype=float).reshape(3, 1),  # (C, latents)
    }
    neurons = pd.DataFrame({"probe": ["probe01", "probe00"], "cluster_id": [0, 1]})
    parameters = true_neuron_parameters(truth, neurons)
    np.testing.assert_allclose(parameters, [[np.log(4.0), 4, 5, -2], [np.log(2.0), 2, 3, -1]])
    with pytest.raises(ValueError, match=r"abc.*\('probe01', 1\)"):
        true_neuron_parameters(truth, pd.DataFrame({"probe": ["probe01"], "cluster_id": [1]}))
    del truth["cluster_latent_loadings"]
    with pytest.raises(ValueError, match=r"abc.*cluster_latent_loadings"):
        true_neuron_parameters(truth, neurons)


def make_log_linear_data(seed=0, num_trials=NUM_TRIALS):
    """Rates exp(linear) in two behaviours plus a choice offset and a time course."""
    rng = np.random.default_rng(seed)
    behaviours = rng.normal(size=(num_trials, NUM_BINS, 2))  # (trials, T, 2)
    choice = rng.integers(0, 2, size=num_trials)
    weights = rng.normal(0, 0.4, size=(2, NUM_NEURONS))
    choice_effect = rng.normal(0, 0.3, size=NUM_NEURONS)
    time_course = 0.5 * np.sin(np.linspace(0, 2 * np.pi, NUM_BINS))[None, :, None]
    log_rates = behaviours @ weights + choice[:, None, None] * choice_effect + time_course
    rates = np.exp(log_rates + rng.uniform(-0.5, 0.5, size=NUM_NEURONS))  # (trials, T, N)
    return behaviours, choice, weights, rates, rng.poisson(rates).astype(np.float64)


def test_poisson_glm_recovers_log_linear_rates_and_beats_linear_encoder():
    behaviours, choice, weights, rates, counts = make_log_linear_data(0)
    train, test = slice(0, 90), slice(90, None)
    glm = fit_poisson_glm_encoder(behaviours[train], counts[train], trial_labels=choice[train])
    assert glm.alpha in GLM_L2_GRID
    # The behaviour weights (first two design columns, on standardised behaviours) match.
    scale = behaviours[train].reshape(-1, 2).std(axis=0)[:, None]
    assert np.corrcoef(glm.coefficients[:2].ravel(), (weights * scale).ravel())[0, 1] > 0.98
    predicted = glm.predict_rates(behaviours[test], trial_labels=choice[test])
    assert predicted.shape == counts[test].shape and predicted.min() >= 1e-3
    oracle = bits_per_spike(rates[test], counts[test], log_input=False)
    score = bits_per_spike(predicted, counts[test], log_input=False)
    linear = fit_linear_encoder(
        behaviours[train], counts[train], trial_labels=choice[train], method="ridge"
    ).predict_rates(behaviours[test], trial_labels=choice[test])
    assert score > 0.95 * oracle
    assert score > bits_per_spike(linear, counts[test], log_input=False) + 0.05


def test_poisson_glm_bad_input():
    behaviours, choice, _, _, counts = make_log_linear_data(1, num_trials=20)
    with pytest.raises(ValueError, match="l2_grid"):
        fit_poisson_glm_encoder(behaviours, counts, l2_grid=[])
    with pytest.raises(ValueError, match="validation_fraction"):
        fit_poisson_glm_encoder(behaviours, counts, validation_fraction=1.0)
    with pytest.raises(ValueError, match="does not match"):
        fit_poisson_glm_encoder(behaviours[:10], counts)
    glm = fit_poisson_glm_encoder(behaviours, counts, l2_grid=[1e-3])
    assert glm.alpha == 1e-3
    with pytest.raises(ValueError, match="trial-label columns"):
        glm.predict_rates(behaviours, trial_labels=choice)


def test_neuron_features_separate_neurons_by_tuning():
    """Two groups of neurons tuned to different behaviours: a probe on the features (log rate
    and GLM weights) tells them apart, one on the log rate alone cannot."""
    rng = np.random.default_rng(3)
    behaviours = rng.normal(size=(100, NUM_BINS, 2))
    group = np.repeat([0, 1], NUM_NEURONS // 2)  # (N,)
    weights = np.zeros((2, NUM_NEURONS))
    weights[0, group == 0] = 0.5
    weights[1, group == 1] = 0.5
    counts = rng.poisson(np.exp(behaviours @ weights)).astype(np.float64)
    glm = fit_poisson_glm_encoder(behaviours, counts, include_time=False)
    features = neuron_features(counts, glm)
    assert features.shape == (NUM_NEURONS, 3)
    assert region_probe(features, group, n_splits=5)["accuracy"] == 1.0
    assert region_probe(features[:, :1], group, n_splits=5)["accuracy"] < 0.8
    with pytest.raises(ValueError, match="neurons"):
        neuron_features(counts[..., :5], glm)


def test_fit_linear_baselines_adds_the_poisson_glm_on_request():
    behaviours, choice, _, _, counts = make_log_linear_data(2)
    modalities = [
        {"name": "a", "kind": "continuous", "trial_level": False},
        {"name": "b", "kind": "continuous", "trial_level": False},
        {"name": "choice", "kind": "categorical", "trial_level": True},
    ]

    def arrays(rows):
        return {
            "spikes": counts[rows],
            "a": behaviours[rows, :, 0],
            "b": behaviours[rows, :, 1],
            "choice": choice[rows],
        }

    plain = fit_linear_baselines(arrays(slice(0, 90)), arrays(slice(90, None)), modalities, 0)
    assert plain.glm is None and plain.glm_rates is None
    with_glm = fit_linear_baselines(
        arrays(slice(0, 90)), arrays(slice(90, None)), modalities, 0, poisson_glm=True
    )
    assert with_glm.glm_rates.shape == counts[90:].shape
    np.testing.assert_allclose(
        with_glm.glm_rates,
        with_glm.glm.predict_rates(behaviours[90:], trial_labels=choice[90:, None]),
    )

"""Fitted readouts for new sessions (`fit_session_readouts`) and the Poisson regression under it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from training_helpers import tiny_args, train_losses

from neds_hf.baselines import fit_poisson_regression
from neds_hf.collator import DataCollatorForNedsMasking
from neds_hf.data.training_data import NedsTrialDataset
from neds_hf.modeling_neds import NedsForMaskedModeling
from neds_hf.training import NedsTrainingArguments, train
from neds_hf.training.readout_fit import READOUT_L2_GRID, encoding_features, fit_session_readouts


@pytest.fixture(scope="module")
def pretrained_dir(synthetic_corpus, tmp_path_factory):
    """A short pretraining run on the corpus's pretraining sessions."""
    output_dir = tmp_path_factory.mktemp("readout_pretrain")
    result = train(tiny_args(synthetic_corpus, output_dir, max_steps=30, learning_rate=3e-3))
    return result.model_dir


def _heldout_model(pretrained_dir, heldout: list[str], counts: dict[str, int]):
    model = NedsForMaskedModeling.from_pretrained(pretrained_dir)
    model.add_sessions(counts)
    model.keep_sessions(heldout)
    return model


def _encoding_nll(model, trials, normalization) -> float:
    """Mean Poisson NLL (up to the count-only term) of the encoding protocol on `trials`."""
    features, counts = encoding_features(model, trials, normalization)
    readout = model.spike_readout.session_neurons.session_weight(0).detach().double().numpy()
    log_rates = features @ readout[:, :-1].T + readout[:, -1]  # (trials * T, n)
    return float((np.exp(log_rates) - counts[:, : readout.shape[0]] * log_rates).mean())


def test_poisson_regression_recovers_weights_and_refuses_bad_shapes():
    rng = np.random.default_rng(0)
    num_trials, num_bins, num_features, num_neurons = 60, 20, 4, 3
    design = rng.normal(size=(num_trials * num_bins, num_features))
    weights = rng.normal(scale=0.4, size=(num_features, num_neurons))
    counts = rng.poisson(np.exp(design @ weights + 0.5)).astype(np.float64)
    fitted, alpha = fit_poisson_regression(design, counts, num_bins, l2_grid=(1e-5, 1e-1))
    assert alpha in (1e-5, 1e-1)
    np.testing.assert_allclose(fitted[:-1], weights, atol=0.08)
    np.testing.assert_allclose(fitted[-1], 0.5, atol=0.08)
    with pytest.raises(ValueError, match="share their rows"):
        fit_poisson_regression(design[:-1], counts, num_bins)
    with pytest.raises(ValueError, match="not whole trials of 7 bins"):
        fit_poisson_regression(design, counts, 7)
    with pytest.raises(ValueError, match="validation_fraction"):
        fit_poisson_regression(design, counts, num_bins, validation_fraction=0.0)


def test_fitted_readout_explains_training_counts_better_than_the_mean_rate_start(
    pretrained_dir, synthetic_corpus
):
    heldout = synthetic_corpus["heldout_eids"]
    train_data = NedsTrialDataset(synthetic_corpus["dataset_dir"], "train", sessions=heldout)
    trials = [train_data[i] for i in range(len(train_data))]
    model = _heldout_model(pretrained_dir, heldout, dict(train_data.n_neurons))
    model.set_baseline_rates({heldout[0]: np.mean([t["spikes"] for t in trials], axis=(0, 2))})
    encoder_before = {
        n: p.clone() for n, p in model.state_dict().items() if "spike_readout" not in n
    }
    start_nll = _encoding_nll(model, trials, train_data.normalization)

    penalties = fit_session_readouts(model, train_data, heldout)

    assert set(penalties) == set(heldout) and penalties[heldout[0]] in READOUT_L2_GRID
    fitted_nll = _encoding_nll(model, trials, train_data.normalization)
    # measured 0.736 -> 0.728 nats per entry on this 30-step tiny model
    assert fitted_nll < start_nll - 0.004, (start_nll, fitted_nll)
    # only the readout changed, and the model's own encoding predictions use it
    for name, value in model.state_dict().items():
        if name in encoder_before:
            assert torch.equal(value, encoder_before[name]), name
    features, _ = encoding_features(model, trials[:4], train_data.normalization)
    readout = model.spike_readout.session_neurons.session_weight(0).detach().double().numpy()
    expected = features @ readout[:, :-1].T + readout[:, -1]  # (4 * T, n)
    collator = DataCollatorForNedsMasking(
        model.config, eval_protocol="encoding", normalization=train_data.normalization
    )
    model.eval()
    with torch.no_grad():
        log_rates = model(**collator(trials[:4]), return_loss=False).spike_log_rates
    np.testing.assert_allclose(log_rates.flatten(0, 1).double().numpy(), expected, atol=1e-4)


def test_set_spike_readout_checks_shapes_and_values(pretrained_dir, synthetic_corpus):
    heldout = synthetic_corpus["heldout_eids"]
    model = _heldout_model(pretrained_dir, heldout, {heldout[0]: 5})
    hidden = model.config.hidden_size
    with pytest.raises(ValueError, match=rf"session {heldout[0]} needs weight \(5, {hidden}\)"):
        model.set_spike_readout(heldout[0], np.zeros((4, hidden)), np.zeros(4))
    with pytest.raises(ValueError, match="non-finite"):
        model.set_spike_readout(heldout[0], np.full((5, hidden), np.nan), np.zeros(5))
    with pytest.raises(ValueError, match="unknown to the model"):
        model.set_spike_readout("no-such-session", np.zeros((5, hidden)), np.zeros(5))
    model.set_spike_readout(heldout[0], np.ones((5, hidden)), np.arange(5.0))
    table = model.spike_readout.session_neurons.session_weight(0)
    assert torch.equal(table[:, -1], torch.arange(5.0)) and bool((table[:, :-1] == 1).all())


def test_finetuning_with_fitted_readouts_and_its_argument_checks(
    pretrained_dir, synthetic_corpus, tmp_path
):
    heldout = synthetic_corpus["heldout_eids"]
    common = dict(mode="finetune", sessions=heldout, model_name_or_path=str(pretrained_dir))
    fitted = train(
        tiny_args(
            synthetic_corpus, tmp_path / "fit", max_steps=2, fit_session_readouts=True, **common
        )
    )
    plain = train(tiny_args(synthetic_corpus, tmp_path / "plain", max_steps=2, **common))
    # the fitted start explains the held-out session's counts: its first loss is lower
    assert train_losses(fitted.history)[1] < train_losses(plain.history)[1]
    with pytest.raises(ValueError, match="fit_session_readouts needs a pretrained encoder"):
        NedsTrainingArguments(
            output_dir=str(tmp_path / "x"), dataset="d", fit_session_readouts=True
        ).validate()
    with pytest.raises(ValueError, match="fit_session_readouts needs the training trials"):
        NedsTrainingArguments(
            output_dir=str(tmp_path / "x"),
            dataset="d",
            streaming=True,
            fit_session_readouts=True,
            model_name_or_path="m",
        ).validate()

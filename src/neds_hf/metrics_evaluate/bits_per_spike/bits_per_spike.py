"""Bits per spike as an ``evaluate`` metric module.

Self-contained: ``evaluate`` copies this file into its module cache, so it cannot import
neds_hf. The computation below is the one of ``neds_hf.metrics.bits_per_spike`` in short (same
null model, rate floor and conventions); ``tests/test_metrics.py`` checks that both agree.

Load offline with ``evaluate.load(neds_hf.metrics.evaluate_metric_path("bits_per_spike"))``.
"""

import datasets
import evaluate
import numpy as np

MIN_RATE = 1e-9  # floor of zero rates and of the pooled score's null rates (NLB)

_DESCRIPTION = """
Bits per spike of predicted Poisson rates against observed spike counts: per neuron,
(NLL(null) - NLL(model)) / (spikes * ln 2), with the null model predicting the neuron's mean
count over the evaluated data. `convention="mean"` (NEDS) averages the per-neuron values;
`convention="pooled"` (NLB / BrainWideBench) sums over neurons before dividing.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: predicted log-rates (or rates with `log_input=False`); one example per trial,
        each (T, N), or one example per sample, each (N,).
    references: spike counts, same layout.
    log_input (bool, default True): whether predictions are log-rates.
    convention ("mean" | "pooled", default "mean").
    neuron_mask: optional boolean (N,), neurons that are scored.
    eval_mask: optional boolean mask broadcastable to the stacked (trials, T, N) data.
    return_per_neuron (bool, default False): also return per-neuron values.
Returns:
    bits_per_spike (float), and per_neuron (list of float, NaN where undefined) on request.
Examples:
    >>> metric = evaluate.load(evaluate_metric_path("bits_per_spike"))
    >>> metric.compute(predictions=log_rates, references=spike_counts, convention="pooled")
"""

_CITATION = """
@article{zhang2025neds,
  title={Neural Encoding and Decoding at Scale},
  author={Zhang, Yizi and Wang, Yanchen and Azabou, Mehdi and others},
  journal={arXiv preprint arXiv:2504.08201},
  year={2025}
}
"""


def _bits_per_spike(predictions, counts, log_input, convention, neuron_mask, eval_mask):
    """``(score, per_neuron)`` of (..., N) predictions against counts (NaN counts skipped)."""
    if predictions.shape != counts.shape:
        raise ValueError(f"predictions {predictions.shape} and references {counts.shape} differ")
    if convention not in ("mean", "pooled"):
        raise ValueError(f"convention must be 'mean' or 'pooled', got {convention!r}")
    num_neurons = counts.shape[-1]
    evaluated = ~np.isnan(counts)
    if eval_mask is not None:
        evaluated &= np.broadcast_to(np.asarray(eval_mask, dtype=bool), counts.shape)
    evaluated = evaluated.reshape(-1, num_neurons)  # (S, N)
    counts = np.where(evaluated, counts.reshape(-1, num_neurons), 0.0)  # (S, N)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        flat = predictions.reshape(-1, num_neurons)  # (S, N)
        rates = np.exp(flat) if log_input else flat.copy()
        log_rates = flat.copy() if log_input else np.log(rates)
        log_rates[rates == 0] = np.log(MIN_RATE)
        rates[rates == 0] = MIN_RATE
        rates, log_rates = np.where(evaluated, rates, 0.0), np.where(evaluated, log_rates, 0.0)
        num_evaluated = evaluated.sum(axis=0).astype(np.float64)  # (N,)
        spikes = counts.sum(axis=0)  # (N,)
        null_rate = spikes / num_evaluated  # (N,)
        floored_null = np.where(null_rate == 0, MIN_RATE, null_rate)
        nll_null = num_evaluated * floored_null - spikes * np.log(floored_null)
        nll_model = rates.sum(axis=0) - (counts * log_rates).sum(axis=0)  # (N,)
        gain = nll_null - nll_model  # (N,)
        per_neuron = gain / (spikes * np.log(2.0))  # (N,)
    selected = np.ones(num_neurons, bool) if neuron_mask is None else np.asarray(neuron_mask, bool)
    per_neuron[~np.isfinite(per_neuron) | ~selected] = np.nan
    if convention == "mean":
        scored = per_neuron[~np.isnan(per_neuron)]
        return (float(scored.mean()) if scored.size else float("nan")), per_neuron
    valid = selected & (null_rate >= MIN_RATE)
    total = spikes[valid].sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        score = float(gain[valid].sum() / (total * np.log(2.0))) if valid.any() else float("nan")
    return (score if np.isfinite(score) else float("nan")), per_neuron


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class BitsPerSpike(evaluate.Metric):
    """Bits per spike (NEDS mean-over-neurons or NLB pooled convention)."""

    def _info(self):
        per_trial = datasets.Features(
            {
                "predictions": datasets.Sequence(datasets.Sequence(datasets.Value("float64"))),
                "references": datasets.Sequence(datasets.Sequence(datasets.Value("float64"))),
            }
        )
        per_sample = datasets.Features(
            {
                "predictions": datasets.Sequence(datasets.Value("float64")),
                "references": datasets.Sequence(datasets.Value("float64")),
            }
        )
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[per_sample, per_trial],
        )

    def _compute(
        self,
        predictions,
        references,
        log_input=True,
        convention="mean",
        neuron_mask=None,
        eval_mask=None,
        return_per_neuron=False,
    ):
        score, per_neuron = _bits_per_spike(
            np.asarray(predictions, dtype=np.float64),
            np.asarray(references, dtype=np.float64),
            log_input,
            convention,
            neuron_mask,
            eval_mask,
        )
        result = {"bits_per_spike": score}
        if return_per_neuron:
            result["per_neuron"] = per_neuron.tolist()
        return result

"""Bits per spike as an ``evaluate`` metric module (wraps ``neds_hf.metrics.bits_per_spike``).

Load offline with ``evaluate.load(neds_hf.metrics.evaluate_metric_path("bits_per_spike"))``.
"""

import datasets
import evaluate
import numpy as np

from neds_hf.metrics import bits_per_spike

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
        score, per_neuron = bits_per_spike(
            np.asarray(predictions, dtype=np.float64),
            np.asarray(references, dtype=np.float64),
            log_input=log_input,
            convention=convention,
            neuron_mask=neuron_mask,
            eval_mask=eval_mask,
            return_per_neuron=True,
        )
        result = {"bits_per_spike": score}
        if return_per_neuron:
            result["per_neuron"] = per_neuron.tolist()
        return result

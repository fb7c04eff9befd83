"""Fitted spike readouts for new sessions: fine-tuning starts from a Poisson regression of each
new neuron's counts on the pretrained encoder's encoding features.

A new session's readout rows are otherwise random (with the bias at the mean rate), so the
first part of fine-tuning is spent learning, through the whole network, a linear map that can
be fitted directly: with all spikes hidden and the behaviours shown (the encoding protocol),
the pretrained encoder already computes features of the behaviour; a Poisson GLM of each new
neuron's training counts on them (standardised; L2 chosen on held-out training trials) is the
readout that explains the most of that neuron given those features. The model's weights are
otherwise untouched.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..baselines import fit_poisson_regression
from ..collator import DataCollatorForNedsMasking
from ..modeling_neds import NedsForMaskedModeling

__all__ = ["READOUT_L2_GRID", "READOUT_MAX_ITER", "encoding_features", "fit_session_readouts"]

logger = logging.getLogger(__name__)

#: L2 penalties tried for a fitted readout (on the mean per-entry Poisson NLL, weights of
#: standardised features).
READOUT_L2_GRID = (1e-3, 1e-2, 1e-1)
#: L-BFGS iterations per fit: on standardised features 100 reach the held-out likelihood of 300
#: on raw ones (within 0.02 %, one demo-size session) in a third of the time.
READOUT_MAX_ITER = 100


@torch.no_grad()
def encoding_features(
    model: NedsForMaskedModeling,
    trials: Sequence[Mapping[str, Any]],
    normalization: Mapping[str, Any] | None,
    batch_size: int = 64,
) -> tuple[np.ndarray, np.ndarray]:
    """The spike-token hidden states of the encoding protocol and the counts they predict.

    Returns ``(features (trials * T, H), counts (trials * T, N))`` in trial order, T rows per
    trial; `trials` are the training trials of one session (dataset rows). Runs in eval mode
    (no dropout) and restores the previous mode.
    """
    collator = DataCollatorForNedsMasking(
        model.config, eval_protocol="encoding", normalization=normalization
    )
    was_training = model.training
    model.eval()
    features, counts = [], []
    try:
        for start in range(0, len(trials), batch_size):
            batch = collator(trials[start : start + batch_size])
            inputs = {name: value.to(model.device) for name, value in batch.items()}
            outputs = model(**inputs, return_loss=False)
            hidden = model.spike_hidden_states(outputs.last_hidden_state)  # (B, T, H)
            features.append(hidden.float().flatten(0, 1).cpu().numpy())  # (B * T, H)
            counts.append(batch["spikes"].float().flatten(0, 1).numpy())  # (B * T, N)
    finally:
        model.train(was_training)
    return np.concatenate(features), np.concatenate(counts)


def fit_session_readouts(
    model: NedsForMaskedModeling,
    train_data: Any,
    session_ids: Sequence[str],
    l2_grid: Sequence[float] = READOUT_L2_GRID,
) -> dict[str, float]:
    """Set each session's spike readout to a Poisson GLM on :func:`encoding_features`.

    `train_data` is an in-memory training set (``session_indices()``, row access,
    ``normalization``); every session needs at least 5 training trials (the penalty is chosen
    on the last 20 % of them). Returns the chosen L2 penalty per session.
    """
    if not hasattr(train_data, "session_indices"):
        raise ValueError("fit_session_readouts needs the training trials in memory (not streaming)")
    indices = train_data.session_indices()
    penalties = {}
    for session_id in session_ids:
        rows = indices.get(session_id, [])
        if len(rows) < 5:
            raise ValueError(
                f"fit_session_readouts: session {session_id} has {len(rows)} training trials; "
                "fitting its readout needs at least 5"
            )
        trials = [train_data[int(row)] for row in rows]
        features, counts = encoding_features(model, trials, train_data.normalization)
        num_neurons = model.config.sessions[session_id]
        # standardised features: the fit is far better conditioned (hidden states share large
        # common components) and the penalty treats every feature alike
        mean, scale = features.mean(0), features.std(0) + 1e-6  # (H,)
        weights, penalties[session_id] = fit_poisson_regression(
            (features - mean) / scale,
            counts[:, :num_neurons],
            model.config.num_time_bins,
            l2_grid=l2_grid,
            max_iter=READOUT_MAX_ITER,
        )  # (H + 1, n)
        weight = weights[:-1] / scale[:, None]  # (H, n), on the raw features
        bias = weights[-1] - mean @ weight  # (n,)
        model.set_spike_readout(session_id, weight.T, bias)
        logger.info(
            "session %s: readout fitted on %d training trials (Poisson GLM on the encoder's "
            "encoding features, L2 %g)",
            session_id,
            len(trials),
            penalties[session_id],
        )
    return penalties

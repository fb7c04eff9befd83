"""The encoding oracle of a synthetic session: expected counts given what NEDS observes.

The true expected counts (``expected_counts`` of the ground truth) depend on variables no model
of the dataset sees: the stimulus (side and contrast are not NEDS inputs) and the smooth noise
of the shared latent factors. The fair ceiling of an encoder from behaviour is the expectation
of the counts given the observed behaviour (wheel, whisker motion energy, choice, block), with
those unseen variables marginalised:

* the latent noise by its stationary distribution (each latent's noise is unit-variance
  Gaussian at every instant, times the preset's ``latent_noise``);
* the trial's own stimulus by the session's stimuli of the trials with the same choice and
  block prior (the stimulus's distribution given what is observed of the trial).

Both are Monte Carlo averages (:data:`ORACLE_DRAWS` draws per trial) of the exact rate
function, evaluated on the 5 ms simulation grid inside each 20 ms bin.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .signals import at_times, stimulus_kernel
from .spec import STANDARD_BIN_SIZE_S, STANDARD_N_BINS, STANDARD_WINDOW_S

__all__ = ["ORACLE_DRAWS", "observed_expected_counts"]

#: Monte Carlo draws of the unseen variables per trial.
ORACLE_DRAWS = 32


def observed_expected_counts(
    rng: np.random.Generator,
    trials: dict[str, Any],
    covariates: np.ndarray,
    latent_mixing: np.ndarray,
    latent_noise: float,
    neurons: dict[str, np.ndarray],
    dt: float,
    actions: np.ndarray | None = None,
) -> np.ndarray:
    """Expected counts ``(n, C, T)`` given the observed behaviour, unseen variables marginalised.

    Args:
        rng: generator of the Monte Carlo draws (separate from the session's, so the session's
            arrays do not depend on this computation).
        trials: :func:`.task.generate_trials` output (true stimulus onsets, choices, blocks,
            contrasts).
        covariates: ``(6, G)`` covariates on the simulation grid.
        latent_mixing: ``(K, 6)`` weights mixing the covariates into the latents.
        latent_noise: standard deviation of the latents' noise.
        neurons: per-cluster ``base`` ``(C,)`` Hz, ``weights`` ``(C, 6)``, ``loadings``
            ``(C, K)`` and ``drive_centre`` ``(C,)`` (the per-neuron mean drive removed).
        dt: simulation step (s).
        actions: ``(A, G)`` one-hot pose actions on the grid when the neurons are tuned to them
            (``neurons["action_weights"]`` ``(C, A)``); observed, like the wheel.
    """
    steps = round(STANDARD_BIN_SIZE_S / dt)  # simulation steps per bin
    stim_on = trials["true_times"]["stimOn_times"]  # (n,)
    start = stim_on + STANDARD_WINDOW_S[0]  # (n,)
    fine_times = start[:, None] + (np.arange(STANDARD_N_BINS * steps) + 0.5) * dt  # (n, F)
    seen = at_times(covariates, fine_times, dt)  # (6, n, F)
    own_kernel = stimulus_kernel(
        (np.floor(fine_times / dt) - np.floor(stim_on / dt)[:, None]) * dt
    )  # (n, F): the trial's own stimulus response, as the grid holds it
    signed, contrast = trials["signed_contrast"], trials["contrast"]
    seen[4] -= signed[:, None] * own_kernel
    seen[5] -= (0.3 + contrast)[:, None] * own_kernel
    loadings = neurons["loadings"]  # (C, K)
    effective = neurons["weights"] + loadings @ latent_mixing  # (C, 6)
    condition = np.stack([trials["choice"], trials["p_left"]], axis=1)  # (n, 2)
    n_trials, n_fine = fine_times.shape
    result = np.empty((n_trials, len(effective), STANDARD_N_BINS))
    for trial in range(n_trials):
        pool = np.flatnonzero(np.all(condition == condition[trial], axis=1))
        drawn = rng.choice(pool, size=ORACLE_DRAWS)  # (S,)
        drive = effective @ seen[:, trial, :] - neurons["drive_centre"][:, None]  # (C, F)
        if actions is not None:
            drive += neurons["action_weights"] @ at_times(actions, fine_times[trial], dt)
        stimulus = (
            effective[:, 4, None] * signed[drawn][None, :]
            + effective[:, 5, None] * (0.3 + contrast[drawn])[None, :]
        )  # (C, S)
        noise = latent_noise * rng.standard_normal((ORACLE_DRAWS, loadings.shape[1], n_fine))
        total = (
            drive[None]
            + stimulus.T[:, :, None] * own_kernel[trial][None, None, :]
            + np.einsum("ck,skf->scf", loadings, noise)
        )  # (S, C, F)
        rates = neurons["base"][None, :, None] * np.exp(np.clip(total, -4.0, 3.0))
        per_bin = rates.reshape(ORACLE_DRAWS, -1, STANDARD_N_BINS, steps).sum(axis=3) * dt
        result[trial] = per_bin.mean(axis=0)  # (C, T)
    return result

"""Licks of a synthetic session (``alf/licks.times``): bursts after rewards, a few elsewhere.

A rewarded mouse licks the water spout in a burst starting shortly after the feedback
(~7 Hz, about 10 licks); after an error it sometimes checks the spout with a few licks; and it
licks spontaneously now and then (a slow Poisson process over the whole session). The licks
draw from their own generator, seeded by ``(seed, index, LICKS_STREAM)``, so adding them left
every other file of a session byte-identical.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .spec import SyntheticSessionSpec

__all__ = ["LICKS_STREAM", "generate_licks"]

#: Third seed word of the licks' own random stream.
LICKS_STREAM = 20261130
#: Inter-lick interval (s): mean and standard deviation of a burst (~7 Hz), and its floor.
LICK_INTERVAL_S = (0.14, 0.02, 0.08)
#: Mean licks of a reward burst, chance and mean size of a burst after an error.
REWARD_BURST_LICKS = 10.0
ERROR_BURST_PROBABILITY = 0.2
ERROR_BURST_LICKS = 2.0
#: Delay (s) from feedback to the first lick of a burst, uniform in this range.
BURST_DELAY_S = (0.05, 0.2)
#: Rate (Hz) of spontaneous licks.
SPONTANEOUS_RATE_HZ = 0.2


def _burst(rng: np.random.Generator, onset: float, n_licks: int) -> np.ndarray:
    """``(n_licks,)`` lick times of one burst starting at `onset`."""
    mean, std, floor = LICK_INTERVAL_S
    intervals = np.maximum(rng.normal(mean, std, max(n_licks - 1, 0)), floor)
    return onset + np.concatenate([[0.0], np.cumsum(intervals)])[:n_licks]


def generate_licks(spec: SyntheticSessionSpec, trials: pd.DataFrame, duration: float) -> np.ndarray:
    """Sorted lick times (s, float64) of a session from its recorded trials table
    (``feedback_times``, ``feedbackType``) over ``[0, duration)``."""
    rng = np.random.default_rng([spec.seed, spec.index, LICKS_STREAM])
    feedback = trials["feedback_times"].to_numpy(dtype=np.float64)  # (n_trials,)
    rewarded = trials["feedbackType"].to_numpy(dtype=np.float64) == 1  # (n_trials,)
    bursts = []
    for time, reward in zip(feedback, rewarded):
        if not np.isfinite(time):
            continue
        onset = time + rng.uniform(*BURST_DELAY_S)
        if reward:
            bursts.append(_burst(rng, onset, 1 + int(rng.poisson(REWARD_BURST_LICKS - 1))))
        elif rng.random() < ERROR_BURST_PROBABILITY:
            bursts.append(_burst(rng, onset, 1 + int(rng.poisson(ERROR_BURST_LICKS - 1))))
    n_spontaneous = int(rng.poisson(SPONTANEOUS_RATE_HZ * duration))
    bursts.append(rng.uniform(0.0, duration, n_spontaneous))
    licks = np.sort(np.concatenate(bursts))
    return licks[(licks >= 0.0) & (licks < duration)].astype(np.float64)  # (n_licks,)

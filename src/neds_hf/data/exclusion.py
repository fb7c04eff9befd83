"""The IBL trial-exclusion rules: which trials of an ALF trials table are left out, and why.

This module is the one place these rules live: preprocessing applies them to the sessions it
bins, and the synthetic generator uses them to check that each planted bad trial is excluded
for the reason it was planted for (and to write the expected counts into its ground truth).

A trial is excluded (IBL / NEDS query) when

* ``nan_field``: any of :data:`NAN_CHECKED_FIELDS` (or the alignment event) is NaN, except
  the fields a no-go trial has no value for (:data:`NO_GO_NAN_FIELDS`) on a no-go trial;
* ``no_choice``: ``choice == 0`` (a no-go trial);
* ``rt_negative``: the reaction time ``firstMovement_times - stimOn_times`` is below ``min_rt``;
* ``rt_too_long``: the reaction time is above ``max_rt``;
* ``trial_too_long``: ``feedback_times - goCue_times`` is above ``max_trial_duration``;

and, decided by preprocessing once behaviour is sampled, ``behavior_out_of_range`` (the window
is not covered by the wheel or motion-energy recording) and ``behavior_nan`` (the sampled
behaviour holds NaN). Comparisons involving NaN are false.

Each excluded trial is counted once, under the first reason of :data:`EXCLUSION_REASONS` it
satisfies. A no-go trial has no first movement (``firstMovement_times`` is NaN in IBL
sessions): that NaN is part of being a no-go trial, so such a trial is counted under the most
specific reason, ``no_choice``, not ``nan_field`` (a no-go trial with another NaN field, e.g.
``probabilityLeft``, is still a ``nan_field`` trial).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

__all__ = [
    "DEFAULT_MAX_RT_S",
    "DEFAULT_MAX_TRIAL_DURATION_S",
    "DEFAULT_MIN_RT_S",
    "EXCLUSION_REASONS",
    "NAN_CHECKED_FIELDS",
    "NO_GO_NAN_FIELDS",
    "TRIAL_TABLE_REASONS",
    "first_exclusion_reason",
    "numeric_trial_column",
    "one_reason_per_trial",
    "trial_exclusion_masks",
]

#: Every exclusion reason, in reporting order (the order of the report and dataset columns).
EXCLUSION_REASONS = (
    "nan_field",
    "no_choice",
    "rt_negative",
    "rt_too_long",
    "trial_too_long",
    "behavior_out_of_range",
    "behavior_nan",
)

#: The reasons decided from the trials table alone (the others need the sampled behaviour).
TRIAL_TABLE_REASONS = EXCLUSION_REASONS[:5]

#: Trials fields whose NaN excludes a trial (``"nan_field"``), besides the alignment event.
NAN_CHECKED_FIELDS = (
    "stimOn_times",
    "choice",
    "feedback_times",
    "probabilityLeft",
    "firstMovement_times",
    "feedbackType",
)

#: Checked fields a no-go trial (``choice == 0``) has no value for: NaN there is not a
#: ``nan_field`` on such a trial.
NO_GO_NAN_FIELDS = ("firstMovement_times",)

#: Default thresholds (s): reaction time below / above, and feedback - goCue above.
DEFAULT_MIN_RT_S = 0.0
DEFAULT_MAX_RT_S = 10.0
DEFAULT_MAX_TRIAL_DURATION_S = 10.0


def numeric_trial_column(trials: pd.DataFrame, name: str, session_id: str) -> np.ndarray:
    """A trials column as float64, or a ``ValueError`` naming the session and the column."""
    if name not in trials.columns:
        raise ValueError(f"session {session_id}: trials table lacks column {name!r}")
    try:
        return trials[name].to_numpy(dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"session {session_id}: trials column {name!r} is not numeric ({error})"
        ) from error


def trial_exclusion_masks(
    trials: pd.DataFrame,
    min_rt: float = DEFAULT_MIN_RT_S,
    max_rt: float = DEFAULT_MAX_RT_S,
    max_trial_duration: float = DEFAULT_MAX_TRIAL_DURATION_S,
    extra_nan_fields: Iterable[str] = (),
    session_id: str = "?",
) -> dict[str, np.ndarray]:
    """Per :data:`TRIAL_TABLE_REASONS` entry, which trials satisfy it, ``(n_trials,)`` bool each.

    ``extra_nan_fields`` adds columns to :data:`NAN_CHECKED_FIELDS` (the alignment event when
    it is not ``stimOn_times``). Overlaps are kept: a trial may satisfy several reasons.
    """
    nan_fields = list(NAN_CHECKED_FIELDS)
    nan_fields += [name for name in extra_nan_fields if name not in nan_fields]
    choice = numeric_trial_column(trials, "choice", session_id)
    no_go = choice == 0
    is_nan = np.zeros(len(trials), dtype=bool)
    for name in nan_fields:
        missing = np.isnan(numeric_trial_column(trials, name, session_id))
        is_nan |= missing & ~no_go if name in NO_GO_NAN_FIELDS else missing
    reaction_time = numeric_trial_column(
        trials, "firstMovement_times", session_id
    ) - numeric_trial_column(trials, "stimOn_times", session_id)
    duration = numeric_trial_column(trials, "feedback_times", session_id) - numeric_trial_column(
        trials, "goCue_times", session_id
    )
    with np.errstate(invalid="ignore"):
        return {
            "nan_field": is_nan,
            "no_choice": no_go,
            "rt_negative": reaction_time < min_rt,
            "rt_too_long": reaction_time > max_rt,
            "trial_too_long": duration > max_trial_duration,
        }


def one_reason_per_trial(masks: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each trial under its first reason only (:data:`EXCLUSION_REASONS` order).

    Takes the overlapping masks of some reasons and returns disjoint ones, in the key order
    of ``masks``; reasons absent from ``masks`` are ignored.
    """
    n_trials = len(next(iter(masks.values())))
    taken = np.zeros(n_trials, dtype=bool)
    disjoint: dict[str, np.ndarray] = {}
    for reason in EXCLUSION_REASONS:
        if reason in masks:
            disjoint[reason] = masks[reason] & ~taken
            taken |= masks[reason]
    return {reason: disjoint[reason] for reason in masks}


def first_exclusion_reason(masks: Mapping[str, np.ndarray]) -> np.ndarray:
    """Per trial, the reason it is counted under (``""`` for a kept trial), ``(n_trials,)`` str."""
    disjoint = one_reason_per_trial(masks)
    n_trials = len(next(iter(masks.values())))
    first = np.full(n_trials, "", dtype=f"<U{max(map(len, masks))}")  # (n,)
    for reason, mask in disjoint.items():
        first[mask] = reason
    return first

"""The IBL task of a synthetic session: blocks, stimuli, choices, trial timing and the wheel.

The trials are those of IBL biased-choice-world sessions, with a fixed number of *planted bad
trials* of each exclusion kind; the exclusion rules themselves come from
:mod:`neds_hf.data.exclusion`, the one place they are defined.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from ..exclusion import (
    DEFAULT_MAX_RT_S,
    DEFAULT_MAX_TRIAL_DURATION_S,
    DEFAULT_MIN_RT_S,
    NAN_CHECKED_FIELDS,
    TRIAL_TABLE_REASONS,
    trial_exclusion_masks,
)
from ..exclusion import first_exclusion_reason as _first_exclusion_reason
from .spec import SyntheticSessionSpec

__all__ = [
    "CONTRAST_LEVELS",
    "DEFAULT_MAX_RT_S",
    "DEFAULT_MAX_TRIAL_DURATION_S",
    "DEFAULT_MIN_RT_S",
    "EXCLUSION_REASONS",
    "TRIALS_TABLE_COLUMNS",
    "exclusion_flags",
    "first_exclusion_reason",
    "generate_trials",
    "wheel_kinematics",
]

#: The trials-table exclusion reasons (:data:`neds_hf.data.exclusion.TRIAL_TABLE_REASONS`), in
#: order: the generator plants bad trials of each; preprocessing's two further reasons concern
#: behaviour sampling, which the generator never plants.
EXCLUSION_REASONS = TRIAL_TABLE_REASONS

#: Stimulus contrasts of the IBL task.
CONTRAST_LEVELS = (0.0, 0.0625, 0.125, 0.25, 1.0)


TRIALS_TABLE_COLUMNS = (
    "intervals_0",
    "intervals_1",
    "goCue_times",
    "response_times",
    "choice",
    "stimOn_times",
    "contrastLeft",
    "contrastRight",
    "feedback_times",
    "feedbackType",
    "rewardVolume",
    "probabilityLeft",
    "firstMovement_times",
)


def _block_probabilities(rng: np.random.Generator, n_trials: int, first_block: int) -> np.ndarray:
    """IBL block design: 0.5 first, then alternating 0.2 / 0.8 blocks of 20-100 trials."""
    p_left = np.empty(n_trials)  # (n,)
    n_first = min(first_block, n_trials)
    p_left[:n_first] = 0.5
    position = n_first
    is_high = bool(rng.random() < 0.5)
    while position < n_trials:
        length = 0
        while not 20 <= length <= 100:
            length = round(rng.exponential(60.0))
        p_left[position : position + length] = 0.8 if is_high else 0.2
        position += length
        is_high = not is_high
    return p_left


def exclusion_flags(
    trials: pd.DataFrame,
    min_rt: float = DEFAULT_MIN_RT_S,
    max_rt: float = DEFAULT_MAX_RT_S,
    max_trial_duration: float = DEFAULT_MAX_TRIAL_DURATION_S,
) -> dict[str, np.ndarray]:
    """Per :data:`EXCLUSION_REASONS` entry, which trials satisfy it, ``(n_trials,)`` bool each
    (the rules of :func:`neds_hf.data.exclusion.trial_exclusion_masks`)."""
    return trial_exclusion_masks(trials, min_rt, max_rt, max_trial_duration)


def first_exclusion_reason(flags: Mapping[str, np.ndarray]) -> np.ndarray:
    """Per trial, the reason it is counted under ('' if none); see :mod:`..exclusion`."""
    return _first_exclusion_reason(flags)


def _min_jerk(u: np.ndarray) -> np.ndarray:
    return u**3 * (10.0 - 15.0 * u + 6.0 * u**2)


def _min_jerk_rate(u: np.ndarray) -> np.ndarray:
    return 30.0 * u**2 * (1.0 - u) ** 2


def wheel_kinematics(times: np.ndarray, movements: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Position (rad) and velocity (rad/s) of the noise-free wheel at ``times``.

    ``movements`` is ``(n_moves, 3)``: start time, duration and amplitude of minimum-jerk turns
    that add up. ``times`` may be in any order.
    """
    order = np.argsort(times, kind="stable")
    sorted_times = times[order]
    position = np.zeros(len(times))  # (n_times,)
    velocity = np.zeros(len(times))
    steps = np.zeros(len(times) + 1)
    for start, duration, amplitude in movements:
        i0, i1 = np.searchsorted(sorted_times, [start, start + duration])
        u = (sorted_times[i0:i1] - start) / duration
        position[i0:i1] += amplitude * _min_jerk(u)
        velocity[i0:i1] += amplitude * _min_jerk_rate(u) / duration
        steps[i1] += amplitude
    position += np.cumsum(steps)[:-1]
    unsorted_position = np.empty_like(position)
    unsorted_velocity = np.empty_like(velocity)
    unsorted_position[order] = position
    unsorted_velocity[order] = velocity
    return unsorted_position, unsorted_velocity


def generate_trials(spec: SyntheticSessionSpec, rng: np.random.Generator) -> dict[str, Any]:
    """Trial table (true and as recorded), wheel movements and session duration.

    Draws from ``rng`` in a fixed order (stimuli, planted trials, choices, event times,
    session timing, wheel, NaN fields), so the same spec and generator give the same trials.
    """
    stimuli = _stimuli(spec, rng)
    kinds = _planted_kinds(spec, rng)
    choice, correct = _choices(rng, stimuli, kinds)
    events = _trial_events(spec, rng, kinds, choice, stimuli["contrast"])
    timing = _session_timing(spec, rng, events["response"], correct)
    moves = _wheel_moves(rng, events["moves"], timing["starts"], timing["feedback"])
    starts = timing["starts"]
    true_times = {
        "intervals_0": starts,
        "intervals_1": starts + timing["end"],
        "stimOnTrigger_times": starts + events["stimOnTrigger"],
        "stimOn_times": starts + events["stimOn"],
        "goCue_times": starts + events["goCue"],
        "goCueTrigger_times": starts + events["goCue"] - 0.0005,
        "firstMovement_times": starts + events["firstMovement"],
        "response_times": starts + events["response"],
        "feedback_times": starts + timing["feedback"],
        "stimOff_times": starts + timing["feedback"] + np.where(correct, 1.0, 2.0),
    }
    table = _trials_table(true_times, choice, correct, stimuli)
    _plant_nan_fields(rng, table, kinds)
    return {
        "table": table,
        "extra": {
            "stimOnTrigger_times": true_times["stimOnTrigger_times"],
            "goCueTrigger_times": true_times["goCueTrigger_times"],
            "stimOff_times": true_times["stimOff_times"],
            "quiescencePeriod": events["quiescence"],
        },
        "kinds": kinds,
        "true_times": true_times,
        "choice": choice,
        "p_left": stimuli["p_left"],
        "signed_contrast": stimuli["signed_contrast"],
        "contrast": stimuli["contrast"],
        "moves": np.asarray(sorted(moves), dtype=np.float64).reshape(-1, 3),
        "duration": timing["duration"],
    }


def _stimuli(spec: SyntheticSessionSpec, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Block prior, stimulus side and contrast of every trial, each ``(n,)``."""
    n = spec.n_trials
    p_left = _block_probabilities(rng, n, spec.first_block_trials)
    stim_left = rng.random(n) < p_left
    contrast = rng.choice(np.asarray(CONTRAST_LEVELS), size=n)
    contrast_left = np.where(stim_left, contrast, np.nan)
    contrast_right = np.where(stim_left, np.nan, contrast)
    return {
        "p_left": p_left,
        "stim_left": stim_left,
        "contrast": contrast,
        "contrast_left": contrast_left,
        "contrast_right": contrast_right,
        "signed_contrast": np.nan_to_num(contrast_right) - np.nan_to_num(contrast_left),  # + right
    }


def _planted_kinds(spec: SyntheticSessionSpec, rng: np.random.Generator) -> np.ndarray:
    """Planted bad trials: a random set of rows, each assigned one kind (its reason)."""
    kinds = np.full(spec.n_trials, "", dtype="<U16")  # (n,)
    bad_rows = rng.permutation(spec.n_trials)[: spec.n_bad_trials]
    position = 0
    for reason, count in spec.planted_counts.items():
        kinds[bad_rows[position : position + count]] = reason
        position += count
    return kinds


def _choices(
    rng: np.random.Generator, stimuli: dict[str, np.ndarray], kinds: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Choices from a psychometric curve (left evidence + block bias), +1 = left, -1 = right,
    0 on planted no-go trials; and whether each choice is correct."""
    p_left, stim_left = stimuli["p_left"], stimuli["stim_left"]
    evidence = 6.0 * (-stimuli["signed_contrast"]) + 1.2 * (p_left - 0.5) / 0.3
    p_choose_left = 0.05 + 0.9 / (1.0 + np.exp(-evidence))
    choice = np.where(rng.random(len(kinds)) < p_choose_left, 1.0, -1.0)
    choice[kinds == "no_choice"] = 0.0
    correct = (stim_left & (choice == 1)) | (~stim_left & (choice == -1))
    return choice, correct


def _trial_events(
    spec: SyntheticSessionSpec,
    rng: np.random.Generator,
    kinds: np.ndarray,
    choice: np.ndarray,
    contrast: np.ndarray,
) -> dict[str, Any]:
    """Event times relative to each trial's start (``(n,)`` each, s) and its wheel turn
    ``(start, duration, amplitude)``; planted kinds get the timing that makes them bad."""
    n = spec.n_trials
    quiescence = 0.2 + rng.uniform(0.2, 0.5, n)
    screen_delay = rng.uniform(0.01, 0.03, n)
    go_cue_delay = rng.uniform(0.0, 0.015, n)
    median_rt = 0.25 + 0.35 * (1.0 - contrast)
    reaction_time = np.clip(np.exp(rng.normal(np.log(median_rt), 0.45)), 0.09, 8.0)
    move_duration = rng.uniform(0.15, 0.5, n)
    events: dict[str, Any] = {
        name: np.empty(n) for name in ("stimOnTrigger", "stimOn", "goCue", "firstMovement")
    }
    events["response"] = np.empty(n)
    events["quiescence"] = quiescence
    events["moves"] = []  # (start, duration, amplitude), relative to the trial start
    for i in range(n):
        stim_on = quiescence[i] + screen_delay[i]
        go_cue = quiescence[i] + go_cue_delay[i]
        amplitude = -choice[i] * rng.uniform(0.2, 0.35)  # CCW (+) turn for a right choice
        kind = kinds[i]
        if kind == "rt_negative":
            first_movement = stim_on - rng.uniform(0.05, 0.3)
            response = stim_on + rng.uniform(0.3, 0.8)
        elif kind == "rt_too_long":
            first_movement = stim_on + rng.uniform(10.5, 20.0)
            response = first_movement + move_duration[i]
        elif kind == "trial_too_long":
            first_movement = stim_on + reaction_time[i]
            response = go_cue + rng.uniform(10.5, 15.0)
        elif kind == "no_choice":
            first_movement = stim_on + rng.uniform(0.3, 2.0)
            response = go_cue + spec.no_choice_timeout_s
            amplitude = rng.choice([-1.0, 1.0]) * rng.uniform(0.02, 0.05)  # below threshold
        else:
            first_movement = stim_on + reaction_time[i]
            response = first_movement + move_duration[i]
        move_length = response - first_movement if kind != "no_choice" else 0.4
        events["stimOnTrigger"][i] = quiescence[i]
        events["stimOn"][i] = stim_on
        events["goCue"][i] = go_cue
        events["firstMovement"][i] = first_movement
        events["response"][i] = response
        events["moves"].append((first_movement, move_length, amplitude))
    return events


def _session_timing(
    spec: SyntheticSessionSpec,
    rng: np.random.Generator,
    response: np.ndarray,
    correct: np.ndarray,
) -> dict[str, Any]:
    """Feedback and end times relative to each trial start, trial starts in session time and
    the session duration (stretched to ``spec.duration_s`` when given)."""
    n = spec.n_trials
    feedback = response + rng.uniform(0.0, 0.002, n)
    end = feedback + np.where(correct, 1.0, 2.0) + rng.uniform(0.0, 0.05, n)
    gaps = rng.uniform(0.3, 0.7, n)
    lead_in_s, tail_s = 5.0, 5.0
    natural = lead_in_s + float(np.sum(end + gaps)) + tail_s
    if spec.duration_s is not None:
        if spec.duration_s < natural:
            raise ValueError(
                f"duration_s={spec.duration_s} is shorter than the {natural:.1f} s that "
                f"{n} trials need"
            )
        gaps = gaps + (spec.duration_s - natural) / n
        duration = float(spec.duration_s)
    else:
        duration = natural
    starts = lead_in_s + np.concatenate([[0.0], np.cumsum(end + gaps)[:-1]])  # (n,)
    return {"feedback": feedback, "end": end, "starts": starts, "duration": duration}


def _wheel_moves(
    rng: np.random.Generator,
    trial_moves: list[tuple[float, float, float]],
    starts: np.ndarray,
    feedback: np.ndarray,
) -> list[tuple[float, float, float]]:
    """Wheel turns in session time: each trial's own turn plus, half of the time, a small
    re-centring movement after feedback."""
    moves = []  # (start, duration, amplitude) in session time
    for i, (start, length, amplitude) in enumerate(trial_moves):
        moves.append((starts[i] + start, length, amplitude))
        if rng.random() < 0.5:
            t0 = starts[i] + feedback[i] + rng.uniform(0.2, 0.6)
            moves.append((t0, rng.uniform(0.2, 0.5), rng.normal(0.0, 0.04)))
    return moves


def _trials_table(
    true_times: dict[str, np.ndarray],
    choice: np.ndarray,
    correct: np.ndarray,
    stimuli: dict[str, np.ndarray],
) -> pd.DataFrame:
    """The ALF trials table (columns :data:`TRIALS_TABLE_COLUMNS`) before NaNs are planted."""
    return pd.DataFrame(
        {
            "intervals_0": true_times["intervals_0"],
            "intervals_1": true_times["intervals_1"],
            "goCue_times": true_times["goCue_times"],
            "response_times": true_times["response_times"],
            "choice": choice.copy(),
            "stimOn_times": true_times["stimOn_times"],
            "contrastLeft": stimuli["contrast_left"],
            "contrastRight": stimuli["contrast_right"],
            "feedback_times": true_times["feedback_times"],
            "feedbackType": np.where(correct, 1.0, -1.0),
            "rewardVolume": np.where(correct, 1.5, 0.0),
            "probabilityLeft": stimuli["p_left"].copy(),
            "firstMovement_times": true_times["firstMovement_times"],
        },
        columns=list(TRIALS_TABLE_COLUMNS),
    )


def _plant_nan_fields(rng: np.random.Generator, table: pd.DataFrame, kinds: np.ndarray) -> None:
    """NaN trials: one checked field each, cycling through :data:`NAN_CHECKED_FIELDS`."""
    nan_rows = np.flatnonzero(kinds == "nan_field")
    field_offset = int(rng.integers(len(NAN_CHECKED_FIELDS)))
    for k, row in enumerate(nan_rows):
        name = NAN_CHECKED_FIELDS[(field_offset + k) % len(NAN_CHECKED_FIELDS)]
        table.loc[row, name] = np.nan

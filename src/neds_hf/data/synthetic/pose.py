"""Left-camera pose of a synthetic session: a latent action sequence, and the Lightning Pose
markers it drives.

Actions (:data:`POSE_ACTIONS`, one per left-camera frame):

* ``wheel_turn`` whenever the noise-free wheel turns faster than :data:`WHEEL_TURN_SPEED`
  (rad/s), extended by :data:`WHEEL_TURN_MARGIN_S` on both sides: both paws step with the
  wheel, so their speed follows the wheel's;
* otherwise a semi-Markov sequence of ``still`` (paws resting on the wheel, tiny tremor),
  ``move`` (fidgeting: paws and nose wander) and ``groom`` (paws raised to the nose, fast
  antiphase strokes), with gamma-distributed bout lengths (:data:`MEAN_BOUT_S`).

Markers (:data:`POSE_MARKERS`, IBL's Lightning Pose names, pixels of the 1280 x 1024 left
video) move smoothly between poses, carry Gaussian noise and have occlusion episodes (more
often for the paws while grooming) in which the likelihood drops below 0.5 and the position
jumps, as a pose estimator's outliers do.

Everything here draws from its own generators (:data:`POSE_STREAM`), so adding pose to the
generator leaves every other file of a session byte-identical.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.signal import lfilter

from .task import wheel_kinematics

__all__ = [
    "ACTION_TUNING_STREAM",
    "MEAN_BOUT_S",
    "POSE_ACTIONS",
    "POSE_GROUND_TRUTH_ARRAYS",
    "POSE_MARKERS",
    "POSE_STREAM",
    "WHEEL_TURN_MARGIN_S",
    "WHEEL_TURN_SPEED",
    "SyntheticPose",
    "action_sequence",
    "actions_on_grid",
    "pose_ground_truth",
    "render_pose",
    "simulate_pose",
]

#: Latent actions of the pose, in class-index order.
POSE_ACTIONS = ("still", "move", "groom", "wheel_turn")
#: Markers of the synthetic Lightning Pose table (IBL names).
POSE_MARKERS = ("paw_l", "paw_r", "nose_tip", "tube_top", "tube_bottom")
#: Generator stream ids (third entry of the session's seed sequence) of the pose and of the
#: action tuning of the neurons; the session's own stream is 20240506, the oracle's 20240507.
POSE_STREAM = 20261130
ACTION_TUNING_STREAM = 20261131
#: Wheel speed (rad/s) above which the mouse is turning the wheel, and the time (s) its paws
#: grip the wheel before and after (the wheel-turn bout extends the fast stretch by it).
WHEEL_TURN_SPEED = 0.3
WHEEL_TURN_MARGIN_S = 0.1
#: Mean bout length (s) of the actions outside wheel turns (gamma, shape 4).
MEAN_BOUT_S = {"still": 2.0, "move": 0.8, "groom": 2.0}
#: Transition probabilities between the actions outside wheel turns (rows: from).
_TRANSITIONS = np.array([[0.0, 0.75, 0.25], [0.8, 0.0, 0.2], [0.6, 0.4, 0.0]])

#: Arrays of ``ground_truth/<eid>.pose.npz`` (F = video frames, n = trials, T = 100 bins of
#: the standard trial grid, C = clusters in merged order), name -> meaning.
POSE_GROUND_TRUTH_ARRAYS = {
    "action_names": "(A,) str, POSE_ACTIONS",
    "frame_times": "(F,) float64, time of each video frame = row of the pose table (s)",
    "actions": "(F,) int64, true action per frame (index into action_names)",
    "paw_speed": "(2, F) float64, noise-free left / right paw speed (px/s)",
    "action_bins": "(n, T) int64, action of the frame nearest each bin centre",
    "left_paw_speed": "(n, T) float64, noise-free left paw speed at the bin centres (px/s)",
    "right_paw_speed": "(n, T) float64, same for the right paw",
    "cluster_action_weights": "(C, A) float64, log-rate weights on the one-hot actions "
    "(zeros when the session was generated without action_tuning)",
}

#: Resting position (px) of each marker in :data:`POSE_MARKERS`.
_REST = np.array([[520.0, 610.0], [700.0, 620.0], [560.0, 420.0], [600.0, 380.0], [600.0, 445.0]])
#: Paw positions while grooming (raised to the nose).
_GROOM = np.array([[545.0, 460.0], [585.0, 465.0]])
#: Paw stroke amplitude (px) and the wheel rotation (rad) of one paw step.
_STEP_AMPLITUDE_PX, _STEP_RAD = 15.0, 0.6
_GROOM_HZ, _GROOM_AMPLITUDE_PX = 6.0, 10.0
_FIDGET_PX, _FIDGET_TAU_S = 10.0, 0.2
_NOISE_PX = 0.5


@dataclass
class SyntheticPose:
    """Left-camera pose of a session: the Lightning Pose table and its truth.

    ``table`` has one row per video frame (``<marker>_x``, ``_y``, ``_likelihood`` for each of
    :data:`POSE_MARKERS`); ``frame_times`` ``(F,)`` are the frames' times (s), ``actions``
    ``(F,)`` the true class per frame (index into :data:`POSE_ACTIONS`), ``paw_speed``
    ``(2, F)`` the noise-free speed (px/s) of the left and right paw.
    """

    table: pd.DataFrame
    frame_times: np.ndarray
    actions: np.ndarray
    paw_speed: np.ndarray


def action_sequence(
    rng: np.random.Generator, frame_times: np.ndarray, wheel_speed: np.ndarray
) -> np.ndarray:
    """True action per frame ``(F,)`` (index into :data:`POSE_ACTIONS`): ``wheel_turn`` where
    ``wheel_speed`` (rad/s, per frame) exceeds :data:`WHEEL_TURN_SPEED` and within
    :data:`WHEEL_TURN_MARGIN_S` of it, semi-Markov bouts of still / move / groom elsewhere."""
    n_frames = len(frame_times)
    rate = 1.0 / float(np.median(np.diff(frame_times))) if n_frames > 1 else 60.0
    actions = np.empty(n_frames, dtype=np.int64)
    position, action = 0, int(rng.integers(3))
    names = POSE_ACTIONS[:3]
    while position < n_frames:
        mean_frames = MEAN_BOUT_S[names[action]] * rate
        length = max(6, int(rng.gamma(4.0, mean_frames / 4.0)))
        actions[position : position + length] = action
        position += length
        action = int(rng.choice(3, p=_TRANSITIONS[action]))
    margin = round(WHEEL_TURN_MARGIN_S * rate)
    turning = np.convolve(wheel_speed > WHEEL_TURN_SPEED, np.ones(2 * margin + 1), "same") > 0
    actions[turning] = POSE_ACTIONS.index("wheel_turn")
    return actions


def _low_pass(values: np.ndarray, tau_frames: float) -> np.ndarray:
    """First-order low-pass along axis 0, starting at the first row."""
    decay = math.exp(-1.0 / tau_frames)
    flat = values.reshape(len(values), -1)
    out, _ = lfilter([1.0 - decay], [1.0, -decay], flat, axis=0, zi=decay * flat[:1])
    return out.reshape(values.shape)


def _ou(rng: np.random.Generator, shape: tuple[int, ...], tau_frames: float) -> np.ndarray:
    """Unit-variance Ornstein-Uhlenbeck noise along axis 0."""
    decay = math.exp(-1.0 / tau_frames)
    white = rng.standard_normal(shape) * math.sqrt(1.0 - decay**2)
    white[0] = rng.standard_normal(shape[1:])
    return lfilter([1.0], [1.0, -decay], white, axis=0)


def render_pose(
    rng: np.random.Generator,
    frame_times: np.ndarray,
    actions: np.ndarray,
    wheel_position: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Noise-free marker positions ``(F, M, 2)``, observed positions ``(F, M, 2)`` and
    likelihoods ``(F, M)`` for an action sequence (``wheel_position`` in rad per frame)."""
    n_frames, n_markers = len(actions), len(POSE_MARKERS)
    rate = 1.0 / float(np.median(np.diff(frame_times))) if n_frames > 1 else 60.0
    _, move, groom, turn = (POSE_ACTIONS.index(a) for a in POSE_ACTIONS)
    target = np.broadcast_to(_REST, (n_frames, n_markers, 2)).copy()  # (F, M, 2)
    target[actions == groom, :2] = _GROOM
    smooth = _low_pass(target, 0.1 * rate)  # poses change within ~0.1 s
    weight = _low_pass(np.eye(len(POSE_ACTIONS))[actions], 0.05 * rate)  # (F, A) soft actions
    fidget = _FIDGET_PX * _ou(rng, (n_frames, 3, 2), _FIDGET_TAU_S * rate)  # paws and nose
    strokes = np.sin(2 * np.pi * _GROOM_HZ * frame_times)[:, None] * np.array([1.0, -1.0])
    step_phase = 2 * np.pi * wheel_position / _STEP_RAD
    steps = np.stack([np.sin(step_phase), np.sin(step_phase + np.pi)], axis=1)  # (F, 2)
    clean = smooth.copy()
    clean[:, :3] += weight[:, move, None, None] * fidget
    clean[:, :2, 1] += weight[:, groom, None] * _GROOM_AMPLITUDE_PX * strokes
    clean[:, :2, 0] += weight[:, turn, None] * _STEP_AMPLITUDE_PX * steps
    observed = clean + _NOISE_PX * rng.standard_normal(clean.shape)
    likelihood = rng.uniform(0.95, 1.0, (n_frames, n_markers))
    occluded = _occlusions(rng, actions == groom, n_markers, rate)  # (F, M)
    observed[occluded] += rng.uniform(-60.0, 60.0, (int(occluded.sum()), 2))
    likelihood[occluded] = rng.uniform(0.01, 0.5, int(occluded.sum()))
    return clean, observed, likelihood


def _occlusions(
    rng: np.random.Generator, grooming: np.ndarray, n_markers: int, rate: float
) -> np.ndarray:
    """Occlusion episodes ``(F, M)`` of mean length 0.1 s: about 0.5 per marker per 10 s,
    and for the paws ten times as often while grooming."""
    n_frames = len(grooming)
    start_rate = np.full((n_frames, n_markers), 0.05 / rate)
    start_rate[grooming, :2] *= 10.0
    starts = np.flatnonzero((rng.random((n_frames, n_markers)) < start_rate).ravel())
    lengths = rng.geometric(1.0 / (0.1 * rate), len(starts))
    occluded = np.zeros((n_frames, n_markers), dtype=bool)
    frames, markers = np.divmod(starts, n_markers)
    for frame, marker, length in zip(frames, markers, lengths, strict=True):
        occluded[frame : frame + length, marker] = True
    return occluded


def simulate_pose(
    seed: int, index: int, frame_times: np.ndarray, wheel_moves: np.ndarray
) -> SyntheticPose:
    """The left-camera pose of session ``index`` of ``seed`` at ``frame_times`` (s), driven by
    the session's wheel movements ``(n_moves, 3)``; draws from its own generator."""
    rng = np.random.default_rng([seed, index, POSE_STREAM])
    position, velocity = wheel_kinematics(frame_times, wheel_moves)  # (F,), (F,)
    actions = action_sequence(rng, frame_times, np.abs(velocity))
    clean, observed, likelihood = render_pose(rng, frame_times, actions, position)
    columns: dict[str, np.ndarray] = {}
    for m, marker in enumerate(POSE_MARKERS):
        columns[f"{marker}_x"] = observed[:, m, 0]
        columns[f"{marker}_y"] = observed[:, m, 1]
        columns[f"{marker}_likelihood"] = likelihood[:, m]
    paw_speed = np.stack(
        [np.hypot(*np.gradient(clean[:, m], frame_times, axis=0).T) for m in (0, 1)]
    )  # (2, F) px/s
    return SyntheticPose(pd.DataFrame(columns), frame_times, actions, paw_speed)


def actions_on_grid(pose: SyntheticPose, n_grid: int, dt: float) -> np.ndarray:
    """One-hot actions ``(A, G)`` on the simulation grid: each grid step takes the action of
    the last frame at or before its centre (the first frame's before the video starts)."""
    centres = (np.arange(n_grid) + 0.5) * dt
    frame = np.clip(np.searchsorted(pose.frame_times, centres, side="right") - 1, 0, None)
    return np.eye(len(POSE_ACTIONS))[pose.actions[frame]].T


def pose_ground_truth(
    pose: SyntheticPose, centres: np.ndarray, per_probe_truth: list[dict[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """The :data:`POSE_GROUND_TRUTH_ARRAYS` of a session; ``centres`` ``(n, T)`` are the bin
    centres of the standard trial grid (s)."""
    frames = pose.frame_times
    right = np.clip(np.searchsorted(frames, centres), 1, len(frames) - 1)  # (n, T)
    nearest = np.where(centres - frames[right - 1] < frames[right] - centres, right - 1, right)
    weights = [
        truth.get("action_weights", np.zeros((len(truth["id"]), len(POSE_ACTIONS))))
        for truth in per_probe_truth
    ]
    return {
        "action_names": np.array(POSE_ACTIONS),
        "frame_times": frames.astype(np.float64),
        "actions": pose.actions.astype(np.int64),
        "paw_speed": pose.paw_speed,
        "action_bins": pose.actions[nearest].astype(np.int64),
        "left_paw_speed": np.interp(centres, frames, pose.paw_speed[0]),
        "right_paw_speed": np.interp(centres, frames, pose.paw_speed[1]),
        "cluster_action_weights": np.concatenate(weights),
    }

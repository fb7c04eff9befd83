"""Behaviour and latent signals of a synthetic session on the 5 ms simulation grid.

The wheel as the rotary encoder records it, whisker motion energy and the two cameras that
sample it, the covariates that drive the neurons (:data:`COVARIATE_NAMES`) and the shared
latent factors.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.signal import lfilter, oaconvolve

from .spec import (
    CAMERA_RATES_HZ,
    STANDARD_BIN_SIZE_S,
    STANDARD_N_BINS,
    STANDARD_WINDOW_S,
    SyntheticSessionSpec,
)
from .task import wheel_kinematics

__all__ = [
    "CAMERA_RATES_HZ",
    "COVARIATE_NAMES",
    "SIMULATION_DT_S",
    "WHEEL_RESOLUTION_RAD",
    "at_times",
    "grid_covariates",
    "latent_factors",
    "record_cameras",
    "stimulus_kernel",
    "trial_grid",
    "wheel_encoder",
]

#: Covariates that drive the latent factors and the neurons, in the order of the weight arrays.
COVARIATE_NAMES = (
    "wheel_speed",
    "whisker_motion_energy",
    "choice",
    "block",
    "stimulus_signed",
    "stimulus_onset",
)


#: Rotary encoder resolution of the wheel (rad per tick, X4 decoding of 1024 lines).
WHEEL_RESOLUTION_RAD = 2.0 * math.pi / 4096

#: Time step of the piecewise-constant firing rates (s).
SIMULATION_DT_S = 0.005


def _smooth(signal: np.ndarray, tau_s: float, dt: float) -> np.ndarray:
    """Causal exponential smoothing along the last axis."""
    decay = math.exp(-dt / tau_s)
    return lfilter([1.0 - decay], [1.0, -decay], signal, axis=-1)


def _ou_noise(rng: np.random.Generator, shape: tuple[int, ...], tau_s: float, dt: float):
    """Stationary Ornstein-Uhlenbeck noise of unit variance along the last axis."""
    decay = math.exp(-dt / tau_s)
    white = rng.standard_normal(shape) * math.sqrt(1.0 - decay**2)
    white[..., 0] = rng.standard_normal(shape[:-1])
    return lfilter([1.0], [1.0, -decay], white, axis=-1)


def at_times(grid_signal: np.ndarray, times: np.ndarray, dt: float) -> np.ndarray:
    """Value of a piecewise-constant grid signal ``(..., G)`` at ``times`` -> ``(..., *times)``."""
    index = np.clip(np.floor(times / dt).astype(np.int64), 0, grid_signal.shape[-1] - 1)
    return grid_signal[..., index]


def trial_grid(stim_on: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bin edges ``(n, T+1)`` and centres ``(n, T)`` of the standard grid around ``stim_on``."""
    offsets = STANDARD_WINDOW_S[0] + STANDARD_BIN_SIZE_S * np.arange(STANDARD_N_BINS + 1)
    edges = stim_on[:, None] + offsets[None, :]  # (n, T+1)
    centres = 0.5 * (edges[:, :-1] + edges[:, 1:])  # (n, T)
    return edges, centres


def wheel_encoder(
    rng: np.random.Generator, moves: np.ndarray, duration: float
) -> tuple[np.ndarray, np.ndarray]:
    """The wheel as the rotary encoder records it: ``(timestamps, position)``, one irregular
    timestamp per tick of :data:`WHEEL_RESOLUTION_RAD` (plus the first and last sample)."""
    fine_times = np.arange(0.0, duration, 0.001)  # (W,)
    fine_position, _ = wheel_kinematics(fine_times, moves)
    ticks = np.round(fine_position / WHEEL_RESOLUTION_RAD).astype(np.int64)
    keep = np.concatenate([[0], np.flatnonzero(np.diff(ticks)) + 1, [len(ticks) - 1]])
    keep = np.unique(keep)
    timestamps = fine_times[keep] + rng.uniform(0.0, 0.0009, len(keep))
    return timestamps, ticks[keep] * WHEEL_RESOLUTION_RAD


def _step_signal(
    starts: np.ndarray, stops: np.ndarray, values: np.ndarray, n_grid: int, dt: float
) -> np.ndarray:
    """``(G,)`` sum of boxcars: ``values[i]`` from ``starts[i]`` to ``stops[i]``."""
    steps = np.zeros(n_grid + 1)
    i0 = np.clip((starts / dt).astype(np.int64), 0, n_grid)
    i1 = np.clip((stops / dt).astype(np.int64), 0, n_grid)
    np.add.at(steps, i0, values)
    np.add.at(steps, i1, -values)
    return np.cumsum(steps)[:-1]


def stimulus_kernel(times_s: np.ndarray) -> np.ndarray:
    """Response to a stimulus at ``times_s`` after its onset: an alpha function peaking at
    120 ms, zero before 40 ms and from 800 ms on."""
    latency, tau = 0.04, 0.08
    shifted = np.maximum(times_s - latency, 0.0) / tau
    inside = (times_s >= 0.0) & (times_s < 0.8)
    return np.where(inside, shifted * np.exp(1.0 - shifted), 0.0)


def _stimulus_responses(trials: dict[str, Any], n_grid: int, dt: float) -> np.ndarray:
    """``(2, G)`` signed and unsigned stimulus responses: alpha kernels at each onset."""
    impulses = np.zeros((2, n_grid))
    onset_index = np.clip(
        (trials["true_times"]["stimOn_times"] / dt).astype(np.int64), 0, n_grid - 1
    )
    np.add.at(impulses[0], onset_index, trials["signed_contrast"])
    np.add.at(impulses[1], onset_index, 0.3 + trials["contrast"])
    kernel = stimulus_kernel(np.arange(0.0, 0.8, dt))
    return oaconvolve(impulses, kernel[None, :], axes=1)[:, :n_grid]  # (2, G)


def grid_covariates(
    rng: np.random.Generator,
    trials: dict[str, Any],
    n_grid: int,
    dt: float,
    choice_onset_s: float = -0.1,
) -> tuple[np.ndarray, np.ndarray]:
    """The :data:`COVARIATE_NAMES` on the simulation grid ``(6, G)`` (normalised), and the
    whisker motion-energy signal ``(G,)`` (a.u.) the cameras record. The choice signal starts
    ``choice_onset_s`` after the first movement and lasts until 0.5 s after feedback."""
    grid_centres = (np.arange(n_grid) + 0.5) * dt  # (G,)
    true_times = trials["true_times"]
    _, grid_velocity = wheel_kinematics(grid_centres, trials["moves"])
    grid_speed = np.abs(grid_velocity)  # (G,) rad/s
    whisking = np.maximum(_ou_noise(rng, (n_grid,), 0.5, dt) - 0.3, 0.0)
    me_signal = 1.0 + 0.8 * _smooth(grid_speed, 0.05, dt) + 1.2 * whisking  # (G,) a.u.
    choice_signal = _smooth(
        _step_signal(
            true_times["firstMovement_times"] + choice_onset_s,
            true_times["feedback_times"] + 0.5,
            trials["choice"],
            n_grid,
            dt,
        ),
        0.1,
        dt,
    )
    next_start = np.append(true_times["intervals_0"][1:], trials["duration"])
    block_signal = _step_signal(
        true_times["intervals_0"], next_start, (trials["p_left"] - 0.5) / 0.3, n_grid, dt
    )
    stimulus = _stimulus_responses(trials, n_grid, dt)  # (2, G)
    covariates = np.stack(
        [
            grid_speed / 2.0,
            (me_signal - me_signal.mean()) / me_signal.std(),
            choice_signal,
            block_signal,
            stimulus[0],
            stimulus[1],
        ]
    )  # (6, G)
    return covariates, me_signal


def latent_factors(
    rng: np.random.Generator,
    covariates: np.ndarray,
    n_latents: int,
    dt: float,
    mixing_sd: float = 0.5,
    noise_sd: float = 0.6,
) -> tuple[np.ndarray, np.ndarray]:
    """``(K, G)`` shared latent factors: a random mix of the covariates (weights of standard
    deviation ``mixing_sd``) plus smooth noise of standard deviation ``noise_sd``; and the
    mixing weights ``(K, 6)``."""
    n_grid = covariates.shape[1]
    latent_mixing = rng.normal(0.0, mixing_sd, (n_latents, len(COVARIATE_NAMES)))
    noise = _ou_noise(rng, (n_latents, n_grid), 0.3, dt)
    return latent_mixing @ covariates + noise_sd * noise, latent_mixing


def record_cameras(
    rng: np.random.Generator,
    spec: SyntheticSessionSpec,
    me_signal: np.ndarray,
    duration: float,
    dt: float,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, Any]]:
    """Frame times (extra leading timestamps included) and motion energy of the cameras of
    ``spec.cameras``, and a description of both cameras (both are always simulated)."""
    camera_times: dict[str, np.ndarray] = {}
    camera_me: dict[str, np.ndarray] = {}
    camera_info: dict[str, Any] = {}
    for camera in ("left", "right"):
        rate = CAMERA_RATES_HZ[camera]
        frames = np.arange(0.2, duration - 0.05, 1.0 / rate)
        frames = np.sort(frames + rng.normal(0.0, 0.0003, len(frames)))
        scale = 1500.0 if camera == "left" else 900.0
        values = scale * at_times(me_signal, frames, dt) + rng.normal(0.0, 40.0, len(frames))
        n_extra = spec.n_extra_left_timestamps if camera == "left" else 0
        extra = frames[0] - (np.arange(n_extra, 0, -1) + 0.5) / rate
        if camera in spec.cameras:
            camera_times[camera] = np.concatenate([extra, frames])
            camera_me[camera] = np.maximum(values, 0.0).astype(np.float32)
        camera_info[camera] = {"n_frames": len(frames), "n_extra_timestamps": n_extra}
    return camera_times, camera_me, camera_info

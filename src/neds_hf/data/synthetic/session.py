"""One whole synthetic session in memory: generation from a spec, ground truth, planted faults."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .licks import generate_licks
from .neurons import REGION_TUNING, SyntheticProbe, simulate_probe
from .oracle import observed_expected_counts
from .pose import SyntheticPose, actions_on_grid, pose_ground_truth, simulate_pose
from .signals import (
    COVARIATE_NAMES,
    SIMULATION_DT_S,
    at_times,
    grid_covariates,
    latent_factors,
    record_cameras,
    trial_grid,
    wheel_encoder,
)
from .spec import (
    FAULTS,
    STANDARD_BIN_SIZE_S,
    STANDARD_WINDOW_S,
    SyntheticSessionSpec,
    session_rel_path,
    synthetic_session_identity,
)
from .task import (
    DEFAULT_MAX_RT_S,
    DEFAULT_MAX_TRIAL_DURATION_S,
    DEFAULT_MIN_RT_S,
    EXCLUSION_REASONS,
    exclusion_flags,
    first_exclusion_reason,
    generate_trials,
    wheel_kinematics,
)

__all__ = ["GROUND_TRUTH_ARRAYS", "SyntheticSession", "generate_session"]

#: Arrays of the ground-truth ``.npz`` (C = clusters of all probes in merged order: probe00
#: rows then probe01 rows..., K = latent factors, n = trials, T = 100 bins), name -> meaning.
GROUND_TRUTH_ARRAYS = {
    "eid": "() str, session id",
    "fault": "() str, planted fault name or ''",
    "window_s": "(2,) float64, trial window around stimOn (s)",
    "bin_size_s": "() float64, bin width (s)",
    "stim_on_times": "(n,) float64, true stimulus onsets (s); equal to the table's stimOn_times "
    "except in trials where a NaN was planted there",
    "preset": "() str, the generator's realism preset (spec.PRESETS)",
    "expected_counts": "(n, C, T) float64, expected spike count per bin (integral of the rate)",
    "expected_counts_observed": "(n, C, T) float64, expected spike count per bin given what a "
    "model of the dataset observes (wheel, whisker motion energy, choice, block), the stimulus "
    "and the latents' noise marginalised (the encoding oracle, see .oracle)",
    "latents": "(n, K, T) float64, latent factors at the bin centres",
    "covariates": "(n, 6, T) float64, normalised covariates at the bin centres",
    "covariate_names": "(6,) str",
    "wheel_speed": "(n, T) float64, |wheel velocity| of the noise-free trajectory at bin "
    "centres (rad/s)",
    "cluster_probe": "(C,) str, probe name",
    "cluster_id": "(C,) int64, row in that probe's ALF clusters tables",
    "cluster_uuid": "(C,) str",
    "cluster_channel": "(C,) int64, peak channel",
    "cluster_depth_um": "(C,) float64",
    "cluster_region_allen_id": "(C,) int64",
    "cluster_region_allen": "(C,) str",
    "cluster_region_beryl": "(C,) str",
    "cluster_region_cosmos": "(C,) str",
    "cluster_base_rate_hz": "(C,) float64, baseline rate",
    "cluster_mean_rate_hz": "(C,) float64, true mean rate over the whole recording",
    "cluster_covariate_weights": "(C, 6) float64, log-rate weights on the covariates",
    "cluster_latent_loadings": "(C, K) float64, log-rate loadings on the latents",
    "trial_first_reason": "(n,) str, planted exclusion reason ('' for a good trial)",
    "exclusion_reasons": "(5,) str, EXCLUSION_REASONS",
    "exclusion_first_reason_counts": "(5,) int64, trials counted under their first reason",
    "exclusion_reason_counts": "(5,) int64, trials satisfying each reason",
}


@dataclass
class SyntheticSession:
    """One generated session: everything written to ALF plus the ground truth."""

    spec: SyntheticSessionSpec
    eid: str
    lab: str
    subject: str
    date: str  # ISO date
    number: int
    trials: pd.DataFrame  # ALF trials table, columns TRIALS_TABLE_COLUMNS
    trials_extra: dict[str, np.ndarray]  # loose _ibl_trials.<name>.npy datasets
    wheel_timestamps: np.ndarray  # (n_wheel,) float64, s, irregular
    wheel_position: np.ndarray  # (n_wheel,) float64, rad
    camera_times: dict[str, np.ndarray]  # camera -> timestamps as written (extras included)
    camera_motion_energy: dict[str, np.ndarray]  # camera -> (n_frames,) float32
    probes: list[SyntheticProbe]
    ground_truth: dict[str, np.ndarray]
    info: dict[str, Any] = field(default_factory=dict)  # JSON-able description
    lick_times: np.ndarray | None = None  # (n_licks,) float64, s; None: no licks.times file
    pose: SyntheticPose | None = None  # left-camera pose and true actions (with a left camera)
    pose_truth: dict[str, np.ndarray] | None = None  # POSE_GROUND_TRUTH_ARRAYS

    @property
    def session_rel_path(self) -> str:
        """``lab/Subjects/subject/date/number`` relative to the cache root."""
        return session_rel_path(self.lab, self.subject, self.date, self.number)


def generate_session(spec: SyntheticSessionSpec) -> SyntheticSession:
    """Generate one synthetic session (arrays in memory plus ground truth) from its spec.

    The stages draw from one generator seeded by ``(seed, index)`` in a fixed order (trials,
    wheel, covariates, latents, cameras, probes), so the same spec gives the same session. The
    left-camera pose (:mod:`.pose`) draws from generators of its own.
    """
    identity = synthetic_session_identity(spec.seed, spec.index)
    rng = np.random.default_rng([spec.seed, spec.index, 20240506])
    trials = generate_trials(spec, rng)
    dt = SIMULATION_DT_S
    n_grid = math.ceil(trials["duration"] / dt)
    wheel_timestamps, wheel_position = wheel_encoder(rng, trials["moves"], trials["duration"])
    preset = spec.preset_parameters
    covariates, me_signal = grid_covariates(
        rng, trials, n_grid, dt, preset.choice_onset_s
    )  # (6, G), (G,)
    latents, latent_mixing = latent_factors(
        rng, covariates, spec.n_latents, dt, preset.latent_mixing, preset.latent_noise
    )  # (K, G), (K, 6)
    camera_times, camera_me, camera_info = record_cameras(
        rng, spec, me_signal, trials["duration"], dt
    )
    edges, centres = trial_grid(trials["true_times"]["stimOn_times"])  # (n, T+1), (n, T)
    signals = {"covariates": covariates, "latents": latents, "edges": edges, "dt": dt}
    pose = None
    if "left" in camera_times:
        frame_times = camera_times["left"][spec.n_extra_left_timestamps :]
        pose = simulate_pose(spec.seed, spec.index, frame_times, trials["moves"])
        if spec.action_tuning > 0:
            signals["actions"] = actions_on_grid(pose, n_grid, dt)  # (A, G)
    region_loadings = {
        r: rng.normal(0.0, preset.region_loading, spec.n_latents) for r in REGION_TUNING
    }
    probes, per_probe_truth = [], []
    for probe_index in range(spec.n_probes):
        probe, truth = simulate_probe(
            rng, spec, probe_index, identity["eid"], signals, region_loadings
        )
        probes.append(probe)
        per_probe_truth.append(truth)
    _add_observed_oracle(spec, trials, latent_mixing, per_probe_truth, signals)
    ground_truth = _ground_truth(spec, identity, trials, per_probe_truth, signals, centres)
    info = _session_info(spec, identity, n_grid * dt, camera_info, ground_truth)
    session = SyntheticSession(
        spec=spec,
        eid=identity["eid"],
        lab=identity["lab"],
        subject=identity["subject"],
        date=identity["date"],
        number=identity["number"],
        trials=trials["table"],
        trials_extra=trials["extra"],
        wheel_timestamps=wheel_timestamps,
        wheel_position=wheel_position,
        camera_times=camera_times,
        camera_motion_energy=camera_me,
        probes=probes,
        ground_truth=ground_truth,
        info=info,
        lick_times=generate_licks(spec, trials["table"], n_grid * dt),
        pose=pose,
        pose_truth=None if pose is None else pose_ground_truth(pose, centres, per_probe_truth),
    )
    _apply_fault(session)
    info["probes"] = [
        {
            "name": probe.name,
            "collection": probe.collection(),
            "revision": spec.sorting_revision,
            "n_clusters": probe.n_clusters,
            "has_spike_sorting": probe.has_spike_sorting,
        }
        for probe in session.probes
    ]
    return session


def _add_observed_oracle(
    spec: SyntheticSessionSpec,
    trials: dict[str, Any],
    latent_mixing: np.ndarray,
    per_probe_truth: list[dict[str, np.ndarray]],
    signals: dict[str, Any],
) -> None:
    """Add each probe's oracle, ``expected_observed`` (expected counts given what a model
    observes), to its truth; drawn from the oracle's own generator, probe by probe."""
    oracle_rng = np.random.default_rng([spec.seed, spec.index, 20240507])
    for truth in per_probe_truth:
        truth["expected_observed"] = observed_expected_counts(
            oracle_rng,
            trials,
            signals["covariates"],
            latent_mixing,
            spec.preset_parameters.latent_noise,
            truth,
            signals["dt"],
            signals.get("actions"),
        )


def _ground_truth(
    spec: SyntheticSessionSpec,
    identity: dict[str, Any],
    trials: dict[str, Any],
    per_probe_truth: list[dict[str, np.ndarray]],
    signals: dict[str, Any],
    centres: np.ndarray,
) -> dict[str, np.ndarray]:
    """The :data:`GROUND_TRUTH_ARRAYS` of a session; checks that every planted bad trial is
    excluded for the reason it was planted for (the rules of :mod:`neds_hf.data.exclusion`)."""
    flags = exclusion_flags(trials["table"])
    first_reason = first_exclusion_reason(flags)
    if not np.array_equal(first_reason, trials["kinds"].astype(first_reason.dtype)):
        raise RuntimeError("planted bad trials do not match their intended exclusion reason")
    dt = signals["dt"]
    _, wheel_velocity_centres = wheel_kinematics(centres.ravel(), trials["moves"])

    def clusters(key: str) -> np.ndarray:
        return np.concatenate([truth[key] for truth in per_probe_truth])

    return {
        "eid": np.array(identity["eid"]),
        "fault": np.array(spec.fault or ""),
        "window_s": np.array(STANDARD_WINDOW_S, dtype=np.float64),
        "bin_size_s": np.array(STANDARD_BIN_SIZE_S),
        "stim_on_times": trials["true_times"]["stimOn_times"].astype(np.float64),
        "preset": np.array(spec.preset),
        "expected_counts": np.concatenate([t["expected"] for t in per_probe_truth], axis=1),
        "expected_counts_observed": np.concatenate(
            [t["expected_observed"] for t in per_probe_truth], axis=1
        ),
        "latents": at_times(signals["latents"], centres, dt).transpose(1, 0, 2),
        "covariates": at_times(signals["covariates"], centres, dt).transpose(1, 0, 2),
        "covariate_names": np.array(COVARIATE_NAMES),
        "wheel_speed": np.abs(wheel_velocity_centres).reshape(centres.shape),
        "cluster_probe": clusters("probe"),
        "cluster_id": clusters("id"),
        "cluster_uuid": clusters("uuid"),
        "cluster_channel": clusters("channel"),
        "cluster_depth_um": clusters("depth"),
        "cluster_region_allen_id": clusters("allen_id"),
        "cluster_region_allen": clusters("allen"),
        "cluster_region_beryl": clusters("beryl"),
        "cluster_region_cosmos": clusters("cosmos"),
        "cluster_base_rate_hz": clusters("base"),
        "cluster_mean_rate_hz": clusters("mean"),
        "cluster_covariate_weights": clusters("weights"),
        "cluster_latent_loadings": clusters("loadings"),
        "trial_first_reason": first_reason,
        "exclusion_reasons": np.array(EXCLUSION_REASONS),
        "exclusion_first_reason_counts": np.array(
            [int((first_reason == r).sum()) for r in EXCLUSION_REASONS], dtype=np.int64
        ),
        "exclusion_reason_counts": np.array(
            [int(flags[r].sum()) for r in EXCLUSION_REASONS], dtype=np.int64
        ),
    }


def _session_info(
    spec: SyntheticSessionSpec,
    identity: dict[str, Any],
    duration_s: float,
    camera_info: dict[str, Any],
    ground_truth: dict[str, np.ndarray],
) -> dict[str, Any]:
    """The JSON description written next to the ground truth (``probes`` filled later)."""
    return {
        "eid": identity["eid"],
        "session_rel_path": identity["rel_path"],
        "lab": identity["lab"],
        "subject": identity["subject"],
        "date": identity["date"],
        "number": identity["number"],
        "spec": _spec_description(spec),
        "preset": spec.preset,
        "fault": spec.fault,
        "fault_description": FAULTS.get(spec.fault or "", ""),
        "duration_s": duration_s,
        "simulation_dt_s": SIMULATION_DT_S,
        "n_trials": spec.n_trials,
        "probes": [],
        "cameras": camera_info,
        "exclusion_reasons": list(EXCLUSION_REASONS),
        "exclusion_thresholds_s": {
            "min_rt": DEFAULT_MIN_RT_S,
            "max_rt": DEFAULT_MAX_RT_S,
            "max_trial_duration": DEFAULT_MAX_TRIAL_DURATION_S,
        },
        "exclusion_first_reason_counts": {
            r: int(c)
            for r, c in zip(EXCLUSION_REASONS, ground_truth["exclusion_first_reason_counts"])
        },
        "exclusion_reason_counts": {
            r: int(c) for r, c in zip(EXCLUSION_REASONS, ground_truth["exclusion_reason_counts"])
        },
        "n_planted_bad_trials": int(spec.n_bad_trials),
    }


def _spec_description(spec: SyntheticSessionSpec) -> dict[str, Any]:
    """The spec as a dict; ``action_tuning`` only when set, so that sessions generated without
    it keep the description (and the ground-truth JSON) they always had."""
    description = dataclasses.asdict(spec)
    if not spec.action_tuning:
        del description["action_tuning"]
    return description


def _apply_fault(session: SyntheticSession) -> None:
    """Plant ``session.spec.fault`` in the in-memory arrays (the ground truth is unchanged)."""
    fault = session.spec.fault
    if fault is None:
        return
    probe = session.probes[0]
    if fault == "no_motion_energy":
        session.camera_motion_energy = {}
    elif fault == "no_spike_sorting":
        for each in session.probes:
            each.has_spike_sorting = False
    elif fault == "empty_trials":
        session.trials = session.trials.iloc[0:0].reset_index(drop=True)
        session.trials_extra = {k: v[:0] for k, v in session.trials_extra.items()}
    elif fault == "mismatched_spike_lengths":
        probe.spike_clusters = probe.spike_clusters[:-7]
    elif fault == "clusters_out_of_range":
        clusters = probe.spike_clusters.copy()
        clusters[[0, len(clusters) // 2, len(clusters) - 1]] = probe.n_clusters + 2
        probe.spike_clusters = clusters
    elif fault == "corrupted_spike_times":
        pass  # applied when the file is written
    elif fault == "no_licks":
        session.lick_times = None
    else:  # guarded by SyntheticSessionSpec
        raise ValueError(f"unknown fault {fault!r}")

"""What a synthetic session is made of: its specification, identity and trial grid."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import pandas as pd

__all__ = [
    "CAMERA_RATES_HZ",
    "FAULTS",
    "PRESETS",
    "STANDARD_BIN_SIZE_S",
    "STANDARD_N_BINS",
    "STANDARD_WINDOW_S",
    "SYNTHETIC_LABS",
    "SYNTHETIC_NAMESPACE",
    "SyntheticPreset",
    "SyntheticSessionSpec",
    "session_eid",
    "session_rel_path",
    "synthetic_session_identity",
]

#: Namespace of the synthetic session ids (``uuid5`` of the relative session path).
SYNTHETIC_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "neds_hf/synthetic-ibl-session")

#: Standard trial grid of the ground truth: window around ``stimOn_times`` (s), bin size (s),
#: number of bins (``round(2.0 / 0.02) = 100``); bin ``k`` is ``[t0 + k*dt, t0 + (k+1)*dt)``.
STANDARD_WINDOW_S = (-0.5, 1.5)
STANDARD_BIN_SIZE_S = 0.02
STANDARD_N_BINS = 100


#: Camera frame rates (Hz).
CAMERA_RATES_HZ = {"left": 60.0, "right": 150.0}

#: Planted faults (``SyntheticSessionSpec.fault``) for the bad-input paths, with what they do.
FAULTS: dict[str, str] = {
    "no_motion_energy": "no ROIMotionEnergy file on either camera (camera times are kept)",
    "no_spike_sorting": "probe folders hold channels only: no spikes/clusters in any collection",
    "empty_trials": "_ibl_trials.table.pqt has every column but zero rows",
    "mismatched_spike_lengths": "probe00 spikes.clusters is 7 entries shorter than spikes.times",
    "clusters_out_of_range": "3 spikes of probe00 point past the end of its clusters table",
    "corrupted_spike_times": "probe00 spikes.times.npy is truncated (valid header, cut data)",
    "no_licks": "no alf/licks.times.npy (a session without lick detection; kept, licks missing)",
}


@dataclass(frozen=True)
class SyntheticPreset:
    """How strongly behaviour and the shared latents drive the neurons of a session.

    ``covariate_gain`` multiplies the region tuning to each covariate (order of
    ``COVARIATE_NAMES``: wheel speed, whisker motion energy, choice, block, signed stimulus,
    stimulus onset); ``latent_mixing`` is the standard deviation of the weights mixing the
    covariates into the latent factors, ``latent_noise`` the standard deviation of the smooth
    noise they add (the part of the latents no behaviour explains), ``region_loading`` the
    standard deviation of each region's shared loadings on the latents; the choice signal
    starts ``choice_onset_s`` after the first wheel movement (negative: before it).
    """

    name: str
    covariate_gain: tuple[float, float, float, float, float, float]
    latent_mixing: float
    latent_noise: float
    region_loading: float
    choice_onset_s: float


#: Realism presets of the generator. ``easy`` (the default, unchanged output for a given seed)
#: makes every covariate easy to decode; ``realistic`` imitates IBL recordings: choice and block
#: are weak, distributed signals (choice starting with the movement it accompanies), wheel
#: tuning is moderate and shared per-region latents add variability that behaviour does not
#: explain, so linear decoders from counts land near typical IBL values (calibrated with
#: ``neds_hf.baselines`` on 300-trial, 60-unit sessions: choice balanced accuracy ~0.85, block
#: ~0.6, wheel-speed R² ~0.4 from binned counts).
PRESETS: dict[str, SyntheticPreset] = {
    "easy": SyntheticPreset(
        name="easy",
        covariate_gain=(1.0, 1.0, 1.0, 1.0, 1.0, 1.0),
        latent_mixing=0.5,
        latent_noise=0.6,
        region_loading=0.4,
        choice_onset_s=-0.1,
    ),
    "realistic": SyntheticPreset(
        name="realistic",
        covariate_gain=(1.4, 0.6, 0.7, 0.3, 0.8, 0.8),
        latent_mixing=0.25,
        latent_noise=0.7,
        region_loading=0.5,
        choice_onset_s=0.05,
    ),
}


SYNTHETIC_LABS = ("cortexlab", "churchlandlab", "hoferlab", "mainenlab", "angelakilab", "danlab")


@dataclass(frozen=True)
class SyntheticSessionSpec:
    """Sizes, seed and options of one synthetic session.

    ``seed`` and ``index`` fully determine the session (its path, id and every array).
    ``sorters`` gives each probe's spike-sorting collection (``alf/probeXX/<sorter>``; the last
    entry is repeated for further probes; ``""`` writes straight into ``alf/probeXX``).
    ``sorting_revision`` (``"YYYY-MM-DD"``) writes spike sorting into a ``#revision#`` folder.
    ``preset`` names an entry of :data:`PRESETS` (how the neurons are driven).
    ``duration_s`` stretches the inter-trial intervals to reach that recording length (it must
    be at least the natural length). ``fault`` is a key of :data:`FAULTS` or None.
    ``action_tuning`` > 0 tunes half of the neurons to the latent action of the left-camera
    pose (:mod:`.pose`; log-rate weights of that standard deviation per action), so that the
    actions can be decoded from spikes; 0 (the default) leaves every file as before.
    """

    seed: int = 0
    index: int = 0
    n_trials: int = 200
    n_neurons_per_probe: int = 40
    n_probes: int = 1
    n_latents: int = 3
    duration_s: float | None = None
    first_block_trials: int = 90
    n_nan_trials: int = 3
    n_no_choice_trials: int = 2
    n_rt_negative_trials: int = 2
    n_rt_too_long_trials: int = 2
    n_trial_too_long_trials: int = 2
    no_choice_timeout_s: float = 60.0
    low_rate_fraction: float = 0.25
    sorters: tuple[str, ...] = ("pykilosort",)
    sorting_revision: str | None = None
    cameras: tuple[str, ...] = ("left", "right")
    n_extra_left_timestamps: int = 3
    fault: str | None = None
    preset: str = "easy"
    action_tuning: float = 0.0

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; known presets: {sorted(PRESETS)}")
        if self.n_trials < 1 or self.n_neurons_per_probe < 1 or self.n_probes < 1:
            raise ValueError(
                f"n_trials, n_neurons_per_probe and n_probes must be >= 1, got "
                f"{self.n_trials}, {self.n_neurons_per_probe}, {self.n_probes}"
            )
        if self.n_probes > 100:
            raise ValueError(f"n_probes must be <= 100 (probe00..probe99), got {self.n_probes}")
        if self.n_latents < 1:
            raise ValueError(f"n_latents must be >= 1, got {self.n_latents}")
        if self.n_bad_trials > self.n_trials // 2:
            raise ValueError(
                f"{self.n_bad_trials} planted bad trials is more than half of the "
                f"{self.n_trials} trials"
            )
        if self.fault is not None and self.fault not in FAULTS:
            raise ValueError(f"unknown fault {self.fault!r}; known faults: {sorted(FAULTS)}")
        unknown_cameras = set(self.cameras) - set(CAMERA_RATES_HZ)
        if unknown_cameras:
            raise ValueError(f"unknown cameras {sorted(unknown_cameras)}; use 'left' / 'right'")
        if not self.sorters:
            raise ValueError("sorters must name at least one spike-sorting collection")
        if self.sorting_revision is not None:
            try:
                pd.Timestamp(self.sorting_revision)
            except ValueError as error:
                raise ValueError(
                    f"sorting_revision must be an ISO date, got {self.sorting_revision!r}"
                ) from error
        if not 0.0 <= self.low_rate_fraction <= 1.0:
            raise ValueError(f"low_rate_fraction must lie in [0, 1], got {self.low_rate_fraction}")
        if self.n_extra_left_timestamps < 0:
            raise ValueError("n_extra_left_timestamps must be >= 0")
        if self.action_tuning < 0 or (self.action_tuning > 0 and "left" not in self.cameras):
            raise ValueError(
                f"action_tuning must be >= 0 and needs the left camera (whose pose carries the "
                f"actions), got {self.action_tuning} with cameras {self.cameras}"
            )

    @property
    def n_bad_trials(self) -> int:
        """Total number of planted bad trials."""
        return (
            self.n_nan_trials
            + self.n_no_choice_trials
            + self.n_rt_negative_trials
            + self.n_rt_too_long_trials
            + self.n_trial_too_long_trials
        )

    @property
    def planted_counts(self) -> dict[str, int]:
        """Number of planted bad trials per exclusion reason (their first reason)."""
        return {
            "nan_field": self.n_nan_trials,
            "no_choice": self.n_no_choice_trials,
            "rt_negative": self.n_rt_negative_trials,
            "rt_too_long": self.n_rt_too_long_trials,
            "trial_too_long": self.n_trial_too_long_trials,
        }

    @property
    def preset_parameters(self) -> SyntheticPreset:
        """The :class:`SyntheticPreset` named by ``preset``."""
        return PRESETS[self.preset]

    def probe_names(self) -> list[str]:
        """Probe names ``probe00``, ``probe01``..."""
        return [f"probe{p:02d}" for p in range(self.n_probes)]

    def sorter_of(self, probe_index: int) -> str:
        """Spike-sorting collection name of a probe."""
        return self.sorters[min(probe_index, len(self.sorters) - 1)]


def session_rel_path(lab: str, subject: str, date: str, number: int) -> str:
    """Relative ALF session path ``lab/Subjects/subject/YYYY-MM-DD/NNN``."""
    return f"{lab}/Subjects/{subject}/{date}/{int(number):03d}"


def session_eid(rel_path: str) -> str:
    """Deterministic session id of a relative session path (``uuid5`` in our namespace)."""
    return str(uuid.uuid5(SYNTHETIC_NAMESPACE, rel_path))


def synthetic_session_identity(seed: int, index: int) -> dict[str, Any]:
    """Lab, subject, date, number, relative path and eid of session ``index`` of ``seed``."""
    lab = SYNTHETIC_LABS[index % len(SYNTHETIC_LABS)]
    subject = f"SYN{seed:03d}_{index:03d}"
    date = (pd.Timestamp("2023-01-02") + pd.Timedelta(days=index)).date().isoformat()
    number = 1
    rel = session_rel_path(lab, subject, date, number)
    return {
        "lab": lab,
        "subject": subject,
        "date": date,
        "number": number,
        "rel_path": rel,
        "eid": session_eid(rel),
    }

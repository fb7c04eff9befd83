"""The raw, unbinned content of one IBL session, as handed from the ONE loader to preprocessing.

`RawSession` is the contract between :mod:`neds_hf.data.ibl` (which fills it from ONE, online
or from a local cache) and :mod:`neds_hf.data.preprocess` (which turns it into binned trials).
Keeping it a plain container of numpy arrays and pandas tables means preprocessing can be tested
on hand-made sessions without any ALF files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .pose import PawPose

__all__ = [
    "CLUSTER_COLUMNS",
    "TRIAL_COLUMNS",
    "RawSession",
]

#: Columns of :attr:`RawSession.clusters`, one row per cluster of every probe (probes merged).
CLUSTER_COLUMNS = (
    "probe",  # probe name, e.g. "probe00"
    "cluster_id",  # row in that probe's ALF clusters.* tables
    "cluster_uuid",  # IBL cluster uuid (stable across re-sorts)
    "region_allen",  # Allen CCF acronym of the cluster's peak channel
    "region_beryl",  # Beryl-mapped acronym
    "region_cosmos",  # Cosmos-mapped acronym
    "depth_um",  # depth along the probe (µm from the tip)
    "x_um",  # medio-lateral coordinate from bregma (µm)
    "y_um",  # antero-posterior coordinate from bregma (µm)
    "z_um",  # dorso-ventral coordinate from bregma (µm)
    "qc_label",  # clusters.metrics `label` (fraction of IBL QC tests passed; 1 = good unit)
)

#: ALF trials columns that preprocessing relies on.
TRIAL_COLUMNS = (
    "stimOn_times",
    "goCue_times",
    "firstMovement_times",
    "feedback_times",
    "choice",
    "feedbackType",
    "probabilityLeft",
    "contrastLeft",
    "contrastRight",
    "rewardVolume",
)


@dataclass
class RawSession:
    """Everything preprocessing needs from one session, probes already merged.

    Spike cluster indices are *global*: row ``i`` of :attr:`clusters` is the cluster that
    ``spike_clusters == i`` refers to, whatever probe it came from.
    """

    session_id: str
    subject: str
    lab: str
    date: str  # ISO date, e.g. "2022-03-01"
    probes: list[str]
    spike_times: np.ndarray  # (n_spikes,) float64, seconds, sorted
    spike_clusters: np.ndarray  # (n_spikes,) int64, row in `clusters`
    clusters: pd.DataFrame  # one row per cluster, columns CLUSTER_COLUMNS
    trials: pd.DataFrame  # ALF trials table; index = row in the ALF table
    wheel_timestamps: np.ndarray  # (n_wheel,) float64, seconds
    wheel_position: np.ndarray  # (n_wheel,) float64, radians
    motion_energy_times: np.ndarray  # (n_frames,) float64, seconds (already aligned to frames)
    motion_energy: np.ndarray  # (n_frames,) float, whisker ROI motion energy
    motion_energy_camera: str = "left"  # camera the motion energy came from
    metadata: dict[str, Any] = field(default_factory=dict)  # collections, revisions, ...
    lick_times: np.ndarray | None = None  # (n_licks,) float64, s, sorted; None: no licks data
    paw_pose: PawPose | None = None  # left-camera paw positions (data.pose); None: not loaded

    def __post_init__(self) -> None:
        if len(self.spike_times) != len(self.spike_clusters):
            raise ValueError(
                f"session {self.session_id}: spike_times has {len(self.spike_times)} entries but "
                f"spike_clusters has {len(self.spike_clusters)}"
            )
        if len(self.wheel_timestamps) != len(self.wheel_position):
            raise ValueError(
                f"session {self.session_id}: wheel timestamps ({len(self.wheel_timestamps)}) and "
                f"positions ({len(self.wheel_position)}) differ in length"
            )
        if len(self.motion_energy_times) != len(self.motion_energy):
            raise ValueError(
                f"session {self.session_id}: motion energy times ({len(self.motion_energy_times)})"
                f" and values ({len(self.motion_energy)}) differ in length"
            )
        if self.lick_times is not None and not (
            np.all(np.isfinite(self.lick_times)) and np.all(np.diff(self.lick_times) >= 0)
        ):
            raise ValueError(f"session {self.session_id}: lick times are not finite and sorted")
        missing = [c for c in CLUSTER_COLUMNS if c not in self.clusters.columns]
        if missing:
            raise ValueError(f"session {self.session_id}: clusters table lacks columns {missing}")
        if len(self.spike_clusters) and (
            self.spike_clusters.min() < 0 or self.spike_clusters.max() >= len(self.clusters)
        ):
            raise ValueError(
                f"session {self.session_id}: spike_clusters point outside the clusters table "
                f"(range {self.spike_clusters.min()}..{self.spike_clusters.max()}, "
                f"{len(self.clusters)} clusters)"
            )

    @property
    def n_clusters(self) -> int:
        """Number of clusters over all probes."""
        return len(self.clusters)

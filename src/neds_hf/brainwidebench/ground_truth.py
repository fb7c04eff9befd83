"""Ground truth of a NEDS dataset in the BrainWideBench layout, and what each file expects.

``neds-hf export-bwb-gt`` writes ``<gt>/<task_id>/<recording_id>/ground_truth.safetensors``
(TS1: ``trial_id``, ``values`` and, for the tasks the package scores with a mask, ``mask``;
TS2: ``window_timestamps``, ``targets``) and ``<gt>/ts3-unit_cosmos/ground_truth.safetensors``
(``entity_ids``, ``targets`` and the ``label_names`` metadata), the paths and tensors the
package's scorers read. :class:`BwbTargets` is the one selection of scored entries the
writer and the prediction export share (rules in :mod:`neds_hf.brainwidebench.tasks`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .recordings import DatasetRecordings, load_recordings
from .tasks import (
    TS1Targets,
    TS2Targets,
    TS3Targets,
    require_bwb,
    ts1_targets,
    ts1_tasks_for,
    ts2_targets,
    ts3_targets,
)
from .validation import ExpectedFile

__all__ = [
    "GROUND_TRUTH_FILE",
    "SUMMARY_FILE",
    "BwbTargets",
    "collect_targets",
    "ground_truth_files",
    "write_ground_truth",
]

GROUND_TRUTH_FILE = "ground_truth.safetensors"
#: What the ground-truth writer reports (per task and recording: entries, skips).
SUMMARY_FILE = "bwb_ground_truth.json"


@dataclass
class BwbTargets:
    """The scored entries of every task over the recordings of one dataset split."""

    ts1: dict[tuple[str, str], TS1Targets] = field(default_factory=dict)
    ts2: dict[tuple[str, str], TS2Targets] = field(default_factory=dict)
    ts3: TS3Targets | None = None
    #: TS1 / TS3 tasks left out, with the reason.
    skipped_tasks: dict[str, str] = field(default_factory=dict)

    def expected(self) -> dict[tuple[str, str | None], ExpectedFile]:
        """``{(task_id, recording_id): ExpectedFile}`` for the validator."""
        from ibl_bwb_eval.tasks import COSMOS_LABELS, get_ts1_readout_spec

        expected: dict[tuple[str, str | None], ExpectedFile] = {}
        for (task, recording_id), target in self.ts1.items():
            spec = get_ts1_readout_spec(task)
            shape = (len(target.rows), spec.num_timesteps, spec.dim)
            expected[(f"ts1-{task}", recording_id)] = ExpectedFile(target.trial_ids, shape)
        for (task, recording_id), target in self.ts2.items():
            expected[(f"ts2-{task}", recording_id)] = ExpectedFile(
                target.timestamps, tuple(target.targets.shape)
            )
        if self.ts3 is not None:
            expected[("ts3-unit_cosmos", None)] = ExpectedFile(
                np.asarray(self.ts3.unit_ids), (len(self.ts3.unit_ids), len(COSMOS_LABELS))
            )
        return expected

    def summary(self) -> dict[str, Any]:
        """JSON-ready counts: scored and skipped entries per task and recording."""
        tasks: dict[str, dict[str, Any]] = {}
        for (task, recording_id), target in self.ts1.items():
            entry = {"trials": len(target.rows), "skipped_trials": target.skipped_trials}
            if target.mask is not None:
                entry["masked_samples"] = target.masked_samples
            tasks.setdefault(f"ts1-{task}", {})[recording_id] = entry
        for (task, recording_id), target in self.ts2.items():
            tasks.setdefault(f"ts2-{task}", {})[recording_id] = {
                "windows": len(target.rows),
                "bins": len(target.bins),
                "units": len(target.units),
            }
        if self.ts3 is not None:
            tasks["ts3-unit_cosmos"] = {
                "units": len(self.ts3.unit_ids),
                "skipped_units": self.ts3.skipped_units,
            }
        return {"tasks": tasks, "skipped_tasks": dict(self.skipped_tasks)}


def collect_targets(
    data: DatasetRecordings,
    modality_names: Sequence[str] | None = None,
    ts2_tasks: Sequence[str] = ("co_smoothing", "forecasting"),
    with_ts3: bool = True,
) -> BwbTargets:
    """The scored entries of every task over `data`'s recordings.

    TS1 covers the tasks whose modality is in both the dataset and `modality_names` (default:
    the dataset's); the others are listed in ``skipped_tasks``. TS3 is skipped (and listed) when
    no unit has a Cosmos label.
    """
    names = data.modality_names
    ts1_tasks, missing = ts1_tasks_for(names)
    targets = BwbTargets()
    for task in missing:
        targets.skipped_tasks[f"ts1-{task}"] = "the dataset has no modality of that name"
    if modality_names is not None:
        for task in [t for t in ts1_tasks if t not in ts1_tasks_for(modality_names)[0]]:
            targets.skipped_tasks[f"ts1-{task}"] = "the model has no modality of that name"
        ts1_tasks = [t for t in ts1_tasks if f"ts1-{t}" not in targets.skipped_tasks]
    for recording in data.recordings:
        for task in ts1_tasks:
            targets.ts1[(task, recording.recording_id)] = ts1_targets(task, recording)
        for task in ts2_tasks:
            targets.ts2[(task, recording.recording_id)] = ts2_targets(task, recording)
    if with_ts3:
        ts3 = ts3_targets(data.recordings)
        if ts3.unit_ids:
            targets.ts3 = ts3
        else:
            targets.skipped_tasks["ts3-unit_cosmos"] = "no unit has a Cosmos region label"
    return targets


def ground_truth_files(targets: BwbTargets) -> dict[Path, tuple[dict[str, torch.Tensor], dict]]:
    """``{path relative to the ground-truth folder: (tensors, metadata)}`` of every file."""
    from ibl_bwb_eval.entity_ids import encode_entity_ids
    from ibl_bwb_eval.tasks import COSMOS_LABELS

    files: dict[Path, tuple[dict[str, torch.Tensor], dict]] = {}
    for (task, recording_id), target in targets.ts1.items():
        tensors = {
            "trial_id": torch.from_numpy(target.trial_ids),
            "values": torch.from_numpy(target.values),
        }
        if target.mask is not None:
            tensors["mask"] = torch.from_numpy(target.mask)  # (N, 50) bool, True = scored
        files[Path(f"ts1-{task}", recording_id, GROUND_TRUTH_FILE)] = (
            tensors,
            {"task": f"ts1-{task}", "recording_id": recording_id},
        )
    for (task, recording_id), target in targets.ts2.items():
        files[Path(f"ts2-{task}", recording_id, GROUND_TRUTH_FILE)] = (
            {
                "window_timestamps": torch.from_numpy(target.timestamps),
                "targets": torch.from_numpy(target.targets),
                "unit_ids": encode_entity_ids(np.asarray(target.unit_ids)),
            },
            {"task": f"ts2-{task}", "recording_id": recording_id},
        )
    if targets.ts3 is not None:
        files[Path("ts3-unit_cosmos", GROUND_TRUTH_FILE)] = (
            {
                "entity_ids": encode_entity_ids(np.asarray(targets.ts3.unit_ids)),
                "targets": torch.from_numpy(targets.ts3.targets),
            },
            {"task": "ts3-unit_cosmos", "label_names": ",".join(COSMOS_LABELS)},
        )
    return files


def write_ground_truth(
    dataset: str | os.PathLike,
    output: str | os.PathLike,
    split: str = "test",
    sessions: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Write the ground truth of `split` of `dataset` to `output` (replaced atomically).

    Returns the summary also written to ``<output>/bwb_ground_truth.json``: per task and
    recording the scored and skipped entries, and the tasks left out.
    """
    require_bwb()
    from safetensors.torch import save_file

    from ..atomic import atomic_directory, atomic_write_json
    from ..locking import OutputLock

    data = load_recordings(dataset, split, sessions)
    targets = collect_targets(data)
    summary = {
        "dataset": data.dataset,
        "dataset_version": data.version,
        "split": split,
        "recordings": [r.recording_id for r in data.recordings],
        **targets.summary(),
    }
    with OutputLock(output, "export-bwb-gt"), atomic_directory(output) as staging:
        for relative, (tensors, metadata) in ground_truth_files(targets).items():
            path = staging / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            metadata = {**metadata, "dataset_version": data.version, "split": split}
            save_file(tensors, str(path), metadata=metadata)
        atomic_write_json(staging / SUMMARY_FILE, summary, indent=2)
    return summary

"""Reading a built NEDS dataset as BrainWideBench recordings (one per session and split).

Both the ground-truth writer and the prediction export read the dataset here, so they see the
same trials, units and window geometry.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .tasks import RecordingWindows

__all__ = ["DatasetRecordings", "dataset_version", "load_recordings"]


@dataclass
class DatasetRecordings:
    """The recordings of one split of a dataset and what the export needs besides them.

    `normalization` is ``{session_id: {modality: {"mean", "std", "min", "max"}}}`` (train
    split constants, as the collator uses them) and `modality_names` the modalities the dataset
    declares.
    """

    dataset: str
    split: str
    recordings: list[RecordingWindows]
    normalization: dict[str, dict[str, dict[str, float]]]
    modality_names: list[str]
    version: str


def dataset_version(dataset: str | os.PathLike) -> str:
    """The ``dataset_version`` stamped on every file: a local folder's content fingerprint
    (``data.load.local_dataset_fingerprint``), else the Hub id as given."""
    from ..data.load import is_local_dataset_path, local_dataset_fingerprint

    if is_local_dataset_path(os.fspath(dataset)) and Path(dataset).is_dir():
        return local_dataset_fingerprint(dataset)
    return os.fspath(dataset)


def load_recordings(
    dataset: str | os.PathLike, split: str = "test", sessions: Sequence[str] | None = None
) -> DatasetRecordings:
    """The trials (with ``stim_on_time``), neurons and window of each session of `split`.

    `sessions` defaults to every session of the dataset. A session whose windows are not
    aligned to stimulus onset is an error: the window timestamps are stimulus-onset times
    plus the window start.
    """
    from ..data.load import load_modalities, load_neurons
    from ..data.training_data import NedsTrialDataset

    declared = [spec["name"] for spec in load_modalities(dataset)]
    data = NedsTrialDataset(
        dataset,
        split,
        sessions=None if sessions is None else list(sessions),
        region_column="region_cosmos",
        extra_columns=("stim_on_time",),
        modalities=declared,
    )
    neurons = load_neurons(dataset, data.session_ids)
    by_session = data.session_indices()
    recordings = []
    for session_id in data.session_ids:
        preprocessing: dict[str, Any] = data.sessions_table[session_id]["preprocessing"]
        if preprocessing["align_event"] != "stimOn_times":
            raise ValueError(
                f"session {session_id}: windows aligned to {preprocessing['align_event']!r}; "
                "BrainWideBench export needs windows aligned to stimOn_times"
            )
        units = neurons.loc[neurons["session_id"] == session_id].to_dict("records")
        recordings.append(
            RecordingWindows(
                recording_id=session_id,
                trials=[data[int(i)] for i in by_session[session_id]],
                window=(float(preprocessing["window"][0]), float(preprocessing["window"][1])),
                bin_size=float(preprocessing["bin_size"]),
                units=units,
            )
        )
    empty = [r.recording_id for r in recordings if not r.trials]
    if empty:
        raise ValueError(f"sessions {empty} have no {split!r} trials in {os.fspath(dataset)}")
    return DatasetRecordings(
        dataset=os.fspath(dataset),
        split=split,
        recordings=recordings,
        normalization=data.normalization,
        modality_names=declared,
        version=dataset_version(dataset),
    )

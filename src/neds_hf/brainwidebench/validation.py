"""The BrainWideBench submission rules, checked on predictions before any file is written.

The codes are those of the benchmark's leaderboard validator: ``E001`` missing metadata,
``E006`` wrong dimension, ``E012`` trial / window / unit set differing from the ground truth's,
``E101`` too few seeds (or a task / recording missing some), ``E102`` non-contiguous seeds,
``E107`` non-finite values. Every problem names the task, recording and seed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = [
    "KEY_TENSORS",
    "MIN_SEEDS",
    "REQUIRED_METADATA",
    "REQUIRED_TENSORS",
    "VALUE_TENSORS",
    "BwbValidationError",
    "ExpectedFile",
    "PredictionFile",
    "check_seeds",
    "validate_predictions",
]

#: Fewest seeds a reported BrainWideBench score averages over.
MIN_SEEDS = 3
#: Metadata each suite's files carry besides the writer's own (label, task, seed, version).
REQUIRED_METADATA: dict[str, tuple[str, ...]] = {
    "ts1": ("recording_id", "unit_filtering", "dataset_version"),
    "ts2": ("recording_id", "unit_filtering", "dataset_version", "context_window", "bin_size"),
    "ts3": ("label_names", "unit_filtering", "dataset_version"),
}
#: Tensors each suite's files carry.
REQUIRED_TENSORS: dict[str, tuple[str, ...]] = {
    "ts1": ("trial_id", "predictions"),
    "ts2": ("window_timestamps", "predictions", "unit_ids"),
    "ts3": ("entity_ids", "pred_proba"),
}
#: The tensor a suite's scorer aligns predictions with the ground truth by.
KEY_TENSORS = {"ts1": "trial_id", "ts2": "window_timestamps", "ts3": "entity_ids"}
#: The tensor holding a suite's predicted values.
VALUE_TENSORS = {"ts1": "predictions", "ts2": "predictions", "ts3": "pred_proba"}


@dataclass
class PredictionFile:
    """One prediction file before it is written: where it goes, its metadata and tensors."""

    suite: str
    task: str
    seed: int
    recording_id: str | None
    label: str
    metadata: dict[str, str] = field(default_factory=dict)
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def task_id(self) -> str:
        """The benchmark's flattened task id, e.g. ``"ts1-choice"``."""
        return f"{self.suite}-{self.task}"

    def where(self) -> str:
        """``task ..., recording ..., seed ...`` for messages."""
        recording = "" if self.recording_id is None else f", recording {self.recording_id}"
        return f"task {self.task_id}{recording}, seed {self.seed}"


@dataclass
class ExpectedFile:
    """What the ground truth of one (task, recording) expects: its keys and prediction shape.

    `keys` are trial ids (TS1), float32 window timestamps (TS2) or unit id strings (TS3);
    `shape` the shape of the predictions tensor.
    """

    keys: np.ndarray
    shape: tuple[int, ...]


class BwbValidationError(ValueError):
    """Predictions break the benchmark's rules; `problems` lists ``(code, message)`` pairs."""

    def __init__(self, problems: Sequence[tuple[str, str]]):
        self.problems = list(problems)
        shown = [f"{code}: {message}" for code, message in self.problems[:20]]
        more = len(self.problems) - len(shown)
        if more:
            shown.append(f"... and {more} more")
        super().__init__(
            "predictions break the BrainWideBench rules, nothing was written:\n  "
            + "\n  ".join(shown)
        )

    @property
    def codes(self) -> list[str]:
        """The codes of every problem, in order."""
        return [code for code, _ in self.problems]


def check_seeds(seeds: Sequence[int], min_seeds: int = MIN_SEEDS) -> list[tuple[str, str]]:
    """``E101`` / ``E102`` problems of a seed list (at least `min_seeds`, contiguous)."""
    problems = []
    unique = sorted(set(int(s) for s in seeds))
    if len(unique) < min_seeds:
        problems.append(
            ("E101", f"{len(unique)} seed(s) {unique}; a reported score needs >= {min_seeds}")
        )
    if unique and unique != list(range(unique[0], unique[0] + len(unique))):
        problems.append(("E102", f"seeds {unique} are not contiguous"))
    return problems


def validate_predictions(
    files: Iterable[PredictionFile],
    expected: Mapping[tuple[str, str | None], ExpectedFile],
    seeds: Sequence[int],
    min_seeds: int = MIN_SEEDS,
) -> None:
    """Raise :class:`BwbValidationError` listing every rule `files` break (nothing if none).

    `expected` maps ``(task_id, recording_id)`` (``recording_id`` None for TS3) to what its
    ground truth expects; every such entry needs one file per seed of `seeds`.
    """
    files = list(files)
    problems = check_seeds(seeds, min_seeds)
    seen: dict[tuple[str, str | None], list[int]] = {}
    for file in files:
        seen.setdefault((file.task_id, file.recording_id), []).append(file.seed)
        problems.extend(_file_problems(file, expected.get((file.task_id, file.recording_id))))
    wanted = sorted(set(int(s) for s in seeds))
    for key in expected:
        got = sorted(seen.get(key, []))
        if got != wanted:
            task_id, recording_id = key
            problems.append(
                (
                    "E101",
                    f"task {task_id}, recording {recording_id}: seeds {got}, expected {wanted}",
                )
            )
    if problems:
        raise BwbValidationError(problems)


def _file_problems(file: PredictionFile, expected: ExpectedFile | None) -> list[tuple[str, str]]:
    """The problems of one file (metadata, tensors, shape, key set, finite values)."""
    where = file.where()
    if file.suite not in REQUIRED_METADATA:
        return [("E001", f"{where}: unknown suite {file.suite!r}")]
    problems = [
        ("E001", f"{where}: missing metadata {name!r}")
        for name in ("label", *REQUIRED_METADATA[file.suite])
        if not str(file.label if name == "label" else file.metadata.get(name, "")).strip()
    ]
    missing = [name for name in REQUIRED_TENSORS[file.suite] if name not in file.tensors]
    if missing:
        return [*problems, ("E001", f"{where}: missing tensors {missing}")]
    values = file.tensors[VALUE_TENSORS[file.suite]]
    if values.is_floating_point() and not torch.isfinite(values).all():
        count = int((~torch.isfinite(values)).sum())
        problems.append(
            (
                "E107",
                f"{where}: {count} non-finite (NaN/inf) value(s) in {VALUE_TENSORS[file.suite]!r}",
            )
        )
    if expected is None:
        return [*problems, ("E012", f"{where}: no ground truth for this task and recording")]
    if tuple(values.shape) != tuple(expected.shape):
        problems.append(
            (
                "E006",
                f"{where}: {VALUE_TENSORS[file.suite]!r} has shape {tuple(values.shape)}, "
                f"expected {tuple(expected.shape)}",
            )
        )
    problems.extend(_key_problems(file, expected))
    return problems


def _key_problems(file: PredictionFile, expected: ExpectedFile) -> list[tuple[str, str]]:
    """``E012`` when the file's trial ids / timestamps / unit ids differ from the ground truth's
    (compared exactly: timestamps bit for bit, as the scorer matches them)."""
    keys = _decoded_keys(file)
    name = KEY_TENSORS[file.suite]
    if len(np.unique(keys)) != len(keys):
        return [("E012", f"{file.where()}: {name!r} holds duplicates")]
    wanted = np.asarray(expected.keys)
    if keys.dtype != wanted.dtype and keys.dtype.kind == "f":
        return [("E012", f"{file.where()}: {name!r} is {keys.dtype}, expected {wanted.dtype}")]
    extra = np.setdiff1d(keys, wanted)
    absent = np.setdiff1d(wanted, keys)
    if len(extra) or len(absent):
        return [
            (
                "E012",
                f"{file.where()}: {name!r} differs from the ground truth: {len(absent)} missing "
                f"(e.g. {absent[:3].tolist()}), {len(extra)} unexpected "
                f"(e.g. {extra[:3].tolist()})",
            )
        ]
    return []


def _decoded_keys(file: PredictionFile) -> np.ndarray:
    """The alignment keys of a file as numpy (unit id strings for TS3)."""
    tensor = file.tensors[KEY_TENSORS[file.suite]]
    if file.suite == "ts3":
        from ibl_bwb_eval.entity_ids import decode_entity_ids

        return decode_entity_ids(tensor)
    return tensor.numpy()

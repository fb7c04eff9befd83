"""Streaming access to a built NEDS dataset, for corpora that do not fit one machine's disk
cache or memory (the Brain-Wide Map).

:class:`NedsStreamingTrials` reads one split's Parquet files (one per session, local or on
the Hub) with ``datasets``' ``streaming=True``, shuffles them with a bounded buffer
(``shuffle(seed, buffer_size)`` + ``set_epoch``), and shards them over distributed ranks
with ``datasets.distributed.split_dataset_by_node``. Its items are the dicts
:class:`~neds_hf.data.training_data.NedsTrialDataset` serves; the per-session metadata
(neuron counts, regions, normalisation) is read from the small sessions and neurons tables.

Ranks can receive different numbers of rows (``split_dataset_by_node`` deals whole files when
their count is a multiple of the world size, rows otherwise), so :meth:`batches` yields an
exact number of batches per epoch on every rank, re-reading its stream from the start when it
runs out: no rank waits for another at a gradient synchronisation.

With ``table="windows"`` the continuous windows of a local dataset folder are streamed the
same way (their per-session counts come from its build report).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch.distributed
from torch.utils.data import IterableDataset

from .load import is_local_dataset_path, window_counts
from .schema import trial_file, window_file
from .training_data import _TrialsMetadata

__all__ = ["NedsStreamingTrials", "trial_data_files"]


def trial_data_files(
    path_or_repo: str | os.PathLike, split: str, session_ids: Sequence[str], table: str = "trials"
):
    """The Parquet file of each session's ``split`` of trials (or continuous windows): paths
    in a local folder, ``hf://`` URLs for a Hub dataset id."""
    path = os.fspath(path_or_repo)
    base = path if is_local_dataset_path(path) else f"hf://datasets/{path}"
    relative = window_file if table == "windows" else trial_file
    return [f"{base}/{relative(session_id, split)}" for session_id in session_ids]


def _world(num_replicas: int | None, rank: int | None) -> tuple[int, int]:
    """World size and rank: as given, else from ``torch.distributed`` when initialised."""
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    if num_replicas is None:
        num_replicas = torch.distributed.get_world_size() if distributed else 1
    if rank is None:
        rank = torch.distributed.get_rank() if distributed else 0
    if not 0 <= rank < num_replicas:
        raise ValueError(f"rank {rank} is outside [0, {num_replicas})")
    return num_replicas, rank


class NedsStreamingTrials(_TrialsMetadata, IterableDataset):
    """Trials of some sessions and one split, streamed, shuffled with a buffer and sharded by
    rank (see the module docstring).

    Args:
        path_or_repo: local folder or Hub repo id of a dataset written by ``build_dataset``.
        split: ``"train"``, ``"validation"`` or ``"test"``.
        sessions: session ids to serve (default: every session of the dataset).
        shuffle_buffer_size: rows in the shuffle buffer (0 = dataset order, no shuffling).
        seed: shuffle seed; the order is a pure function of (seed, epoch, world size).
        num_replicas, rank: distributed world size and this process's rank (default: from
            ``torch.distributed`` when initialised, else 1 and 0).
        region_column, extra_columns, modalities, table, load_kwargs: as for
            ``NedsTrialDataset`` (``table="windows"`` for a local dataset folder only).
        hash_contents: hash every file of a local dataset at start-up against its build
            record (:func:`~neds_hf.data.verify_dataset`). Off by default: streaming is for
            corpora too large to read before the first step, so start-up checks each file's
            presence, size, row count and schema (Parquet footers only) and the rows are read
            when streamed.
    """

    def __init__(
        self,
        path_or_repo: str | os.PathLike,
        split: str = "train",
        sessions: Sequence[str] | None = None,
        shuffle_buffer_size: int = 1000,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        region_column: str = "region_beryl",
        extra_columns: Sequence[str] = (),
        modalities: Sequence[str] | None = None,
        table: str = "trials",
        hash_contents: bool = False,
        **load_kwargs: Any,
    ) -> None:
        import datasets
        from datasets.distributed import split_dataset_by_node

        if shuffle_buffer_size < 0:
            raise ValueError(f"shuffle_buffer_size must be >= 0, got {shuffle_buffer_size}")
        super().__init__(
            path_or_repo,
            split,
            sessions,
            region_column,
            extra_columns,
            load_kwargs,
            modalities,
            table,
            hash_contents,
        )
        self.num_replicas, self.rank = _world(num_replicas, rank)
        if table == "windows":
            windows = window_counts(path_or_repo, split)
            counts = {s: windows.get(s, 0) for s in self.session_ids}
        else:
            counts = {s: int(self.sessions_table[s][f"n_trials_{split}"]) for s in self.session_ids}
        #: Rows of the split over all ranks (from the sessions table).
        self.n_rows = sum(counts.values())
        with_rows = [s for s in self.session_ids if counts[s] > 0]
        if not with_rows:
            raise ValueError(
                f"dataset {os.fspath(path_or_repo)}: the selected sessions have no {split} {table}"
            )
        files = trial_data_files(path_or_repo, split, with_rows, table)
        source = datasets.load_dataset(
            "parquet", data_files={split: files}, split=split, streaming=True, **load_kwargs
        )
        #: The whole split in file order (every rank, no shuffling).
        self.source = source.select_columns(list(self.columns))
        stream = self.source
        if shuffle_buffer_size > 0:
            stream = stream.shuffle(seed=seed, buffer_size=shuffle_buffer_size)
        #: This rank's share of the shuffled stream.
        self.stream = split_dataset_by_node(stream, rank=self.rank, world_size=self.num_replicas)
        self.epoch = 0

    @property
    def features(self) -> Any:
        """The ``datasets`` features of the streamed columns."""
        return self.source.features

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch that, with the seed, determines the shuffle order."""
        self.epoch = int(epoch)
        self.stream.set_epoch(self.epoch)

    def __len__(self) -> int:
        return self.n_rows

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """This rank's items of the current epoch, once."""
        for row in self.stream:
            yield self._item(row)

    def iter_all(self) -> Iterator[dict[str, Any]]:
        """Every item of the split in file order, whatever the rank (e.g. validation)."""
        for row in self.source:
            yield self._item(row)

    def steps_per_epoch(self, batch_size: int) -> int:
        """Batches per epoch on every rank: the rows a rank gets on average, in full batches
        (at least one)."""
        return max(1, self.n_rows // (self.num_replicas * batch_size))

    def batches(
        self, batch_size: int, n_batches: int, mode: str = "mixed"
    ) -> Iterator[list[dict[str, Any]]]:
        """Exactly ``n_batches`` batches of this rank's items for the current epoch.

        ``mode="single_session"`` groups the buffered items by session (a batch is emitted
        when its session has ``batch_size`` items); ``"mixed"`` takes items in stream order.
        Incomplete groups are emitted at the end of a pass; when the rank's stream runs out
        before ``n_batches``, it is read again from its start (like ``DistributedSampler``'s
        padding).
        """
        if mode not in ("single_session", "mixed"):
            raise ValueError(f"mode must be 'single_session' or 'mixed', got {mode!r}")
        produced = 0
        while produced < n_batches:
            groups: dict[str, list[dict[str, Any]]] = {}
            seen = 0
            for item in self:
                seen += 1
                group = groups.setdefault(item["session_id"] if mode != "mixed" else "", [])
                group.append(item)
                if len(group) == batch_size:
                    yield group
                    groups[item["session_id"] if mode != "mixed" else ""] = []
                    produced += 1
                    if produced == n_batches:
                        return
            if seen == 0:
                raise ValueError(
                    f"rank {self.rank} of {self.num_replicas} received no {self.split} trials; "
                    "use fewer processes or more sessions"
                )
            for group in groups.values():
                if group and produced < n_batches:
                    yield group
                    produced += 1

    def mean_counts_per_bin(self, session_ids: Sequence[str]) -> dict[str, np.ndarray]:
        """Each neuron's mean spike count per bin over the split, ``{session_id: (N,)}``, in
        one pass over the stream (the mean over trials of each trial's per-bin mean)."""
        wanted = set(session_ids)
        sums = {s: np.zeros(self.n_neurons[s]) for s in session_ids}  # (N,)
        counts = dict.fromkeys(session_ids, 0)
        for item in self.iter_all():
            session_id = item["session_id"]
            if session_id in wanted:
                sums[session_id] += np.asarray(item["spikes"], dtype=np.float64).mean(-1)
                counts[session_id] += 1
        empty = [s for s in session_ids if counts[s] == 0]
        if empty:
            raise ValueError(f"sessions {empty} have no {self.split} trials")
        return {s: sums[s] / counts[s] for s in session_ids}

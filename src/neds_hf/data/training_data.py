"""Training-side access to a built NEDS dataset: a trial dataset and a session-aware sampler.

:class:`NedsTrialDataset` serves the trials of any subset of sessions and any split as the
dicts :class:`neds_hf.collator.DataCollatorForNedsMasking` consumes, together with what the
model needs per session (neuron counts, normalisation constants, neuron regions). With
``table="windows"`` it serves the dataset's continuous windows instead
(:mod:`neds_hf.data.windows`): the same modalities, neurons and normalisation, plus
``window_id``; ``trial_id`` is the trial whose trial-level values the window holds (-1, like
those values, when none).
:class:`SessionBatchSampler` groups trial indices into batches drawn from a single session
(so that a per-session input projection sees one population per batch) or mixed across
sessions, deterministically per (seed, epoch), and shards them across distributed ranks.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch.distributed
from torch.utils.data import Dataset, Sampler

from .load import (
    default_modalities,
    load_modalities,
    load_neds_dataset,
    load_neurons,
    load_normalization,
    load_sessions,
    load_windows,
)
from .preprocess import SPLITS

__all__ = [
    "EXTRA_TRIAL_COLUMNS",
    "EXTRA_WINDOW_COLUMNS",
    "ROW_TABLES",
    "TRIAL_KEY_COLUMNS",
    "WINDOW_KEY_COLUMNS",
    "NedsTrialDataset",
    "SessionBatchSampler",
]

#: Columns every trial dict carries besides the dataset's declared modalities.
TRIAL_KEY_COLUMNS = ("session_id", "trial_id")
#: numpy dtype of a trial item's value, by modality kind (categorical labels become ints).
_ITEM_DTYPES = {"spikes": np.int32, "continuous": np.float32}
#: Further trial columns that can be requested with ``extra_columns``.
EXTRA_TRIAL_COLUMNS = ("reward", "contrast", "stim_on_time")
#: Columns every continuous-window dict carries besides the declared modalities.
WINDOW_KEY_COLUMNS = ("session_id", "trial_id", "window_id")
#: Further window columns that can be requested with ``extra_columns``.
EXTRA_WINDOW_COLUMNS = ("start_time", "end_time", "trial_overlap")
#: The row tables a dataset can serve: ``{table: (key columns, extra columns)}``.
ROW_TABLES = {
    "trials": (TRIAL_KEY_COLUMNS, EXTRA_TRIAL_COLUMNS),
    "windows": (WINDOW_KEY_COLUMNS, EXTRA_WINDOW_COLUMNS),
}


def _served_modalities(
    declared: Sequence[dict[str, Any]],
    modalities: Sequence[str] | None,
    path_or_repo: str | os.PathLike,
) -> list[dict[str, Any]]:
    """The declared modalities a trials dataset serves: those named in `modalities` (dataset
    order), or the default selection (:func:`~neds_hf.data.load.default_modalities`)."""
    if modalities is None:
        return default_modalities(declared)
    names = [spec["name"] for spec in declared]
    unknown = [name for name in modalities if name not in names]
    if unknown:
        raise ValueError(
            f"unknown modalities {unknown}; dataset {os.fspath(path_or_repo)} declares {names}"
        )
    return [dict(spec) for spec in declared if spec["name"] in modalities]


class _TrialsMetadata:
    """What the model needs per session, read from the sessions and neurons tables: the
    served session ids, the sessions rows, normalisation constants, neuron counts and regions,
    and the declared modalities (shared by the in-memory and the streaming trials)."""

    def __init__(
        self,
        path_or_repo: str | os.PathLike,
        split: str,
        sessions: Sequence[str] | None,
        region_column: str,
        extra_columns: Sequence[str],
        load_kwargs: dict[str, Any],
        modalities: Sequence[str] | None = None,
        table: str = "trials",
        hash_contents: bool = True,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        if table not in ROW_TABLES:
            raise ValueError(f"unknown table {table!r}; expected one of {list(ROW_TABLES)}")
        #: ``"trials"`` or ``"windows"``: the rows served.
        self.table = table
        self.key_columns, allowed_extra = ROW_TABLES[table]
        unknown_columns = [c for c in extra_columns if c not in allowed_extra]
        if unknown_columns:
            raise ValueError(
                f"unknown extra columns {unknown_columns} of the {table}; use {allowed_extra}"
            )
        table_kwargs = {**load_kwargs, "hash_contents": hash_contents}  # verify_dataset's
        sessions_table = load_sessions(path_or_repo, **table_kwargs)
        table_ids = [str(s) for s in sessions_table["session_id"]]
        if sessions is None:
            self.session_ids = table_ids
        else:
            self.session_ids = [str(s) for s in sessions]
            unknown = [s for s in self.session_ids if s not in table_ids]
            if unknown:
                raise KeyError(f"sessions not in the dataset {os.fspath(path_or_repo)}: {unknown}")
        selected = set(self.session_ids)
        rows = [row for row in sessions_table.to_list() if row["session_id"] in selected]
        self.sessions_table = {row["session_id"]: row for row in rows}
        self.normalization = load_normalization(rows)
        self.n_neurons = {row["session_id"]: int(row["n_neurons"]) for row in rows}

        neurons = load_neurons(path_or_repo, self.session_ids, **table_kwargs)
        if region_column not in neurons.columns:
            raise KeyError(f"neurons table has no column {region_column!r}")
        # one pass over the table (a per-session filter would read it once per session)
        by_session = neurons.groupby("session_id", sort=False)[region_column].agg(list)
        self.neuron_regions: dict[str, list[str]] = {}
        for session_id in self.session_ids:
            regions = by_session.get(session_id, [])
            if len(regions) != self.n_neurons[session_id]:
                raise ValueError(
                    f"session {session_id}: neurons table has {len(regions)} rows but the "
                    f"sessions table says {self.n_neurons[session_id]} neurons"
                )
            self.neuron_regions[session_id] = regions
        self.split = split
        #: ``{column: kind}`` of the served modalities, in the dataset's order.
        self.modality_kinds = {
            spec["name"]: spec["kind"]
            for spec in _served_modalities(load_modalities(path_or_repo), modalities, path_or_repo)
        }
        extra = [column for column in extra_columns if column not in self.modality_kinds]
        self.columns = (*self.key_columns, *self.modality_kinds, *extra)

    def _item(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """One row (numpy-formatted or plain Python values) as a collator-ready dict."""
        item: dict[str, Any] = {"session_id": str(row["session_id"])}
        for key in self.key_columns[1:]:
            item[key] = int(row[key])
        for name, kind in self.modality_kinds.items():
            if kind in _ITEM_DTYPES:  # spikes (N, T) or a per-bin behaviour (T,)
                item[name] = np.asarray(row[name], dtype=_ITEM_DTYPES[kind])
            else:  # a label: an int when trial-level, an int array when per bin
                label = np.asarray(row[name])
                item[name] = int(label) if label.ndim == 0 else label.astype(np.int64)
        for column in self.columns[len(self.key_columns) + len(self.modality_kinds) :]:
            item[column] = row[column].item() if hasattr(row[column], "item") else row[column]
        return item


class NedsTrialDataset(_TrialsMetadata, Dataset):
    """Trials of some sessions and one split of a built dataset, as collator-ready dicts.

    Each item is ``{"session_id": str, "trial_id": int, <modality>: value}`` for the served
    modalities (`modalities`, default: every declared one but the BrainWideBench behaviours,
    :func:`~neds_hf.data.load.default_modalities`): spikes int32 ``[N, T]``,
    continuous behaviour float32 ``[T]``, a trial-level label int (for the IBL datasets:
    ``wheel_speed``, ``whisker_motion_energy``, ``choice``, ``block``), plus
    ``extra_columns``. Behaviours are in physical units; the collator normalises them with
    :attr:`normalization`.

    Args:
        path_or_repo: local folder or Hub repo id of a dataset written by ``build_dataset``.
        split: ``"train"``, ``"validation"`` or ``"test"``.
        sessions: session ids to serve (default: every session of the dataset, in the
            sessions-table order).
        region_column: neurons-table column used for :attr:`neuron_regions`.
        extra_columns: more columns to include (from :data:`EXTRA_TRIAL_COLUMNS`, or
            :data:`EXTRA_WINDOW_COLUMNS` for windows).
        modalities: names of the declared modalities to serve (default: see above).
        table: ``"trials"`` (trial-aligned rows) or ``"windows"`` (continuous windows; items
            also carry ``window_id``).
        load_kwargs: passed to ``datasets.load_dataset`` (e.g. ``cache_dir``).
    """

    def __init__(
        self,
        path_or_repo: str | os.PathLike,
        split: str = "train",
        sessions: Sequence[str] | None = None,
        region_column: str = "region_beryl",
        extra_columns: Sequence[str] = (),
        modalities: Sequence[str] | None = None,
        table: str = "trials",
        **load_kwargs: Any,
    ) -> None:
        super().__init__(
            path_or_repo,
            split,
            sessions,
            region_column,
            extra_columns,
            load_kwargs,
            modalities,
            table,
        )
        load = load_windows if table == "windows" else load_neds_dataset
        whole = sessions is None
        trials = load(path_or_repo, None if whole else self.session_ids, **load_kwargs)
        if split not in trials:
            raise ValueError(
                f"dataset {os.fspath(path_or_repo)} has no {split} {table} (splits: {list(trials)})"
            )
        self.trials = trials[split].select_columns(list(self.columns)).with_format("numpy")
        #: Session id of every item, ``(n_items,)``.
        self.item_session_ids = np.asarray(self.trials.with_format(None)["session_id"], dtype=str)

    def __len__(self) -> int:
        return len(self.trials)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self._item(self.trials[int(index)])

    def session_indices(self) -> dict[str, np.ndarray]:
        """Item indices of each session, ``{session_id: (n_session_items,) int64}``."""
        return {
            session_id: np.flatnonzero(self.item_session_ids == session_id)
            for session_id in self.session_ids
        }


class SessionBatchSampler(Sampler[list[int]]):
    """Batch sampler with single-session or mixed batches, shardable across distributed ranks.

    * ``mode="single_session"``: every batch holds trials of one session; each session's
      items are shuffled and cut into batches, then the batches of all sessions are shuffled.
    * ``mode="mixed"``: all items are shuffled together and cut into batches.

    The order is a pure function of ``(seed, epoch)`` (call :meth:`set_epoch` every epoch).
    With ``drop_last`` the incomplete batches (per session in single-session mode) are
    dropped. Under distributed training (``num_replicas`` > 1, by default taken from
    ``torch.distributed`` when it is initialised) the batch list is cut into equal shares,
    rank ``r`` getting batches ``r, r + R, r + 2R, ...``; like ``DistributedSampler``, when the
    number of batches is not a multiple of ``R`` the list is padded by repeating batches from
    its start (or, with ``drop_last``, the surplus batches are dropped), so every rank runs the
    same number of steps. With Accelerate, either give this sampler ``num_replicas=1`` and let
    ``accelerator.prepare`` shard whole batches, or shard here and skip the dataloader in
    ``prepare``; do not shard twice. neds_hf's training shards here: accelerate's
    ``BatchSamplerShard`` would deal batches out the same way, but only through
    ``accelerator.prepare(dataloader)``, whose ``DataLoaderShard`` also takes over device
    placement and re-synchronises the loader's random generator from rank 0 every epoch;
    the batch order a run (and its exact resume) depends on stays defined in this one class,
    which also serves plain ``torch.distributed`` users.

    Args:
        item_session_ids: session id of every dataset item, or a :class:`NedsTrialDataset`.
        batch_size: trials per batch.
        mode: ``"single_session"`` or ``"mixed"``.
        shuffle: shuffle items and batches (``False`` keeps dataset order).
        seed: base seed.
        drop_last: drop incomplete batches (and surplus batches across ranks).
        num_replicas, rank: distributed world size and this process's rank.
    """

    def __init__(
        self,
        item_session_ids: Sequence[str] | np.ndarray | NedsTrialDataset,
        batch_size: int,
        mode: str = "single_session",
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        if isinstance(item_session_ids, NedsTrialDataset):
            item_session_ids = item_session_ids.item_session_ids
        if mode not in ("single_session", "mixed"):
            raise ValueError(f"mode must be 'single_session' or 'mixed', got {mode!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if num_replicas is None:
            distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
            num_replicas = torch.distributed.get_world_size() if distributed else 1
        if rank is None:
            distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
            rank = torch.distributed.get_rank() if distributed else 0
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is outside [0, {num_replicas})")
        self.item_session_ids = np.asarray(item_session_ids, dtype=str)  # (n_items,)
        self.batch_size = batch_size
        self.mode = mode
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        # Sessions in first-appearance order, so the batch list never depends on set ordering.
        _, first = np.unique(self.item_session_ids, return_index=True)
        self._sessions = [self.item_session_ids[i] for i in sorted(first)]

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch that, with the seed, determines the order."""
        self.epoch = int(epoch)

    def _chunks(self, indices: np.ndarray) -> list[list[int]]:
        n_full = len(indices) // self.batch_size
        stop = n_full * self.batch_size if self.drop_last else len(indices)
        return [
            indices[start : start + self.batch_size].tolist()
            for start in range(0, stop, self.batch_size)
        ]

    def all_batches(self) -> list[list[int]]:
        """Every batch of this epoch over all ranks, before sharding and padding."""
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, self.epoch]))
        n_items = len(self.item_session_ids)
        if self.mode == "mixed":
            order = rng.permutation(n_items) if self.shuffle else np.arange(n_items)
            return self._chunks(order)
        batches: list[list[int]] = []
        for session_id in self._sessions:
            indices = np.flatnonzero(self.item_session_ids == session_id)
            if self.shuffle:
                indices = rng.permutation(indices)
            batches.extend(self._chunks(indices))
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def _total_batches(self, n_batches: int) -> int:
        if self.drop_last:
            return (n_batches // self.num_replicas) * self.num_replicas
        return math.ceil(n_batches / self.num_replicas) * self.num_replicas

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.all_batches()
        total = self._total_batches(len(batches))
        if total > len(batches):  # pad by repeating from the start
            repeats = math.ceil(total / len(batches))
            batches = (batches * repeats)[:total]
        else:
            batches = batches[:total]
        yield from batches[self.rank : total : self.num_replicas]

    def __len__(self) -> int:
        if self.mode == "mixed":
            n_items = len(self.item_session_ids)
            n_batches = (
                n_items // self.batch_size if self.drop_last else -(-n_items // self.batch_size)
            )
        else:
            counts = [int(np.sum(self.item_session_ids == s)) for s in self._sessions]
            if self.drop_last:
                n_batches = sum(c // self.batch_size for c in counts)
            else:
                n_batches = sum(-(-c // self.batch_size) for c in counts)
        return self._total_batches(n_batches) // self.num_replicas

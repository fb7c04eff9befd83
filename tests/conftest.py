"""Shared fixtures: a small synthetic IBL corpus, built once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

#: Sessions of the shared corpus: the first three for pretraining, the last held out.
N_SYNTHETIC_SESSIONS = 4


@pytest.fixture(scope="session")
def synthetic_corpus(tmp_path_factory) -> dict:
    """A synthetic ONE cache and the neds_hf dataset built from it through the ONE loader."""
    from neds_hf.data.dataset import build_dataset
    from neds_hf.data.synthetic import make_synthetic_cache

    root = tmp_path_factory.mktemp("corpus")
    cache_dir, dataset_dir = root / "one_cache", root / "dataset"
    eids = make_synthetic_cache(
        cache_dir, n_sessions=N_SYNTHETIC_SESSIONS, seed=11, n_trials=100, n_neurons_per_probe=24
    )
    report = build_dataset(cache_dir, eids, dataset_dir, progress=False)
    assert report.skipped == {}, report.skipped
    return {
        "cache_dir": Path(cache_dir),
        "dataset_dir": Path(dataset_dir),
        "eids": eids,
        "pretrain_eids": eids[:-1],
        "heldout_eids": eids[-1:],
    }

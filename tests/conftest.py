"""Shared fixtures: a small synthetic IBL corpus, built once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

#: Sessions of the shared corpus: the first three for pretraining, the last held out.
N_SYNTHETIC_SESSIONS = 4


@pytest.fixture(scope="session")
def synthetic_corpus(tmp_path_factory) -> dict:
    """A synthetic ONE cache and the neds_hf dataset built from it through the ONE loader."""
    from neds_hf.data import build_dataset
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


@pytest.fixture(scope="session")
def strict_warnings():
    """A context manager in which every warning is an error (ALF revision, QC, hash and
    cache-table warnings included), except pandas deprecations raised inside ONE itself."""
    import contextlib
    import warnings

    import pandas as pd

    @contextlib.contextmanager
    def strict():
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            # ONE 3.6 internals (e.g. One.search) use pandas keywords deprecated in pandas 3.1
            # (`copy=`, `inplace`); those notices are not about our data
            pandas4_warning = getattr(pd.errors, "Pandas4Warning", None)
            if pandas4_warning is not None:
                warnings.filterwarnings("ignore", category=pandas4_warning)
            yield

    return strict

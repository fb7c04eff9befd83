"""Former home of the dataset schema, card, build and loading (kept as an import path).

The code now lives in one module per concept: :mod:`~neds_hf.data.schema`,
:mod:`~neds_hf.data.card`, :mod:`~neds_hf.data.build`, :mod:`~neds_hf.data.load` and
:mod:`~neds_hf.data.publish`; ``from neds_hf.data import ...`` gives every public name.
"""

from __future__ import annotations

from .build import BuildReport, build_dataset, process_session
from .card import card_configs, make_dataset_card
from .load import (
    load_neds_dataset,
    load_neurons,
    load_normalization,
    load_sessions,
    verify_dataset,
)
from .publish import push_dataset_to_hub
from .schema import (
    ALL_CONFIG,
    BUILD_REPORT_FILE,
    NEURON_FEATURES,
    NEURONS_CONFIG,
    SESSION_FEATURES,
    SESSIONS_CONFIG,
    TRIAL_FEATURES,
)

__all__ = [
    "ALL_CONFIG",
    "BUILD_REPORT_FILE",
    "NEURONS_CONFIG",
    "NEURON_FEATURES",
    "SESSIONS_CONFIG",
    "SESSION_FEATURES",
    "TRIAL_FEATURES",
    "BuildReport",
    "build_dataset",
    "card_configs",
    "load_neds_dataset",
    "load_neurons",
    "load_normalization",
    "load_sessions",
    "make_dataset_card",
    "process_session",
    "push_dataset_to_hub",
    "verify_dataset",
]

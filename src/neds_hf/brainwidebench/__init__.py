"""BrainWideBench interop: NEDS predictions and ground truth in the benchmark's layout, scored
with the benchmark's own package (``ibl-bwb-eval``, installed with ``--no-deps``).

* :mod:`.tasks`: what each benchmark task scores on a NEDS dataset (the one table mapping
  TS1 tasks to modalities, held-out units and bins, window timestamps, skipped entries);
* :mod:`.recordings`: a dataset split read as recordings;
* :mod:`.ground_truth`: the shared selection of scored entries and the ground-truth writer;
* :mod:`.validation`: the benchmark's submission rules, checked before writing;
* :mod:`.predictions`: model predictions written with the package's ``PredictionsWriter``;
* :mod:`.scoring`: the package's scorers and aggregation over a prediction folder;
* :mod:`.cli`: ``neds-hf export-bwb``, ``export-bwb-gt`` and ``score-bwb``.

Submodules import ``ibl_bwb_eval`` only when they run, so this package imports without it.
"""

from .tasks import TS1_MODALITIES, require_bwb
from .validation import BwbValidationError, PredictionFile, validate_predictions

__all__ = [
    "TS1_MODALITIES",
    "BwbValidationError",
    "PredictionFile",
    "require_bwb",
    "validate_predictions",
]

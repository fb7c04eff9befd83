"""Frame and segment metrics of action segmentation (see `segmentation_scores` for definitions).

The functions live next to the ``evaluate`` module (``metrics_evaluate/action_segmentation``)
so that module stays self-contained; this module loads that file and re-exports them.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_SCORES_FILE = (
    Path(__file__).resolve().parents[1]
    / "metrics_evaluate"
    / "action_segmentation"
    / "segmentation_scores.py"
)
_MODULE_NAME = "neds_hf.segmentation._segmentation_scores"


def _load_scores():
    if _MODULE_NAME in sys.modules:
        return sys.modules[_MODULE_NAME]
    spec = importlib.util.spec_from_file_location(_MODULE_NAME, _SCORES_FILE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[_MODULE_NAME] = module
    spec.loader.exec_module(module)
    return module


_scores = _load_scores()
F1_THRESHOLDS = _scores.F1_THRESHOLDS
edit_score = _scores.edit_score
f1_from_counts = _scores.f1_from_counts
frame_scores = _scores.frame_scores
score_sessions = _scores.score_sessions
segment_counts = _scores.segment_counts
segments = _scores.segments

__all__ = [
    "F1_THRESHOLDS",
    "edit_score",
    "f1_from_counts",
    "frame_scores",
    "score_sessions",
    "segment_counts",
    "segments",
]

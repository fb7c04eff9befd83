"""Action segmentation: per-frame behaviour classes from pose or other per-frame features.

A transformers model (:class:`ActionSegmentationModel`) with its saved feature pipeline, readers
for the DeepLabCut / Lightning Pose folder layout, a synthetic corpus with known segments,
training with Accelerate, inference for every frame, frame and segment metrics, scikit-learn
baselines, and a link that turns predicted actions into a per-bin NEDS modality.
"""

from .configuration_segmentation import BACKGROUND, SEGMENTATION_HEADS, ActionSegmentationConfig
from .feature_extraction_segmentation import ActionSegmentationFeatureExtractor
from .modeling_segmentation import ActionSegmentationModel, ActionSegmentationOutput

__all__ = [
    "BACKGROUND",
    "SEGMENTATION_HEADS",
    "ActionSegmentationConfig",
    "ActionSegmentationFeatureExtractor",
    "ActionSegmentationModel",
    "ActionSegmentationOutput",
]

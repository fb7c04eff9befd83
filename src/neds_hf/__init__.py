"""neds_hf: NEDS (Neural Encoding and Decoding at Scale) as a Hugging Face transformers model.

Importing the package registers the `neds` model type with the transformers Auto classes, so
`AutoConfig`, `AutoModel` and `AutoModelForMaskedLM` resolve NEDS checkpoints natively.
"""

from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM

from .collator import DataCollatorForNedsMasking
from .configuration_neds import IBL_MODALITIES, MTM_SCHEMES, NEDS_SCHEMES, NedsConfig
from .modeling_neds import (
    NedsForMaskedModeling,
    NedsMaskedModelingOutput,
    NedsModel,
    NedsModelOutput,
    NedsPreTrainedModel,
)

__version__ = "0.1.0"

AutoConfig.register("neds", NedsConfig, exist_ok=True)
AutoModel.register(NedsConfig, NedsModel, exist_ok=True)
AutoModelForMaskedLM.register(NedsConfig, NedsForMaskedModeling, exist_ok=True)

__all__ = [
    "IBL_MODALITIES",
    "MTM_SCHEMES",
    "NEDS_SCHEMES",
    "DataCollatorForNedsMasking",
    "NedsConfig",
    "NedsForMaskedModeling",
    "NedsMaskedModelingOutput",
    "NedsModel",
    "NedsModelOutput",
    "NedsPreTrainedModel",
    "__version__",
]

# action segmentation model type (per-frame behaviour classes)
from transformers import AutoFeatureExtractor  # noqa: E402

from .segmentation import (  # noqa: E402
    ActionSegmentationConfig,
    ActionSegmentationFeatureExtractor,
    ActionSegmentationModel,
)

AutoConfig.register("action_segmentation", ActionSegmentationConfig, exist_ok=True)
AutoModel.register(ActionSegmentationConfig, ActionSegmentationModel, exist_ok=True)
AutoFeatureExtractor.register(
    ActionSegmentationConfig, ActionSegmentationFeatureExtractor, exist_ok=True
)

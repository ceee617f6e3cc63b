"""LIT models. Importing this package registers ``lit_ti``, ``lit_s``, ``lit_m``, ``lit_b`` and
``litv2_s``, ``litv2_m``, ``litv2_b``, ``litv2_b_384`` with timm."""
from .lit import DEFAULT_DROP_PATH, LIT, MODEL_CONFIGS, DeformableTokenMerging, checkpoint_filter_fn, set_reference_path

from .litv2 import DEFAULT_DROP_PATH as LITV2_DEFAULT_DROP_PATH
from .litv2 import MODEL_CONFIGS as LITV2_CONFIGS
from .litv2 import LITv2
from .litv2 import checkpoint_filter_fn as litv2_checkpoint_filter_fn

LIT_MODELS = tuple(MODEL_CONFIGS)
LITV2_MODELS = tuple(LITV2_CONFIGS)

__all__ = ["LIT", "DeformableTokenMerging", "checkpoint_filter_fn", "MODEL_CONFIGS", "DEFAULT_DROP_PATH", "LIT_MODELS", "set_reference_path",
           "LITv2", "LITV2_CONFIGS", "LITV2_MODELS", "LITV2_DEFAULT_DROP_PATH", "litv2_checkpoint_filter_fn"]

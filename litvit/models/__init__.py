"""LIT models. Importing this package registers ``lit_ti``, ``lit_s``, ``lit_m`` and ``lit_b`` with timm."""
from .lit import DEFAULT_DROP_PATH, LIT, MODEL_CONFIGS, DeformableTokenMerging, checkpoint_filter_fn, set_reference_path

LIT_MODELS = tuple(MODEL_CONFIGS)

__all__ = ["LIT", "DeformableTokenMerging", "checkpoint_filter_fn", "MODEL_CONFIGS", "DEFAULT_DROP_PATH", "LIT_MODELS", "set_reference_path"]

"""litvit: LIT (Less attention vIsion Transformer) for PyTorch.

Importing the package registers ``lit_ti``, ``lit_s``, ``lit_m`` and ``lit_b`` with timm.
"""
__version__ = "0.1.0"

from . import models  # noqa: F401  (registers the models with timm)
from .factory import create_backbone, create_model, load_checkpoint, model_from_checkpoint
from .models import LIT, LIT_MODELS, checkpoint_filter_fn

__all__ = [
    "create_model",
    "create_backbone",
    "load_checkpoint",
    "model_from_checkpoint",
    "LIT",
    "LIT_MODELS",
    "checkpoint_filter_fn",
    "__version__",
]

"""``create_model``: timm's factory plus checkpoint loading from any supported layout."""
from __future__ import annotations

import os
from typing import Any, Optional, Union

import timm
import torch.nn as nn

from .checkpoint import extract_state_dict, load_model_weights, read_checkpoint
from .errors import CheckpointError
from .models import LIT, checkpoint_filter_fn

__all__ = ["create_model", "load_checkpoint"]


def load_checkpoint(
    model: nn.Module,
    checkpoint_path: Union[str, os.PathLike],
    use_ema: bool = False,
    drop_mismatched_classifier: bool = False,
    strict: bool = True,
) -> nn.Module:
    """Load a released, litvit or timm checkpoint (``.pth``/``.pt``/``.safetensors``) into ``model``.

    Released LIT key layouts are mapped by :func:`litvit.models.checkpoint_filter_fn`; position
    tables saved at another resolution are resized. Any missing, unexpected or mis-shaped key
    raises :class:`~litvit.errors.CheckpointError` naming all of them.
    """
    state_dict = extract_state_dict(read_checkpoint(checkpoint_path), use_ema=use_ema)
    if isinstance(model, LIT):
        state_dict = checkpoint_filter_fn(state_dict, model)
    load_model_weights(
        model,
        state_dict,
        source=f"checkpoint {checkpoint_path}",
        drop_mismatched_classifier=drop_mismatched_classifier,
        strict=strict,
    )
    return model


def create_model(
    model_name: str,
    checkpoint_path: Optional[Union[str, os.PathLike]] = None,
    use_ema: bool = False,
    drop_mismatched_classifier: bool = False,
    **kwargs: Any,
) -> nn.Module:
    """Build a LIT (or any timm) model and optionally load a checkpoint into it.

    Args:
        model_name: ``lit_ti``, ``lit_s``, ``lit_m``, ``lit_b`` or any timm model name.
        checkpoint_path: released LIT checkpoint, litvit training checkpoint, or safetensors file.
        use_ema: take the ``model_ema`` weights of a litvit training checkpoint.
        drop_mismatched_classifier: leave the classifier freshly initialised when the
            checkpoint was trained for another class count (fine-tuning).
        **kwargs: model options (``num_classes``, ``img_size``, ``drop_path_rate``, ...).
    """
    try:
        model = timm.create_model(model_name, **kwargs)
    except RuntimeError as err:
        if "Unknown model" in str(err):
            raise CheckpointError(f"unknown model {model_name!r}") from None
        raise
    if checkpoint_path is not None:
        load_checkpoint(
            model, checkpoint_path, use_ema=use_ema, drop_mismatched_classifier=drop_mismatched_classifier
        )
    return model

"""``create_model``: timm's factory plus checkpoint loading from any supported layout."""
from __future__ import annotations

import os
from typing import Any, Optional, Union

import timm
import torch.nn as nn

from .checkpoint import extract_state_dict, load_model_weights, read_checkpoint
from .errors import CheckpointError
from .models import LIT, LITV2_CONFIGS, MODEL_CONFIGS, LITv2, checkpoint_filter_fn, litv2_checkpoint_filter_fn

__all__ = ["create_model", "create_backbone", "load_checkpoint"]


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
    elif isinstance(model, LITv2):
        state_dict = litv2_checkpoint_filter_fn(state_dict, model)
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


def create_backbone(
    model_name: str,
    checkpoint_path: Optional[Union[str, os.PathLike]] = None,
    feature_norms: Optional[bool] = None,
    use_ema: bool = False,
    **kwargs: Any,
) -> LIT:
    """A headless LIT for dense prediction, optionally initialised from a classification checkpoint.

    ``model.forward_intermediates(x, intermediates_only=True)`` returns the four stage maps
    (strides 4, 8, 16, 32; channels ``model.embed_dims``) for any input whose sides are
    multiples of 32. Following the released dense backbones, LIT-Ti carries no class token
    and LIT-S/M/B normalise their stage 2-4 outputs (``feature_norms``, freshly initialised:
    classification checkpoints do not have them). The classifier, class token and the
    class-token slot of LIT-Ti's last position embedding are not loaded; every other
    backbone weight must be in the checkpoint.
    """
    if model_name not in MODEL_CONFIGS and model_name not in LITV2_CONFIGS:
        choices = ", ".join([*MODEL_CONFIGS, *LITV2_CONFIGS])
        raise CheckpointError(f"unknown LIT model {model_name!r}; choose from {choices}")
    if feature_norms is None:
        # LITv2's dense backbones normalise their stage 2-4 outputs, as LIT-S/M/B's do.
        feature_norms = MODEL_CONFIGS.get(model_name, {}).get("pos_embed", "rel") == "rel"
    model = timm.create_model(model_name, num_classes=0, global_pool="", feature_norms=feature_norms, **kwargs)
    if checkpoint_path is not None:
        state_dict = extract_state_dict(read_checkpoint(checkpoint_path), use_ema=use_ema)
        filter_fn = litv2_checkpoint_filter_fn if isinstance(model, LITv2) else checkpoint_filter_fn
        state_dict = filter_fn(state_dict, model)
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith(("head.", "cls_token"))}
        model_keys = model.state_dict()
        missing = [k for k in model_keys if k not in state_dict and not k.startswith("feature_norms.")]
        unexpected = [k for k in state_dict if k not in model_keys]
        if missing or unexpected:
            # Report through the common message format.
            load_model_weights(model, state_dict, source=f"checkpoint {checkpoint_path}")
        load_model_weights(model, state_dict, source=f"checkpoint {checkpoint_path}", strict=False)
    return model

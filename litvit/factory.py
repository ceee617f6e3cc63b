"""``create_model``: timm's factory plus checkpoint loading from any supported layout;
``model_from_checkpoint``: a ready model from a checkpoint file alone."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import timm
import torch
import torch.nn as nn

from .checkpoint import extract_state_dict, load_model_weights, read_checkpoint
from .errors import CheckpointError
from .models import (
    LIT,
    LIT_MODELS,
    LITV2_CONFIGS,
    LITV2_MODELS,
    MODEL_CONFIGS,
    LITv2,
    checkpoint_filter_fn,
    litv2_checkpoint_filter_fn,
)

__all__ = [
    "create_model", "create_backbone", "load_checkpoint", "model_from_checkpoint", "CheckpointInfo",
    "imagenet_class_names", "display_class_names",
]


def _to_model_layout(state_dict: Dict[str, Any], model: nn.Module) -> Dict[str, Any]:
    """Released LIT / LITv2 key layouts mapped to ``model``'s; other models' weights as they come."""
    if isinstance(model, LIT):
        return checkpoint_filter_fn(state_dict, model)
    if isinstance(model, LITv2):
        return litv2_checkpoint_filter_fn(state_dict, model)
    return state_dict


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
    state_dict = _to_model_layout(extract_state_dict(read_checkpoint(checkpoint_path), use_ema=use_ema), model)
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
        state_dict = _to_model_layout(state_dict, model)
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith(("head.", "cls_token"))}
        model_keys = model.state_dict()
        missing = [k for k in model_keys if k not in state_dict and not k.startswith("feature_norms.")]
        unexpected = [k for k in state_dict if k not in model_keys]
        if missing or unexpected:
            # Report through the common message format.
            load_model_weights(model, state_dict, source=f"checkpoint {checkpoint_path}")
        load_model_weights(model, state_dict, source=f"checkpoint {checkpoint_path}", strict=False)
    return model


@dataclass
class CheckpointInfo:
    """What a checkpoint says about the model :func:`model_from_checkpoint` built from it."""

    path: str
    model_name: str
    num_classes: int
    # The training configuration a litvit checkpoint records (``None`` for released / timm files).
    config: Optional[Dict[str, Any]] = None
    class_names: Optional[List[str]] = None
    epoch: Optional[int] = None
    # The arguments given to ``create_model`` besides the name.
    model_kwargs: Dict[str, Any] = field(default_factory=dict)


def _head_classes(state_dict: Mapping[str, torch.Tensor], classifier: str = "head") -> Optional[int]:
    weight = state_dict.get(f"{classifier}.weight")
    if weight is None:
        # released LIT-Ti / other layouts: any 2-d weight whose name ends in head.weight
        for key, value in state_dict.items():
            if key.endswith("head.weight") and value.ndim == 2:
                weight = value
                break
    return int(weight.shape[0]) if weight is not None else None


def model_from_checkpoint(
    path: Union[str, os.PathLike],
    *,
    model: Optional[str] = None,
    use_ema: bool = False,
    num_classes: Optional[int] = None,
    img_size: Optional[int] = None,
    model_kwargs: Optional[Mapping[str, Any]] = None,
    device: Union[str, torch.device] = "cpu",
) -> Tuple[nn.Module, CheckpointInfo]:
    """A classifier in eval mode on ``device`` from one read of ``path``, and what the file records.

    A litvit training checkpoint records its architecture, model options, resolution and class
    names, so ``path`` alone is enough; a released or timm state dict needs ``model``. The
    class count is ``num_classes``, else the one recorded, else the classifier weights'. Given
    options override recorded ones: ``img_size``, then ``model_kwargs``. Naming another
    ``model`` than the checkpoint records, or weights that do not fit, raises
    :class:`~litvit.errors.CheckpointError`.
    """
    raw = read_checkpoint(path)
    raw_map: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
    config = dict(raw_map["config"]) if isinstance(raw_map.get("config"), Mapping) else None
    recorded_name = (config or {}).get("model")
    if model is not None and recorded_name is not None and model != recorded_name:
        raise CheckpointError(f"checkpoint {path} holds a {recorded_name} model, not {model}")
    model_name = model or recorded_name
    if not model_name:
        raise CheckpointError(f"checkpoint {path} does not record its architecture; name it with --model (e.g. lit_ti)")
    state_dict = extract_state_dict(raw, use_ema=use_ema)

    recorded_kwargs = (config or {}).get("model_kwargs")
    kwargs: Dict[str, Any] = {**(recorded_kwargs if isinstance(recorded_kwargs, Mapping) else {}), **(model_kwargs or {})}
    if img_size is None and "img_size" not in (model_kwargs or {}):
        img_size = (config or {}).get("img_size")
    if img_size and (model_name in LIT_MODELS or model_name in LITV2_MODELS):
        # The recorded resolution builds LIT's position tables at the size they were trained;
        # other timm models are built as they come.
        kwargs["img_size"] = int(img_size)
    if num_classes is None:
        num_classes = raw_map.get("num_classes") or _head_classes(state_dict) or 1000
    kwargs["num_classes"] = int(num_classes)

    net = create_model(model_name, **kwargs)
    load_model_weights(net, _to_model_layout(state_dict, net), source=f"checkpoint {path}")
    class_names = raw_map.get("class_names")
    info = CheckpointInfo(
        path=str(path),
        model_name=model_name,
        num_classes=int(num_classes),
        config=config,
        class_names=[str(c) for c in class_names] if isinstance(class_names, (list, tuple)) and class_names else None,
        epoch=raw_map.get("epoch"),
        model_kwargs={k: v for k, v in kwargs.items() if k != "num_classes"},
    )
    return net.to(device).eval(), info


def imagenet_class_names() -> List[str]:
    """The 1000 ImageNet-1k class descriptions, from timm's bundled (offline) metadata."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    return [info.index_to_description(i) for i in range(info.num_classes())]


def display_class_names(num_classes: int, recorded: Optional[Sequence[str]] = None) -> Optional[List[str]]:
    """Names to show beside predictions: those a checkpoint records, else ImageNet's for a
    1000-way head (the released weights), else None (the index is shown)."""
    if recorded:
        return [str(name) for name in recorded]
    return imagenet_class_names() if num_classes == 1000 else None

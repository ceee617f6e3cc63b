"""What ``litvit export --task classify`` exports: a LIT (or timm) classifier, logits out."""
from __future__ import annotations

import os
from typing import Any, Dict, Optional, Tuple, Union

import torch.nn as nn

__all__ = ["classifier_for_export"]


def classifier_for_export(
    model_name: str,
    checkpoint_path: Optional[Union[str, os.PathLike]] = None,
    num_classes: Optional[int] = None,
    use_ema: bool = False,
    **model_kwargs: Any,
) -> Tuple[nn.Module, Dict[str, str]]:
    """The classifier and the ONNX metadata it adds (normalisation). Without ``num_classes``
    the class count is read from the checkpoint (1000 without a checkpoint)."""
    from ..factory import create_model, model_from_checkpoint

    if checkpoint_path is not None:
        model, _ = model_from_checkpoint(checkpoint_path, model=model_name, use_ema=use_ema,
                                         num_classes=num_classes, model_kwargs=model_kwargs)
    else:
        model = create_model(model_name, **({} if num_classes is None else {"num_classes": num_classes}),
                             **model_kwargs)
    meta: Dict[str, str] = {}
    cfg = getattr(model, "pretrained_cfg", None) or {}
    for key in ("mean", "std"):
        if key in cfg:
            meta[f"litvit.{key}"] = ",".join(f"{v:g}" for v in cfg[key])
    return model, meta

"""What ``litvit export --task segment`` exports: Semantic FPN-LIT, logits at the input size."""
from __future__ import annotations

import os
from typing import Any, Dict, Optional, Tuple, Union

import torch.nn as nn

from ..errors import ExportError

__all__ = ["segmenter_for_export"]

IMAGENET_MEAN_STD = {"litvit.mean": "0.485,0.456,0.406", "litvit.std": "0.229,0.224,0.225"}


def segmenter_for_export(
    model_name: str,
    checkpoint_path: Optional[Union[str, os.PathLike]] = None,
    num_classes: Optional[int] = None,
    use_ema: bool = False,
    **model_kwargs: Any,
) -> Tuple[nn.Module, Dict[str, str]]:
    """From a ``litvit segment train`` checkpoint (which holds its own configuration) or
    untrained (``num_classes``, default 150); and the ONNX metadata it adds."""
    from .models import semantic_fpn_lit

    meta: Dict[str, str] = {}
    if checkpoint_path is not None:
        from .training import load_trained_model

        if model_kwargs or num_classes is not None:
            raise ExportError("a segmentation checkpoint holds its own configuration; drop --num-classes/--model-kwargs")
        model, info = load_trained_model(str(checkpoint_path))
        meta["litvit.model"] = str(info.get("model_config", {}).get("model_name", model_name))
    else:
        model = semantic_fpn_lit(model_name, num_classes=150 if num_classes is None else num_classes, **model_kwargs)
    meta.update(IMAGENET_MEAN_STD)
    return model, meta

"""What ``litvit export --task detect`` exports: the dense, tensor-to-tensors part of a detector."""
from __future__ import annotations

import os
from typing import Any, Dict, Optional, Tuple, Union

import torch
import torch.nn as nn

from ..errors import ExportError

__all__ = ["DetectorDenseOutputs", "detector_for_export"]


class DetectorDenseOutputs(nn.Module):
    """The tensor-to-tensors part of a litvit (torchvision) detector, for export.

    Input: the normalised batch the detector's transform produces (resized, padded to a
    multiple of 32). Outputs, in order: for RetinaNet the per-anchor ``cls_logits``
    (``B x A x K``, before the sigmoid) and ``bbox_regression`` (``B x A x 4`` box deltas
    against torchvision's anchors, levels P3-P7 concatenated), then the FPN levels
    (RetinaNet P3-P7, Mask R-CNN P2-P6). Anchor decoding, score thresholds, NMS and Mask
    R-CNN's region stages (data-dependent box counts) stay in the caller's code.
    """

    def __init__(self, detector: nn.Module):
        super().__init__()
        from torchvision.models.detection import RetinaNet
        from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7

        self.backbone = detector.backbone
        self.head = detector.head if isinstance(detector, RetinaNet) else None
        self.size_divisor = 32
        in_indices = list(getattr(self.backbone, "in_indices", range(4)))
        levels = [f"p{2 + i}" for i in in_indices]
        extra = getattr(getattr(self.backbone, "fpn", None), "extra_blocks", None)
        if isinstance(extra, LastLevelP6P7):
            levels += [f"p{3 + in_indices[-1]}", f"p{4 + in_indices[-1]}"]
        elif isinstance(extra, LastLevelMaxPool):
            levels += [f"p{3 + in_indices[-1]}"]
        self.output_names = (["cls_logits", "bbox_regression"] if self.head is not None else []) + levels
        # A new module starts in training mode; this one exists for inference (and would put
        # the detector's BatchNorms in training mode otherwise).
        self.train(detector.training)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        features = list(self.backbone(x).values())
        if self.head is None:
            return tuple(features)
        out = self.head(features)
        return (out["cls_logits"], out["bbox_regression"], *features)


def detector_for_export(
    model_name: str,
    checkpoint_path: Optional[Union[str, os.PathLike]] = None,
    num_classes: Optional[int] = None,
    use_ema: bool = False,
    **model_kwargs: Any,
) -> Tuple[nn.Module, Dict[str, str]]:
    """:class:`DetectorDenseOutputs` of a ``litvit detect train`` checkpoint's detector (which
    holds its own configuration) or of an untrained one (``arch`` in ``model_kwargs``, default
    ``retinanet``; ``num_classes`` default 80); and the ONNX metadata it adds."""
    from .training import build_from_spec, detector_from_checkpoint

    if checkpoint_path is not None:
        if model_kwargs or num_classes is not None:
            raise ExportError("a detection checkpoint holds its own configuration; drop --num-classes/--model-kwargs")
        detector, _ = detector_from_checkpoint(str(checkpoint_path))
    else:
        arch = model_kwargs.pop("arch", "retinanet")
        spec = dict(arch=arch, model_name=model_name, num_classes=80 if num_classes is None else num_classes,
                    kwargs=model_kwargs)
        detector = build_from_spec(spec)
    model = DetectorDenseOutputs(detector.eval())
    transform = getattr(detector, "transform", None)
    meta = {"litvit.arch": type(detector).__name__, "litvit.outputs": ",".join(model.output_names)}
    for key in ("mean", "std"):
        values = getattr(transform, f"image_{key}", None)
        if values is not None:
            meta[f"litvit.{key}"] = ",".join(f"{v:g}" for v in values)
    return model, meta

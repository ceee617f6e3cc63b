"""Semantic FPN (Kirillov et al., 2019) on a LIT backbone, as in the released ADE20K configs.

Backbone stage maps (strides 4, 8, 16, 32) -> ``torchvision.ops.FeaturePyramidNetwork``
(256 channels) -> per level, conv 3x3 + norm + ReLU (+ 2x bilinear upsampling) repeated
until stride 4 (128 channels) -> sum -> dropout -> 1x1 classifier -> bilinear upsampling
to the input size.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.ops import FeaturePyramidNetwork

__all__ = ["SemanticFPNHead", "SemanticFPN", "semantic_fpn_lit", "DEFAULT_SEG_DROP_PATH"]

# Stochastic depth of the backbone during segmentation training. The reference does not
# state it for the dense configs; 0.1 is the usual Semantic FPN setting for backbones of this size.
DEFAULT_SEG_DROP_PATH = 0.1


class SemanticFPNHead(nn.Module):
    """Merges FPN levels at stride 4 and classifies every pixel (at stride 4).

    Level ``i`` (stride ``4 * 2**i``) passes ``max(1, i)`` conv-norm-ReLU blocks, each
    but the first level's followed by 2x bilinear upsampling, so all levels meet at stride 4.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        num_levels: int = 4,
        channels: int = 128,
        dropout: float = 0.1,
        norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d,
    ):
        super().__init__()
        self.scale_heads = nn.ModuleList()
        for level in range(num_levels):
            layers: List[nn.Module] = []
            for k in range(max(1, level)):
                layers += [
                    nn.Conv2d(in_channels if k == 0 else channels, channels, 3, padding=1, bias=False),
                    norm_layer(channels),
                    nn.ReLU(inplace=True),
                ]
                if level > 0:
                    layers.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
            self.scale_heads.append(nn.Sequential(*layers))
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Conv2d(channels, num_classes, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        nn.init.normal_(self.classifier.weight, std=0.01)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        out = self.scale_heads[0](features[0])
        for head, feature in zip(self.scale_heads[1:], features[1:]):
            level = head(feature)
            if level.shape[-2:] != out.shape[-2:]:
                level = F.interpolate(level, size=out.shape[-2:], mode="bilinear", align_corners=False)
            out = out + level
        return self.classifier(self.dropout(out))


class SemanticFPN(nn.Module):
    """Backbone + FPN + Semantic FPN head; ``forward`` returns logits at the input size.

    Args:
        backbone: a module with ``forward_intermediates(x, intermediates_only=True)`` returning
            maps at strides 4, 8, 16, 32, and ``embed_dims`` (their channels).
        num_classes: number of classes (the ignore label is not a class).
        fpn_channels: FPN width (256 in the released configs).
        head_channels: width of the per-level heads (128 in the released configs).
        dropout: dropout before the classifier (0.1).
        norm_layer: head norm; :func:`torch.nn.SyncBatchNorm.convert_sync_batchnorm` turns it
            (and the backbone's BatchNorms) into SyncBatchNorm for distributed training.
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        fpn_channels: int = 256,
        head_channels: int = 128,
        dropout: float = 0.1,
        norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d,
    ):
        super().__init__()
        in_channels = list(backbone.embed_dims)
        self.backbone = backbone
        self.num_classes = num_classes
        self.size_divisor = int(getattr(backbone, "stride", 32))
        self.fpn = FeaturePyramidNetwork(in_channels, fpn_channels)
        self.decode_head = SemanticFPNHead(
            fpn_channels, num_classes, len(in_channels), head_channels, dropout, norm_layer
        )

    def forward_features(self, x: torch.Tensor) -> List[torch.Tensor]:
        """The FPN levels (strides 4 to 32)."""
        maps = self.backbone.forward_intermediates(x, intermediates_only=True)
        pyramid = self.fpn(OrderedDict((str(i), m) for i, m in enumerate(maps)))
        return list(pyramid.values())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``B x num_classes x H x W`` for images whose sides are multiples of 32."""
        height, width = x.shape[-2:]
        if height % self.size_divisor or width % self.size_divisor:
            raise ValueError(
                f"Semantic FPN needs image sides divisible by {self.size_divisor}, got {height}x{width}; "
                "pad the input (the litvit pipelines do)"
            )
        logits = self.decode_head(self.forward_features(x))
        return F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)

    def offset_parameters(self) -> List[nn.Parameter]:
        """DTM offset predictors of the backbone (trained at a reduced learning rate)."""
        fn = getattr(self.backbone, "offset_parameters", None)
        return list(fn()) if fn is not None else []


def semantic_fpn_lit(
    model_name: str = "lit_ti",
    num_classes: int = 150,
    backbone_checkpoint: Optional[Union[str, os.PathLike]] = None,
    fpn_channels: int = 256,
    head_channels: int = 128,
    dropout: float = 0.1,
    drop_path_rate: float = DEFAULT_SEG_DROP_PATH,
    norm_all_stages: bool = False,
    **backbone_kwargs: Any,
) -> SemanticFPN:
    """Semantic FPN with a LIT backbone (``lit_ti``, ``lit_s``, ``lit_m``, ``lit_b``).

    Args:
        model_name: LIT size.
        num_classes: 150 for ADE20K.
        backbone_checkpoint: ImageNet classification checkpoint (released or litvit layout) to
            initialise the backbone; the classifier is dropped, the position tables resized.
        fpn_channels, head_channels, dropout: see :class:`SemanticFPN`.
        drop_path_rate: backbone stochastic depth.
        norm_all_stages: LayerNorm on all four backbone outputs, as the released Semantic FPN-LIT-S
            (by default LIT-S/M/B normalise stages 2-4, as the released detectors; LIT-Ti none).
        **backbone_kwargs: passed to :func:`litvit.create_backbone` (e.g. reduced ``embed_dims``,
            ``depths``, ``num_heads``, ``img_size`` for small experiments).
    """
    from ..factory import create_backbone

    if num_classes < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    backbone = create_backbone(
        model_name, checkpoint_path=backbone_checkpoint, drop_path_rate=drop_path_rate, **backbone_kwargs
    )
    # Dense outputs never pass the final token norm; leaving it in would give DDP parameters
    # without gradients.
    backbone.norm = nn.Identity()
    if norm_all_stages:
        _norm_first_stage(backbone)
    return SemanticFPN(backbone, num_classes, fpn_channels, head_channels, dropout)


def _norm_first_stage(backbone: nn.Module) -> None:
    norms = getattr(backbone, "feature_norms", None)
    if norms is None:
        raise ValueError("norm_all_stages needs a backbone with output norms (LIT-S/M/B)")
    # The stage-1 slot holds an identity; give it a LayerNorm like its neighbours'.
    norms[0] = nn.LayerNorm(backbone.embed_dims[0], eps=norms[1].eps)


def model_config(model_name: str, num_classes: int, **kwargs: Any) -> Dict[str, Any]:
    """Keyword arguments of :func:`semantic_fpn_lit` as stored in training checkpoints."""
    config = dict(model_name=model_name, num_classes=num_classes)
    for key, value in kwargs.items():
        config[key] = list(value) if isinstance(value, tuple) else value
    return config

"""RetinaNet and Mask R-CNN with LIT backbones, built from torchvision's detection framework.

The wiring follows the released LIT detection configs (see the project's reference notes):

- RetinaNet: FPN (256 channels) on the stride 8/16/32 stage maps, P6/P7 computed by strided
  convolutions from the stride-32 *backbone* map (``LastLevelP6P7(C5, 256)``), anchors with
  octave base scale 4, 3 scales per octave and ratios 0.5/1/2, sigmoid focal loss
  (gamma 2, alpha 0.25), L1 box loss; at test time scores > 0.05, NMS 0.5, 100 per image.
- Mask R-CNN: FPN (256 channels) on all four stage maps plus a max-pooled P6, torchvision's
  standard RPN / RoI heads (which match the released 1x config).

``num_classes`` is the number of object categories (80 for COCO) for both builders; the
background class Mask R-CNN needs is added internally. Labels are ``0..K-1`` for RetinaNet
and ``1..K`` for Mask R-CNN; ``model.label_offset`` says which, so the data and evaluation
code map COCO category ids the same way for both.

``mmdet_compat=True`` makes either detector compute what the released mmdetection 2.x models
compute with the same weights (anchor geometry, P6/P7, RoIAlign, RetinaNet's pre-NMS
selection; see :mod:`litvit.detection.mmdet_compat`). Checkpoints converted from the release
record it.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from functools import partial
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from torchvision.models.detection import MaskRCNN, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.retinanet import RetinaNetHead
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock, LastLevelMaxPool, LastLevelP6P7

from ..factory import create_backbone
from ..models import DEFAULT_DROP_PATH, LIT, LITV2_CONFIGS, LITV2_DEFAULT_DROP_PATH, MODEL_CONFIGS
from .mmdet_compat import LastLevelP6P7FromC5, MMDetAnchorGenerator, MMDetRoIAlign, topk_per_anchor

__all__ = [
    "LITFPNBackbone",
    "LITRetinaNet",
    "retinanet_lit",
    "mask_rcnn_lit",
    "build_detector",
    "DETECTORS",
    "retinanet_anchor_generator",
]

PathLike = Union[str, os.PathLike]

#: The stride every LIT input side must be a multiple of.
LIT_STRIDE = 32


class LITFPNBackbone(nn.Module):
    """A LIT trunk followed by a torchvision FPN; ``out_channels`` as torchvision detectors expect.

    Args:
        body: a headless LIT (``litvit.create_backbone``).
        in_indices: which stage maps (0..3 = strides 4, 8, 16, 32) feed the FPN.
        out_channels: FPN width.
        extra_blocks: torchvision FPN extra block (``LastLevelP6P7``, ``LastLevelMaxPool``).
        frozen_stages: -1 trains everything; ``n >= 0`` freezes the patch embedding and the
            first ``n`` stages (each with the token merging that opens it), in eval mode.
        norm_eval: keep the trunk's BatchNorm layers (inside the DTMs) in eval mode while training.
    """

    def __init__(
        self,
        body: LIT,
        in_indices: Sequence[int],
        out_channels: int = 256,
        extra_blocks: Optional[ExtraFPNBlock] = None,
        frozen_stages: int = -1,
        norm_eval: bool = False,
    ):
        super().__init__()
        num_stages = len(body.stages)
        if not -1 <= frozen_stages <= num_stages:
            raise ValueError(f"frozen_stages must be between -1 and {num_stages}, got {frozen_stages}")
        # Dense outputs never reach the final norm or the classifier; unused parameters would
        # also trip DDP's reducer.
        body.norm = nn.Identity()
        body.head = nn.Identity()
        self.body = body
        self.in_indices = [int(i) for i in in_indices]
        self.fpn = FeaturePyramidNetwork(
            [body.embed_dims[i] for i in self.in_indices], out_channels, extra_blocks=extra_blocks
        )
        self.out_channels = out_channels
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self._freeze()

    def _frozen_modules(self) -> List[nn.Module]:
        if self.frozen_stages < 0:
            return []
        return [self.body.patch_embed] + list(self.body.stages[: self.frozen_stages])

    def _freeze(self) -> None:
        for module in self._frozen_modules():
            module.eval()
            for param in module.parameters():
                param.requires_grad_(False)

    def train(self, mode: bool = True) -> "LITFPNBackbone":
        super().train(mode)
        if mode:
            for module in self._frozen_modules():
                module.eval()
            if self.norm_eval:
                for module in self.body.modules():
                    if isinstance(module, nn.modules.batchnorm._BatchNorm):
                        module.eval()
        return self

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        maps = self.body.forward_intermediates(x, indices=self.in_indices, intermediates_only=True)
        return self.fpn(OrderedDict((str(i), m) for i, m in enumerate(maps)))


def retinanet_anchor_generator(
    octave_base_scale: float = 4.0,
    scales_per_octave: int = 3,
    aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
    strides: Sequence[int] = (8, 16, 32, 64, 128),
    mmdet_compat: bool = False,
) -> AnchorGenerator:
    """RetinaNet anchors: ``octave_base_scale * stride * 2**(i / scales_per_octave)`` per level.

    With ``mmdet_compat`` they are laid out as mmdetection does (:class:`MMDetAnchorGenerator`).
    """
    sizes = tuple(
        tuple(octave_base_scale * s * 2 ** (i / scales_per_octave) for i in range(scales_per_octave)) for s in strides
    )
    ratios = (tuple(aspect_ratios),) * len(strides)
    return MMDetAnchorGenerator(sizes, ratios, strides) if mmdet_compat else AnchorGenerator(sizes, ratios)


class LITRetinaNet(RetinaNet):
    """torchvision's RetinaNet; with ``topk_per_anchor`` set, the pre-NMS selection of each
    level is mmdetection 2.x's (:func:`~litvit.detection.mmdet_compat.topk_per_anchor`)."""

    topk_per_anchor: bool = False

    def postprocess_detections(
        self,
        head_outputs: Dict[str, List[torch.Tensor]],
        anchors: List[List[torch.Tensor]],
        image_shapes: List[Tuple[int, int]],
    ) -> List[Dict[str, torch.Tensor]]:
        if not self.topk_per_anchor:
            return super().postprocess_detections(head_outputs, anchors, image_shapes)
        return [
            topk_per_anchor(
                [level[index] for level in head_outputs["cls_logits"]],
                [level[index] for level in head_outputs["bbox_regression"]],
                anchors[index],
                image_shape,
                self.box_coder,
                self.score_thresh,
                self.nms_thresh,
                self.topk_candidates,
                self.detections_per_img,
            )
            for index, image_shape in enumerate(image_shapes)
        ]


def _lit_body(
    model_name: str,
    backbone_checkpoint: Optional[PathLike],
    backbone_kwargs: Optional[Dict[str, Any]],
) -> LIT:
    kwargs = dict(backbone_kwargs or {})
    drop_path = {**DEFAULT_DROP_PATH, **LITV2_DEFAULT_DROP_PATH}.get(model_name)
    if drop_path is not None:
        kwargs.setdefault("drop_path_rate", drop_path)
    return create_backbone(model_name, checkpoint_path=backbone_checkpoint, **kwargs)


def _check_transform_kwargs(kwargs: Dict[str, Any]) -> None:
    divisible = kwargs.get("size_divisible", LIT_STRIDE)
    if divisible % LIT_STRIDE:
        raise ValueError(f"size_divisible must be a multiple of {LIT_STRIDE} for LIT backbones, got {divisible}")
    kwargs["size_divisible"] = divisible


def _trim_head_convs(head: RetinaNetHead, num_convs: int) -> None:
    # torchvision's heads always build four conv+ReLU pairs; smaller demo models use fewer.
    if not 1 <= num_convs <= 4:
        raise ValueError(f"head_convs must be between 1 and 4, got {num_convs}")
    for sub in (head.classification_head, head.regression_head):
        sub.conv = nn.Sequential(*list(sub.conv.children())[:num_convs])


def retinanet_lit(
    model_name: str = "lit_ti",
    num_classes: int = 80,
    backbone_checkpoint: Optional[PathLike] = None,
    frozen_stages: int = -1,
    norm_eval: bool = False,
    fpn_channels: int = 256,
    head_convs: int = 4,
    head_norm: bool = False,
    octave_base_scale: float = 4.0,
    min_size: int = 800,
    max_size: int = 1333,
    mmdet_compat: bool = False,
    backbone_kwargs: Optional[Dict[str, Any]] = None,
    **kwargs: Any,
) -> LITRetinaNet:
    """RetinaNet with a LIT backbone and FPN, configured as the released 1x COCO recipe.

    Args:
        model_name: ``lit_ti``, ``lit_s``, ``lit_m``, ``lit_b`` or a LITv2 (``litv2_s``, ...;
            ``backbone_kwargs={'local_ws': 4}`` for the window-4 backbones).
        num_classes: number of object categories (no background class; labels ``0..K-1``).
        backbone_checkpoint: classification checkpoint (litvit's or released) for the backbone.
        frozen_stages: see :class:`LITFPNBackbone`.
        norm_eval: keep the DTM BatchNorms in eval mode while training.
        fpn_channels, head_convs, octave_base_scale: 256, 4 and 4 as released; smaller values
            suit small images and quick experiments.
        head_norm: GroupNorm (32 groups) in the head convolutions, as torchvision's RetinaNet v2
            (not in the released recipe; it speeds up training from scratch).
        min_size, max_size: resize range of torchvision's ``GeneralizedRCNNTransform``; the
            resized batch is padded to a multiple of 32, as LIT requires.
        mmdet_compat: compute as the released mmdetection model does: unrounded anchors at the
            nominal strides, no ReLU between P6 and P7, mmdetection's pre-NMS top-k per anchor.
        backbone_kwargs: extra options for the LIT trunk (``drop_path_rate``, ``embed_dims``, ...).
        **kwargs: passed to :class:`torchvision.models.detection.RetinaNet`.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    body = _lit_body(model_name, backbone_checkpoint, backbone_kwargs)
    # torchvision's block takes P5 instead of C5 when their widths agree, and puts a ReLU before P7.
    extra_blocks = (
        LastLevelP6P7FromC5(body.embed_dims[-1], fpn_channels, relu_before_p7=False)
        if mmdet_compat
        else LastLevelP6P7(body.embed_dims[-1], fpn_channels)
    )
    backbone = LITFPNBackbone(
        body,
        in_indices=(1, 2, 3),
        out_channels=fpn_channels,
        extra_blocks=extra_blocks,
        frozen_stages=frozen_stages,
        norm_eval=norm_eval,
    )
    anchor_generator = retinanet_anchor_generator(octave_base_scale, mmdet_compat=mmdet_compat)
    head = RetinaNetHead(
        fpn_channels,
        anchor_generator.num_anchors_per_location()[0],
        num_classes,
        norm_layer=partial(nn.GroupNorm, 32) if head_norm else None,
    )
    if head_convs != 4:
        _trim_head_convs(head, head_convs)
    head.regression_head._loss_type = "l1"
    kwargs.setdefault("score_thresh", 0.05)
    kwargs.setdefault("nms_thresh", 0.5)
    kwargs.setdefault("detections_per_img", 100)
    _check_transform_kwargs(kwargs)
    model = LITRetinaNet(
        backbone,
        num_classes,
        min_size=min_size,
        max_size=max_size,
        anchor_generator=anchor_generator,
        head=head,
        **kwargs,
    )
    model.topk_per_anchor = mmdet_compat
    model.label_offset = 0
    model.num_object_classes = num_classes
    return model


def mask_rcnn_lit(
    model_name: str = "lit_ti",
    num_classes: int = 80,
    backbone_checkpoint: Optional[PathLike] = None,
    frozen_stages: int = -1,
    norm_eval: bool = False,
    fpn_channels: int = 256,
    anchor_sizes: Sequence[float] = (32, 64, 128, 256, 512),
    box_head_dim: int = 1024,
    mask_head_channels: int = 256,
    min_size: int = 800,
    max_size: int = 1333,
    mmdet_compat: bool = False,
    backbone_kwargs: Optional[Dict[str, Any]] = None,
    **kwargs: Any,
) -> MaskRCNN:
    """Mask R-CNN with a LIT backbone and FPN (all four stages plus max-pooled P6).

    Args:
        num_classes: number of object categories (the background class is added; labels ``1..K``).
        anchor_sizes: RPN anchor size per FPN level (one scale, ratios 0.5/1/2), as released.
        box_head_dim, mask_head_channels: widths of the two-FC box head (1024) and the
            four-conv mask head (256) as released; smaller values suit quick experiments.
        mmdet_compat: compute as the released mmdetection model does: unrounded RPN anchors at
            the nominal strides, RoIAlign with ``aligned=True`` and mmdetection's level rule.
        Other arguments as :func:`retinanet_lit`; ``**kwargs`` go to
        :class:`torchvision.models.detection.MaskRCNN`.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    body = _lit_body(model_name, backbone_checkpoint, backbone_kwargs)
    backbone = LITFPNBackbone(
        body,
        in_indices=(0, 1, 2, 3),
        out_channels=fpn_channels,
        extra_blocks=LastLevelMaxPool(),
        frozen_stages=frozen_stages,
        norm_eval=norm_eval,
    )
    if len(anchor_sizes) != 5:
        raise ValueError(f"anchor_sizes needs one size per FPN level (5), got {len(anchor_sizes)}")
    sizes, ratios = tuple((float(s),) for s in anchor_sizes), ((0.5, 1.0, 2.0),) * 5
    levels = ["0", "1", "2", "3"]
    if mmdet_compat:
        kwargs.setdefault("rpn_anchor_generator", MMDetAnchorGenerator(sizes, ratios, (4, 8, 16, 32, 64)))
        kwargs.setdefault("box_roi_pool", MMDetRoIAlign(levels, 7))
        kwargs.setdefault("mask_roi_pool", MMDetRoIAlign(levels, 14))
    else:
        kwargs.setdefault("rpn_anchor_generator", AnchorGenerator(sizes, ratios))
        # RoIAlign with adaptive sampling (sampling_ratio 0), as in the released mmdetection config.
        kwargs.setdefault("box_roi_pool", MultiScaleRoIAlign(levels, 7, sampling_ratio=0))
        kwargs.setdefault("mask_roi_pool", MultiScaleRoIAlign(levels, 14, sampling_ratio=0))
    # Heads built here (with torchvision's default layout) so that their widths can shrink.
    kwargs.setdefault("box_head", TwoMLPHead(fpn_channels * 7 * 7, box_head_dim))
    kwargs.setdefault("box_predictor", FastRCNNPredictor(box_head_dim, num_classes + 1))
    kwargs.setdefault("mask_head", MaskRCNNHeads(fpn_channels, [mask_head_channels] * 4, 1))
    kwargs.setdefault("mask_predictor", MaskRCNNPredictor(mask_head_channels, mask_head_channels, num_classes + 1))
    _check_transform_kwargs(kwargs)
    model = MaskRCNN(backbone, None, min_size=min_size, max_size=max_size, **kwargs)
    model.label_offset = 1
    model.num_object_classes = num_classes
    return model


#: Detector builders by architecture name (used by the CLI and checkpoints).
DETECTORS = {"retinanet": retinanet_lit, "mask_rcnn": mask_rcnn_lit}


def build_detector(arch: str, model_name: str, num_classes: int, **kwargs: Any) -> nn.Module:
    """``retinanet_lit`` or ``mask_rcnn_lit`` by name; unknown names raise ``ValueError``."""
    if arch not in DETECTORS:
        raise ValueError(f"unknown detector {arch!r}; choose from {', '.join(DETECTORS)}")
    if model_name not in MODEL_CONFIGS and model_name not in LITV2_CONFIGS:
        raise ValueError(f"unknown LIT model {model_name!r}; choose from {', '.join([*MODEL_CONFIGS, *LITV2_CONFIGS])}")
    model = DETECTORS[arch](model_name, num_classes, **kwargs)
    model.arch = arch
    return model

"""Pieces that make torchvision's detectors compute what mmdetection 2.x computes.

The released LIT detectors were trained and evaluated with mmdetection 2.x. With their
weights loaded, torchvision's RetinaNet and Mask R-CNN differ from it in a few places
that change the outputs; ``mmdet_compat=True`` on :func:`~litvit.detection.retinanet_lit`
and :func:`~litvit.detection.mask_rcnn_lit` swaps in the modules below:

- :class:`MMDetAnchorGenerator`: anchors not rounded to whole pixels (torchvision rounds the
  corners of every base anchor) and placed at the nominal strides (torchvision divides the
  padded image size by the map size, so a stride-64 map of 13 rows gets stride 61).
- :class:`LastLevelP6P7FromC5`: P6 from the stride-32 backbone map and P7 straight from P6;
  torchvision's ``LastLevelP6P7`` puts a ReLU between them, mmdetection's FPN does not
  (``relu_before_extra_convs=False``).
- :class:`MMDetRoIAlign`: RoIAlign with ``aligned=True`` (half-pixel centres, mmcv's default;
  torchvision's ``MultiScaleRoIAlign`` uses ``aligned=False``) and mmdetection's level rule.
- :func:`topk_per_anchor`: RetinaNet's pre-NMS selection as in mmdetection 2.x: the 1000
  anchors of each level with the highest best-class score, all their classes above the
  threshold; torchvision keeps the 1000 best (anchor, class) pairs instead.

What stays different is listed in ``docs/released-dense-checkpoints.md``.
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import boxes as box_ops
from torchvision.ops import MultiScaleRoIAlign, roi_align
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

__all__ = ["MMDetAnchorGenerator", "LastLevelP6P7FromC5", "MMDetRoIAlign", "topk_per_anchor"]


class MMDetAnchorGenerator(AnchorGenerator):
    """torchvision's anchor layout (same order of locations, ratios and sizes) with mmdetection's
    geometry: base anchors centred on 0 without rounding, one fixed stride per level."""

    def __init__(self, sizes: Sequence[Sequence[float]], aspect_ratios: Sequence[Sequence[float]], strides: Sequence[int]):
        super().__init__(tuple(tuple(s) for s in sizes), tuple(tuple(a) for a in aspect_ratios))
        if len(strides) != len(self.sizes):
            raise ValueError(f"need one stride per level ({len(self.sizes)}), got {len(strides)}")
        self.strides = tuple(int(s) for s in strides)

    def generate_anchors(
        self,
        scales: List[float],
        aspect_ratios: List[float],
        dtype: torch.dtype = torch.float32,
        device: torch.device = torch.device("cpu"),
    ) -> Tensor:
        scales_t = torch.as_tensor(scales, dtype=dtype, device=device)
        h_ratios = torch.sqrt(torch.as_tensor(aspect_ratios, dtype=dtype, device=device))
        w_ratios = 1 / h_ratios
        ws = (w_ratios[:, None] * scales_t[None, :]).view(-1)
        hs = (h_ratios[:, None] * scales_t[None, :]).view(-1)
        return torch.stack([-ws, -hs, ws, hs], dim=1) / 2

    def forward(self, image_list: ImageList, feature_maps: List[Tensor]) -> List[Tensor]:
        if len(feature_maps) != len(self.strides):
            raise ValueError(f"expected {len(self.strides)} feature maps, got {len(feature_maps)}")
        grid_sizes = [list(f.shape[-2:]) for f in feature_maps]
        dtype, device = feature_maps[0].dtype, feature_maps[0].device
        strides = [[torch.tensor(s, dtype=torch.int64, device=device)] * 2 for s in self.strides]
        self.set_cell_anchors(dtype, device)
        anchors = torch.cat(self.grid_anchors(grid_sizes, strides))
        return [anchors for _ in image_list.image_sizes]


class LastLevelP6P7FromC5(LastLevelP6P7):
    """P6 = conv(C5), P7 = conv(P6), optionally with torchvision's ReLU before P7.

    Parameter names are those of ``LastLevelP6P7`` (``p6``, ``p7``). Unlike it, P6 is always
    computed from the backbone map, also when that map has the FPN's width.
    """

    def __init__(self, in_channels: int, out_channels: int, relu_before_p7: bool = True):
        super().__init__(in_channels, out_channels)
        self.use_P5 = False
        self.relu_before_p7 = relu_before_p7

    def forward(self, p: List[Tensor], c: List[Tensor], names: List[str]) -> Tuple[List[Tensor], List[str]]:
        p6 = self.p6(c[-1])
        p7 = self.p7(F.relu(p6) if self.relu_before_p7 else p6)
        p.extend([p6, p7])
        names.extend(["p6", "p7"])
        return p, names


class MMDetRoIAlign(MultiScaleRoIAlign):
    """Multi-level RoIAlign as mmdetection's ``SingleRoIExtractor``: a box of side
    ``s = sqrt(w * h)`` reads level ``floor(log2(s / finest_scale))`` (clamped to the levels),
    pooled with ``roi_align(aligned=aligned)`` at that level's nominal stride.

    A drop-in for torchvision's ``MultiScaleRoIAlign`` inside ``RoIHeads`` (a subclass, as
    torchvision's detectors require; only the pooling differs).
    """

    def __init__(
        self,
        featmap_names: Sequence[str],
        output_size: int,
        strides: Sequence[int] = (4, 8, 16, 32),
        sampling_ratio: int = 0,
        finest_scale: float = 56.0,
        aligned: bool = True,
    ):
        super().__init__(list(featmap_names), int(output_size), sampling_ratio)
        if len(featmap_names) != len(strides):
            raise ValueError("need one stride per feature map")
        self.strides = [int(s) for s in strides]
        self.finest_scale = finest_scale
        self.aligned = aligned

    def box_levels(self, boxes: Tensor) -> Tensor:
        """Level index of each box (XYXY, image pixels)."""
        scale = torch.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
        levels = torch.floor(torch.log2(scale / self.finest_scale + 1e-6))
        return levels.clamp(0, len(self.strides) - 1).long()

    def forward(self, x: Dict[str, Tensor], boxes: List[Tensor], image_shapes: List[Tuple[int, int]]) -> Tensor:
        features = [x[name] for name in self.featmap_names]
        all_boxes = torch.cat(boxes)
        batch_index = torch.cat([torch.full((len(b), 1), i, dtype=b.dtype, device=b.device) for i, b in enumerate(boxes)])
        rois = torch.cat([batch_index, all_boxes], dim=1)
        levels = self.box_levels(all_boxes)
        out = features[0].new_zeros((len(rois), features[0].shape[1], *self.output_size))
        for level, (feature, stride) in enumerate(zip(features, self.strides)):
            index = torch.where(levels == level)[0]
            if index.numel():
                pooled = roi_align(feature, rois[index].to(feature.dtype), self.output_size, 1.0 / stride,
                                   self.sampling_ratio, self.aligned)
                out[index] = pooled.to(out.dtype)
        return out

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(featmap_names={self.featmap_names}, output_size={self.output_size}, "
                f"strides={self.strides}, sampling_ratio={self.sampling_ratio}, aligned={self.aligned})")


def topk_per_anchor(
    logits: Sequence[Tensor],
    regression: Sequence[Tensor],
    anchors: Sequence[Tensor],
    image_shape: Tuple[int, int],
    box_coder,
    score_thresh: float,
    nms_thresh: float,
    topk: int,
    detections_per_img: int,
) -> Dict[str, Tensor]:
    """One image's RetinaNet detections, selected as mmdetection 2.x's ``AnchorHead.get_bboxes``.

    Per level (``A x K`` logits, ``A x 4`` deltas, ``A x 4`` anchors): the ``topk`` anchors
    with the highest best-class score, decoded and clipped; then every (anchor, class) pair
    above ``score_thresh``; class-wise NMS over all levels; the best ``detections_per_img``.
    """
    all_boxes, all_scores, all_labels = [], [], []
    for level_logits, level_regression, level_anchors in zip(logits, regression, anchors):
        scores = torch.sigmoid(level_logits)
        if scores.shape[0] > topk:
            keep = scores.max(dim=1).values.topk(topk).indices
            scores, level_regression, level_anchors = scores[keep], level_regression[keep], level_anchors[keep]
        boxes = box_ops.clip_boxes_to_image(box_coder.decode_single(level_regression, level_anchors), image_shape)
        anchor_index, labels = torch.where(scores > score_thresh)
        all_boxes.append(boxes[anchor_index])
        all_scores.append(scores[anchor_index, labels])
        all_labels.append(labels)
    boxes, scores, labels = torch.cat(all_boxes), torch.cat(all_scores), torch.cat(all_labels)
    keep = box_ops.batched_nms(boxes, scores, labels, nms_thresh)[:detections_per_img]
    return {"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]}


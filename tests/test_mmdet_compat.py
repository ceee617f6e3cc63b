"""``mmdet_compat``: the pieces that make torchvision's detectors compute what mmdetection 2.x
computes, checked against mmdetection's formulas written out here."""
from __future__ import annotations

import math

import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import roi_align

from litvit.detection.mmdet_compat import LastLevelP6P7FromC5, MMDetAnchorGenerator, MMDetRoIAlign, topk_per_anchor
from litvit.detection.models import retinanet_anchor_generator


def _mmdet_anchors(base_size: float, ratios, scales, stride: int, height: int, width: int) -> torch.Tensor:
    # mmdetection 2.x AnchorGenerator: centre 0, w = size / sqrt(r), h = size * sqrt(r), no rounding;
    # locations in row-major order, each with its ratio-major list of base anchors.
    base = []
    for r in ratios:
        for s in scales:
            w, h = base_size * s / math.sqrt(r), base_size * s * math.sqrt(r)
            base.append([-w / 2, -h / 2, w / 2, h / 2])
    base = torch.tensor(base)
    ys, xs = torch.meshgrid(torch.arange(height) * stride, torch.arange(width) * stride, indexing="ij")
    shifts = torch.stack([xs, ys, xs, ys], dim=-1).reshape(-1, 1, 4).float()
    return (shifts + base[None]).reshape(-1, 4)


def test_retinanet_anchors_are_mmdetections():
    strides = (8, 16, 32, 64, 128)
    sizes = [(100, 167), (50, 84), (25, 42), (13, 21), (7, 11)]  # 800 x 1333 padded to 800 x 1344
    images = ImageList(torch.zeros(1, 3, 800, 1344), [(800, 1333)])
    maps = [torch.zeros(1, 8, h, w) for h, w in sizes]
    ours = retinanet_anchor_generator(mmdet_compat=True)(images, maps)[0]
    scales = [2 ** (i / 3) for i in range(3)]
    want = torch.cat([_mmdet_anchors(4 * s, (0.5, 1.0, 2.0), scales, s, h, w) for s, (h, w) in zip(strides, sizes)])
    torch.testing.assert_close(ours, want)
    # torchvision's own generator rounds the base anchors and derives the stride from the map (800 // 13 = 61).
    plain = retinanet_anchor_generator()(images, maps)[0]
    assert plain.shape == want.shape and not torch.allclose(plain, want)
    assert isinstance(retinanet_anchor_generator(mmdet_compat=True), AnchorGenerator)  # a drop-in for RetinaNet


def test_p6_from_c5_and_no_relu_before_p7():
    torch.manual_seed(0)
    block = LastLevelP6P7FromC5(16, 16, relu_before_p7=False)
    c5, p5 = torch.randn(1, 16, 8, 8), torch.randn(1, 16, 8, 8)
    p, _ = block([p5], [c5], ["p5"])
    torch.testing.assert_close(p[1], block.p6(c5))  # from C5 although C5 and P5 have the same width
    torch.testing.assert_close(p[2], block.p7(p[1]))  # no ReLU in between


def test_roi_align_uses_mmdetections_levels_and_half_pixel_centres():
    torch.manual_seed(0)
    pool = MMDetRoIAlign(["0", "1", "2", "3"], 7)
    boxes = torch.tensor([[0, 0, 40, 40], [0, 0, 112, 112], [10, 10, 250, 250], [0, 0, 600, 500]], dtype=torch.float32)
    # level floor(log2(sqrt(wh) / 56)), clamped to 0..3
    assert pool.box_levels(boxes).tolist() == [0, 1, 2, 3]
    features = {str(i): torch.randn(1, 4, 256 // 2**i, 256 // 2**i) for i in range(4)}
    out = pool(features, [boxes], [(1024, 1024)])
    for i, stride in enumerate((4, 8, 16, 32)):
        rois = torch.cat([torch.zeros(1, 1), boxes[i : i + 1]], dim=1)
        want = roi_align(features[str(i)], rois, 7, 1.0 / stride, 0, aligned=True)
        torch.testing.assert_close(out[i : i + 1], want)


def test_retinanet_keeps_every_class_of_the_best_anchors():
    # Two levels, 3 anchors, 2 classes; one candidate per level.
    logits = [torch.tensor([[4.0, 3.0], [-9.0, 3.5], [-9.0, -9.0]]), torch.tensor([[-9.0, -9.0], [-9.0, 2.0], [0.0, -9.0]])]
    regression = [torch.zeros(3, 4), torch.zeros(3, 4)]
    anchors = [torch.tensor([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]], dtype=torch.float32)] * 2
    from torchvision.models.detection._utils import BoxCoder

    out = topk_per_anchor(logits, regression, anchors, (100, 100), BoxCoder((1.0, 1.0, 1.0, 1.0)), 0.05, 0.5, 1, 100)
    # Level 0: anchor 0 (best top-class score, 4.0) with both its classes (torchvision's top-1 would
    # keep one (anchor, class) pair). Level 1: anchor 1 (2.0) with class 1 only; its class 0 is
    # below the threshold.
    got = sorted(zip(out["labels"].tolist(), out["boxes"][:, 0].tolist()))
    assert got == [(0, 0.0), (1, 0.0), (1, 20.0)]
    assert torch.all(out["scores"][:-1] >= out["scores"][1:])  # best first

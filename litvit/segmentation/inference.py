"""Test-time inference: whole image or sliding window, optional horizontal flip."""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["whole_inference", "slide_inference", "predict_logits", "logits_to_labels"]


def _pad_to(x: torch.Tensor, divisor: int) -> torch.Tensor:
    height, width = x.shape[-2:]
    pad_h, pad_w = (-height) % divisor, (-width) % divisor
    return F.pad(x, (0, pad_w, 0, pad_h)) if pad_h or pad_w else x


def whole_inference(model: nn.Module, images: torch.Tensor, size_divisor: int = 32) -> torch.Tensor:
    """Logits for the whole (padded) batch, cropped back to ``images``' size."""
    height, width = images.shape[-2:]
    return model(_pad_to(images, size_divisor))[..., :height, :width]


def slide_inference(
    model: nn.Module,
    images: torch.Tensor,
    num_classes: int,
    crop_size: Sequence[int] = (512, 512),
    stride: Sequence[int] = (341, 341),
    size_divisor: int = 32,
) -> torch.Tensor:
    """Average the logits of overlapping ``crop_size`` windows placed every ``stride`` pixels
    (the last window of a row/column is aligned with the image border)."""
    batch, _, height, width = images.shape
    crop_h, crop_w = crop_size
    stride_h, stride_w = stride
    rows = max(height - crop_h + stride_h - 1, 0) // stride_h + 1
    cols = max(width - crop_w + stride_w - 1, 0) // stride_w + 1
    logits = images.new_zeros((batch, num_classes, height, width))
    count = images.new_zeros((1, 1, height, width))
    for r in range(rows):
        for c in range(cols):
            y2 = min(r * stride_h + crop_h, height)
            x2 = min(c * stride_w + crop_w, width)
            y1, x1 = max(y2 - crop_h, 0), max(x2 - crop_w, 0)
            logits[:, :, y1:y2, x1:x2] += whole_inference(model, images[:, :, y1:y2, x1:x2], size_divisor)
            count[:, :, y1:y2, x1:x2] += 1
    return logits / count


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    images: torch.Tensor,
    num_classes: int,
    mode: str = "whole",
    flip: bool = False,
    crop_size: Sequence[int] = (512, 512),
    stride: Sequence[int] = (341, 341),
) -> torch.Tensor:
    """Class scores for ``images`` (``B x 3 x H x W``, any size): logits, or with ``flip`` the
    mean of the softmax of the image and of its mirror image."""
    if mode not in ("whole", "slide"):
        raise ValueError(f"mode must be 'whole' or 'slide', got {mode!r}")

    def run(x: torch.Tensor) -> torch.Tensor:
        if mode == "slide":
            return slide_inference(model, x, num_classes, crop_size, stride)
        return whole_inference(model, x)

    out = run(images)
    if flip:
        out = out.softmax(1) + run(images.flip(-1)).flip(-1).softmax(1)
        out = out / 2
    return out


def logits_to_labels(
    scores: torch.Tensor, sizes: Sequence[Tuple[int, int]], out_sizes: Sequence[Optional[Tuple[int, int]]]
) -> List[torch.Tensor]:
    """Per image: crop the padded scores to its resized size ``sizes[i]``, resize them bilinearly
    to ``out_sizes[i]`` (the original image size; ``None`` keeps the size) and take the argmax."""
    labels = []
    for i, (size, out_size) in enumerate(zip(sizes, out_sizes)):
        score = scores[i : i + 1, :, : size[0], : size[1]]
        if out_size is not None and tuple(out_size) != tuple(size):
            score = F.interpolate(score.float(), size=tuple(out_size), mode="bilinear", align_corners=False)
        labels.append(score[0].argmax(0))
    return labels

"""Segmentation data pipelines on ``torchvision.transforms.v2`` (images and ``tv_tensors.Mask``).

The training pipeline follows the released ADE20K recipe: random keep-ratio rescale of
(2048, 512) by 0.5-2.0, a 512 x 512 random crop in which no class covers 75 % or more of
the labelled pixels (re-drawn up to 10 times), horizontal flip, photometric distortion,
normalisation and padding with the ignore label.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

try:
    from torchvision.transforms.v2 import query_size
except ImportError:  # torchvision < 0.20 kept it private
    from torchvision.transforms.v2._utils import query_size

__all__ = [
    "IGNORE_INDEX",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "RescaleToFit",
    "RandomCropCatMax",
    "PhotoMetricDistortion",
    "PadToSize",
    "build_train_transforms",
    "EvalPreset",
    "fit_scale_factor",
]

IGNORE_INDEX = 255
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def fit_scale_factor(height: int, width: int, scale: Sequence[int]) -> float:
    """Largest factor that keeps the long side <= max(scale) and the short side <= min(scale)."""
    return min(max(scale) / max(height, width), min(scale) / min(height, width))


if hasattr(v2.Transform, "make_params"):

    class _PublicHooks:
        """torchvision >= 0.21 calls ``make_params`` / ``transform`` itself."""

else:

    class _PublicHooks:  # type: ignore[no-redef]
        """Routes torchvision < 0.21's private hook names to the public ones used here, both
        ways, so subclasses of its own transforms can call ``super().make_params`` too."""

        def _get_params(self, flat_inputs: List[Any]) -> Dict[str, Any]:
            return self.make_params(flat_inputs)

        def _transform(self, inpt: Any, params: Dict[str, Any]) -> Any:
            return self.transform(inpt, params)

        def make_params(self, flat_inputs: List[Any]) -> Dict[str, Any]:
            return super()._get_params(flat_inputs)  # type: ignore[misc]

        def transform(self, inpt: Any, params: Dict[str, Any]) -> Any:
            return super()._transform(inpt, params)  # type: ignore[misc]


def _fit_size(height: int, width: int, scale: Sequence[float]) -> Tuple[int, int]:
    factor = fit_scale_factor(height, width, scale)
    return max(1, int(height * factor + 0.5)), max(1, int(width * factor + 0.5))


class RescaleToFit(_PublicHooks, v2.Transform):
    """Keep-ratio resize to fit ``scale`` (long, short) times a ratio drawn from ``ratio_range``.

    Images are resized bilinearly, masks with nearest neighbour.
    """

    def __init__(self, scale: Sequence[int] = (2048, 512), ratio_range: Optional[Tuple[float, float]] = (0.5, 2.0)):
        super().__init__()
        self.scale = tuple(scale)
        self.ratio_range = ratio_range

    def make_params(self, flat_inputs: List[Any]) -> Dict[str, Any]:
        height, width = query_size(flat_inputs)
        ratio = 1.0
        if self.ratio_range is not None:
            low, high = self.ratio_range
            ratio = float(torch.empty(()).uniform_(low, high))
        return dict(size=list(_fit_size(height, width, [s * ratio for s in self.scale])))

    def transform(self, inpt: Any, params: Dict[str, Any]) -> Any:
        return self._call_kernel(F.resize, inpt, params["size"], interpolation=v2.InterpolationMode.BILINEAR)


class RandomCropCatMax(_PublicHooks, v2.Transform):
    """Random crop (at most ``size``) in which no single class covers ``cat_max_ratio`` or more.

    A crop is accepted when it holds at least two labelled classes and the largest covers less
    than ``cat_max_ratio`` of the labelled (non-ignore) pixels; otherwise a new position is
    drawn, up to ``max_retries`` times, and the last draw is kept (as in the released pipeline).
    """

    def __init__(
        self,
        size: Sequence[int] = (512, 512),
        cat_max_ratio: float = 0.75,
        ignore_index: int = IGNORE_INDEX,
        max_retries: int = 10,
    ):
        super().__init__()
        self.size = (int(size[0]), int(size[1]))
        self.cat_max_ratio = cat_max_ratio
        self.ignore_index = ignore_index
        self.max_retries = max_retries

    def _draw(self, height: int, width: int) -> Tuple[int, int, int, int]:
        crop_h, crop_w = min(self.size[0], height), min(self.size[1], width)
        top = int(torch.randint(0, height - crop_h + 1, ()))
        left = int(torch.randint(0, width - crop_w + 1, ()))
        return top, left, crop_h, crop_w

    def accepts(self, mask: torch.Tensor) -> bool:
        """Whether a cropped mask satisfies the single-class rule."""
        values = mask.reshape(-1)
        values = values[values != self.ignore_index]
        counts = torch.bincount(values.long())
        counts = counts[counts > 0]
        return counts.numel() > 1 and counts.max().item() / counts.sum().item() < self.cat_max_ratio

    def make_params(self, flat_inputs: List[Any]) -> Dict[str, Any]:
        height, width = query_size(flat_inputs)
        box = self._draw(height, width)
        masks = [x for x in flat_inputs if isinstance(x, tv_tensors.Mask)]
        if masks and self.cat_max_ratio < 1.0:
            mask = masks[0]
            for _ in range(self.max_retries):
                top, left, h, w = box
                if self.accepts(mask[..., top : top + h, left : left + w]):
                    break
                box = self._draw(height, width)
        return dict(zip(("top", "left", "height", "width"), box))

    def transform(self, inpt: Any, params: Dict[str, Any]) -> Any:
        return self._call_kernel(F.crop, inpt, **params)


class PhotoMetricDistortion(_PublicHooks, v2.RandomPhotometricDistort):
    """The released segmentation colour augmentation: each of brightness (additive, +-32),
    contrast (0.5-1.5), saturation (0.5-1.5) and hue (+-18 of 180 degrees) applied with
    probability 0.5, contrast randomly before or after the others; no channel shuffling.

    Expects uint8 images (before normalisation).
    """

    def __init__(
        self,
        brightness_delta: int = 32,
        contrast: Tuple[float, float] = (0.5, 1.5),
        saturation: Tuple[float, float] = (0.5, 1.5),
        hue: Tuple[float, float] = (-0.1, 0.1),
        p: float = 0.5,
    ):
        super().__init__(brightness=(1.0, 1.0), contrast=contrast, saturation=saturation, hue=hue, p=p)
        self.brightness_delta = brightness_delta

    def make_params(self, flat_inputs: List[Any]) -> Dict[str, Any]:
        params = super().make_params(flat_inputs)
        params["channel_permutation"] = None
        params["brightness_factor"] = None
        params["brightness_delta"] = (
            float(torch.empty(()).uniform_(-self.brightness_delta, self.brightness_delta))
            if torch.rand(()) < self.p
            else None
        )
        return params

    def transform(self, inpt: Any, params: Dict[str, Any]) -> Any:
        if params["brightness_delta"] is not None and isinstance(inpt, tv_tensors.Image):
            if inpt.dtype != torch.uint8:
                raise TypeError("PhotoMetricDistortion expects uint8 images")
            shifted = (inpt.as_subclass(torch.Tensor).float() + params["brightness_delta"]).clamp_(0, 255)
            inpt = tv_tensors.wrap(shifted.round_().to(torch.uint8), like=inpt)
        return super().transform(inpt, params)


class PadToSize(_PublicHooks, v2.Transform):
    """Pad on the bottom and right to at least ``size`` and to a multiple of ``size_divisor``;
    images with ``fill`` (0 after normalisation = the mean colour), masks with the ignore label."""

    def __init__(
        self,
        size: Optional[Sequence[int]] = None,
        size_divisor: int = 32,
        fill: float = 0.0,
        mask_fill: int = IGNORE_INDEX,
    ):
        super().__init__()
        self.size = None if size is None else (int(size[0]), int(size[1]))
        self.size_divisor = size_divisor
        self.fill = fill
        self.mask_fill = mask_fill

    def make_params(self, flat_inputs: List[Any]) -> Dict[str, Any]:
        height, width = query_size(flat_inputs)
        target_h, target_w = (height, width) if self.size is None else (max(height, self.size[0]), max(width, self.size[1]))
        d = self.size_divisor
        target_h, target_w = -(-target_h // d) * d, -(-target_w // d) * d
        return dict(padding=[0, 0, target_w - width, target_h - height])

    def transform(self, inpt: Any, params: Dict[str, Any]) -> Any:
        if not any(params["padding"]):
            return inpt
        fill = self.mask_fill if isinstance(inpt, tv_tensors.Mask) else self.fill
        return self._call_kernel(F.pad, inpt, padding=params["padding"], fill=fill)


def build_train_transforms(
    crop_size: Sequence[int] = (512, 512),
    scale: Sequence[int] = (2048, 512),
    ratio_range: Optional[Tuple[float, float]] = (0.5, 2.0),
    cat_max_ratio: float = 0.75,
    flip: bool = True,
    photometric: bool = True,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    ignore_index: int = IGNORE_INDEX,
) -> v2.Compose:
    """The released ADE20K training pipeline for ``(tv_tensors.Image uint8, tv_tensors.Mask)`` pairs."""
    steps: List[Any] = [
        RescaleToFit(scale, ratio_range),
        RandomCropCatMax(crop_size, cat_max_ratio, ignore_index),
    ]
    if flip:
        steps.append(v2.RandomHorizontalFlip(0.5))
    if photometric:
        steps.append(PhotoMetricDistortion())
    steps += [
        v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),
        v2.Normalize(mean, std),
        PadToSize(crop_size, 32, 0.0, ignore_index),
    ]
    return v2.Compose(steps)


class EvalPreset:
    """Test-time pipeline: rescale the image to fit ``scale`` (keeping its ratio) and normalise;
    the label stays at its original size (predictions are resized back to it)."""

    def __init__(
        self,
        scale: Optional[Sequence[int]] = (2048, 512),
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ):
        steps: List[Any] = [RescaleToFit(scale, None)] if scale is not None else []
        steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
        self.image_transform = v2.Compose(steps)

    def __call__(self, image: tv_tensors.Image, mask: Optional[tv_tensors.Mask] = None):
        return self.image_transform(image), mask

"""Shared helpers of the visualisations: image loading and sizing, model loading, saving."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn as nn
from PIL import Image

from ..errors import CheckpointError, DataError
from ..fileio import atomic_path

PathLike = Union[str, os.PathLike]
SizeSpec = Union[None, int, Sequence[int], str]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def parse_size(spec: SizeSpec) -> Union[None, int, Tuple[int, int]]:
    """``None``, ``N`` (shorter side) or ``(H, W)`` / ``'HxW'`` (exact)."""
    if spec is None or isinstance(spec, int):
        return spec
    if isinstance(spec, str):
        parts = spec.lower().replace(",", "x").split("x")
        try:
            values = [int(p) for p in parts]
        except ValueError:
            raise DataError(f"image size must be N or HxW, got {spec!r}") from None
        return values[0] if len(values) == 1 else parse_size(values)
    values = [int(v) for v in spec]
    if len(values) != 2:
        raise DataError(f"image size must be N or (H, W), got {spec!r}")
    return values[0], values[1]


def model_input_size(image_hw: Tuple[int, int], size: SizeSpec, default_short: int, multiple: int = 32) -> Tuple[int, int]:
    """Input size for an image: exact ``(H, W)``, or the shorter side at ``size`` (default
    ``default_short``, the model's training resolution) keeping the aspect ratio, with both
    sides rounded to the nearest multiple of ``multiple``."""
    size = parse_size(size)
    if isinstance(size, tuple):
        if size[0] % multiple or size[1] % multiple or min(size) <= 0:
            raise DataError(f"image size {size[0]}x{size[1]} must have both sides positive multiples of {multiple}")
        return size
    short = int(size if size is not None else default_short)
    if short <= 0:
        raise DataError(f"image size must be positive, got {short}")
    h, w = image_hw
    scale = short / min(h, w)

    def snap(v: float) -> int:
        return max(multiple, int(round(v / multiple)) * multiple)

    return snap(h * scale), snap(w * scale)


def load_image(path: PathLike) -> Image.Image:
    """An RGB image from any file PIL reads (grayscale, palette, RGBA, 16-bit ...)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image not found: {path}")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                # 16-bit / float grayscale: scale the actual range to 8 bits.
                a = np.asarray(im, dtype=np.float64)
                lo, hi = float(a.min()), float(a.max())
                a = (a - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(a)
                im = Image.fromarray(a.astype(np.uint8))
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                im = im.convert("RGBA")
                background = Image.new("RGBA", im.size, (255, 255, 255, 255))
                im = Image.alpha_composite(background, im)
            return im.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise DataError(f"cannot read image {path}: {err}") from None


def prepare_image(image: Union[PathLike, Image.Image], size: SizeSpec, default_short: int,
                  mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
                  ) -> Tuple[torch.Tensor, np.ndarray]:
    """Resize (bicubic) to a model input size; returns the 1 x 3 x H x W normalised tensor
    and the resized H x W x 3 uint8 image the figures are drawn on."""
    im = image if isinstance(image, Image.Image) else load_image(image)
    im = im.convert("RGB")
    h, w = model_input_size((im.height, im.width), size, default_short)
    im = im.resize((w, h), Image.BICUBIC)
    array = np.asarray(im, dtype=np.uint8).copy()
    x = torch.from_numpy(array).permute(2, 0, 1).float().div_(255.0)
    x = (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    return x.unsqueeze(0), array


def model_defaults(model: nn.Module) -> Dict[str, Any]:
    """Training resolution (shorter side) and normalisation of a model."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    img_size = getattr(model, "img_size", None)
    short = int(min(img_size)) if img_size is not None else int(min(cfg.get("input_size", (3, 224, 224))[1:]))
    return {"short": short, "mean": tuple(cfg.get("mean", IMAGENET_MEAN)), "std": tuple(cfg.get("std", IMAGENET_STD))}


def to_image_tensor(model: nn.Module, image: Union[torch.Tensor, np.ndarray]) -> torch.Tensor:
    """A 1 x 3 x H x W float tensor on the model's device."""
    x = torch.as_tensor(image)
    if x.ndim == 3:
        x = x.unsqueeze(0)
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"expected one image (3 x H x W or 1 x 3 x H x W), got shape {tuple(x.shape)}")
    param = next(model.parameters())
    return x.to(device=param.device, dtype=param.dtype)


def load_model(model_name: Optional[str], checkpoint: Optional[PathLike] = None, img_size: Optional[int] = None,
               use_ema: bool = False, device: Union[str, torch.device] = "cpu") -> nn.Module:
    """A LIT model for visualisation, in eval mode.

    Works with released checkpoints (1000 classes) and litvit training checkpoints: the class
    count is read from the classifier weights, and a training checkpoint's recorded model
    name, extra model arguments and resolution are used when present.
    """
    return load_model_and_classes(model_name, checkpoint, img_size, use_ema, device)[0]


def load_model_and_classes(model_name: Optional[str], checkpoint: Optional[PathLike] = None,
                           img_size: Optional[int] = None, use_ema: bool = False,
                           device: Union[str, torch.device] = "cpu") -> Tuple[nn.Module, Optional[List[str]]]:
    """:func:`load_model` plus the names of its classes: those a litvit training checkpoint
    records, else ImageNet's for a 1000-class head, else None."""
    from ..factory import create_model, display_class_names, model_from_checkpoint
    from ..models import LIT, LITv2

    if checkpoint is not None:
        model, info = model_from_checkpoint(checkpoint, model=model_name, img_size=img_size, use_ema=use_ema,
                                            device=device)
        model_name, class_names = info.model_name, info.class_names
    elif not model_name:
        raise CheckpointError("no model name given (--model) and no checkpoint to read one from")
    else:
        model = create_model(model_name, **({} if img_size is None else {"img_size": int(img_size)}))
        model, class_names = model.to(device).eval(), None
    if not isinstance(model, (LIT, LITv2)):
        raise CheckpointError(f"{model_name!r} is not a LIT model; the visualisations need DTM offsets and LIT attention")
    return model, display_class_names(model.num_classes, class_names)


def save_figure(fig: Any, out_path: PathLike, dpi: int = 100) -> Path:
    """Save a matplotlib figure as PNG through a temporary file, so no half-written file remains."""
    out_path = Path(out_path)
    try:
        with atomic_path(out_path, suffix=".png") as tmp:
            # "tight" grows the canvas to what was drawn, so a wide legend is never clipped.
            fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight", pad_inches=0.05)
    except OSError as err:
        raise DataError(f"cannot write {out_path}: {err.strerror or err}") from None
    return out_path

"""Segment image files with a trained Semantic FPN-LIT: palette masks, overlays and class shares."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from ..errors import DataError

__all__ = ["class_palette", "list_images", "checkpoint_test_scale", "predict_images"]

PathLike = Union[str, os.PathLike]


def class_palette(num_classes: int) -> List[tuple]:
    """A fixed colour per class: matplotlib's tab20 first, then seeded random colours."""
    import numpy as np
    from matplotlib import colormaps

    tab = [tuple(int(255 * c + 0.5) for c in colormaps["tab20"](i)[:3]) for i in range(20)]
    rng = np.random.default_rng(0)
    extra = [tuple(int(v) for v in rng.integers(0, 256, 3)) for _ in range(max(0, num_classes - 20))]
    return (tab + extra)[:num_classes]


def list_images(inputs: Sequence[PathLike]) -> List[Path]:
    """Image files named in ``inputs`` (files, or folders searched recursively)."""
    from .data import IMAGE_EXTENSIONS

    files: List[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        elif path.is_file():
            files.append(path)
        else:
            raise DataError(f"image not found: {path}")
    if not files:
        raise DataError("no images to segment")
    return files


def checkpoint_test_scale(meta: Mapping[str, Any], test_scale: Optional[Sequence[int]] = None) -> Optional[Tuple[int, ...]]:
    """The (long, short) side limits to resize to: ``test_scale`` when given (``0 0`` keeps the
    image size, returned as ``None``), else the one the checkpoint was trained with."""
    if test_scale is not None:
        return tuple(test_scale) if any(test_scale) else None
    saved = (meta.get("config") or {}).get("test_scale", (2048, 512))
    return tuple(saved) if saved else None


@torch.no_grad()
def predict_images(
    model: nn.Module,
    meta: Mapping[str, Any],
    images: Sequence[PathLike],
    output_dir: PathLike,
    *,
    device: Optional[torch.device] = None,
    amp_dtype: Optional[torch.dtype] = None,
    test_scale: Optional[Sequence[int]] = None,
    mode: str = "whole",
    flip: bool = False,
    slide_crop: Sequence[int] = (512, 512),
    slide_stride: Sequence[int] = (341, 341),
    alpha: float = 0.5,
) -> List[Dict[str, Any]]:
    """Segment each image with ``model`` (and ``meta``, both from
    :func:`litvit.segmentation.training.load_trained_model`) and write ``<stem>_mask.png`` (palette
    PNG whose pixel values are class indices) and ``<stem>_overlay.png`` (the mask blended over
    the image, opacity ``alpha``) to ``output_dir``. ``images`` are files or folders.

    Returns per image ``{"image", "mask", "overlay", "classes": {name: share of pixels}}``,
    classes by decreasing share.
    """
    import numpy as np
    from PIL import Image
    from torchvision import tv_tensors
    from torchvision.utils import draw_segmentation_masks

    from ..engine.amp import autocast
    from .data import collate_eval
    from .inference import logits_to_labels, predict_logits
    from .transforms import EvalPreset

    device = device or next(model.parameters()).device
    model.to(device).eval()
    num_classes = meta["dataset"]["num_classes"]
    names = meta["dataset"].get("class_names") or [str(i) for i in range(num_classes)]
    palette = class_palette(num_classes)
    flat_palette = [v for c in palette for v in c]
    preset = EvalPreset(checkpoint_test_scale(meta, test_scale))
    out_dir = Path(output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for path in list_images(images):
        try:
            with Image.open(path) as im:
                rgb = np.asarray(im.convert("RGB")).copy()
        except OSError as err:
            raise DataError(f"cannot read image {path}: {err}") from None
        image = tv_tensors.Image(torch.from_numpy(rgb).permute(2, 0, 1))
        batch = collate_eval([preset(image)])
        with autocast(device, amp_dtype):
            scores = predict_logits(model, batch["images"].to(device), num_classes, mode, flip, slide_crop, slide_stride)
        labels = logits_to_labels(scores.float(), batch["sizes"], [tuple(image.shape[-2:])])[0].cpu()
        mask = Image.fromarray(labels.numpy().astype(np.uint8), mode="P")
        mask.putpalette(flat_palette + [0] * (768 - len(flat_palette)))
        mask_path = out_dir / f"{path.stem}_mask.png"
        mask.save(mask_path)
        present = labels.unique().tolist()
        masks = labels[None] == torch.tensor(present)[:, None, None]
        overlay = draw_segmentation_masks(image.as_subclass(torch.Tensor), masks, alpha=alpha,
                                          colors=[palette[c] for c in present])
        overlay_path = out_dir / f"{path.stem}_overlay.png"
        Image.fromarray(overlay.permute(1, 2, 0).numpy()).save(overlay_path)
        shares = (labels.reshape(-1).bincount(minlength=num_classes).double() / labels.numel()).tolist()
        classes = {names[c]: s for s, c in sorted(((s, c) for c, s in enumerate(shares) if s > 0), reverse=True)}
        results.append({"image": str(path), "mask": str(mask_path), "overlay": str(overlay_path), "classes": classes})
    return results

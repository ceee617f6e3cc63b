"""Draw a detector's boxes, labels, scores and masks on images (torchvision's drawing utilities)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import torch
import torch.nn as nn
from PIL import Image
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

from ..errors import DataError
from ..fileio import atomic_path
from .data import read_rgb

__all__ = ["draw_detections", "predict_images", "list_images", "class_colors"]

PathLike = Union[str, os.PathLike]
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def class_colors(num_classes: int) -> List[tuple]:
    """A distinct RGB colour per class (matplotlib's tab20, cycled)."""
    from matplotlib import colormaps

    cmap = colormaps["tab20"]
    return [tuple(int(255 * c) for c in cmap(i % 20)[:3]) for i in range(num_classes)]


def draw_detections(
    image: torch.Tensor,
    output: Dict[str, torch.Tensor],
    class_names: Sequence[str],
    label_offset: int = 0,
    score_thresh: float = 0.3,
    mask_threshold: float = 0.5,
    mask_alpha: float = 0.45,
) -> torch.Tensor:
    """``image`` (uint8 3 x H x W) with the detections scoring at least ``score_thresh`` drawn on it."""
    keep = output["scores"] >= score_thresh
    boxes = output["boxes"][keep].detach().cpu()
    scores = output["scores"][keep].detach().cpu()
    labels = (output["labels"][keep].detach().cpu() - label_offset).tolist()
    palette = class_colors(len(class_names))
    colors = [palette[l] if 0 <= l < len(palette) else (255, 255, 255) for l in labels]
    canvas = image
    if "masks" in output and keep.any():
        masks = output["masks"][keep].detach().cpu()[:, 0] > mask_threshold
        canvas = draw_segmentation_masks(canvas, masks, alpha=mask_alpha, colors=colors)
    if len(boxes):
        texts = [f"{class_names[l] if 0 <= l < len(class_names) else l} {s:.2f}" for l, s in zip(labels, scores.tolist())]
        canvas = draw_bounding_boxes(canvas, boxes, labels=texts, colors=colors, width=2)
    return canvas


def list_images(inputs: Sequence[PathLike]) -> List[Path]:
    """Image files named in ``inputs`` (files, or folders searched non-recursively)."""
    files: List[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))
        elif path.is_file():
            files.append(path)
        else:
            raise DataError(f"input not found: {path}")
    if not files:
        raise DataError(f"no images found in {', '.join(str(i) for i in inputs)}")
    return files


@torch.no_grad()
def predict_images(
    model: nn.Module,
    files: Sequence[PathLike],
    output_dir: PathLike,
    class_names: Sequence[str],
    device: torch.device,
    score_thresh: float = 0.3,
    amp_dtype: Optional[torch.dtype] = None,
) -> List[Dict[str, Any]]:
    """Run ``model`` on each image (under autocast to ``amp_dtype`` when given), save
    ``<output_dir>/<stem>.png`` with the drawings and return one summary per image (detections
    above ``score_thresh``)."""
    from ..engine.amp import autocast

    model.eval().to(device)
    out_dir = Path(output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    offset = getattr(model, "label_offset", 0)
    summaries = []
    for file in files:
        image = read_rgb(file)
        with autocast(device, amp_dtype):
            output = model([image.to(device).float() / 255])[0]
        output = {k: v.float() if v.is_floating_point() else v for k, v in output.items()}
        drawn = draw_detections(image, output, class_names, offset, score_thresh)
        target = out_dir / f"{Path(file).stem}.png"
        with atomic_path(target, suffix=".png") as tmp:
            Image.fromarray(drawn.permute(1, 2, 0).numpy()).save(tmp, format="PNG")
        keep = output["scores"] >= score_thresh
        summaries.append(
            {
                "image": str(file),
                "output": str(target),
                "detections": [
                    {"label": class_names[l - offset] if 0 <= l - offset < len(class_names) else int(l),
                     "score": round(float(s), 4), "box": [round(float(v), 1) for v in b]}
                    for l, s, b in zip(output["labels"][keep].tolist(), output["scores"][keep], output["boxes"][keep])
                ],
            }
        )
    return summaries

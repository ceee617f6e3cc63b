"""Semantic segmentation datasets: ADE20K (``ADEChallengeData2016``) and folders of images + label PNGs.

Label conventions, applied when a label PNG is read:

- ``reduce_zero_label=True`` (ADE20K): value 0 is "other" and ignored, class ``c`` is stored
  as ``c + 1``; values are shifted down by one and 0 becomes the ignore label 255.
- otherwise values are class indices ``0 .. num_classes-1`` and ``ignore_index`` (default
  255) marks pixels without a label.

After decoding, classes are ``0 .. num_classes-1`` and :data:`IGNORE_INDEX` (255) is ignored.

Bad data (policy ``bad_data``):

- an image without a label PNG, a label without an image, a label whose size differs from
  its image, or a label that is not single-channel (RGB/RGBA: usually a colour-coded
  visualisation, not class indices) -> ``'error'`` (default) raises :class:`DataError`
  naming how many and which files; ``'skip'`` leaves those pairs out and logs the counts.
  Palette (mode ``P``) labels are read as their palette indices.
- label values that are neither a class nor ignore -> ``'error'`` raises when the image is
  read; ``'skip'`` sets those pixels to ignore and logs how many.
"""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import tv_tensors

from ..engine.logging import get_logger
from ..errors import DataError
from .transforms import IGNORE_INDEX

__all__ = [
    "IMAGE_EXTENSIONS",
    "SegmentationSample",
    "find_pairs",
    "decode_label",
    "read_class_names",
    "SegmentationDataset",
    "ade20k_dirs",
    "collate_train",
    "collate_eval",
]

PathLike = Union[str, os.PathLike]
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
_LABEL_MODES = ("L", "P", "I", "I;16", "I;16B", "I;16L", "1")
BAD_DATA_POLICIES = ("error", "skip")


@dataclass(frozen=True)
class SegmentationSample:
    image: Path
    label: Optional[Path]


def _index(folder: Path, extensions: Sequence[str]) -> Dict[str, Path]:
    files: Dict[str, Path] = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix.lower() in extensions and not path.name.startswith("."):
            files[path.relative_to(folder).with_suffix("").as_posix()] = path
    return files


def _examples(items: Sequence[str], limit: int = 3) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... (+{len(items) - limit} more)" if len(items) > limit else "")


def find_pairs(
    image_dir: PathLike,
    label_dir: PathLike,
    bad_data: str = "error",
    check: bool = True,
) -> List[SegmentationSample]:
    """Pair images and label PNGs by their path relative to the two folders (without extension).

    With ``check`` the image and label headers are read (not the pixels) to find size
    mismatches and multi-channel labels. See the module docstring for ``bad_data``.
    """
    if bad_data not in BAD_DATA_POLICIES:
        raise ValueError(f"bad_data must be one of {BAD_DATA_POLICIES}, got {bad_data!r}")
    image_dir, label_dir = Path(image_dir), Path(label_dir)
    for what, folder in (("image", image_dir), ("label", label_dir)):
        if not folder.is_dir():
            raise DataError(f"{what} folder not found: {folder}")
    images = _index(image_dir, IMAGE_EXTENSIONS)
    labels = _index(label_dir, (".png",))
    if not images:
        raise DataError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {image_dir}")
    problems: Dict[str, List[str]] = {}
    samples = []
    for key, image_path in images.items():
        label_path = labels.get(key)
        if label_path is None:
            problems.setdefault("images without a label PNG", []).append(image_path.name)
            continue
        if check:
            try:
                with Image.open(image_path) as im:
                    image_size = im.size
                with Image.open(label_path) as lab:
                    label_size, label_mode = lab.size, lab.mode
            except OSError as err:
                problems.setdefault("unreadable files", []).append(f"{image_path.name}/{label_path.name} ({err})")
                continue
            if label_mode not in _LABEL_MODES:
                problems.setdefault("labels that are not single-channel class maps", []).append(
                    f"{label_path.name} (mode {label_mode})"
                )
                continue
            if label_size != image_size:
                problems.setdefault("labels whose size differs from their image", []).append(
                    f"{label_path.name} {label_size[0]}x{label_size[1]} vs image {image_size[0]}x{image_size[1]}"
                )
                continue
        samples.append(SegmentationSample(image_path, label_path))
    orphans = [p.name for k, p in labels.items() if k not in images]
    if orphans:
        problems["label PNGs without an image"] = orphans
    if problems:
        summary = "; ".join(f"{len(v)} {k} (e.g. {_examples(v)})" for k, v in problems.items())
        if bad_data == "error":
            raise DataError(
                f"bad pairs in {image_dir} / {label_dir}: {summary}; fix them or pass --bad-data skip to leave them out"
            )
        get_logger().warning("skipping bad pairs in %s / %s: %s", image_dir, label_dir, summary)
    if not samples:
        raise DataError(f"no usable image/label pairs in {image_dir} and {label_dir}")
    return samples


def decode_label(
    raw: np.ndarray,
    num_classes: int,
    reduce_zero_label: bool = False,
    ignore_index: int = IGNORE_INDEX,
) -> Tuple[np.ndarray, int, int]:
    """Raw label values -> ``uint8`` classes with :data:`IGNORE_INDEX` ignored.

    Returns ``(labels, number of invalid pixels, largest invalid value)``; invalid pixels
    (values that are neither a class nor ignore) are set to ignore in ``labels``.
    """
    raw = np.asarray(raw).astype(np.int64, copy=False)
    if reduce_zero_label:
        ignore = raw == 0
        classes = raw - 1
    else:
        ignore = raw == ignore_index
        classes = raw
    invalid = ~ignore & ((classes < 0) | (classes >= num_classes))
    n_invalid = int(invalid.sum())
    worst = int(raw[invalid].max()) if n_invalid else -1
    out = np.where(ignore | invalid, IGNORE_INDEX, classes).astype(np.uint8)
    return out, n_invalid, worst


def read_class_names(path: Optional[PathLike], num_classes: Optional[int]) -> List[str]:
    """Class names from a text file (one per line, blank lines skipped), or ``class_<i>``.

    With ``num_classes`` None the file decides the count."""
    if path is None:
        if num_classes is None:
            raise ValueError("give a class-name file or num_classes")
        return [f"class_{i}" for i in range(num_classes)]
    path = Path(path)
    if not path.is_file():
        raise DataError(f"class-name file not found: {path}")
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not names:
        raise DataError(f"class-name file {path} is empty")
    if num_classes is not None and len(names) != num_classes:
        raise DataError(f"class-name file {path} lists {len(names)} names but there are {num_classes} classes")
    return names


def ade20k_dirs(root: PathLike, split: str, image_dirname: str = "images", label_dirname: str = "annotations") -> Tuple[Path, Path]:
    """``root/images/<split>`` and ``root/annotations/<split>`` (ADE20K: ``training``, ``validation``)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"dataset folder not found: {root}")
    return root / image_dirname / split, root / label_dirname / split


class SegmentationDataset(Dataset):
    """Image/label pairs decoded to ``(tv_tensors.Image uint8, tv_tensors.Mask uint8 1xHxW)`` and
    passed through ``transform(image, mask)``.

    Args:
        samples: from :func:`find_pairs`.
        num_classes: class count after decoding.
        transform: a callable on ``(image, mask)``.
        reduce_zero_label, ignore_index: the label convention (see the module docstring).
        bad_data: ``'error'`` or ``'skip'`` for label values out of range.
    """

    def __init__(
        self,
        samples: Sequence[SegmentationSample],
        num_classes: int,
        transform: Optional[Callable[..., Any]] = None,
        reduce_zero_label: bool = False,
        ignore_index: int = IGNORE_INDEX,
        bad_data: str = "error",
    ):
        if not 1 <= num_classes <= IGNORE_INDEX:
            raise DataError(f"num_classes must be between 1 and {IGNORE_INDEX}, got {num_classes}")
        if bad_data not in BAD_DATA_POLICIES:
            raise ValueError(f"bad_data must be one of {BAD_DATA_POLICIES}, got {bad_data!r}")
        self.samples = list(samples)
        self.num_classes = num_classes
        self.transform = transform
        self.reduce_zero_label = reduce_zero_label
        self.ignore_index = ignore_index
        self.bad_data = bad_data
        # Per-process tallies of pixels set to ignore (data-loader workers keep their own).
        self.invalid_pixels: Counter = Counter()

    def __len__(self) -> int:
        return len(self.samples)

    def load_image(self, index: int) -> tv_tensors.Image:
        path = self.samples[index].image
        try:
            with Image.open(path) as im:
                array = np.asarray(im.convert("RGB"))
        except OSError as err:
            raise DataError(f"cannot read image {path}: {err}") from None
        return tv_tensors.Image(torch.from_numpy(array.copy()).permute(2, 0, 1))

    def load_label(self, index: int) -> tv_tensors.Mask:
        path = self.samples[index].label
        try:
            with Image.open(path) as im:
                if im.mode not in _LABEL_MODES:
                    raise DataError(f"label {path} has mode {im.mode}; labels must be single-channel class maps")
                raw = np.asarray(im)
        except OSError as err:
            raise DataError(f"cannot read label {path}: {err}") from None
        labels, n_invalid, worst = decode_label(raw, self.num_classes, self.reduce_zero_label, self.ignore_index)
        if n_invalid:
            if self.bad_data == "error":
                raise DataError(
                    f"label {path}: {n_invalid} pixels have values (up to {worst}) that are neither one of the "
                    f"{self.num_classes} classes nor ignore; check --num-classes / --reduce-zero-label, "
                    "or pass --bad-data skip to ignore them"
                )
            self.invalid_pixels[path.name] += n_invalid
            get_logger().warning("label %s: %d pixels with invalid values (up to %d) set to ignore", path, n_invalid, worst)
        return tv_tensors.Mask(torch.from_numpy(labels)[None])

    def __getitem__(self, index: int) -> Tuple[Any, Any]:
        image, mask = self.load_image(index), self.load_label(index)
        if image.shape[-2:] != mask.shape[-2:]:
            raise DataError(
                f"label {self.samples[index].label} is {mask.shape[-1]}x{mask.shape[-2]} but its image is "
                f"{image.shape[-1]}x{image.shape[-2]}"
            )
        if self.transform is not None:
            image, mask = self.transform(image, mask)
        return image, mask


def collate_train(batch: Sequence[Tuple[torch.Tensor, torch.Tensor]]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Stack equally sized (padded) crops: images ``B x 3 x H x W``, labels ``B x H x W`` int64."""
    images = torch.stack([b[0].as_subclass(torch.Tensor) for b in batch])
    labels = torch.stack([b[1].as_subclass(torch.Tensor).reshape(b[1].shape[-2:]) for b in batch]).long()
    return images, labels


def collate_eval(
    batch: Sequence[Tuple[torch.Tensor, Optional[torch.Tensor]]], size_divisor: int = 32
) -> Dict[str, Any]:
    """Pad images (bottom/right, zeros) to a common size divisible by ``size_divisor``; keep
    each label at its original size and each image's unpadded size."""
    sizes = [tuple(b[0].shape[-2:]) for b in batch]
    height = -(-max(s[0] for s in sizes) // size_divisor) * size_divisor
    width = -(-max(s[1] for s in sizes) // size_divisor) * size_divisor
    images = batch[0][0].new_zeros((len(batch), 3, height, width)).as_subclass(torch.Tensor)
    for i, (image, _) in enumerate(batch):
        images[i, :, : image.shape[-2], : image.shape[-1]] = image
    labels = [None if b[1] is None else b[1].as_subclass(torch.Tensor).reshape(b[1].shape[-2:]).long() for b in batch]
    return {"images": images, "sizes": sizes, "labels": labels}

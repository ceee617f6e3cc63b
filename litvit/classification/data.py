"""Image-folder data for classification: ``root/<split>/<class>/*.<image>``.

Robust to the images real folders contain: unreadable or truncated files are skipped with a
warning and counted (or fatal with ``strict``); grayscale, palette, alpha, CMYK, 16-bit and
float images are converted to 8-bit RGB. Folder mistakes (missing or empty split, empty class
folder, class lists that disagree) raise :class:`~litvit.errors.DataError` naming the path.

Augmentation is reproducible per image: each sample's random state is derived from
``(seed, epoch, index)``, so the augmented batches of an epoch do not depend on the number
of loader workers, on the number of processes, or on whether the run was resumed.
"""
from __future__ import annotations

import logging
import os
import random
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image, ImageFile
from torch.utils.data import Dataset, Sampler

from ..errors import DataError

__all__ = [
    "IMAGE_EXTENSIONS",
    "scan_image_folder",
    "load_image",
    "to_rgb",
    "ImageFolderDataset",
    "EpochTaggedSampler",
    "build_transforms",
    "collate_with_flags",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm")

_log = logging.getLogger("litvit.classification.data")

# A truncated file must fail loudly, never decode into half an image.
ImageFile.LOAD_TRUNCATED_IMAGES = False


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def scan_image_folder(
    root: Union[str, os.PathLike], split: str, class_names: Optional[Sequence[str]] = None
) -> Tuple[List[Tuple[str, int]], List[str]]:
    """``(samples, class_names)`` of ``root/split``; samples are ``(path, class index)``.

    Class indices follow the sorted folder names, or ``class_names`` when given (the classes
    of the training split or of a checkpoint), in which case the folders must match them.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"data folder not found: {root}")
    split_dir = root / split
    if not split_dir.is_dir():
        raise DataError(f"missing split folder {split_dir} (expected {root}/{split}/<class>/<images>)")
    found = sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not found:
        raise DataError(f"split folder {split_dir} is empty: it holds no class folders")
    if class_names is not None:
        class_names = list(class_names)
        missing = [c for c in class_names if c not in found]
        extra = [c for c in found if c not in class_names]
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"missing class folder(s) {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
            if extra:
                parts.append(f"unexpected class folder(s) {', '.join(extra[:5])}{' ...' if len(extra) > 5 else ''}")
            raise DataError(
                f"{split_dir} has {len(found)} class folders but {len(class_names)} classes are expected: " + "; ".join(parts)
            )
    else:
        class_names = found
    samples: List[Tuple[str, int]] = []
    for index, name in enumerate(class_names):
        folder = split_dir / name
        files = sorted(str(p) for p in folder.rglob("*") if p.is_file() and _is_image(p))
        if not files:
            raise DataError(f"class folder {folder} holds no images ({', '.join(IMAGE_EXTENSIONS[:4])}, ...)")
        samples.extend((f, index) for f in files)
    return samples, class_names


def to_rgb(image: Image.Image, background: Tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """8-bit RGB from any PIL mode: transparency is composited over ``background``;
    16-bit and float images are scaled to 0..255 instead of being clipped."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, background + (255,))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    if mode.startswith("I") or mode == "F":
        array = np.asarray(image, dtype=np.float64)
        if mode == "F":
            peak = 1.0 if array.size and array.max() <= 1.0 else 255.0
        else:
            # 16-bit PNG/TIFF arrive as I;16* or I; 8-bit data stored as I stays as it is.
            peak = 65535.0 if (mode.startswith("I;16") or (array.size and array.max() > 255)) else 255.0
        array = np.clip(array / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        if array.ndim == 2:
            return Image.fromarray(array, mode="L").convert("RGB")
        return Image.fromarray(array[..., :3])
    # L, 1, P, CMYK, YCbCr, LAB, HSV and the rest have PIL conversions to RGB.
    return image.convert("RGB")


def load_image(path: Union[str, os.PathLike]) -> Image.Image:
    """Decode ``path`` fully (a truncated file raises here, not later) as 8-bit RGB."""
    with Image.open(path) as image:
        image.load()
        return to_rgb(image)


class ImageFolderDataset(Dataset):
    """Samples ``(image, target, flag)`` from a list of ``(path, class index)``.

    ``flag`` is the number of unreadable images met to produce this sample. An unreadable image
    is replaced by the next readable one (``on_bad='substitute'``, for training: batches keep
    their size) or by a zero image with target -1 (``on_bad='mask'``, for evaluation: it is left
    out of the metrics). With ``strict`` it raises :class:`DataError` instead.

    Indices may be ``(index, epoch)`` pairs (see :class:`EpochTaggedSampler`); the random state of
    the transform is then seeded from ``(seed, epoch, index)``.
    """

    def __init__(
        self,
        samples: Sequence[Tuple[str, int]],
        class_names: Sequence[str],
        transform: Optional[Callable[[Image.Image], Any]] = None,
        strict: bool = False,
        on_bad: str = "substitute",
        seed: int = 0,
        max_substitutions: int = 64,
    ):
        if on_bad not in ("substitute", "mask"):
            raise ValueError("on_bad must be 'substitute' or 'mask'")
        self.samples = list(samples)
        self.class_names = list(class_names)
        self.targets = [t for _, t in self.samples]
        self.transform = transform
        self.strict = strict
        self.on_bad = on_bad
        self.seed = seed
        self.max_substitutions = max_substitutions

    @classmethod
    def from_folder(
        cls, root: Union[str, os.PathLike], split: str, class_names: Optional[Sequence[str]] = None, **kwargs: Any
    ) -> "ImageFolderDataset":
        samples, class_names = scan_image_folder(root, split, class_names)
        return cls(samples, class_names, **kwargs)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.samples)

    def _seed(self, index: int, epoch: int) -> None:
        # One independent stream per (seed, epoch, image): Python, NumPy and torch draws of
        # the timm/torchvision transforms all come from it.
        seq = np.random.SeedSequence([self.seed & 0xFFFFFFFF, epoch, index])
        s = int(seq.generate_state(1, dtype=np.uint64)[0] & 0x7FFFFFFFFFFFFFFF)
        random.seed(s)
        np.random.seed(s & 0xFFFFFFFF)
        # The CPU generator only: torch.manual_seed would also queue CUDA seeding (slow, and
        # transforms run on the CPU).
        torch.default_generator.manual_seed(s)

    def _read(self, index: int) -> Optional[Image.Image]:
        path = self.samples[index][0]
        try:
            return load_image(path)
        except Exception as err:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError, ...
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            if self.strict:
                raise DataError(f"unreadable image {path}: {reason} (drop --strict to skip such files)") from None
            _log.warning("skipping unreadable image %s: %s", path, reason)
            return None

    def __getitem__(self, key: Union[int, Tuple[int, int]]) -> Tuple[Any, int, int]:
        index, epoch = key if isinstance(key, tuple) else (key, None)
        if epoch is not None:
            self._seed(index, epoch)
        bad = 0
        image = self._read(index)
        target = self.samples[index][1]
        if image is None:
            bad = 1
            if self.on_bad == "mask":
                image, target = None, -1
            else:
                for step in range(1, self.max_substitutions + 1):
                    candidate = (index + step) % len(self.samples)
                    image = self._read(candidate)
                    if image is not None:
                        target = self.samples[candidate][1]
                        break
                    bad += 1
                else:
                    raise DataError(
                        f"{self.max_substitutions + 1} unreadable images in a row near {self.samples[index][0]}; "
                        "is the folder damaged?"
                    )
        if image is None:
            # A masked sample still needs a tensor of the right shape: transform a blank image.
            image = Image.new("RGB", (32, 32))
        if self.transform is not None:
            image = self.transform(image)
        return image, target, bad


class EpochTaggedSampler(Sampler):
    """Wraps an index sampler to yield ``(index, epoch)`` pairs, so that dataset copies living in
    persistent loader workers still know the epoch (for per-image augmentation seeds)."""

    def __init__(self, sampler: Sampler):
        self.sampler = sampler
        self.epoch = 0

    def set_epoch(self, epoch: int, **kwargs: Any) -> None:
        self.epoch = epoch
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch, **kwargs)

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        epoch = self.epoch
        for index in self.sampler:
            yield index, epoch

    def __len__(self) -> int:
        return len(self.sampler)


def collate_with_flags(batch: Sequence[Tuple[Any, int, int]]) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stack ``(image, target, flag)`` samples into three tensors."""
    images = torch.stack([b[0] for b in batch])
    targets = torch.tensor([b[1] for b in batch], dtype=torch.long)
    flags = torch.tensor([b[2] for b in batch], dtype=torch.long)
    return images, targets, flags


def build_transforms(cfg: Any, is_training: bool) -> Callable[[Image.Image], torch.Tensor]:
    """The released LIT (DeiT-style) transforms from :func:`timm.data.create_transform`.

    Training: bicubic random-resized crop, flip, RandAugment, colour jitter, random erasing.
    Evaluation: resize to ``img_size / crop_pct`` (256 for 224), bicubic, centre crop.
    """
    from timm.data import create_transform

    size = int(cfg.img_size)
    mean, std = tuple(cfg.mean), tuple(cfg.std)
    if not is_training:
        return create_transform(
            size, is_training=False, interpolation=cfg.interpolation, crop_pct=cfg.crop_pct, mean=mean, std=std
        )
    auto_augment = cfg.auto_augment if cfg.auto_augment not in (None, "", "none") else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return create_transform(
            size,
            is_training=True,
            no_aug=cfg.no_aug,
            scale=tuple(cfg.scale),
            ratio=tuple(cfg.ratio),
            hflip=cfg.hflip,
            vflip=cfg.vflip,
            color_jitter=cfg.color_jitter if cfg.color_jitter else None,
            auto_augment=auto_augment,
            interpolation=cfg.train_interpolation,
            mean=mean,
            std=std,
            re_prob=cfg.reprob,
            re_mode=cfg.remode,
            re_count=cfg.recount,
        )

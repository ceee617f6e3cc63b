"""Deterministic synthetic "shapes" datasets for demos and tests.

One scene generator (:func:`synthesize_scene`) draws coloured geometric shapes on varied
backgrounds and returns, besides the image, every shape as an instance (class, polygon,
exact pixel mask). The three writers lay the same kind of scenes out for the three tasks:

* :func:`generate_classification`: image-folder layout ``root/{train,val}/<class>/*.png``,
  one dominant shape per image, exactly ``num_*_per_class`` images per class.
* :func:`generate_detection`: COCO layout ``root/images/{train,val}/*.png`` and
  ``root/annotations/instances_{train,val}.json`` (several shapes per image; ``bbox``,
  polygon ``segmentation``, ``area`` = exact pixel count of the drawn mask, ``iscrowd`` 0,
  categories 1..K in :data:`SHAPE_CLASSES` order).
* :func:`generate_segmentation`: ADE20K layout ``root/images/{training,validation}/*.png``
  and ``root/annotations/{training,validation}/*.png`` label PNGs plus ``classes.txt``.

Label convention of the segmentation PNGs (chosen so an ADE20K loader works unchanged):
value 0 is reserved for "ignore" and never written, 1 is the background, and
``2 + i`` is ``SHAPE_CLASSES[i]``. After the ADE20K shift (``label - 1``, 0 -> ignore) the
classes are ``0 = background, 1..K = shapes``, which is the order of ``classes.txt``.

Coordinates: pixel ``(x, y)`` covers ``[x, x+1) x [y, y+1)`` (COCO convention). Shapes never
overlap, so every polygon is fully visible and its mask is exactly the painted pixels.

Everything is determined by ``seed``: image ``i`` of a split uses its own random stream
derived from ``(seed, task, split, i)``, so the files are byte-identical across runs and
machines, and growing a split does not change the images already in it.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image

from ..errors import DataError
from ..fileio import atomic_path

__all__ = [
    "SHAPE_CLASSES",
    "SEG_IGNORE_VALUE",
    "SEG_BACKGROUND_VALUE",
    "Instance",
    "Scene",
    "synthesize_scene",
    "classification_scene",
    "detection_scene",
    "segmentation_scene",
    "generate_classification",
    "generate_detection",
    "generate_segmentation",
    "generate",
]

PathLike = Union[str, os.PathLike]

SHAPE_CLASSES: Tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "heart")
SEG_IGNORE_VALUE = 0
SEG_BACKGROUND_VALUE = 1

# Bump when the drawing changes, so an old dataset on disk is not mistaken for a new one.
GENERATOR_VERSION = 2
MANIFEST = "_manifest.json"

_TASK_IDS = {"classify": 1, "detect": 2, "segment": 3}


# --------------------------------------------------------------------------- shapes

def _unit_polygon(name: str) -> np.ndarray:
    """Vertices (x, y) of a shape centred at 0 whose farthest vertex lies at radius ~1."""
    if name == "circle":
        t = np.linspace(0.0, 2 * np.pi, 48, endpoint=False)
        return np.stack([np.cos(t), np.sin(t)], 1)
    if name == "square":
        t = np.pi / 4 + np.arange(4) * np.pi / 2
        return np.stack([np.cos(t), np.sin(t)], 1)
    if name == "triangle":
        t = -np.pi / 2 + np.arange(3) * 2 * np.pi / 3
        return np.stack([np.cos(t), np.sin(t)], 1)
    if name == "star":
        t = -np.pi / 2 + np.arange(10) * np.pi / 5
        r = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
        return np.stack([r * np.cos(t), r * np.sin(t)], 1)
    if name == "cross":
        a, w = 0.95, 0.32
        pts = [(-w, -a), (w, -a), (w, -w), (a, -w), (a, w), (w, w),
               (w, a), (-w, a), (-w, w), (-a, w), (-a, -w), (-w, -w)]
        return np.asarray(pts, dtype=np.float64)
    if name == "heart":
        t = np.linspace(0.0, 2 * np.pi, 40, endpoint=False)
        x = 16 * np.sin(t) ** 3
        y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
        pts = np.stack([x, y], 1)
        pts -= (pts.max(0) + pts.min(0)) / 2
        return pts / np.abs(pts).max()
    raise ValueError(f"unknown shape {name!r}")


_UNIT_POLYGONS = {name: _unit_polygon(name) for name in SHAPE_CLASSES}


@dataclass
class Instance:
    """One shape in a scene.

    ``label`` indexes :data:`SHAPE_CLASSES`; ``polygon`` is K x 2 (x, y) in COCO pixel
    coordinates; ``mask`` is the H x W boolean mask of exactly the pixels painted.
    """

    label: int
    polygon: np.ndarray
    mask: np.ndarray

    @property
    def name(self) -> str:
        return SHAPE_CLASSES[self.label]

    @property
    def area(self) -> int:
        return int(self.mask.sum())

    @property
    def bbox(self) -> List[float]:
        """Tight box of the mask, COCO ``[x, y, width, height]``."""
        ys, xs = np.nonzero(self.mask)
        return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]


@dataclass
class Scene:
    image: np.ndarray  # H x W x 3 uint8
    instances: List[Instance] = field(default_factory=list)

    def label_map(self) -> np.ndarray:
        """H x W uint8 in the ADE20K-style convention of this module (1 = background)."""
        labels = np.full(self.image.shape[:2], SEG_BACKGROUND_VALUE, dtype=np.uint8)
        for inst in self.instances:
            labels[inst.mask] = SEG_BACKGROUND_VALUE + 1 + inst.label
        return labels


# --------------------------------------------------------------------------- drawing

def _random_colour(rng: np.random.Generator) -> np.ndarray:
    hue = rng.random()
    sat = rng.uniform(0.3, 1.0)
    val = rng.uniform(0.25, 1.0)
    i = int(hue * 6) % 6
    f = hue * 6 - int(hue * 6)
    p, q, t = val * (1 - sat), val * (1 - f * sat), val * (1 - (1 - f) * sat)
    rgb = [(val, t, p), (q, val, p), (p, val, t), (p, q, val), (t, p, val), (val, p, q)][i]
    return np.asarray(rgb) * 255.0


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """H x W x 3 float background: gradient, radial, stripes, checks, blotches or flat."""
    # Broadcast 1-D coordinates instead of full grids: every pattern below is separable or
    # built by broadcasting, which keeps thousands of images per second within reach.
    yy = np.arange(h, dtype=np.float64)[:, None]
    xx = np.arange(w, dtype=np.float64)[None, :]
    c0, c1 = _random_colour(rng), _random_colour(rng)
    kind = rng.integers(6)
    if kind == 0:  # linear gradient at a random angle
        a = rng.uniform(0, 2 * np.pi)
        t = np.cos(a) * xx + np.sin(a) * yy
        t = (t - t.min()) / max(t.max() - t.min(), 1e-6)
    elif kind == 1:  # radial gradient around a random centre
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        t = np.hypot(yy - cy, xx - cx)
        t = t / max(t.max(), 1e-6)
    elif kind == 2:  # stripes with soft edges
        a = rng.uniform(0, np.pi)
        period = rng.uniform(0.08, 0.3) * max(h, w)
        t = 0.5 + 0.5 * np.sin(2 * np.pi * (np.cos(a) * xx + np.sin(a) * yy) / period)
    elif kind == 3:  # checkerboard
        cell = max(2, int(rng.uniform(0.06, 0.2) * max(h, w)))
        t = ((yy // cell) + (xx // cell)) % 2
    elif kind == 4:  # smooth blotches: low-resolution noise upsampled
        g = int(rng.integers(3, 7))
        coarse = Image.fromarray((rng.random((g, g)) * 255).astype(np.uint8))
        t = np.asarray(coarse.resize((w, h), Image.BICUBIC), dtype=np.float64) / 255.0
    else:  # flat
        t = np.zeros((h, w))
    t = np.broadcast_to(t, (h, w))
    # Keep the two background colours fairly close so shapes stay the salient object.
    c1 = c0 + (c1 - c0) * rng.uniform(0.15, 0.5)
    return c0 + t[..., None] * (c1 - c0)


def _place(rng: np.random.Generator, label: int, size: int, radius: Tuple[float, float],
           occupied: List[Tuple[float, float, float, float]], gap: float, tries: int = 40) -> Optional[np.ndarray]:
    """A rotated, scaled polygon inside the image that keeps ``gap`` px from ``occupied`` boxes."""
    unit = _UNIT_POLYGONS[SHAPE_CLASSES[label]]
    for _ in range(tries):
        r = rng.uniform(*radius)
        theta = rng.uniform(0, 2 * np.pi)
        rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
        aspect = np.array([1.0, rng.uniform(0.85, 1.15)])  # mild anisotropy for variety
        pts = (unit * aspect) @ rot.T * r
        lo, hi = pts.min(0), pts.max(0)
        # Keep one pixel of margin so every shape is entirely inside the image.
        x_range = (1.0 - lo[0], size - 1.0 - hi[0])
        y_range = (1.0 - lo[1], size - 1.0 - hi[1])
        if x_range[0] > x_range[1] or y_range[0] > y_range[1]:
            continue
        centre = np.array([rng.uniform(*x_range), rng.uniform(*y_range)])
        pts = pts + centre
        box = (*pts.min(0), *pts.max(0))
        if all(box[2] + gap < o[0] or o[2] + gap < box[0] or box[3] + gap < o[1] or o[3] + gap < box[1]
               for o in occupied):
            occupied.append(box)
            return pts
    return None


def _rasterise(polygon: np.ndarray, size: int) -> np.ndarray:
    """Pixels whose centre ``(x + 0.5, y + 0.5)`` lies inside the polygon (even-odd rule).

    This is the COCO pixel convention, so the mask area is the polygon's area up to
    boundary pixels, and pycocotools rasterises the stored polygon to (nearly) this mask.
    """
    mask = np.zeros((size, size), dtype=bool)
    x0, y0 = np.floor(polygon.min(0)).astype(int).clip(0, size - 1)
    x1, y1 = np.ceil(polygon.max(0)).astype(int).clip(0, size - 1)
    px = np.arange(x0, x1 + 1) + 0.5
    py = np.arange(y0, y1 + 1) + 0.5
    xa, ya = polygon[:, 0], polygon[:, 1]
    xb, yb = np.roll(xa, -1), np.roll(ya, -1)
    # For every row of pixel centres, count the edges crossed to the left of each centre.
    straddles = (ya[None, :] > py[:, None]) != (yb[None, :] > py[:, None])  # rows x edges
    with np.errstate(divide="ignore", invalid="ignore"):
        x_cross = xa + (py[:, None] - ya) * (xb - xa) / (yb - ya)  # rows x edges
    crossings = (straddles[:, None, :] & (x_cross[:, None, :] > px[None, :, None])).sum(-1)
    mask[y0:y1 + 1, x0:x1 + 1] = crossings % 2 == 1
    return mask


def synthesize_scene(rng: np.random.Generator, image_size: int, labels: Sequence[int],
                     radius: Tuple[float, float], gap: float = 2.0, noise: float = 5.0) -> Scene:
    """Draw the shapes ``labels`` (indices into :data:`SHAPE_CLASSES`) on a random background.

    ``radius`` is the (min, max) circumscribed radius in pixels. A shape that cannot be
    placed without touching another is left out (it never overlaps), so ``instances`` may
    be shorter than ``labels``; the first shape always fits when ``radius`` allows it.
    """
    size = int(image_size)
    canvas = _background(rng, size, size)
    occupied: List[Tuple[float, float, float, float]] = []
    instances: List[Instance] = []
    for label in labels:
        pts = _place(rng, int(label), size, radius, occupied, gap)
        if pts is None:
            continue
        mask = _rasterise(pts, size)
        if not mask.any():
            occupied.pop()
            continue
        # A fill colour that stands out from the background under it.
        under = canvas[mask]
        mean_under = under.mean(0)
        colour = _random_colour(rng)
        for _ in range(30):
            dist = np.linalg.norm(under - colour, axis=1)
            if dist.mean() > 110 and dist.min() > 60:
                break
            colour = _random_colour(rng)
        else:
            colour = np.where(mean_under > 127, 0.0, 255.0)
        if rng.random() < 0.3:  # two-tone fill: gradient across the shape
            ys, xs = np.nonzero(mask)
            a = rng.uniform(0, 2 * np.pi)
            t = np.cos(a) * xs + np.sin(a) * ys
            t = (t - t.min()) / max(t.max() - t.min(), 1e-6)
            shade = colour * rng.uniform(0.6, 0.9)
            canvas[ys, xs] = colour + t[:, None] * (shade - colour)
        else:
            canvas[mask] = colour
        instances.append(Instance(label=int(label), polygon=pts, mask=mask))
    if noise > 0:
        canvas = canvas + rng.normal(0.0, rng.uniform(0.0, noise), canvas.shape)
    image = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    return Scene(image=image, instances=instances)


def _rng(seed: int, task: str, split: str, index: int) -> np.random.Generator:
    split_id = {"train": 1, "val": 2, "training": 1, "validation": 2}[split]
    return np.random.default_rng([int(seed), _TASK_IDS[task], split_id, int(index)])


def _save_png(array: np.ndarray, path: Path) -> None:
    # Fixed compression settings keep the bytes identical across runs.
    Image.fromarray(array).save(path, format="PNG", compress_level=6)


# --------------------------------------------------------------------------- output

def _check_args(image_size: int, **counts: int) -> None:
    if int(image_size) < 16:
        raise DataError(f"image_size must be at least 16 px, got {image_size}")
    for name, value in counts.items():
        if int(value) < 1:
            raise DataError(f"{name} must be at least 1, got {value}")


def _write_atomically(root: PathLike, settings: Dict[str, Any], build: Callable[[Path], Dict[str, Any]],
                      overwrite: bool = False) -> Path:
    """Run ``build(tmp_dir)`` and move the result to ``root``, manifest last.

    Returns at once when ``root`` already holds a complete dataset with the same settings.
    """
    root = Path(root).expanduser()
    manifest_path = root / MANIFEST
    if root.exists():
        existing = None
        if manifest_path.is_file():
            try:
                existing = json.loads(manifest_path.read_text())
            except (OSError, ValueError):
                existing = None
        if existing is not None and existing.get("settings") == settings:
            return root
        if not root.is_dir():
            raise DataError(f"cannot write a synthetic dataset to {root}: it is a file")
        if any(root.iterdir()):
            if existing is None:
                raise DataError(f"{root} is not empty and holds no synthetic dataset; choose another directory")
            if not overwrite:
                old = existing.get("settings") or {}
                diff = ", ".join(f"{k} {old.get(k)} -> {settings.get(k)}" for k in sorted(set(old) | set(settings))
                                 if old.get(k) != settings.get(k))
                raise DataError(f"{root} holds a synthetic dataset made with other settings ({diff}); "
                                "pass overwrite=True (--overwrite) or choose another directory")
    try:
        with atomic_path(root, suffix=".tmp", directory=True) as tmp:
            summary = build(tmp)
            manifest = {"generator": "litvit.synthetic", "version": GENERATOR_VERSION,
                        "settings": settings, "classes": list(SHAPE_CLASSES), "summary": summary}
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
            if root.exists():
                # Only reached for an empty directory or our own dataset with overwrite=True.
                shutil.rmtree(root)
    except OSError:
        # Another process may have finished the same dataset first.
        if manifest_path.is_file() and json.loads(manifest_path.read_text()).get("settings") == settings:
            return root
        raise
    return root


def _cls_settings(num_train_per_class: int, num_val_per_class: int, image_size: int, seed: int) -> Dict[str, Any]:
    return {"task": "classify", "version": GENERATOR_VERSION, "num_train_per_class": int(num_train_per_class),
            "num_val_per_class": int(num_val_per_class), "image_size": int(image_size), "seed": int(seed)}


def classification_scene(seed: int, split: str, index: int, label: int, image_size: int) -> Scene:
    """The scene of one classification image: a single dominant shape of class ``label``."""
    rng = _rng(seed, "classify", split, index)
    return synthesize_scene(rng, image_size, [label], radius=(0.24 * image_size, 0.45 * image_size))


def generate_classification(root: PathLike, num_train_per_class: int = 400, num_val_per_class: int = 100,
                            image_size: int = 64, seed: int = 0, overwrite: bool = False) -> Path:
    """Write ``root/{train,val}/<class>/<class>_NNNNN.png`` with one dominant shape per image.

    Returns ``root``. Does nothing if ``root`` already holds this dataset with these settings.
    """
    _check_args(image_size, num_train_per_class=num_train_per_class, num_val_per_class=num_val_per_class)
    settings = _cls_settings(num_train_per_class, num_val_per_class, image_size, seed)

    def build(tmp: Path) -> Dict[str, Any]:
        summary = {}
        for split, per_class in (("train", num_train_per_class), ("val", num_val_per_class)):
            index = 0
            for label, name in enumerate(SHAPE_CLASSES):
                folder = tmp / split / name
                folder.mkdir(parents=True)
                for k in range(int(per_class)):
                    scene = classification_scene(seed, split, index, label, image_size)
                    _save_png(scene.image, folder / f"{name}_{k:05d}.png")
                    index += 1
            summary[split] = {"images": index, "per_class": int(per_class)}
        return summary

    return _write_atomically(root, settings, build, overwrite)


def _multi_shape_scene(seed: int, task: str, split: str, index: int, image_size: int,
                       max_shapes: int) -> Scene:
    rng = _rng(seed, task, split, index)
    count = int(rng.integers(1, max_shapes + 1))
    labels = rng.integers(0, len(SHAPE_CLASSES), size=count)
    return synthesize_scene(rng, image_size, labels.tolist(), radius=(0.08 * image_size, 0.22 * image_size))


def detection_scene(seed: int, split: str, index: int, image_size: int, max_shapes: int = 5) -> Scene:
    """The scene of one detection image (1..``max_shapes`` non-overlapping shapes)."""
    return _multi_shape_scene(seed, "detect", split, index, image_size, max_shapes)


def segmentation_scene(seed: int, split: str, index: int, image_size: int, max_shapes: int = 5) -> Scene:
    """The scene of one segmentation image (1..``max_shapes`` non-overlapping shapes)."""
    return _multi_shape_scene(seed, "segment", split, index, image_size, max_shapes)


def _coco_polygon(polygon: np.ndarray) -> List[float]:
    return [round(float(v), 2) for v in polygon.reshape(-1)]


def generate_detection(root: PathLike, num_train: int = 600, num_val: int = 100, image_size: int = 128,
                       seed: int = 0, max_shapes: int = 5, overwrite: bool = False) -> Path:
    """Write a COCO-format shapes dataset: ``root/images/{train,val}/NNNNNN.png`` and
    ``root/annotations/instances_{train,val}.json``. Category ids are ``1..K`` in
    :data:`SHAPE_CLASSES` order. Returns ``root``.
    """
    _check_args(image_size, num_train=num_train, num_val=num_val, max_shapes=max_shapes)
    settings = {"task": "detect", "version": GENERATOR_VERSION, "num_train": int(num_train), "num_val": int(num_val),
                "image_size": int(image_size), "seed": int(seed), "max_shapes": int(max_shapes)}
    categories = [{"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(SHAPE_CLASSES)]

    def build(tmp: Path) -> Dict[str, Any]:
        (tmp / "annotations").mkdir(parents=True)
        summary = {}
        for split, count in (("train", num_train), ("val", num_val)):
            folder = tmp / "images" / split
            folder.mkdir(parents=True)
            images, annotations = [], []
            for index in range(int(count)):
                scene = detection_scene(seed, split, index, image_size, max_shapes)
                file_name = f"{index:06d}.png"
                _save_png(scene.image, folder / file_name)
                image_id = index + 1
                images.append({"id": image_id, "file_name": file_name, "width": int(image_size),
                               "height": int(image_size)})
                for inst in scene.instances:
                    annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                        "category_id": inst.label + 1, "bbox": inst.bbox, "area": float(inst.area),
                                        "segmentation": [_coco_polygon(inst.polygon)], "iscrowd": 0})
            coco = {"info": {"description": "litvit synthetic shapes", "version": str(GENERATOR_VERSION)},
                    "licenses": [], "images": images, "annotations": annotations, "categories": categories}
            (tmp / "annotations" / f"instances_{split}.json").write_text(json.dumps(coco))
            summary[split] = {"images": len(images), "annotations": len(annotations)}
        return summary

    return _write_atomically(root, settings, build, overwrite)


def generate_segmentation(root: PathLike, num_train: int = 600, num_val: int = 100, image_size: int = 128,
                          seed: int = 0, max_shapes: int = 5, overwrite: bool = False) -> Path:
    """Write an ADE20K-layout shapes dataset: ``root/images/{training,validation}/NNNNNN.png``,
    label PNGs ``root/annotations/{training,validation}/NNNNNN.png`` (0 = ignore, never
    used; 1 = background; ``2 + i`` = ``SHAPE_CLASSES[i]``) and ``root/classes.txt``
    (``background`` then the shapes: the class order after the ADE20K shift). Returns ``root``.
    """
    _check_args(image_size, num_train=num_train, num_val=num_val, max_shapes=max_shapes)
    settings = {"task": "segment", "version": GENERATOR_VERSION, "num_train": int(num_train), "num_val": int(num_val),
                "image_size": int(image_size), "seed": int(seed), "max_shapes": int(max_shapes)}

    def build(tmp: Path) -> Dict[str, Any]:
        summary = {}
        for split, count in (("training", num_train), ("validation", num_val)):
            img_dir, ann_dir = tmp / "images" / split, tmp / "annotations" / split
            img_dir.mkdir(parents=True)
            ann_dir.mkdir(parents=True)
            pixels = np.zeros(len(SHAPE_CLASSES) + 2, dtype=np.int64)
            for index in range(int(count)):
                scene = segmentation_scene(seed, split, index, image_size, max_shapes)
                labels = scene.label_map()
                _save_png(scene.image, img_dir / f"{index:06d}.png")
                _save_png(labels, ann_dir / f"{index:06d}.png")
                pixels += np.bincount(labels.reshape(-1), minlength=pixels.size)
            summary[split] = {"images": int(count), "pixels_per_value": pixels.tolist()}
        (tmp / "classes.txt").write_text("\n".join(("background",) + SHAPE_CLASSES) + "\n")
        return summary

    return _write_atomically(root, settings, build, overwrite)


def generate(task: str, root: PathLike, **kwargs: Any) -> Path:
    """Dispatch to the writer of ``task`` (``classify``, ``detect`` or ``segment``)."""
    writers = {"classify": generate_classification, "detect": generate_detection, "segment": generate_segmentation}
    if task not in writers:
        raise DataError(f"unknown synthetic task {task!r}; choose one of {', '.join(writers)}")
    return writers[task](root, **kwargs)

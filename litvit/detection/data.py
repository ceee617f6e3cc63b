"""COCO-format detection data: checked loading, training targets, transforms and batching.

What COCO users expect, made explicit (every dropped item is counted and reported):

- Images without (usable) annotations are kept for evaluation and left out of training,
  as mmdetection's ``filter_empty_gt`` and torchvision's reference scripts do.
- Crowd regions (``iscrowd: 1``) are never training targets; COCOeval uses them from the
  ground-truth file to ignore detections that fall on them.
- Boxes are clipped to the image; boxes with no area left (zero width or height, or
  entirely outside the image) are dropped.
- Masks come from polygons (degenerate polygons of fewer than three points are removed)
  or from RLE (compressed or not); an instance without a usable mask is not a Mask R-CNN
  training target (it stays in the ground truth for box evaluation).
- Grayscale, palette and RGBA images are read as RGB.
- A missing image file is an error naming it (or, with ``skip_missing_images``, the image
  is left out and counted); an annotation file that is not COCO instances JSON is an error
  saying what is wrong with it.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from ..errors import DataError

__all__ = [
    "CocoDetectionDataset",
    "load_coco_json",
    "train_transforms",
    "eval_transforms",
    "collate_detection",
    "coco_split_paths",
    "decode_segmentation",
    "read_rgb",
]

PathLike = Union[str, os.PathLike]

logger = logging.getLogger("litvit.detection")

# Human-readable names of the counters, in report order.
_ISSUES = {
    "bad_annotation": "malformed annotations (no usable bbox/category_id/image_id) ignored",
    "unknown_image": "annotations of image ids not in 'images' ignored",
    "unknown_category": "annotations of category ids not in 'categories' ignored",
    "filled_area": "annotations without 'area' given the box area",
    "filled_iscrowd": "annotations without 'iscrowd' treated as iscrowd=0",
    "filled_id": "annotations without 'id' numbered",
    "crowd": "crowd regions (iscrowd=1) not used as training targets",
    "zero_size": "boxes of zero width or height dropped",
    "outside": "boxes entirely outside the image dropped",
    "clipped": "boxes partly outside the image clipped to it",
    "no_mask": "instances without a usable mask not used as mask training targets",
    "bad_polygon": "degenerate polygons (fewer than 3 points) removed from masks",
    "missing_image": "images whose file is missing left out",
    "empty_image": "images without usable annotations left out of training",
}


def read_rgb(path: PathLike) -> torch.Tensor:
    """A uint8 ``3 x H x W`` tensor; grayscale, palette, CMYK and RGBA files are converted to RGB.

    PIL is used because torchvision's image decoders are deprecated since torchvision 0.29.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            array = np.asarray(img.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise DataError(f"cannot read image {path}: {err}") from None
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def coco_split_paths(data_root: PathLike, split: str) -> Tuple[Path, Path]:
    """``(images_dir, annotation_file)`` of a split in the COCO 2017 layout.

    ``split`` ``train`` / ``val`` also matches ``train2017`` / ``val2017`` (the official
    names); ``root/images/<split>`` (the demo layout) is accepted as well.
    """
    root = Path(data_root)
    if not root.is_dir():
        raise DataError(f"data root not found: {root}")
    names = [split] if split.endswith("2017") else [f"{split}2017", split]
    for name in names:
        ann = root / "annotations" / f"instances_{name}.json"
        for images in (root / name, root / "images" / name):
            if ann.is_file() and images.is_dir():
                return images, ann
    raise DataError(
        f"no COCO split {split!r} under {root}: expected annotations/instances_{names[0]}.json and an images "
        f"folder {names[0]}/ (or images/{names[-1]}/); give --train-images/--train-ann (or --val-...) instead"
    )


def load_coco_json(path: PathLike) -> Dict[str, Any]:
    """Read and structurally validate a COCO instances file; clear errors for anything else."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"annotation file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as err:
        raise DataError(f"annotation file {path} is not JSON ({err.msg} at line {err.lineno} column {err.colno})") from None
    except UnicodeDecodeError:
        raise DataError(f"annotation file {path} is not JSON text") from None
    if not isinstance(data, dict):
        raise DataError(f"annotation file {path} is not COCO instances JSON: top level is a {type(data).__name__}, not an object")
    for key in ("images", "categories"):
        if key not in data:
            raise DataError(f"annotation file {path} is not COCO instances JSON: no '{key}' list")
        if not isinstance(data[key], list):
            raise DataError(f"annotation file {path}: '{key}' must be a list, not a {type(data[key]).__name__}")
    annotations = data.get("annotations", [])
    if not isinstance(annotations, list):
        raise DataError(f"annotation file {path}: 'annotations' must be a list")
    if not data["categories"]:
        raise DataError(f"annotation file {path} has no categories")
    seen = set()
    for i, img in enumerate(data["images"]):
        missing = [k for k in ("id", "file_name", "width", "height") if not isinstance(img, dict) or k not in img]
        if missing:
            raise DataError(f"annotation file {path}: images[{i}] has no {', '.join(repr(m) for m in missing)}")
        if img["id"] in seen:
            raise DataError(f"annotation file {path}: image id {img['id']} appears twice")
        seen.add(img["id"])
    cat_seen = set()
    for i, cat in enumerate(data["categories"]):
        if not isinstance(cat, dict) or "id" not in cat:
            raise DataError(f"annotation file {path}: categories[{i}] has no 'id'")
        if cat["id"] in cat_seen:
            raise DataError(f"annotation file {path}: category id {cat['id']} appears twice")
        cat_seen.add(cat["id"])
    data.setdefault("annotations", annotations)
    return data


def _valid_bbox(bbox: Any) -> bool:
    return (
        isinstance(bbox, (list, tuple))
        and len(bbox) == 4
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in bbox)
    )


def decode_segmentation(segm: Any, height: int, width: int, issues: Optional[Counter] = None) -> Optional[np.ndarray]:
    """An ``H x W`` uint8 mask from a COCO polygon list or RLE, or ``None`` when unusable."""
    from pycocotools import mask as mask_utils

    if isinstance(segm, list):
        polygons = [p for p in segm if isinstance(p, (list, tuple)) and len(p) >= 6 and len(p) % 2 == 0]
        if issues is not None and len(polygons) != len(segm):
            issues["bad_polygon"] += len(segm) - len(polygons)
        if not polygons:
            return None
        try:
            rle = mask_utils.merge(mask_utils.frPyObjects([[float(v) for v in p] for p in polygons], height, width))
        except (TypeError, ValueError):
            return None
    elif isinstance(segm, dict) and "counts" in segm and "size" in segm:
        if list(segm["size"]) != [height, width]:
            return None
        try:
            rle = mask_utils.frPyObjects(segm, height, width) if isinstance(segm["counts"], list) else dict(segm)
            if isinstance(rle["counts"], str):
                rle["counts"] = rle["counts"].encode("ascii")
            mask = mask_utils.decode(rle)
        except (TypeError, ValueError, UnicodeEncodeError):
            return None
        return mask if mask.any() else None
    else:
        return None
    mask = mask_utils.decode(rle)
    return mask if mask.any() else None


class CocoDetectionDataset(Dataset):
    """A COCO-format split as ``(image, target)`` pairs for torchvision detection models.

    ``image`` is a ``tv_tensors.Image`` (uint8 before ``transforms``), ``target`` a dict with
    ``boxes`` (``tv_tensors.BoundingBoxes``, XYXY, clipped), ``labels`` (``category index +
    label_offset``), ``image_id`` and, with ``with_masks``, ``masks`` (``tv_tensors.Mask``).

    Args:
        images_dir: folder the ``file_name`` entries are relative to.
        ann_file: COCO instances JSON.
        with_masks: build instance masks (Mask R-CNN).
        label_offset: 0 for RetinaNet (labels ``0..K-1``), 1 for Mask R-CNN (0 = background).
        train: leave out images without usable targets (evaluation keeps every image).
        transforms: a ``transforms.v2`` callable on ``(image, target)``.
        skip_missing_images: leave out (and count) images whose file is missing instead of failing.
        keep_empty_images: keep images without targets in training (as negatives).
    """

    def __init__(
        self,
        images_dir: PathLike,
        ann_file: PathLike,
        with_masks: bool = False,
        label_offset: int = 0,
        train: bool = False,
        transforms: Optional[Callable] = None,
        skip_missing_images: bool = False,
        keep_empty_images: bool = False,
        log: bool = True,
    ):
        self.images_dir = Path(images_dir)
        self.ann_file = Path(ann_file)
        if not self.images_dir.is_dir():
            raise DataError(f"images folder not found: {self.images_dir}")
        self.with_masks = with_masks
        self.label_offset = label_offset
        self.train = train
        self.transforms = transforms
        data = load_coco_json(self.ann_file)
        self.issues: Counter = Counter()
        self._examples: Dict[str, List[str]] = {}

        categories = sorted(data["categories"], key=lambda c: c["id"])
        self.cat_ids: List[int] = [c["id"] for c in categories]
        self.cat_names: List[str] = [str(c.get("name", c["id"])) for c in categories]
        self.cat_to_index = {cid: i for i, cid in enumerate(self.cat_ids)}
        images = {img["id"]: img for img in data["images"]}

        # Annotations grouped per image, after the checks every use of the split needs.
        gt_annotations: List[Dict[str, Any]] = []
        per_image: Dict[Any, List[Dict[str, Any]]] = {img_id: [] for img_id in images}
        used_ids = {a.get("id") for a in data["annotations"] if isinstance(a, dict) and "id" in a}
        next_id = max([i for i in used_ids if isinstance(i, int)], default=0) + 1
        for i, ann in enumerate(data["annotations"]):
            if not isinstance(ann, dict) or not _valid_bbox(ann.get("bbox")) or "category_id" not in ann or "image_id" not in ann:
                self._note("bad_annotation", f"annotations[{i}]")
                continue
            if ann["image_id"] not in images:
                self._note("unknown_image", f"annotation {ann.get('id', i)} (image_id {ann['image_id']})")
                continue
            if ann["category_id"] not in self.cat_to_index:
                self._note("unknown_category", f"annotation {ann.get('id', i)} (category_id {ann['category_id']})")
                continue
            ann = dict(ann)
            # pycocotools' COCOeval needs these fields; fill them as its own tools would.
            if "area" not in ann:
                ann["area"] = float(ann["bbox"][2] * ann["bbox"][3])
                self.issues["filled_area"] += 1
            if "iscrowd" not in ann:
                ann["iscrowd"] = 0
                self.issues["filled_iscrowd"] += 1
            if "id" not in ann:
                ann["id"] = next_id
                next_id += 1
                self.issues["filled_id"] += 1
            gt_annotations.append(ann)
            per_image[ann["image_id"]].append(ann)

        # Ground truth for COCOeval: the validated file (crowd regions included).
        self.gt_dataset = {
            "info": data.get("info", {}),
            "licenses": data.get("licenses", []),
            "images": data["images"],
            "annotations": gt_annotations,
            "categories": data["categories"],
        }

        self.records: List[Dict[str, Any]] = []
        for img in data["images"]:
            path = self.images_dir / str(img["file_name"])
            if not path.is_file():
                self._note("missing_image", str(path))
                continue
            height, width = int(img["height"]), int(img["width"])
            targets = [t for t in (self._target(a, height, width) for a in per_image[img["id"]]) if t is not None]
            if train and not targets and not keep_empty_images:
                self.issues["empty_image"] += 1
                continue
            self.records.append(dict(id=img["id"], path=path, height=height, width=width, targets=targets))

        if self.issues["missing_image"] and not skip_missing_images:
            examples = ", ".join(self._examples["missing_image"][:3])
            raise DataError(
                f"{self.issues['missing_image']} image file(s) listed in {self.ann_file} not found "
                f"(e.g. {examples}); fix the paths or pass --skip-missing-images to leave them out"
            )
        if not self.records:
            raise DataError(f"no usable images in {self.ann_file} (images folder {self.images_dir})")
        if log:
            for line in self.report_lines():
                logger.warning(line)

    # ------------------------------------------------------------------ set-up helpers
    def _note(self, issue: str, example: str) -> None:
        self.issues[issue] += 1
        examples = self._examples.setdefault(issue, [])
        if len(examples) < 3:
            examples.append(example)

    def _target(self, ann: Mapping[str, Any], height: int, width: int) -> Optional[Dict[str, Any]]:
        if ann.get("iscrowd", 0):
            self.issues["crowd"] += 1
            return None
        x, y, w, h = (float(v) for v in ann["bbox"])
        if w <= 0 or h <= 0:
            self._note("zero_size", f"annotation {ann['id']}")
            return None
        x1, y1, x2, y2 = max(x, 0.0), max(y, 0.0), min(x + w, float(width)), min(y + h, float(height))
        if x2 <= x1 or y2 <= y1:
            self._note("outside", f"annotation {ann['id']}")
            return None
        if (x1, y1, x2, y2) != (x, y, x + w, y + h):
            self.issues["clipped"] += 1
        target = dict(box=(x1, y1, x2, y2), label=self.cat_to_index[ann["category_id"]] + self.label_offset)
        if self.with_masks:
            segm = ann.get("segmentation")
            if not self._mask_usable(segm, height, width):
                self._note("no_mask", f"annotation {ann['id']}")
                return None
            target["segmentation"] = segm
        return target

    def _mask_usable(self, segm: Any, height: int, width: int) -> bool:
        # A cheap structural check here; decoding (and the emptiness check) happens per item.
        if isinstance(segm, list):
            ok = [p for p in segm if isinstance(p, (list, tuple)) and len(p) >= 6 and len(p) % 2 == 0]
            if len(ok) != len(segm):
                self.issues["bad_polygon"] += len(segm) - len(ok)
            return bool(ok)
        if isinstance(segm, dict) and "counts" in segm and "size" in segm:
            return list(segm["size"]) == [height, width]
        return False

    def report_lines(self) -> List[str]:
        """One line per kind of data problem found (empty when the split is clean)."""
        lines = []
        for key, text in _ISSUES.items():
            count = self.issues.get(key, 0)
            if count:
                examples = self._examples.get(key)
                more = f" (e.g. {', '.join(examples)})" if examples else ""
                lines.append(f"{self.ann_file.name}: {count} {text}{more}")
        return lines

    # ------------------------------------------------------------------ dataset API
    @property
    def num_classes(self) -> int:
        return len(self.cat_ids)

    @property
    def image_ids(self) -> List[Any]:
        return [r["id"] for r in self.records]

    def coco(self):
        """The ground truth as a ``pycocotools.coco.COCO`` object (quietly built)."""
        from pycocotools.coco import COCO

        coco = COCO()
        coco.dataset = self.gt_dataset
        with contextlib.redirect_stdout(io.StringIO()):
            coco.createIndex()
        return coco

    def __len__(self) -> int:
        return len(self.records)

    def load_image(self, index: int) -> torch.Tensor:
        record = self.records[index]
        image = read_rgb(record["path"])
        if tuple(image.shape[-2:]) != (record["height"], record["width"]):
            raise DataError(
                f"image {record['path']} is {image.shape[-1]}x{image.shape[-2]} but {self.ann_file.name} says "
                f"{record['width']}x{record['height']}"
            )
        return image

    def __getitem__(self, index: int) -> Tuple[Any, Dict[str, Any]]:
        record = self.records[index]
        height, width = record["height"], record["width"]
        image = tv_tensors.Image(self.load_image(index))
        targets = record["targets"]
        masks = None
        if self.with_masks:
            decoded = [decode_segmentation(t["segmentation"], height, width) for t in targets]
            # A polygon can pass the structural check and still cover no pixel; drop it here.
            targets = [t for t, m in zip(targets, decoded) if m is not None]
            masks = [m for m in decoded if m is not None]
        boxes = torch.tensor([t["box"] for t in targets], dtype=torch.float32).reshape(-1, 4)
        target: Dict[str, Any] = {
            "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(height, width)),
            "labels": torch.tensor([t["label"] for t in targets], dtype=torch.int64),
            "image_id": record["id"],
        }
        if self.with_masks:
            stacked = torch.from_numpy(np.stack(masks)) if masks else torch.zeros(0, height, width, dtype=torch.uint8)
            target["masks"] = tv_tensors.Mask(stacked)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target


def train_transforms(flip_prob: float = 0.5) -> v2.Compose:
    """Horizontal flip and conversion to float in [0, 1]; resizing to the 1333 x 800 range and
    normalisation happen inside the model (torchvision's ``GeneralizedRCNNTransform``)."""
    return v2.Compose([v2.RandomHorizontalFlip(flip_prob), v2.ToDtype(torch.float32, scale=True)])


def eval_transforms() -> v2.Compose:
    return v2.Compose([v2.ToDtype(torch.float32, scale=True)])


def _plain(value: Any) -> Any:
    return value.as_subclass(torch.Tensor) if isinstance(value, torch.Tensor) else value


def collate_detection(batch: Sequence[Tuple[Any, Dict[str, Any]]]) -> Tuple[List[torch.Tensor], List[Dict[str, Any]]]:
    """Lists of images and targets (plain tensors, as torchvision detection models take them)."""
    images = [_plain(img) for img, _ in batch]
    targets = [{k: _plain(v) for k, v in t.items()} for _, t in batch]
    return images, targets

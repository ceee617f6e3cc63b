"""The released RetinaNet-LIT and Mask R-CNN-LIT checkpoints (mmdetection 2.x) in litvit.

The LIT project publishes four COCO detectors as assets of its GitHub release ``v2.0``
(:data:`RELEASED_DETECTORS`). They are mmcv checkpoints (``{"meta", "state_dict",
"optimizer"}``, plus ``"amp"`` for LIT-S) whose ``state_dict`` uses mmdetection's names:

=======================================  =================================================
mmdetection                              litvit (torchvision)
=======================================  =================================================
``backbone.*``                           ``backbone.body.*`` (the LIT layouts; ``norm{i}``
                                         -> ``feature_norms.{i}``)
``neck.lateral_convs.i.conv``            ``backbone.fpn.inner_blocks.i.0``
``neck.fpn_convs.i.conv``                ``backbone.fpn.layer_blocks.i.0``; RetinaNet's
                                         ``fpn_convs.3`` / ``.4`` -> ``extra_blocks.p6`` / ``p7``
``bbox_head.cls_convs.i.conv``           ``head.classification_head.conv.i.0``
``bbox_head.reg_convs.i.conv``           ``head.regression_head.conv.i.0``
``bbox_head.retina_cls`` / ``retina_reg`` ``head.classification_head.cls_logits`` /
                                         ``head.regression_head.bbox_reg``
``rpn_head.rpn_conv`` / ``rpn_cls`` /    ``rpn.head.conv.0.0`` / ``cls_logits`` / ``bbox_pred``
``rpn_reg``
``roi_head.bbox_head.shared_fcs.0`` /    ``roi_heads.box_head.fc6`` / ``fc7``
``.1``
``roi_head.bbox_head.fc_cls`` (81 rows,  ``roi_heads.box_predictor.cls_score`` (background
background last)                         first)
``roi_head.bbox_head.fc_reg`` (80 x 4)   ``roi_heads.box_predictor.bbox_pred`` (81 x 4; the
                                         background's 4 rows are zero, never read)
``roi_head.mask_head.convs.i.conv``      ``roi_heads.mask_head.i.0``
``roi_head.mask_head.upsample``          ``roi_heads.mask_predictor.conv5_mask``
``roi_head.mask_head.conv_logits`` (80)  ``roi_heads.mask_predictor.mask_fcn_logits`` (81;
                                         a zero background row, never read)
=======================================  =================================================

Class ``i`` of the released models is the ``i``-th COCO category in id order
(:data:`COCO_CATEGORIES`), as litvit's COCO loader numbers them. The models are built with
``mmdet_compat=True`` (:mod:`litvit.detection.mmdet_compat`) and, for LIT-S, with the
backbone's position tables at the training resolution (800 px), so nothing is resized.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import torch
import torch.nn as nn
from torchvision.models.detection import MaskRCNN

from ..checkpoint import extract_state_dict, read_checkpoint, save_atomic
from ..errors import CheckpointError
from ..mmcv_layout import (
    ConversionReport,
    apply_rules,
    background_first,
    finish_conversion,
    fpn_neck_rules,
    has_prefixes,
    infer_lit_backbone,
    map_lit_backbone,
    mmcv_state_dict,
    prepend_rows,
)
from ..models import DEFAULT_DROP_PATH

__all__ = [
    "RELEASE_URL",
    "ReleasedDetector",
    "RELEASED_DETECTORS",
    "COCO_CATEGORIES",
    "is_released_detector",
    "released_spec",
    "convert_released",
    "load_released_detector",
    "write_converted",
    "release_parameter_count",
    "class_specific",
    "detector_to_fine_tune",
    "checkpoint_spec",
    "release_spec",
]

PathLike = Union[str, os.PathLike]

#: Where the LIT project publishes its checkpoints (release ``v2.0``).
RELEASE_URL = "https://github.com/ziplab/LIT/releases/tag/v2.0"
#: RetinaNet's anchors per location (3 scales x 3 ratios) in the released configs.
RETINA_ANCHORS = 9


@dataclass(frozen=True)
class ReleasedDetector:
    """One released detector with the figures published for it (COCO val2017)."""

    file: str
    arch: str
    model: str
    params_m: float
    box_ap: float
    mask_ap: Optional[float] = None

    @property
    def url(self) -> str:
        return f"https://github.com/ziplab/LIT/releases/download/v2.0/{self.file}"


RELEASED_DETECTORS: Dict[str, ReleasedDetector] = {
    "retina_lit_ti": ReleasedDetector("retina_lit_ti.pth", "retinanet", "lit_ti", 30, 41.6),
    "retina_lit_s": ReleasedDetector("retina_lit_s.pth", "retinanet", "lit_s", 39, 41.6),
    "mask_rcnn_lit_ti": ReleasedDetector("mask_rcnn_lit_ti.pth", "mask_rcnn", "lit_ti", 40, 42.0, 39.1),
    "mask_rcnn_lit_s": ReleasedDetector("mask_rcnn_lit_s.pth", "mask_rcnn", "lit_s", 48, 42.9, 39.6),
}

#: The 80 COCO categories (id, name) in id order: class ``i`` of a COCO-trained model.
COCO_CATEGORIES: Tuple[Tuple[int, str], ...] = tuple(
    zip(
        [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 31, 32, 33,
         34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61,
         62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90],
        ["person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
         "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
         "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
         "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
         "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
         "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
         "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
         "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
         "teddy bear", "hair drier", "toothbrush"],
    )
)

# Layers whose shape follows the class count (left to their initialisation when fine-tuning
# on other classes).
_CLASS_SPECIFIC = (
    "head.classification_head.cls_logits.",
    "roi_heads.box_predictor.",
    "roi_heads.mask_predictor.mask_fcn_logits.",
)


def class_specific(name: str) -> bool:
    """Whether litvit detector tensor ``name`` depends on the number of classes."""
    return name.startswith(_CLASS_SPECIFIC)


def is_released_detector(checkpoint: Any) -> bool:
    """Whether ``checkpoint`` (as read from disk) is an mmdetection RetinaNet / Mask R-CNN."""
    if not isinstance(checkpoint, Mapping):
        return False
    state = checkpoint.get("state_dict", checkpoint)
    return isinstance(state, Mapping) and has_prefixes(state, "backbone.", "neck.") and (
        has_prefixes(state, "bbox_head.") or has_prefixes(state, "rpn_head.", "roi_head.")
    )


def _arch(state_dict: Mapping[str, torch.Tensor]) -> str:
    if "bbox_head.retina_cls.weight" in state_dict:
        return "retinanet"
    if "roi_head.bbox_head.fc_cls.weight" in state_dict:
        return "mask_rcnn"
    raise CheckpointError("an mmdetection checkpoint, but neither a RetinaNet nor a Mask R-CNN")


def released_spec(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, Any]:
    """The litvit ``model_spec`` (arch, LIT size, classes, builder options) of a released detector."""
    arch = _arch(state_dict)
    model_name, backbone_kwargs, _ = infer_lit_backbone(state_dict)
    backbone_kwargs["drop_path_rate"] = DEFAULT_DROP_PATH[model_name]  # the released configs' rates
    if arch == "retinanet":
        num_classes = state_dict["bbox_head.retina_cls.weight"].shape[0] // RETINA_ANCHORS
    else:
        num_classes = state_dict["roi_head.bbox_head.fc_cls.weight"].shape[0] - 1
    return dict(
        arch=arch,
        model_name=model_name,
        num_classes=int(num_classes),
        kwargs=dict(mmdet_compat=True, backbone_kwargs=backbone_kwargs),
    )


def release_spec(name: str) -> Dict[str, Any]:
    """The ``model_spec`` of released detector ``name`` (a :data:`RELEASED_DETECTORS` key), as
    :func:`released_spec` reads it off the file: 80 COCO classes, ``mmdet_compat``, and for LIT-S
    the position tables at the 800-px training resolution."""
    from ..models import MODEL_CONFIGS

    if name not in RELEASED_DETECTORS:
        raise CheckpointError(f"unknown released detector {name!r}; choose from {', '.join(RELEASED_DETECTORS)}")
    entry = RELEASED_DETECTORS[name]
    backbone_kwargs: Dict[str, Any] = {}
    if MODEL_CONFIGS[entry.model].get("pos_embed", "rel") == "rel":
        backbone_kwargs["img_size"] = 800
    backbone_kwargs["drop_path_rate"] = DEFAULT_DROP_PATH[entry.model]
    return dict(arch=entry.arch, model_name=entry.model, num_classes=len(COCO_CATEGORIES),
                kwargs=dict(mmdet_compat=True, backbone_kwargs=backbone_kwargs))


def _head_rules(arch: str) -> List[Tuple[str, str, Any]]:
    if arch == "retinanet":
        return fpn_neck_rules("backbone.fpn", 3, ("backbone.fpn.extra_blocks.p6", "backbone.fpn.extra_blocks.p7")) + [
            (r"^bbox_head\.cls_convs\.(\d+)\.conv\.(weight|bias)$", r"head.classification_head.conv.\1.0.\2", None),
            (r"^bbox_head\.reg_convs\.(\d+)\.conv\.(weight|bias)$", r"head.regression_head.conv.\1.0.\2", None),
            (r"^bbox_head\.retina_cls\.(weight|bias)$", r"head.classification_head.cls_logits.\1", None),
            (r"^bbox_head\.retina_reg\.(weight|bias)$", r"head.regression_head.bbox_reg.\1", None),
        ]
    return fpn_neck_rules("backbone.fpn", 4) + [
        (r"^rpn_head\.rpn_conv\.(weight|bias)$", r"rpn.head.conv.0.0.\1", None),
        (r"^rpn_head\.rpn_cls\.(weight|bias)$", r"rpn.head.cls_logits.\1", None),
        (r"^rpn_head\.rpn_reg\.(weight|bias)$", r"rpn.head.bbox_pred.\1", None),
        (r"^roi_head\.bbox_head\.shared_fcs\.0\.(weight|bias)$", r"roi_heads.box_head.fc6.\1", None),
        (r"^roi_head\.bbox_head\.shared_fcs\.1\.(weight|bias)$", r"roi_heads.box_head.fc7.\1", None),
        (r"^roi_head\.bbox_head\.fc_cls\.(weight|bias)$", r"roi_heads.box_predictor.cls_score.\1", background_first),
        (r"^roi_head\.bbox_head\.fc_reg\.(weight|bias)$", r"roi_heads.box_predictor.bbox_pred.\1", prepend_rows(4)),
        (r"^roi_head\.mask_head\.convs\.(\d+)\.conv\.(weight|bias)$", r"roi_heads.mask_head.\1.0.\2", None),
        (r"^roi_head\.mask_head\.upsample\.(weight|bias)$", r"roi_heads.mask_predictor.conv5_mask.\1", None),
        (r"^roi_head\.mask_head\.conv_logits\.(weight|bias)$", r"roi_heads.mask_predictor.mask_fcn_logits.\1",
         prepend_rows(1)),
    ]


def convert_released(
    state_dict: Mapping[str, torch.Tensor], model: nn.Module, allow_other_classes: bool = False
) -> Tuple[Dict[str, torch.Tensor], ConversionReport]:
    """A released detector's tensors as ``model``'s state dict, with the report of what went where.

    ``model`` must be the architecture the file describes (:func:`released_spec`); with
    ``allow_other_classes`` its class-specific layers may have another class count (they are
    then left as initialised, for fine-tuning).
    """
    arch = _arch(state_dict)
    if arch != getattr(model, "arch", arch):
        raise CheckpointError(f"the checkpoint holds a {arch}, the model is a {model.arch}")
    backbone, used, derived = map_lit_backbone(state_dict, model.backbone.body, "backbone.", "backbone.body.")
    heads, head_used = apply_rules(state_dict, _head_rules(arch))
    return finish_conversion(
        state_dict, {**backbone, **heads}, used + head_used, model, derived,
        class_specific=class_specific if allow_other_classes else (lambda name: False),
    )


def _categories(num_classes: int, meta: Mapping[str, Any]) -> Dict[str, List[Any]]:
    if num_classes == len(COCO_CATEGORIES):
        return {"ids": [i for i, _ in COCO_CATEGORIES], "names": [n for _, n in COCO_CATEGORIES]}
    names = list(meta.get("CLASSES") or [])
    if len(names) != num_classes:
        names = [str(i + 1) for i in range(num_classes)]
    return {"ids": list(range(1, num_classes + 1)), "names": [str(n) for n in names]}


def load_released_detector(
    checkpoint: Any, source: str = "checkpoint", **overrides: Any
) -> Tuple[nn.Module, Dict[str, Any], ConversionReport]:
    """Build the detector a released checkpoint (already read) describes and load it.

    ``overrides`` replace builder arguments (e.g. ``min_size``). Returns the model, the
    metadata litvit checkpoints carry (``model_spec``, ``categories``) and the report;
    any unused, missing or mis-shaped tensor raises :class:`CheckpointError`.
    """
    from .training import build_from_spec

    state_dict, meta = mmcv_state_dict(checkpoint)
    spec = released_spec(state_dict)
    spec["kwargs"] = {**spec["kwargs"], **overrides}
    model = build_from_spec(spec)
    weights, report = convert_released(state_dict, model)
    report.raise_for_problems(source)
    model.load_state_dict(weights)
    info = {"model_spec": spec, "categories": _categories(spec["num_classes"], meta), "config": None,
            "epoch": None, "metrics": None}
    return model, info, report


def write_converted(src: PathLike, dst: PathLike) -> ConversionReport:
    """Convert a released detector file to a litvit detection checkpoint at ``dst``.

    The output carries ``model``, ``model_spec`` and ``categories``, so ``litvit detect eval`` /
    ``predict`` need nothing else. Nothing is written unless every tensor found its place.
    """
    checkpoint = read_checkpoint(src)
    if not is_released_detector(checkpoint):
        raise CheckpointError(f"{src} is not an mmdetection RetinaNet / Mask R-CNN checkpoint")
    model, info, report = load_released_detector(checkpoint, source=str(src))
    save_atomic(
        {"model": model.state_dict(), "model_spec": info["model_spec"], "categories": info["categories"],
         "converted_from": Path(src).name},
        dst,
    )
    return report


def checkpoint_spec(checkpoint: Any, source: str = "checkpoint") -> Dict[str, Any]:
    """The ``model_spec`` of a detector file (already read): a released mmdetection one or a
    litvit checkpoint."""
    if is_released_detector(checkpoint):
        return released_spec(mmcv_state_dict(checkpoint)[0])
    if isinstance(checkpoint, Mapping) and "model_spec" in checkpoint and "model" in checkpoint:
        return dict(checkpoint["model_spec"])
    raise CheckpointError(f"{source} is neither a litvit detection checkpoint nor a released mmdetection one")


def detector_to_fine_tune(
    checkpoint: Any, num_classes: int, source: str = "checkpoint", **overrides: Any
) -> Tuple[nn.Module, Dict[str, Any], ConversionReport]:
    """A whole detector to fine-tune, from a released mmdetection file or a litvit checkpoint
    (already read).

    The file decides the architecture, the backbone and its shape (:func:`checkpoint_spec`);
    ``num_classes`` is the new data's, and with another count than the file's the class-specific
    layers (:func:`class_specific`) start from their initialisation. ``overrides`` replace
    builder arguments (``frozen_stages``, ``min_size``, ...; ``backbone_kwargs`` entries are
    merged). Returns the model, its ``model_spec`` and the report (problems raise
    :class:`CheckpointError`).
    """
    from .training import build_from_spec

    spec = checkpoint_spec(checkpoint, source)
    kwargs = dict(spec.get("kwargs", {}))
    backbone_kwargs = {**kwargs.get("backbone_kwargs", {}), **overrides.pop("backbone_kwargs", {})}
    spec = dict(spec, num_classes=int(num_classes), kwargs={**kwargs, **overrides, "backbone_kwargs": backbone_kwargs})
    model = build_from_spec(spec)
    if is_released_detector(checkpoint):
        state_dict, report = convert_released(mmcv_state_dict(checkpoint)[0], model, allow_other_classes=True)
    else:
        weights = extract_state_dict(checkpoint)
        state_dict, report = finish_conversion(weights, weights, weights.keys(), model, class_specific=class_specific)
    report.raise_for_problems(source)
    # The re-initialised class layers (another class count) are the only ones left out.
    model.load_state_dict(state_dict, strict=False)
    return model, spec, report


def release_parameter_count(model: nn.Module) -> int:
    """Parameters of ``model`` counted as the released mmdetection model counts its own.

    torchvision's Mask R-CNN carries a background row in its box regression (4 outputs) and
    mask classifier that mmdetection's heads do not have; the released LIT-Ti keeps the
    class slot (one entry) of its last position embedding, which litvit's dense backbone drops.
    """
    count = sum(p.numel() for p in model.parameters())
    body = model.backbone.body
    if body.pos_embed_type == "abs":
        count += body.embed_dims[-1]
    if isinstance(model, MaskRCNN):
        box = model.roi_heads.box_predictor.bbox_pred
        logits = model.roi_heads.mask_predictor.mask_fcn_logits
        count -= 4 * (box.in_features + 1) + logits.in_channels + 1
    return count

"""The released Semantic FPN-LIT checkpoints (mmsegmentation 0.x) in litvit.

The LIT project publishes two ADE20K segmenters as assets of its GitHub release ``v2.0``
(:data:`RELEASED_SEGMENTERS`). They are mmcv checkpoints (``{"meta", "state_dict",
"optimizer"}``) whose ``state_dict`` uses mmsegmentation's names:

=============================================  ==========================================
mmsegmentation                                 litvit
=============================================  ==========================================
``backbone.*``                                 ``backbone.*`` (the LIT layouts; ``norm{i}``
                                               -> ``feature_norms.{i}``)
``neck.lateral_convs.i.conv``                  ``fpn.inner_blocks.i.0``
``neck.fpn_convs.i.conv``                      ``fpn.layer_blocks.i.0``
``decode_head.scale_heads.L.(2k).conv`` /      ``decode_head.scale_heads.L.(4k)`` /
``.bn``                                        ``.(4k + 1)`` (litvit's blocks are conv, BN,
                                               ReLU, upsample; mmseg's ConvModule, upsample)
``decode_head.conv_seg``                       ``decode_head.classifier``
=============================================  ==========================================

The released LIT-S backbone normalises all four outputs (``norm0``..``norm3``); its relative
position tables are stored for 512 px and load unresized. The LIT-Ti backbone keeps its
224-px absolute embeddings, interpolated to each input at run time as the release does.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Tuple, Union

import torch
import torch.nn as nn

from ..checkpoint import extract_state_dict, read_checkpoint, save_atomic
from ..errors import CheckpointError
from ..mmcv_layout import (
    ConversionReport,
    apply_rules,
    finish_conversion,
    fpn_neck_rules,
    has_prefixes,
    infer_lit_backbone,
    map_lit_backbone,
    mmcv_state_dict,
)
from .models import SemanticFPN, model_config, semantic_fpn_lit

__all__ = [
    "ReleasedSegmenter",
    "RELEASED_SEGMENTERS",
    "is_released_segmenter",
    "released_model_config",
    "convert_released",
    "load_released_segmenter",
    "write_converted",
    "class_specific",
    "release_parameter_count",
    "segmenter_to_fine_tune",
    "release_model_config",
]

PathLike = Union[str, os.PathLike]

# The released ADE20K test pipeline: resize to fit 2048 x 512 (keep ratio), whole image.
ADE20K_TEST_SCALE = (2048, 512)


@dataclass(frozen=True)
class ReleasedSegmenter:
    """One released segmenter with the figure published for it (ADE20K val, single scale)."""

    file: str
    model: str
    params_m: float
    miou: float

    @property
    def url(self) -> str:
        return f"https://github.com/ziplab/LIT/releases/download/v2.0/{self.file}"


RELEASED_SEGMENTERS: Dict[str, ReleasedSegmenter] = {
    "sem_fpn_lit_ti": ReleasedSegmenter("sem_fpn_lit_ti.pth", "lit_ti", 24, 41.3),
    "sem_fpn_lit_s": ReleasedSegmenter("sem_fpn_lit_s.pth", "lit_s", 32, 41.7),
}

_CLASS_SPECIFIC = ("decode_head.classifier.",)


def class_specific(name: str) -> bool:
    """Whether litvit segmenter tensor ``name`` depends on the number of classes."""
    return name.startswith(_CLASS_SPECIFIC)


def is_released_segmenter(checkpoint: Any) -> bool:
    """Whether ``checkpoint`` (as read from disk) is an mmsegmentation Semantic FPN with a LIT backbone."""
    if not isinstance(checkpoint, Mapping):
        return False
    state = checkpoint.get("state_dict", checkpoint)
    return isinstance(state, Mapping) and has_prefixes(state, "backbone.", "neck.", "decode_head.scale_heads.")


def released_model_config(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, Any]:
    """The :func:`~litvit.segmentation.models.semantic_fpn_lit` arguments of a released segmenter."""
    model_name, backbone_kwargs, normed = infer_lit_backbone(state_dict)
    if "decode_head.conv_seg.weight" not in state_dict:
        raise CheckpointError("an mmsegmentation checkpoint without decode_head.conv_seg: not a Semantic FPN")
    num_classes = int(state_dict["decode_head.conv_seg.weight"].shape[0])
    head_channels = int(state_dict["decode_head.conv_seg.weight"].shape[1])
    fpn_channels = int(state_dict["neck.fpn_convs.0.conv.weight"].shape[0])
    return model_config(model_name, num_classes, fpn_channels=fpn_channels, head_channels=head_channels,
                        norm_all_stages=normed == [0, 1, 2, 3], **backbone_kwargs)


def release_model_config(name: str) -> Dict[str, Any]:
    """The :func:`semantic_fpn_lit` arguments of released segmenter ``name`` (a
    :data:`RELEASED_SEGMENTERS` key), as :func:`released_model_config` reads them off the file:
    150 ADE20K classes; for LIT-S all four output norms and the tables at 512 px."""
    from ..models import MODEL_CONFIGS

    if name not in RELEASED_SEGMENTERS:
        raise CheckpointError(f"unknown released segmenter {name!r}; choose from {', '.join(RELEASED_SEGMENTERS)}")
    model = RELEASED_SEGMENTERS[name].model
    relative = MODEL_CONFIGS[model].get("pos_embed", "rel") == "rel"
    extra: Dict[str, Any] = dict(img_size=512) if relative else {}
    return model_config(model, 150, fpn_channels=256, head_channels=128, norm_all_stages=relative, **extra)


def _head_rules() -> List[Tuple[str, str, Any]]:
    def block(level: int, conv_index: int) -> int:
        # mmseg: [ConvModule, Upsample] per block (level 0: ConvModule only); litvit: [Conv, BN, ReLU, Upsample].
        return (conv_index // 2) * 4

    rules = fpn_neck_rules("fpn", 4)
    for level in range(4):
        for k in range(max(1, level)):
            src, dst = f"decode_head\\.scale_heads\\.{level}\\.{2 * k}", f"decode_head.scale_heads.{level}.{block(level, 2 * k)}"
            rules.append((rf"^{src}\.conv\.weight$", f"{dst}.weight", None))
            rules.append((rf"^{src}\.bn\.(weight|bias|running_mean|running_var|num_batches_tracked)$",
                          f"decode_head.scale_heads.{level}.{block(level, 2 * k) + 1}.\\1", None))
    rules.append((r"^decode_head\.conv_seg\.(weight|bias)$", r"decode_head.classifier.\1", None))
    return rules


def convert_released(
    state_dict: Mapping[str, torch.Tensor], model: SemanticFPN, allow_other_classes: bool = False
) -> Tuple[Dict[str, torch.Tensor], ConversionReport]:
    """A released segmenter's tensors as ``model``'s state dict, with the report of what went where.

    With ``allow_other_classes`` the classifier may have another class count (it is then left
    as initialised, for fine-tuning).
    """
    backbone, used, derived = map_lit_backbone(state_dict, model.backbone, "backbone.", "backbone.")
    heads, head_used = apply_rules(state_dict, _head_rules())
    return finish_conversion(
        state_dict, {**backbone, **heads}, used + head_used, model, derived,
        class_specific=class_specific if allow_other_classes else (lambda name: False),
    )


def _dataset(num_classes: int, meta: Mapping[str, Any]) -> Dict[str, Any]:
    names = [str(n) for n in (meta.get("CLASSES") or [])]
    if len(names) != num_classes:
        names = [f"class_{i}" for i in range(num_classes)]
    # ADE20K's convention: label 0 ("other") is ignored and class c is stored as c + 1.
    return {"num_classes": num_classes, "reduce_zero_label": True, "ignore_index": 255, "class_names": names}


def load_released_segmenter(
    checkpoint: Any, source: str = "checkpoint"
) -> Tuple[SemanticFPN, Dict[str, Any], ConversionReport]:
    """Build the Semantic FPN-LIT a released checkpoint (already read) describes and load it.

    Returns the model (eval mode), the metadata litvit checkpoints carry (``model_config``,
    ``dataset`` with ADE20K's label convention, ``config`` with the released test scale) and the
    report; any unused, missing or mis-shaped tensor raises :class:`CheckpointError`.
    """
    state_dict, meta = mmcv_state_dict(checkpoint)
    config = released_model_config(state_dict)
    model = semantic_fpn_lit(**config)
    weights, report = convert_released(state_dict, model)
    report.raise_for_problems(source)
    model.load_state_dict(weights)
    info = {"model_config": config, "dataset": _dataset(config["num_classes"], meta),
            "config": {"test_scale": list(ADE20K_TEST_SCALE)}, "iteration": None}
    return model.eval(), info, report


def write_converted(src: PathLike, dst: PathLike) -> ConversionReport:
    """Convert a released segmenter file to a litvit segmentation checkpoint at ``dst``.

    The output carries ``model``, ``model_config``, ``dataset`` and the test scale, so
    ``litvit segment eval`` / ``predict`` need nothing else. Nothing is written unless every
    tensor found its place.
    """
    checkpoint = read_checkpoint(src)
    if not is_released_segmenter(checkpoint):
        raise CheckpointError(f"{src} is not an mmsegmentation Semantic FPN checkpoint with a LIT backbone")
    model, info, report = load_released_segmenter(checkpoint, source=str(src))
    save_atomic({"model": model.state_dict(), **info, "task": "segment", "converted_from": Path(src).name}, dst)
    return report


def segmenter_to_fine_tune(
    checkpoint: Any, num_classes: int, source: str = "checkpoint", **overrides: Any
) -> Tuple[SemanticFPN, Dict[str, Any], ConversionReport]:
    """A whole Semantic FPN-LIT to fine-tune, from a released mmsegmentation file or a litvit
    checkpoint (already read).

    The file decides the backbone, its shape and the head widths; ``num_classes`` is the new
    data's, and with another count than the file's the classifier starts from its
    initialisation. ``overrides`` replace :func:`semantic_fpn_lit` arguments (``drop_path_rate``,
    ``dropout``). Returns the model, its ``model_config`` and the report (problems raise
    :class:`CheckpointError`).
    """
    if is_released_segmenter(checkpoint):
        weights, _ = mmcv_state_dict(checkpoint)
        config = released_model_config(weights)
    elif isinstance(checkpoint, Mapping) and "model_config" in checkpoint and "model" in checkpoint:
        weights = extract_state_dict(checkpoint)
        config = dict(checkpoint["model_config"])
    else:
        raise CheckpointError(f"{source} is neither a litvit segmentation checkpoint nor a released mmsegmentation one")
    config = {**config, **overrides, "num_classes": int(num_classes)}
    config.pop("backbone_checkpoint", None)
    model = semantic_fpn_lit(**config)
    if is_released_segmenter(checkpoint):
        state_dict, report = convert_released(weights, model, allow_other_classes=True)
    else:
        state_dict, report = finish_conversion(weights, weights, weights.keys(), model, class_specific=class_specific)
    report.raise_for_problems(source)
    # The re-initialised classifier (another class count) is the only one left out.
    model.load_state_dict(state_dict, strict=False)
    return model, config, report


def release_parameter_count(model: nn.Module) -> int:
    """Parameters of ``model`` counted as the released mmsegmentation model counts its own: the
    released LIT-Ti keeps the class slot (one entry per channel) of its last position embedding,
    which litvit's dense backbone drops."""
    count = sum(p.numel() for p in model.parameters())
    if getattr(model.backbone, "pos_embed_type", "rel") == "abs":
        count += model.backbone.embed_dims[-1]
    return count

"""Checkpoints written by mmcv (mmdetection 2.x, mmsegmentation 0.x) with a LIT backbone.

Shared by the detection and segmentation converters (``litvit.detection.released``,
``litvit.segmentation.released``):

- the file: ``{"meta", "state_dict", "optimizer"}`` (plus ``"amp"`` for runs with apex); only
  the tensors of ``state_dict`` are read, the rest is ignored;
- the backbone under ``backbone.``: the released dense LIT-Ti (no class token, final norm or
  head; ``pos_embed4`` keeps its class slot) or LIT-S/M/B (output norms ``norm{i}``, relative
  position tables stored at the training resolution), recognised from the tensors themselves;
- the FPN neck (``neck.lateral_convs.i.conv``, ``neck.fpn_convs.i.conv``);
- :class:`ConversionReport`: every released tensor is mapped once or reported unused, every
  tensor of the target model is filled or reported missing, shapes are checked.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from .errors import CheckpointError
from .models import LIT, MODEL_CONFIGS, checkpoint_filter_fn

__all__ = [
    "mmcv_state_dict",
    "has_prefixes",
    "infer_lit_backbone",
    "map_lit_backbone",
    "fpn_neck_rules",
    "apply_rules",
    "ConversionReport",
    "finish_conversion",
    "background_first",
    "prepend_rows",
]

Tensor = torch.Tensor
#: A rule: a regex over released names, its replacement, and a transform of the tensor.
Rule = Tuple[str, str, Optional[Callable[[Tensor], Tensor]]]


def mmcv_state_dict(checkpoint: Any) -> Tuple[Dict[str, Tensor], Dict[str, Any]]:
    """The tensors of an mmcv checkpoint's ``state_dict`` (or of a bare state dict) and its ``meta``.

    ``optimizer``, ``amp`` and every non-tensor entry are ignored; a DDP ``module.`` prefix
    is removed.
    """
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(f"checkpoint holds a {type(checkpoint).__name__}, not a state dict")
    state = checkpoint.get("state_dict", checkpoint)
    if not isinstance(state, Mapping):
        raise CheckpointError("the checkpoint's 'state_dict' entry is not a state dict")
    tensors = {k: v for k, v in state.items() if torch.is_tensor(v)}
    if tensors and all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    meta = checkpoint.get("meta") if isinstance(checkpoint.get("meta"), Mapping) else {}
    return tensors, dict(meta)


def has_prefixes(state_dict: Mapping[str, Any], *prefixes: str) -> bool:
    """Whether every one of ``prefixes`` starts at least one key."""
    return all(any(k.startswith(p) for k in state_dict) for p in prefixes)


def _count(state_dict: Mapping[str, Tensor], pattern: str) -> int:
    indices = {int(m.group(1)) for k in state_dict for m in [re.match(pattern, k)] if m}
    return max(indices) + 1 if indices else 0


def infer_lit_backbone(state_dict: Mapping[str, Tensor], prefix: str = "backbone.") -> Tuple[str, Dict[str, Any], List[int]]:
    """LIT size, builder options and the stages with an output norm, read off a released backbone.

    Returns ``(model_name, backbone_kwargs, normed_stages)``: ``backbone_kwargs`` holds the
    ``img_size`` at which LIT-S/M/B stored their relative position tables (so that they load
    unchanged); ``normed_stages`` lists ``i`` for every ``norm{i}`` output norm.
    """
    sd = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    if "pos_embed1" in sd and "patch_embed1.proj.weight" in sd:
        dims = [sd[f"patch_embed{i}.proj.weight" if i == 1 else f"patch_embed{i}.dconv.weight"].shape[0] for i in range(1, 5)
                if f"patch_embed{i}.proj.weight" in sd or f"patch_embed{i}.dconv.weight" in sd]
        depths = [_count(sd, rf"^block{i}\.(\d+)\.") for i in range(1, 5)]
        pos_embed = "abs"
        kwargs: Dict[str, Any] = {}
    elif "patch_embed.proj.weight" in sd and "layers.0.blocks.0.mlp.fc1.weight" in sd:
        width = sd["patch_embed.proj.weight"].shape[0]
        num_stages = _count(sd, r"^layers\.(\d+)\.")
        dims = [width * 2**i for i in range(num_stages)]
        depths = [_count(sd, rf"^layers\.{i}\.blocks\.(\d+)\.") for i in range(num_stages)]
        pos_embed = "rel"
        table = sd.get("layers.2.blocks.0.attn.relative_position_bias_table")
        if table is None:
            raise CheckpointError(f"no relative position table under {prefix}layers.2: not a LIT backbone")
        side = (math.isqrt(table.shape[0]) + 1) // 2  # (2g - 1)^2 entries for a g x g grid
        kwargs = {"img_size": side * 16}  # stage 3 has stride 16
    else:
        raise CheckpointError(f"no LIT backbone under '{prefix}' (neither the LIT-Ti nor the LIT-S/M/B layout)")
    for name, config in MODEL_CONFIGS.items():
        if (config.get("pos_embed", "rel") == pos_embed and list(config["embed_dims"]) == dims
                and list(config["depths"]) == depths):
            break
    else:
        raise CheckpointError(f"the backbone (widths {dims}, depths {depths}) is none of {', '.join(MODEL_CONFIGS)}")
    normed = sorted(int(m.group(1)) for k in sd for m in [re.match(r"^norm(\d+)\.weight$", k)] if m)
    return name, kwargs, normed


def map_lit_backbone(
    state_dict: Mapping[str, Tensor], backbone: LIT, src_prefix: str = "backbone.", dst_prefix: str = "backbone."
) -> Tuple[Dict[str, Tensor], List[str], List[str]]:
    """Released backbone tensors under ``src_prefix`` -> ``backbone``'s names under ``dst_prefix``.

    The names, the class slot of LIT-Ti's last position embedding and position tables stored
    for another resolution are handled by :func:`litvit.models.checkpoint_filter_fn`; the
    output norms ``norm{i}`` become ``feature_norms.{i}``. Returns ``(tensors, used, derived)``:
    the released keys consumed, and the derived buffers (relative position indices) the model
    rebuilds itself.
    """
    sub = {}
    for key, value in state_dict.items():
        if key.startswith(src_prefix):
            name = key[len(src_prefix):]
            sub[re.sub(r"^norm(\d+)\.", r"feature_norms.\1.", name)] = value
    derived = [src_prefix + k for k in sub if k.endswith(("relative_position_index", "attn_mask"))]
    mapped = checkpoint_filter_fn(sub, backbone)
    used = [k for k in state_dict if k.startswith(src_prefix) and k not in derived]
    return {dst_prefix + k: v for k, v in mapped.items()}, used, derived


def fpn_neck_rules(dst: str, num_levels: int, extra: Sequence[str] = ()) -> List[Rule]:
    """mmdetection / mmsegmentation ``FPN`` -> torchvision ``FeaturePyramidNetwork`` at ``dst``.

    ``fpn_convs.{num_levels + j}`` (RetinaNet's extra convolutions) go to ``extra[j]``.
    """
    rules: List[Rule] = [
        (r"^neck\.lateral_convs\.(\d+)\.conv\.(weight|bias)$", rf"{dst}.inner_blocks.\1.0.\2", None),
    ]
    for level in range(num_levels):
        rules.append((rf"^neck\.fpn_convs\.{level}\.conv\.(weight|bias)$", rf"{dst}.layer_blocks.{level}.0.\1", None))
    for j, name in enumerate(extra):
        rules.append((rf"^neck\.fpn_convs\.{num_levels + j}\.conv\.(weight|bias)$", rf"{name}.\1", None))
    return rules


def apply_rules(state_dict: Mapping[str, Tensor], rules: Iterable[Rule]) -> Tuple[Dict[str, Tensor], List[str]]:
    """Rename (and transform) every key that matches a rule (the first that matches); returns the
    new tensors and the released keys consumed."""
    rules = [(re.compile(pattern), repl, fn) for pattern, repl, fn in rules]
    out: Dict[str, Tensor] = {}
    used: List[str] = []
    for key, value in state_dict.items():
        for pattern, repl, fn in rules:
            if pattern.match(key):
                out[pattern.sub(repl, key)] = fn(value) if fn is not None else value
                used.append(key)
                break
    return out, used


def background_first(scores: Tensor) -> Tensor:
    """mmdetection's softmax classifier rows (K classes, background last) -> torchvision's
    (background first, then the K classes in the same order)."""
    return torch.cat([scores[-1:], scores[:-1]])


def prepend_rows(rows: int) -> Callable[[Tensor], Tensor]:
    """Zero rows in front: the background entries torchvision's class-specific layers carry
    and mmdetection's do not (never read: torchvision skips class 0 in both the loss and the
    predictions)."""

    def fn(tensor: Tensor) -> Tensor:
        return torch.cat([tensor.new_zeros((rows, *tensor.shape[1:])), tensor])

    return fn


@dataclass
class ConversionReport:
    """What a conversion did with each tensor: ``mapped`` counts the model tensors filled from
    the file, ``unused`` names file tensors that went nowhere, ``missing`` model tensors that
    stayed unfilled; ``reinitialised`` (fine-tuning on other classes) and ``derived`` are
    expected and not problems."""

    mapped: int = 0
    unused: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    misshaped: List[str] = field(default_factory=list)
    reinitialised: List[str] = field(default_factory=list)
    derived: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.unused or self.missing or self.misshaped)

    def summary(self) -> str:
        return f"{self.mapped} mapped, {len(self.unused)} unused, {len(self.missing)} missing"

    def lines(self) -> List[str]:
        """Every problem and note, one per line, then :meth:`summary`."""
        out = [f"unused: {k}" for k in self.unused] + [f"missing: {k}" for k in self.missing]
        out += [f"mis-shaped: {k}" for k in self.misshaped]
        out += [f"re-initialised (other class count): {k}" for k in self.reinitialised]
        if self.derived:
            out.append(f"{len(self.derived)} derived buffer(s) skipped (rebuilt by the model)")
        return out + [self.summary()]

    def raise_for_problems(self, source: str) -> None:
        """A one-line :class:`CheckpointError` naming the first problems, unless there are none."""
        if self.ok:
            return
        parts = []
        for label, names in (("unused", self.unused), ("missing", self.missing), ("mis-shaped", self.misshaped)):
            if names:
                shown = ", ".join(names[:4]) + (f", ... (+{len(names) - 4} more)" if len(names) > 4 else "")
                parts.append(f"{len(names)} {label} ({shown})")
        raise CheckpointError(f"{source} does not fit the model: " + "; ".join(parts))


def finish_conversion(
    state_dict: Mapping[str, Tensor],
    converted: Mapping[str, Tensor],
    used: Iterable[str],
    model: nn.Module,
    derived: Iterable[str] = (),
    class_specific: Callable[[str], bool] = lambda name: False,
) -> Tuple[Dict[str, Tensor], ConversionReport]:
    """Check ``converted`` against ``model`` and account for every released tensor.

    A tensor whose shape differs is a problem, except for the names ``class_specific``
    accepts (classifier layers when the model has another class count): those are left to
    the model's initialisation and listed as re-initialised.
    """
    used, derived = set(used), list(derived)
    report = ConversionReport(derived=derived)
    target = model.state_dict()
    out: Dict[str, Tensor] = {}
    for name, value in converted.items():
        if name not in target:
            report.unused.append(name)
        elif tuple(value.shape) == tuple(target[name].shape):
            out[name] = value
        elif class_specific(name):
            report.reinitialised.append(name)
        else:
            report.misshaped.append(f"{name} {tuple(value.shape)} vs {tuple(target[name].shape)}")
    report.unused += [k for k in state_dict if k not in used and k not in derived]
    report.missing = [k for k in target if k not in out and k not in report.reinitialised
                      and not any(m.startswith(k + " ") for m in report.misshaped)]
    report.mapped = len(out)
    return out, report

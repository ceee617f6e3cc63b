"""Random state dicts in the layouts of the released dense checkpoints, at full size.

Written from the facts about the release, independently of litvit's converters: the LIT
backbone keys come from the released classification layouts (``tests/data/released_keys``)
as the dense backbones change them (LIT-Ti: no class token, final norm or head, ``pos_embed4``
keeps its class slot; LIT-S: output norms, relative position tables at the training
resolution, no index buffers); neck and heads from the released mmdetection 2.x /
mmsegmentation 0.x configs. Saved as mmcv saves (``{"meta", "state_dict", "optimizer"}``
plus ``"amp"`` for LIT-S).
"""
from __future__ import annotations

import ast
from collections import OrderedDict
from pathlib import Path
from typing import Dict, List, Tuple

import torch

WIDTHS = {"lit_ti": (64, 128, 320, 512), "lit_s": (96, 192, 384, 768)}
#: file name -> (task, arch, LIT size)
LAYOUTS = {
    "retina_lit_ti": ("detect", "retinanet", "lit_ti"),
    "retina_lit_s": ("detect", "retinanet", "lit_s"),
    "mask_rcnn_lit_ti": ("detect", "mask_rcnn", "lit_ti"),
    "mask_rcnn_lit_s": ("detect", "mask_rcnn", "lit_s"),
    "sem_fpn_lit_ti": ("segment", "sem_fpn", "lit_ti"),
    "sem_fpn_lit_s": ("segment", "sem_fpn", "lit_s"),
}


def read_layout(path: Path) -> List[Tuple[str, Tuple[int, ...], str]]:
    rows = []
    for line in path.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, shape, dtype = line.split("\t")
        rows.append((name, tuple(ast.literal_eval(shape)), dtype))
    return rows


def _norm(sd: Dict[str, Tuple[int, ...]], name: str, dim: int) -> None:
    sd[f"{name}.weight"] = (dim,)
    sd[f"{name}.bias"] = (dim,)


def _bn(sd: Dict[str, Tuple[int, ...]], name: str, dim: int) -> None:
    _norm(sd, name, dim)
    sd[f"{name}.running_mean"] = (dim,)
    sd[f"{name}.running_var"] = (dim,)
    sd[f"{name}.num_batches_tracked"] = ()


def _conv(sd: Dict[str, Tuple[int, ...]], name: str, cout: int, cin: int, k: int, bias: bool = True) -> None:
    sd[f"{name}.weight"] = (cout, cin, k, k)
    if bias:
        sd[f"{name}.bias"] = (cout,)


def backbone_shapes(keys_dir: Path, size: str, task: str) -> Dict[str, Tuple[int, ...]]:
    """``backbone.*`` of the dense LIT backbone: detection at 800 px, segmentation at 512 px."""
    sd: Dict[str, Tuple[int, ...]] = {}
    for name, shape, _ in read_layout(keys_dir / f"official_state_dict_{size}.txt"):
        if name in ("cls_token",) or name.startswith(("norm.", "head.")) or name.endswith("relative_position_index"):
            continue
        if name.endswith("relative_position_bias_table"):
            stage = int(name.split(".")[1])
            grid = (800 if task == "detect" else 512) // (4 * 2**stage)
            shape = ((2 * grid - 1) ** 2, shape[1])
        sd[f"backbone.{name}"] = shape
    if size == "lit_s":
        for i in (range(1, 4) if task == "detect" else range(4)):
            _norm(sd, f"backbone.norm{i}", WIDTHS[size][i])
    return sd


def neck_shapes(size: str, levels: range, extra_from_c5: bool) -> Dict[str, Tuple[int, ...]]:
    sd: Dict[str, Tuple[int, ...]] = {}
    widths = WIDTHS[size]
    for j, level in enumerate(levels):
        _conv(sd, f"neck.lateral_convs.{j}.conv", 256, widths[level], 1)
    for j in range(len(levels)):
        _conv(sd, f"neck.fpn_convs.{j}.conv", 256, 256, 3)
    if extra_from_c5:  # add_extra_convs='on_input': P6 from C5, then P7 from P6
        _conv(sd, f"neck.fpn_convs.{len(levels)}.conv", 256, widths[-1], 3)
        _conv(sd, f"neck.fpn_convs.{len(levels) + 1}.conv", 256, 256, 3)
    return sd


def head_shapes(arch: str) -> Dict[str, Tuple[int, ...]]:
    sd: Dict[str, Tuple[int, ...]] = {}
    if arch == "retinanet":
        for i in range(4):
            _conv(sd, f"bbox_head.cls_convs.{i}.conv", 256, 256, 3)
            _conv(sd, f"bbox_head.reg_convs.{i}.conv", 256, 256, 3)
        _conv(sd, "bbox_head.retina_cls", 9 * 80, 256, 3)
        _conv(sd, "bbox_head.retina_reg", 9 * 4, 256, 3)
    elif arch == "mask_rcnn":
        _conv(sd, "rpn_head.rpn_conv", 256, 256, 3)
        _conv(sd, "rpn_head.rpn_cls", 3, 256, 1)
        _conv(sd, "rpn_head.rpn_reg", 12, 256, 1)
        sd["roi_head.bbox_head.shared_fcs.0.weight"], sd["roi_head.bbox_head.shared_fcs.0.bias"] = (1024, 256 * 49), (1024,)
        sd["roi_head.bbox_head.shared_fcs.1.weight"], sd["roi_head.bbox_head.shared_fcs.1.bias"] = (1024, 1024), (1024,)
        sd["roi_head.bbox_head.fc_cls.weight"], sd["roi_head.bbox_head.fc_cls.bias"] = (81, 1024), (81,)
        sd["roi_head.bbox_head.fc_reg.weight"], sd["roi_head.bbox_head.fc_reg.bias"] = (320, 1024), (320,)
        for i in range(4):
            _conv(sd, f"roi_head.mask_head.convs.{i}.conv", 256, 256, 3)
        _conv(sd, "roi_head.mask_head.upsample", 256, 256, 2)  # ConvTranspose2d: (in, out, k, k)
        _conv(sd, "roi_head.mask_head.conv_logits", 80, 256, 1)
    else:  # mmseg FPNHead: Sequential(ConvModule, Upsample, ConvModule, Upsample, ...) per level
        for level in range(4):
            for k in range(max(1, level)):
                name = f"decode_head.scale_heads.{level}.{2 * k}"
                _conv(sd, f"{name}.conv", 128, 256 if k == 0 else 128, 3, bias=False)
                _bn(sd, f"{name}.bn", 128)
        _conv(sd, "decode_head.conv_seg", 150, 128, 1)
    return sd


def released_shapes(keys_dir: Path, name: str) -> Dict[str, Tuple[int, ...]]:
    task, arch, size = LAYOUTS[name]
    sd = backbone_shapes(keys_dir, size, task)
    if arch == "retinanet":
        sd.update(neck_shapes(size, range(1, 4), extra_from_c5=True))
    else:
        sd.update(neck_shapes(size, range(4), extra_from_c5=False))
    sd.update(head_shapes(arch))
    return sd


def random_state_dict(shapes: Dict[str, Tuple[int, ...]], seed: int = 0) -> "OrderedDict[str, torch.Tensor]":
    g = torch.Generator().manual_seed(seed)
    out = OrderedDict()
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            out[key] = torch.tensor(1000, dtype=torch.int64)
        elif key.endswith("running_var"):
            out[key] = torch.rand(shape, generator=g) + 0.5
        else:
            out[key] = torch.randn(shape, generator=g) * 0.02
    return out


def save_like_mmcv(state_dict: "OrderedDict[str, torch.Tensor]", path: Path, with_amp: bool) -> Path:
    first = next(iter(state_dict.values()))
    checkpoint = {
        "meta": {"mmcv_version": "1.2.4", "time": "Thu Jun  3 10:00:00 2021", "epoch": 12, "iter": 87960,
                 "CLASSES": tuple(f"class{i}" for i in range(80))},
        "state_dict": state_dict,
        "optimizer": {"state": {0: {"step": 87960, "exp_avg": torch.zeros_like(first), "exp_avg_sq": torch.zeros_like(first)}},
                      "param_groups": [{"lr": 1e-6, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 1e-4,
                                        "amsgrad": False, "params": [0]}]},
    }
    if with_amp:
        checkpoint["amp"] = {"loss_scaler0": {"loss_scale": 65536.0, "unskipped": 12}}
    torch.save(checkpoint, path)
    return path


def parameter_count(shapes: Dict[str, Tuple[int, ...]]) -> int:
    """Parameters as the released model counts them (buffers left out)."""
    total = 0
    for key, shape in shapes.items():
        if key.endswith(("running_mean", "running_var", "num_batches_tracked")):
            continue
        n = 1
        for s in shape:
            n *= s
        total += n
    return total

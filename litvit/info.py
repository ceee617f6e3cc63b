"""``litvit info``: parameters and multiply-accumulates of the LIT and LITv2 models beside the papers'.

Operations are counted by running the model once under
:class:`torch.utils.flop_counter.FlopCounterMode`, which has formulas for convolutions,
matrix products and scaled-dot-product attention. A DTM is a 2x2 offset convolution
(counted as a convolution), bilinear sampling (``aten.grid_sampler_2d``, which has no
formula in torch; :func:`grid_sample_flop` supplies one) and the deformable kernel's
matrix product (counted as ``mm``). The paper counts each DTM as its two convolutions,
so the sampling is reported in its own column and kept out of the GMACs.
"""
from __future__ import annotations

import argparse
import json
from typing import Any, Dict, List, Sequence, Tuple, Union

from .errors import LitvitError

__all__ = ["PAPER", "grid_sample_flop", "count_model", "count_released_dense", "add_parser"]

# Paper (Table 2 of arXiv:2105.14217): parameters in millions and GMACs at 224 x 224.
PAPER: Dict[str, Tuple[float, float]] = {
    "lit_ti": (19.0, 3.6),
    "lit_s": (27.0, 4.1),
    "lit_m": (48.0, 8.6),
    "lit_b": (86.0, 15.0),
    # LITv2 (Table 1 of arXiv:2205.13213).
    "litv2_s": (28.0, 3.7),
    "litv2_m": (49.0, 7.5),
    "litv2_b": (87.0, 13.2),
}

# One bilinear sample per output value: four weighted corners, i.e. 4 multiply-accumulates.
_SAMPLE_MACS = 4


def grid_sample_flop(
    input_shape: Sequence[int], grid_shape: Sequence[int], *args: Any, out_shape: Sequence[int], **kwargs: Any
) -> int:
    """FLOPs of ``aten.grid_sampler_2d`` (bilinear): 2 x 4 multiply-accumulates per output value.

    The corner weights depend on the position only, not the channel, so their cost
    (a few operations per sampling point) is left out, like the bias adds of a convolution.
    """
    numel = 1
    for size in out_shape:
        numel *= int(size)
    return 2 * _SAMPLE_MACS * numel


def _img_size(value: Union[int, Sequence[int]]) -> Tuple[int, int]:
    if isinstance(value, int):
        return value, value
    sizes = [int(v) for v in value]
    if len(sizes) == 1:
        return sizes[0], sizes[0]
    if len(sizes) == 2:
        return sizes[0], sizes[1]
    raise LitvitError(f"--img-size takes one size or HEIGHT WIDTH, got {len(sizes)} values")


def count_model(name: str, img_size: Union[int, Sequence[int]] = 224) -> Dict[str, Any]:
    """Parameters and operation counts of LIT model ``name`` (1000 classes) at ``img_size``.

    Returns a dict with ``params`` / ``params_no_head`` (counts), ``gmacs`` (paper
    convention: convolutions, matrix products and attention, DTM as its two
    convolutions), ``dtm_gmacs`` (the three DTMs' share of ``gmacs``), ``sampling_gmacs``
    (bilinear interpolation in the DTMs, not in ``gmacs``), ``gmacs_by_op`` and the paper's figures.
    """
    import timm
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from .ops.flops import cpu_attention_flop_formulas

    if name not in PAPER:
        raise LitvitError(f"unknown LIT model {name!r}; choose from {', '.join(PAPER)}")
    height, width = _img_size(img_size)
    stride = 32  # patch 4 x three 2x token mergings, in every model
    if height % stride or width % stride or height <= 0 or width <= 0:
        raise LitvitError(f"--img-size must be positive multiples of {stride}, got {height}x{width}")
    model = timm.create_model(name).eval()
    params = sum(p.numel() for p in model.parameters())
    head = sum(p.numel() for p in model.get_classifier().parameters())

    grid_sampler = torch.ops.aten.grid_sampler_2d
    formulas = {**cpu_attention_flop_formulas(), grid_sampler: grid_sample_flop}
    counter = FlopCounterMode(display=False, custom_mapping=formulas)
    with torch.no_grad(), counter:
        # The whole architecture, as the paper counts it.
        model.forward_head(model.forward_features(torch.zeros(1, 3, height, width)))
    counts = counter.get_flop_counts()
    by_op = {str(op).replace("aten.", ""): flops / 2e9 for op, flops in counts["Global"].items()}
    sampling = counts["Global"].get(grid_sampler, 0) / 2e9
    # The tracker names modules by their path, rooted at the class name ("LIT.stages.1.downsample").
    dtm = sum(
        flops
        for module, ops in counts.items()
        if module.endswith(".downsample")
        for op, flops in ops.items()
        if op is not grid_sampler
    ) / 2e9
    paper_params, paper_gmacs = PAPER[name]
    return {
        "model": name,
        "img_size": [height, width],
        "params": params,
        "params_no_head": params - head,
        "gmacs": counter.get_total_flops() / 2e9 - sampling,
        "dtm_gmacs": dtm,
        "sampling_gmacs": sampling,
        "gmacs_by_op": by_op,
        "paper_params_m": paper_params,
        "paper_gmacs_224": paper_gmacs,
    }


def format_table(rows: List[Dict[str, Any]]) -> str:
    header = ["model", "img", "params (M)", "w/o head (M)", "paper (M)", "GMACs", "paper GMACs", "DTM GMACs", "sampling GMACs"]
    lines = []
    for r in rows:
        lines.append(
            [
                r["model"],
                "x".join(str(s) for s in r["img_size"]),
                f"{r['params'] / 1e6:.2f}",
                f"{r['params_no_head'] / 1e6:.2f}",
                f"{r['paper_params_m']:.0f}",
                f"{r['gmacs']:.2f}",
                f"{r['paper_gmacs_224']:.1f}" + ("" if r["img_size"] == [224, 224] else " (224)"),
                f"{r['dtm_gmacs']:.3f}",
                f"{r['sampling_gmacs']:.4f}",
            ]
        )
    widths = [max(len(h), *(len(l[i]) for l in lines)) for i, h in enumerate(header)]
    fmt = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    out = [fmt(header), fmt(["-" * w for w in widths])] + [fmt(l) for l in lines]
    return "\n".join(out)


def count_released_dense(task: str) -> List[Dict[str, Any]]:
    """Parameters of the released dense models of ``task`` (``detect`` or ``segment``), built as
    litvit builds them from the released files, beside the release's figures: ``params`` counted
    as the release counts (see each task's ``release_parameter_count``) and ``params_litvit``
    (litvit's own modules, which differ by a few background rows and a position-embedding slot)."""
    if task == "detect":
        from .detection.training import build_from_spec
        from .detection.released import RELEASED_DETECTORS, release_parameter_count, release_spec

        def build(name: str) -> Any:
            return build_from_spec(release_spec(name))

        entries = {name: (f"{e.arch} {e.model}", e.params_m) for name, e in RELEASED_DETECTORS.items()}
    elif task == "segment":
        from .segmentation.models import semantic_fpn_lit
        from .segmentation.released import RELEASED_SEGMENTERS, release_model_config, release_parameter_count

        def build(name: str) -> Any:
            return semantic_fpn_lit(**release_model_config(name))

        entries = {name: (f"sem_fpn {e.model}", e.params_m) for name, e in RELEASED_SEGMENTERS.items()}
    else:
        raise LitvitError(f"--task takes classify, detect or segment, not {task!r}")
    rows = []
    for name, (what, released) in entries.items():
        model = build(name)
        rows.append(dict(checkpoint=name, model=what, params=release_parameter_count(model),
                         params_litvit=sum(p.numel() for p in model.parameters()), release_params_m=released))
    return rows


def format_dense_table(rows: List[Dict[str, Any]]) -> str:
    header = ["checkpoint", "model", "params (M)", "release (M)", "litvit modules (M)"]
    lines = [[r["checkpoint"], r["model"], f"{r['params'] / 1e6:.3f}", f"{r['release_params_m']:.0f}",
              f"{r['params_litvit'] / 1e6:.3f}"] for r in rows]
    widths = [max(len(h), *(len(l[i]) for l in lines)) for i, h in enumerate(header)]
    fmt = lambda cells: "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    return "\n".join([fmt(header), fmt(["-" * w for w in widths])] + [fmt(l) for l in lines])


def run(args: argparse.Namespace) -> int:
    if args.task != "classify":
        rows = count_released_dense(args.task)
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            print(format_dense_table(rows))
            print("params: counted as the released mmdetection / mmsegmentation models count theirs (LIT-S with its "
                  "relative position tables at the training resolution); litvit modules: the same model as litvit "
                  "holds it (torchvision's background rows, no class slot in LIT-Ti's last position embedding).")
        return 0
    names = args.model or list(PAPER)
    rows = [count_model(name, args.img_size) for name in names]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(format_table(rows))
        print(
            "GMACs: multiply-accumulates of convolutions, matrix products and attention (each DTM as its "
            "offset conv + deformable conv), as in the paper; sampling: DTM bilinear interpolation "
            f"({_SAMPLE_MACS} MACs per sampled value), not included. LIT's paper params leave out the classifier, LITv2's include it."
        )
    return 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "info",
        help="parameters and GMACs of the LIT and LITv2 models beside the papers' (and the released dense models')",
        description="Count parameters and multiply-accumulates (torch.utils.flop_counter) of the LIT and LITv2 "
        "models at a given input size, beside the figures of the paper.",
    )
    parser.add_argument("--model", nargs="+", choices=list(PAPER), metavar="NAME",
                        help=f"models to count (default: all; choose from {', '.join(PAPER)})")
    parser.add_argument("--img-size", nargs="+", type=int, default=[224], metavar="SIZE",
                        help="input size: one side, or HEIGHT WIDTH; multiples of 32 (default: 224)")
    parser.add_argument("--task", choices=("classify", "detect", "segment"), default="classify",
                        help="classify: the ImageNet models (default); detect / segment: parameter counts of the released "
                        "COCO detectors / ADE20K segmenters beside the release's")
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    parser.set_defaults(func=run)
    return parser

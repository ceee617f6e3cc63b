"""``litvit export``: the command line of :mod:`litvit.export`."""
from __future__ import annotations

import argparse
import ast
from typing import Any, List, Tuple

from ..errors import ExportError
from ..graph import DEFAULT_OPSET, MIN_OPSET, dynamic_onnx, fixed_size_reason, require_onnx
from .tasks import TASKS, build_export_model
from .verify import DEFAULT_BATCH_SIZES
from .writer import DEFAULT_ATOL, EXPORT_FORMATS, export_model

__all__ = ["add_parser", "run"]


def _kwarg(text: str) -> Tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        parsed = value  # a bare word, e.g. global_pool=avg
    return key.strip(), parsed


def _int_list(text: str) -> List[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    from ..cli_options import deprecated_option

    p = subparsers.add_parser(
        "export",
        help="export a model to ONNX (checked with ONNX Runtime) or a torch.export program",
        description="Export a LIT classifier, a Semantic FPN-LIT segmenter or the dense part of a LIT detector "
        "with a dynamic batch dimension. "
        f"ONNX at opset >= {DEFAULT_OPSET} (default {DEFAULT_OPSET}) also has a dynamic image size (multiples of 32); "
        f"opsets {MIN_OPSET}-{DEFAULT_OPSET - 1} fix it to --img-size. The ONNX file is checked with onnx.checker "
        "and compared with PyTorch in ONNX Runtime before it is written.",
    )
    p.add_argument("--model", "-m", required=True, help="lit_ti, lit_s, lit_m, lit_b, litv2_s, litv2_m, litv2_b (or a timm model for --task classify)")
    p.add_argument("--checkpoint", default=None, help="weights: a classification checkpoint (any supported layout) "
                   "or, with --task segment / detect, a 'litvit segment train' / 'litvit detect train' checkpoint")
    p.add_argument("--task", choices=TASKS, default="classify",
                   help="classify: logits; segment: Semantic FPN logits at the input size; detect: RetinaNet "
                   "per-anchor class logits and box deltas plus FPN levels, or Mask R-CNN FPN levels "
                   "(arch=mask_rcnn in --model-kwargs); anchors, NMS and RoI stages stay outside (default classify)")
    p.add_argument("--format", choices=EXPORT_FORMATS, default="onnx", help="output format (default onnx)")
    p.add_argument("--out", "-o", required=True, help="output file (.onnx or .pt2)")
    p.add_argument("--img-size", type=int, nargs="+", default=[224], metavar="SIZE",
                   help="example input side, or H W (default 224); fixed input size for opsets below 18")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                   help=f"ONNX opset (default {DEFAULT_OPSET}; {MIN_OPSET} and {MIN_OPSET + 1} fix the image size)")
    p.add_argument("--num-classes", type=int, default=None,
                   help="class count (default: from the checkpoint's classifier, else 1000; 150 for segment, 80 for detect)")
    p.add_argument("--ema", action="store_true", help="export the EMA weights of a litvit training checkpoint")
    deprecated_option(p, "--use-ema", "--ema", dest="ema", nargs=0, const=True)
    p.add_argument("--model-kwargs", nargs="*", type=_kwarg, default=[], metavar="KEY=VALUE",
                   help="extra model options, e.g. depths=(1,1,1,1) embed_dims=(16,32,40,64)")
    verify = p.add_mutually_exclusive_group()
    verify.add_argument("--verify", dest="verify", action="store_true", default=True,
                        help="compare the export with PyTorch (default on)")
    verify.add_argument("--no-verify", dest="verify", action="store_false", help="skip the comparison")
    p.add_argument("--atol", type=float, default=DEFAULT_ATOL, help=f"largest accepted output difference (default {DEFAULT_ATOL:g})")
    p.add_argument("--verify-batch-sizes", type=_int_list, default=list(DEFAULT_BATCH_SIZES), metavar="B1,B2,...",
                   help="batch sizes compared (default 1,2,4)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    if len(args.img_size) > 2:
        raise ExportError(f"--img-size takes one or two values, got {len(args.img_size)}")
    if args.format == "onnx":
        # Before building the model: a missing extra should fail fast.
        require_onnx(need_exporter=dynamic_onnx(args.opset))
    img_size = tuple(args.img_size) if len(args.img_size) == 2 else args.img_size[0]
    model_kwargs = dict(args.model_kwargs)
    num_classes = args.num_classes
    if "num_classes" in model_kwargs:
        if num_classes is not None:
            raise ExportError("give the class count once: --num-classes or --model-kwargs num_classes=...")
        num_classes = model_kwargs.pop("num_classes")
    model, meta = build_export_model(args.task, args.model, args.checkpoint, num_classes, args.ema, **model_kwargs)
    if args.format == "onnx":
        print(f"exporting {args.model} ({args.task}) to ONNX opset {args.opset} ...", flush=True)
    else:
        print(f"exporting {args.model} ({args.task}) with torch.export ...", flush=True)
    result = export_model(
        model,
        args.out,
        output_names=getattr(model, "output_names", ("logits",)),
        format=args.format,
        img_size=img_size,
        opset=args.opset,
        verify=args.verify,
        atol=args.atol,
        batch_sizes=args.verify_batch_sizes,
        metadata=meta,
    )
    dims = "batch, height and width" if result.dynamic_size else "batch (image size fixed)"
    print(f"wrote {result.path} ({result.path.stat().st_size / 2**20:.1f} MiB; dynamic {dims})")
    if not result.dynamic_size and (args.format != "onnx" or args.opset >= DEFAULT_OPSET):
        print(f"note: {fixed_size_reason(args.format)}")
    if result.checks:
        runtime = "ONNX Runtime (CPU)" if args.format == "onnx" else "the saved program"
        for check in result.checks:
            print(f"  {runtime} vs PyTorch, input {'x'.join(map(str, check['shape']))}: "
                  f"max abs diff {check['max_abs_diff']:.2e}")
        print(f"verified: max abs diff {result.max_abs_diff:.2e} <= {args.atol:g}")
    return 0

"""``litvit viz offsets`` and ``litvit viz attention``."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, List, Tuple


def _pair(text: str) -> Tuple[float, float]:
    try:
        a, b = (float(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected ROW,COL, got {text!r}") from None
    return a, b


def _cell(text: str) -> Tuple[int, int]:
    a, b = _pair(text)
    if a != int(a) or b != int(b):
        raise argparse.ArgumentTypeError(f"cells are integer ROW,COL, got {text!r}")
    return int(a), int(b)


def _add_common(p: argparse.ArgumentParser) -> None:
    from ..cli_options import deprecated_option

    p.add_argument("images", nargs="*", metavar="IMAGE", help="image files (any size, grayscale ok)")
    deprecated_option(p, "--image", "positional image arguments", dest="old_images", nargs="+")
    p.add_argument("--checkpoint", default=None, metavar="PATH",
                   help="released LIT checkpoint or litvit checkpoint (without one: untrained weights)")
    p.add_argument("--model", default=None,
                   help="lit_ti, lit_s, lit_m or lit_b (optional with a litvit training checkpoint, which records it)")
    p.add_argument("--ema", action="store_true", help="use the EMA weights of a litvit training checkpoint")
    deprecated_option(p, "--use-ema", "--ema", dest="ema", nargs=0, const=True)
    p.add_argument("--img-size", default=None, metavar="N|HxW",
                   help="model input: N = shorter side (aspect kept, sides rounded to multiples of 32), "
                   "HxW exact; default: the model's training resolution as the shorter side")
    p.add_argument("--output-dir", default=None, metavar="DIR", help="output directory (default: beside each image)")
    deprecated_option(p, "--out", "--output-dir", dest="output_dir")
    p.add_argument("--dpi", type=int, default=100, help="PNG resolution (default 100)")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: GPU if available)")


def add_parser(subparsers: "argparse._SubParsersAction") -> None:
    viz = subparsers.add_parser("viz", help="visualise DTM sampling points and attention maps",
                                description="Visualise what a LIT model learned.")
    viz_sub = viz.add_subparsers(dest="viz_command", metavar="SUBCOMMAND")
    viz.set_defaults(func=lambda args: (viz.print_help(), 2)[1])

    p = viz_sub.add_parser(
        "offsets", help="trace DTM sampling points from last-stage cells back to image pixels",
        description="For chosen last-stage cells, draw where the three deformable token merging "
        "modules sample (4 points in stage 3, 16 in stage 2, 64 in stage 1, shown at their image "
        "pixels), one colour per level, plus an overview of every last-stage cell. Writes "
        "<image>_offsets.png per image.")
    _add_common(p)
    p.add_argument("--points", nargs="+", type=_cell, default=None, metavar="ROW,COL",
                   help="last-stage cells to trace (default: an even spread of --num-points)")
    p.add_argument("--num-points", type=int, default=4, help="cells in the default spread (1, 4, 9, ...; default 4)")
    p.add_argument("--no-overview", action="store_true", help="leave out the all-cells overview panel")
    p.set_defaults(func=run_offsets)

    p = viz_sub.add_parser(
        "attention", help="attention maps of the stage 3-4 blocks for one query",
        description="Draw the self-attention of stage 3 and 4 blocks for a query (a pixel, or "
        "LIT-Ti's class token), per head and averaged over heads, upsampled and overlaid on the "
        "image; one row per block. Writes <image>_attention.png per image.")
    _add_common(p)
    p.add_argument("--query", default="center", metavar="ROW,COL|center|cls",
                   help="query pixel in original image coordinates, 'center' (default) or 'cls' (class token)")
    p.add_argument("--blocks", default=None, metavar="all|last|S.B,...",
                   help="blocks to show: all, last (last block of stages 3 and 4) or e.g. 3.0,4.1 "
                   "(default: all when there are at most 6, else last)")
    p.add_argument("--max-heads", type=int, default=None, help="show at most this many heads per block")
    p.set_defaults(func=run_attention)


def _outputs(args: argparse.Namespace, suffix: str) -> List[Tuple[Path, Path]]:
    from ..cli_options import UsageError
    from ..errors import DataError

    images = list(args.images) + list(getattr(args, "old_images", None) or [])
    if not images:
        raise UsageError("give the images to draw on as positional arguments")
    pairs = []
    seen = set()
    for image in images:
        src = Path(image)
        if not src.is_file():
            raise DataError(f"image not found: {src}")
        folder = Path(args.output_dir) if args.output_dir else src.parent
        dst = folder / f"{src.stem}_{suffix}.png"
        if dst in seen:  # same stem from two folders into one --output-dir
            dst = folder / f"{src.parent.name}_{src.stem}_{suffix}.png"
        seen.add(dst)
        pairs.append((src, dst))
    return pairs


def _model(args: argparse.Namespace) -> Any:
    from ..engine.distributed import resolve_device
    from ._common import load_model_and_classes

    return load_model_and_classes(args.model, args.checkpoint, use_ema=args.ema, device=resolve_device(args.device))


def run_offsets(args: argparse.Namespace) -> int:
    from .offsets import render_offsets

    pairs = _outputs(args, "offsets")
    model, class_names = _model(args)
    for src, dst in pairs:
        path = render_offsets(model, src, dst, cells=args.points, num_cells=args.num_points, img_size=args.img_size,
                              overview=not args.no_overview, class_names=class_names, dpi=args.dpi)
        print(path)
    return 0


def run_attention(args: argparse.Namespace) -> int:
    from ..errors import DataError
    from .attention import render_attention

    query: Any = args.query
    if query not in ("center", "cls"):
        try:
            query = _pair(query)
        except argparse.ArgumentTypeError as err:
            raise DataError(f"--query: {err}") from None
    pairs = _outputs(args, "attention")
    model, _ = _model(args)
    for src, dst in pairs:
        path = render_attention(model, src, dst, query=query, blocks=args.blocks, img_size=args.img_size,
                                max_heads=args.max_heads, dpi=args.dpi)
        print(path)
    return 0

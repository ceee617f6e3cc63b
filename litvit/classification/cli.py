"""``litvit train``, ``litvit eval``, ``litvit predict`` and ``litvit plot``.

Heavy imports (torch, timm) happen inside the command functions so ``litvit --help`` is quick.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

__all__ = ["add_parser"]

_TRAIN_EPILOG = """\
examples:
  litvit train --data-dir /data/imagenet --model lit_s --output runs/lit_s
  torchrun --nproc_per_node 8 -m litvit train --data-dir /data/imagenet --model lit_s --batch-size 128
  litvit train --data-dir /data/flowers --model lit_ti --preset finetune \\
      --init-checkpoint lit_ti.pth --output runs/flowers
  litvit train --config run.yaml --epochs 100 --print-config
  litvit train --resume auto --output runs/lit_s --data-dir /data/imagenet --model lit_s
"""


def add_parser(subparsers: Any) -> None:
    from ..engine.amp import AMP_CHOICES
    from ..engine.config import add_config_arguments
    from .config import TrainConfig

    p = subparsers.add_parser(
        "train",
        help="train or fine-tune a classifier on an image folder",
        description="Train LIT (or any timm model) on DIR/train/<class>/* with the released recipe of the model as "
        "default; evaluates on DIR/val each epoch. Runs under torchrun for DDP on one or many machines.",
        epilog=_TRAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_arguments(p, TrainConfig)
    p.add_argument("--output-dir", dest="output", default=argparse.SUPPRESS, metavar="DIR",
                   help="the same as --output: the run directory")
    p.set_defaults(func=run_train)

    p = subparsers.add_parser(
        "eval",
        help="top-1/top-5/loss of a checkpoint on an image folder",
        description="Evaluate a litvit or released checkpoint with the released evaluation transform "
        "(resize img_size/crop_pct, bicubic, centre crop). Runs distributed under torchrun.",
    )
    p.add_argument("--checkpoint", default=None, metavar="PATH",
                   help="litvit training checkpoint, released LIT checkpoint or .safetensors")
    p.add_argument("checkpoint_positional", nargs="?", default=None, help=argparse.SUPPRESS)
    p.add_argument("--data-dir", required=True, help="image folder holding SPLIT/<class>/*")
    p.add_argument("--split", default="val", help="split folder (default: val)")
    p.add_argument("--model", default=None, help="architecture (needed for released checkpoints, e.g. lit_ti)")
    p.add_argument("--img-size", type=int, default=None, help="evaluation resolution (default: the checkpoint's, else 224)")
    p.add_argument("--model-kwargs", type=_yaml_mapping, default=None, metavar="YAML",
                   help="architecture options of a reduced model, e.g. '{embed_dims: [32, 64, 128, 160]}'")
    p.add_argument("--batch-size", type=int, default=100, help="images per batch per process")
    p.add_argument("--workers", type=int, default=4, help="loader worker processes")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: GPU if available)")
    p.add_argument("--amp", default="auto", choices=AMP_CHOICES,
                   help="autocast dtype: auto (bf16 on CUDA, fp16 on GPUs without bf16, none on CPU), bf16, fp16, none")
    p.add_argument("--ema", action="store_true", help="evaluate the EMA weights of a litvit checkpoint")
    p.add_argument("--strict", action="store_true", help="fail on unreadable images instead of skipping them")
    p.add_argument("--json", nargs="?", const="-", default=None, metavar="PATH",
                   help="also write the result as JSON to PATH ('-' or no PATH: print it instead of the summary)")
    _add_optimize_argument(p)
    p.set_defaults(func=run_eval)

    p = subparsers.add_parser(
        "predict", help="top-k classes of image files",
        description="Print the top-k classes of each image, with the checkpoint's class names "
        "(ImageNet's for a released 1000-class checkpoint).",
        epilog="example:\n  litvit predict --checkpoint runs/demo-classify/best.pth img1.png img2.png",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--checkpoint", default=None, metavar="PATH",
                   help="litvit training checkpoint, released LIT checkpoint or .safetensors")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--model", default=None, help="architecture (needed for released checkpoints)")
    p.add_argument("--img-size", type=int, default=None, help="resolution (default: the checkpoint's, else 224)")
    p.add_argument("--model-kwargs", type=_yaml_mapping, default=None, metavar="YAML",
                   help="architecture options of a reduced model (released-style checkpoints)")
    p.add_argument("--topk", type=int, default=5, help="classes to show per image")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: GPU if available)")
    p.add_argument("--amp", default="auto", choices=AMP_CHOICES,
                   help="autocast dtype: auto (bf16 on CUDA, fp16 on GPUs without bf16, none on CPU), bf16, fp16, none")
    p.add_argument("--ema", action="store_true", help="use the EMA weights of a litvit checkpoint")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    _add_optimize_argument(p)
    p.set_defaults(func=run_predict)

    p = subparsers.add_parser("plot", help="draw loss, accuracy and learning-rate curves of a run to a PNG")
    p.add_argument("run_dir", help="run directory holding metrics.jsonl")
    p.add_argument("--out", default=None, help="output PNG (default: RUN_DIR/curves.png)")
    p.set_defaults(func=run_plot)


def _add_optimize_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-optimize", dest="optimize", action="store_false",
                   help="run the plain model on the CPU (by default litvit.optimize swaps modules for faster twins "
                   "with the same weights and outputs)")


def _yaml_mapping(text: str) -> Any:
    from ..engine.config import _yaml_mapping as parse

    return parse(text)


def _is_rank0() -> bool:
    # The process group is gone once a command finishes; torchrun's RANK still says who we are.
    return int(os.environ.get("RANK", "0") or 0) == 0


def run_train(args: argparse.Namespace) -> int:
    from ..engine.config import dump_config
    from .config import resolve_train_config

    cfg = resolve_train_config(args)
    if args.print_config:
        sys.stdout.write(dump_config(cfg))
        return 0
    from .train import train

    summary = train(cfg)
    if _is_rank0():
        best = summary.get("best_top1")
        print(f"run directory: {summary['run_dir']}")
        if best is not None:
            print(f"best top-1: {best:.2f}%  (checkpoint: {summary.get('best_checkpoint')})")
        if summary.get("curves"):
            print(f"curves: {summary['curves']}")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from ..cli_options import checkpoint_option
    from ..fileio import write_text_atomic
    from .inference import evaluate_checkpoint

    checkpoint_option(args)
    to_stdout = args.json == "-"
    stats = evaluate_checkpoint(
        args.checkpoint, args.data_dir, split=args.split, model=args.model, img_size=args.img_size,
        batch_size=args.batch_size, workers=args.workers, device=args.device, amp=args.amp, use_ema=args.ema,
        strict=args.strict, progress_kwargs={"enabled": False} if to_stdout else None, model_kwargs=args.model_kwargs,
        optimize=args.optimize,
    )
    if not _is_rank0():
        return 0
    if args.json and not to_stdout:
        write_text_atomic(args.json, json.dumps(stats, indent=2) + "\n")
    if to_stdout:
        print(json.dumps(stats))
    else:
        skipped = f", {stats['skipped_images']} unreadable skipped" if stats["skipped_images"] else ""
        print(
            f"{stats['model']} on {stats['split']} ({stats['images']} images{skipped}): "
            f"top-1 {stats['top1']:.2f}%  top-5 {stats['top5']:.2f}%  loss {stats['loss']:.4f}"
        )
    return 0


def run_predict(args: argparse.Namespace) -> int:
    from ..cli_options import checkpoint_and_inputs
    from .inference import load_classifier, predict_images

    checkpoint_and_inputs(args)
    loaded = load_classifier(args.checkpoint, model=args.model, img_size=args.img_size, use_ema=args.ema,
                             model_kwargs=args.model_kwargs)
    results = predict_images(loaded, args.images, topk=args.topk, device=args.device, amp=args.amp,
                             optimize=args.optimize)
    if args.json:
        print(json.dumps(results))
        return 0
    for r in results:
        print(r["image"])
        for rank, t in enumerate(r["top"], 1):
            print(f"  {rank}. {t['name']}  {100 * t['prob']:.2f}%")
    return 0


def run_plot(args: argparse.Namespace) -> int:
    from .plot import plot_run

    print(plot_run(args.run_dir, args.out))
    return 0

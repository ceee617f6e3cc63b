"""``litvit demo``: a complete run on built-in synthetic data, on the CPU, in a few minutes.

Each task owns its demo (``litvit.<task>.demo.run_demo``); this command only picks one and
hands it the command-line settings as explicit arguments.
"""
from __future__ import annotations

import argparse
import importlib
from typing import Any

from .errors import MissingExtraError

__all__ = ["add_parser", "run"]

_DEMO_MODULES = {
    "classify": "litvit.classification.demo",
    "detect": "litvit.detection.demo",
    "segment": "litvit.segmentation.demo",
}


def add_parser(subparsers: Any) -> None:
    from .cli_options import deprecated_option

    p = subparsers.add_parser(
        "demo",
        help="train and evaluate LIT on built-in synthetic data (CPU, a few minutes)",
        description="Generate a synthetic data set (if absent), train a small LIT model on the CPU, evaluate it "
        "on the held-out split and save the checkpoint, metrics and pictures. --task classify (default) draws the "
        "training curves and the learned token-merging offsets; detect and segment start their backbone from the "
        "classification demo's checkpoint (training it first when missing) and draw predictions.",
    )
    p.add_argument("--task", default="classify", choices=tuple(_DEMO_MODULES), help="which demo to run (default: classify)")
    p.add_argument("--model", default=None,
                   help="LIT model to train, e.g. litv2_s (default lit_s); detect/segment start from the classification "
                   "demo's checkpoint only when it holds this model")
    p.add_argument("--data-dir", default="demo_data", help="where the synthetic data lives (generated if absent)")
    p.add_argument("--output-dir", default=None, metavar="DIR", help="run directory (default: runs/demo-<task>)")
    deprecated_option(p, "--output", "--output-dir", dest="output_dir")
    p.add_argument("--epochs", type=int, default=None, help="classify/detect: override the number of training epochs")
    p.add_argument("--iterations", type=int, default=None, help="segment: override the training iterations")
    p.add_argument("--device", default=None, help="device (default: cpu)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--no-optimize", dest="optimize", action="store_false",
                   help="classify: train and evaluate the plain model on the CPU (by default through litvit.optimize)")
    p.add_argument("--detector", default=None, choices=("retinanet", "mask_rcnn", "both"),
                   help="detect: which detector(s) to train (default: both)")
    p.add_argument("--from-scratch", action="store_true",
                   help="detect/segment: train the backbone from random weights instead of starting from the "
                   "classification demo's checkpoint (which is otherwise trained first when missing)")
    p.set_defaults(func=run)


def _demo_module(task: str) -> Any:
    name = _DEMO_MODULES[task]
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name and name.startswith(err.name):
            raise MissingExtraError(f"the {task} demo is not available in this installation ({name} is missing)") from None
        raise


def run(args: argparse.Namespace) -> int:
    module = _demo_module(args.task)
    common = dict(data_dir=args.data_dir, model=args.model, device=args.device, threads=args.threads, seed=args.seed)
    if args.output_dir:
        common["output_dir"] = args.output_dir
    if args.task == "classify":
        module.run_demo(**common, epochs=args.epochs, optimize=args.optimize)
    elif args.task == "detect":
        module.run_demo(**common, epochs=args.epochs, detectors=args.detector or "both", from_scratch=args.from_scratch)
    else:
        module.run_demo(**common, iterations=args.iterations, from_scratch=args.from_scratch)
    return 0

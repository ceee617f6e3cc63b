"""``litvit demo``: a complete run on built-in synthetic data, on the CPU, in a few minutes.

``--task classify`` (default) generates the shapes dataset (if absent), trains a reduced LIT,
evaluates it, draws its curves and the DTM sampling points of the trained model on a held-out
image, and prints where everything is. ``--task detect`` / ``--task segment`` hand over to the
detection and segmentation demos.
"""
from __future__ import annotations

import argparse
import importlib
import time
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from .errors import LitvitError, MissingExtraError

__all__ = ["add_parser", "run", "classify_demo_backbone", "classify_demo_backbone_for", "demo_model", "DEMO_SETTINGS", "DEMO_DATA", "CLASSIFY_DEMO_CHECKPOINT"]

# A LIT-S-shaped model (relative position bias, mean-pooled head, MLP-only first stages,
# DTM between stages), narrowed and shortened for a 2-core CPU, trained at 32 px; one
# torch thread plus one loader worker keeps both cores busy without oversubscribing them.
DEMO_SETTINGS: Dict[str, Any] = dict(
    model="lit_s",
    model_kwargs=dict(embed_dims=[32, 64, 128, 160], depths=[1, 1, 2, 1], num_heads=[1, 2, 4, 5], mlp_ratios=[4, 4, 4, 4]),
    img_size=32,
    drop_path=0.0,
    epochs=24,
    batch_size=32,
    lr=1e-3,
    min_lr=1e-5,
    warmup_lr=1e-5,
    scale_min_lr=False,
    warmup_epochs=2,
    clip_grad=5.0,
    # The shapes must survive the crop, and orientation does not define a class.
    auto_augment="none",
    scale=(0.5, 1.0),
    hflip=0.5,
    vflip=0.5,
    reprob=0.0,
    mixup=0.0,
    cutmix=0.0,
    smoothing=0.1,
    crop_pct=1.0,
    workers=1,
    persistent_workers=True,
    threads=1,
    device="cpu",
    keep_last=1,
)
# The generated data set: 6 shape classes, 1000 training and 100 held-out images each, 64 px.
DEMO_DATA: Dict[str, Any] = dict(num_train_per_class=1000, num_val_per_class=100, image_size=64, seed=0)


# As in the paper, where dense-prediction backbones start from ImageNet weights: when the
# classification demo has been run (``litvit demo``), its checkpoint initialises the detection
# and segmentation demos' backbones (whose model and shape are then those of the classifier).
CLASSIFY_DEMO_CHECKPOINT = Path("runs/demo-classify/best.pth")
_BACKBONE_KEYS = ("embed_dims", "depths", "num_heads", "mlp_ratios")


def classify_demo_backbone(path: Path = CLASSIFY_DEMO_CHECKPOINT) -> Optional[Tuple[Path, Dict[str, Any]]]:
    """The classification demo's checkpoint and the backbone settings it was trained with
    (``model`` plus the ``_BACKBONE_KEYS`` it sets), when it exists and holds a LIT model."""
    from .checkpoint import read_checkpoint
    from .errors import CheckpointError
    from .models import LITV2_CONFIGS, MODEL_CONFIGS

    if not path.is_file():
        return None
    try:
        saved = read_checkpoint(path)
    except CheckpointError:
        return None
    config = saved.get("config", {}) if isinstance(saved, dict) else {}
    if config.get("model") not in MODEL_CONFIGS and config.get("model") not in LITV2_CONFIGS:
        return None
    kwargs = config.get("model_kwargs") or {}
    settings: Dict[str, Any] = {"model": config["model"]}
    for key in _BACKBONE_KEYS:
        # Keys the classifier left at the model's defaults must not keep the demo's reductions.
        settings[key] = tuple(kwargs[key]) if key in kwargs else None
    return path, settings


def classify_demo_backbone_for(model: str) -> Optional[Tuple[Path, Dict[str, Any]]]:
    """:func:`classify_demo_backbone` when the classification demo's checkpoint holds ``model``,
    else None (and the dense demos train the classification demo again, with ``model``)."""
    found = classify_demo_backbone()
    if found is not None and found[1]["model"] != model:
        print(f"      the classification demo checkpoint {found[0]} holds {found[1]['model']}, not {model}", flush=True)
        return None
    return found


def demo_model(args: Any) -> str:
    """The model every demo trains (``--model``; default the classification demo's, lit_s):
    any LIT or LITv2 name, narrowed to the demo's widths and depths."""
    from .models import LIT_MODELS, LITV2_MODELS

    name = getattr(args, "model", None) or DEMO_SETTINGS["model"]
    if name not in LIT_MODELS and name not in LITV2_MODELS:
        choices = ", ".join(LIT_MODELS + LITV2_MODELS)
        raise LitvitError(f"the demos train a LIT model: --model takes {choices}, not {name!r}")
    return name


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "demo",
        help="train and evaluate LIT on built-in synthetic data (CPU, a few minutes)",
        description="Generate a synthetic shapes dataset (if absent), train a small LIT on the CPU, evaluate it, "
        "save the checkpoint, the training curves and a picture of the learned token-merging offsets.",
    )
    p.add_argument("--task", default="classify", choices=("classify", "detect", "segment"), help="which demo to run")
    p.add_argument("--model", default=None,
                   help=f"LIT model to train, e.g. litv2_s (default {DEMO_SETTINGS['model']}); detect/segment start "
                   "from the classification demo's checkpoint only when it holds this model")
    p.add_argument("--data-dir", default="demo_data", help="where the synthetic data lives (generated if absent)")
    p.add_argument("--output", default=None, help="run directory (default: runs/demo-<task>)")
    p.add_argument("--epochs", type=int, default=None, help="override the number of training epochs")
    p.add_argument("--device", default=None, help="device (default: cpu)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--no-optimize", dest="optimize", action="store_false",
                   help="classify: train and evaluate the plain model on the CPU (by default through litvit.optimize)")
    p.add_argument("--iterations", type=int, default=None, help="segment: override the training iterations")
    p.add_argument("--detector", default=None, help="detect: which detector(s) to train (see the detection demo)")
    p.add_argument("--from-scratch", action="store_true",
                   help="detect/segment: train the backbone from random weights instead of starting from the "
                   "classification demo's checkpoint (which is otherwise trained first when missing)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.task == "classify":
        return run_classification_demo(args)
    module_name = {"detect": "litvit.detection.demo", "segment": "litvit.segmentation.demo"}[args.task]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name and module_name.startswith(err.name):
            raise MissingExtraError(f"the {args.task} demo is not available in this installation ({module_name} is missing)") from None
        raise
    if not hasattr(module, "run_demo"):
        raise LitvitError(f"{module_name} has no run_demo()")
    return int(module.run_demo(args) or 0)


def run_classification_demo(args: argparse.Namespace) -> int:
    import torch

    from .classification.config import resolve_train_config
    from .classification.inference import evaluate_checkpoint, load_classifier
    from .classification.train import train
    from .data.synthetic import generate_classification

    model = demo_model(args)  # a wrong name fails before any work
    start = time.time()
    data_dir = Path(args.data_dir) / "classify"
    output = Path(args.output or "runs/demo-classify")
    print(f"[1/4] synthetic data: {data_dir}", flush=True)
    generate_classification(data_dir, **DEMO_DATA)
    data_time = time.time() - start

    overrides = dict(DEMO_SETTINGS, model=model, data_dir=str(data_dir), output=str(output), seed=args.seed,
                     optimize=getattr(args, "optimize", True))
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    if args.device is not None:
        overrides["device"] = args.device
    if args.threads is not None:
        overrides["threads"] = args.threads
    # A finished demo run is started afresh; an interrupted one continues where it stopped.
    overrides["resume"] = "auto"
    cfg = resolve_train_config(**overrides)
    if _finished(output, cfg.epochs):
        for old in output.glob("checkpoint-*.pth"):
            old.unlink()
        for name in ("best.pth", "metrics.jsonl"):
            (output / name).unlink(missing_ok=True)
    print(f"[2/4] training {cfg.model} ({_describe(cfg)}) for {cfg.epochs} epochs on {cfg.device} -> {output}", flush=True)
    t0 = time.time()
    summary = train(cfg)
    train_time = time.time() - t0

    print("[3/4] evaluating the best checkpoint on the held-out split", flush=True)
    best = summary.get("best_checkpoint") or summary.get("checkpoint")
    stats = evaluate_checkpoint(best, data_dir, split="val", device=cfg.device, workers=0, batch_size=128,
                                progress_kwargs={"enabled": False}, optimize=cfg.optimize)

    print("[4/4] drawing the learned token-merging sampling points", flush=True)
    offsets_png = None
    try:
        from .viz import render_offsets
    except ImportError:
        render_offsets = None
    if render_offsets is not None:
        loaded = load_classifier(best)
        image = sorted((data_dir / "val").glob("*/*.png"))[0]
        try:
            with torch.no_grad():
                offsets_png = render_offsets(
                    loaded.model, image, output / "offsets.png", img_size=cfg.img_size,
                    mean=cfg.mean, std=cfg.std, class_names=loaded.class_names,
                )
        except Exception as err:  # the picture is a bonus; the demo result stands without it
            print(f"      (offset picture skipped: {err})")

    total = time.time() - start
    print()
    print(f"held-out top-1: {stats['top1']:.2f}%  top-5: {stats['top5']:.2f}%  loss: {stats['loss']:.4f}  "
          f"({stats['images']} images)")
    print(f"time: {total:.0f} s in all (data {data_time:.0f} s, training {train_time:.0f} s)")
    print(f"data:        {data_dir}")
    print(f"checkpoint:  {best}")
    print(f"metrics:     {output / 'metrics.jsonl'}")
    if summary.get("curves"):
        print(f"curves:      {summary['curves']}")
    if offsets_png:
        print(f"offsets:     {offsets_png}")
    print(f"next: litvit predict {best} {sorted((data_dir / 'val').glob('*/*.png'))[0]}")
    return 0


def _describe(cfg: Any) -> str:
    kw = cfg.model_kwargs or {}
    dims = kw.get("embed_dims")
    depths = kw.get("depths")
    parts = [f"{cfg.img_size} px"]
    if dims:
        parts.append("widths " + "/".join(map(str, dims)))
    if depths:
        parts.append("depths " + "/".join(map(str, depths)))
    return ", ".join(parts)


def _finished(output: Path, epochs: int) -> bool:
    import json

    path = output / "metrics.jsonl"
    if not path.is_file():
        return False
    try:
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            if rec.get("kind") == "epoch" and rec.get("epoch", 0) >= epochs:
                return True
    except (OSError, ValueError):
        return True
    return False

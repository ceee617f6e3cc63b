"""``litvit demo --task segment``: Semantic FPN-LIT on the built-in shapes data, on the CPU.

Generates the ADE20K-layout shapes dataset (if absent), trains a narrowed LIT-Ti-shaped
Semantic FPN with the released pipeline scaled to 128 px images, evaluates it on the
held-out split, and writes predictions for a few held-out images.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any, Dict, Tuple

__all__ = ["DEMO_SETTINGS", "DEMO_DATA", "run_demo"]

# The generated data: 6 shape classes + background at 64 px (the shapes then have the pixel
# size the classification demo trains on).
DEMO_DATA: Dict[str, Any] = dict(num_train=1200, num_val=100, image_size=64, seed=0)

# As in the paper, the backbone starts from a classification checkpoint: the classification
# demo's (a narrowed LIT-Ti trained on the shapes; reused when ``runs/demo-classify`` holds
# one, trained first otherwise). A narrow FPN/head, and the released pipeline with its sizes
# scaled from (2048, 512) / 512 crops to 64 px images.
DEMO_SETTINGS: Dict[str, Any] = dict(
    model="lit_ti",
    img_size=64,
    drop_path_rate=0.0,
    fpn_channels=64,
    head_channels=64,
    iterations=500,
    batch_size=16,
    lr=1e-3,
    warmup_iters=20,
    lr_min=1e-5,
    crop_size=(64, 64),
    scale=(128, 64),
    ratio_range=(0.75, 1.5),
    test_scale=(128, 64),
    eval_interval=0,
    checkpoint_interval=250,
    keep_last=1,
    log_interval=25,
    eval_batch_size=25,
    workers=1,
    device="cpu",
)


def _threads(requested: Any) -> int:
    # Two threads per process on a busy 2-core machine run many times slower than one
    # (spinning OpenMP workers); use every core only when it is free.
    if requested:
        return int(requested)
    cores = os.cpu_count() or 1
    try:
        busy = os.getloadavg()[0]
    except OSError:
        busy = 0.0
    return 1 if busy > 0.5 * cores else max(1, cores - 1) if cores > 2 else cores


def _backbone_checkpoint(data_root: Path, output: Path, seed: int, threads: int) -> Tuple[Path, Dict[str, Any]]:
    """The classification demo's checkpoint and its backbone settings, training it if needed."""
    from ..checkpoint import read_checkpoint
    from ..classification.config import resolve_train_config
    from ..classification.train import train as train_classifier
    from ..data.synthetic import generate_classification
    from ..demo import DEMO_DATA as CLS_DATA
    from ..demo import DEMO_SETTINGS as CLS_SETTINGS

    arch = dict(CLS_SETTINGS["model_kwargs"])
    for candidate in (Path("runs/demo-classify/best.pth"), output / "pretrain" / "best.pth"):
        if candidate.is_file():
            try:
                saved = read_checkpoint(candidate).get("config", {})
            except Exception:  # an unreadable file is simply not reused
                continue
            if saved.get("model") == CLS_SETTINGS["model"] and saved.get("model_kwargs") == arch:
                print(f"      backbone: classification demo checkpoint {candidate}", flush=True)
                return candidate, arch
    cls_data = data_root / "classify"
    generate_classification(cls_data, **CLS_DATA)
    pretrain = output / "pretrain"
    print(f"      backbone: training the classification demo model first -> {pretrain}", flush=True)
    cfg = resolve_train_config(**dict(CLS_SETTINGS, data_dir=str(cls_data), output=str(pretrain), seed=seed,
                                      progress="lines", threads=threads, resume="auto"))
    summary = train_classifier(cfg)
    return Path(summary.get("best_checkpoint") or pretrain / "best.pth"), arch


def run_demo(args: argparse.Namespace) -> int:
    """Run the segmentation demo. ``args`` may carry ``data_dir`` (the synthetic data goes to
    ``<data_dir>/segment``), ``output_dir``/``output``, ``iterations``, ``threads``, ``seed``, ``device``
    and ``from_scratch`` (skip the classification-pretrained backbone)."""
    import torch

    from ..data.synthetic import generate_segmentation
    from ..engine.config import build_config
    from .engine import SegTrainConfig, train
    from .metrics import format_metrics

    data_root = Path(getattr(args, "data_dir", None) or "demo_data")
    data_dir = data_root / "segment"
    output = Path(getattr(args, "output_dir", None) or getattr(args, "output", None) or "runs/demo-segment")
    seed = getattr(args, "seed", 0) or 0
    threads = _threads(getattr(args, "threads", None))
    torch.set_num_threads(threads)
    start = time.time()
    print(f"[1/4] synthetic data: {data_dir}", flush=True)
    generate_segmentation(data_dir, **DEMO_DATA)
    print("[2/4] backbone initialisation", flush=True)
    t0 = time.time()
    from ..demo import DEMO_SETTINGS as CLS_SETTINGS

    arch = dict(CLS_SETTINGS["model_kwargs"])
    checkpoint = None
    if not getattr(args, "from_scratch", False):
        checkpoint, arch = _backbone_checkpoint(data_root, output, seed, threads)
    pretrain_time = time.time() - t0
    overrides = dict(DEMO_SETTINGS, **arch, data_dir=str(data_dir), output_dir=str(output), seed=seed,
                     backbone_checkpoint=str(checkpoint) if checkpoint else None)
    if getattr(args, "iterations", None):
        overrides["iterations"] = int(args.iterations)
    if getattr(args, "device", None):
        overrides["device"] = args.device
    cfg = build_config(SegTrainConfig, overrides=overrides)
    # A new demo run starts afresh rather than appending to an old one.
    for old in list(output.glob("checkpoint-*.pth")) + [output / "best.pth", output / "metrics.jsonl"]:
        old.unlink(missing_ok=True)
    print(f"[3/4] training Semantic FPN-LIT for {cfg.iterations} iterations on {cfg.device} "
          f"({threads} thread{'s' if threads > 1 else ''}) -> {output}", flush=True)
    t0 = time.time()
    result = train(cfg)
    train_time = time.time() - t0
    metrics = result["metrics"]
    print(format_metrics(metrics, result["class_names"]), flush=True)
    print("[4/4] predictions for held-out images", flush=True)
    from .cli import run_predict

    images = sorted((data_dir / "images" / "validation").glob("*.png"))[:4]
    run_predict(argparse.Namespace(
        checkpoint=str(output / "best.pth"), images=[str(p) for p in images], output_dir=str(output / "predictions"),
        alpha=0.5, mode="whole", flip=False, test_scale=None, slide_crop=(512, 512), slide_stride=(341, 341),
        device=cfg.device,
    ))
    print()
    print(f"held-out mIoU: {100 * metrics['mIoU']:.1f}  (mAcc {100 * metrics['mAcc']:.1f}, "
          f"aAcc {100 * metrics['aAcc']:.1f}; {len(list((data_dir / 'images' / 'validation').glob('*.png')))} images)")
    print(f"time: {(time.time() - start) / 60:.1f} min in all (backbone {pretrain_time / 60:.1f} min, "
          f"segmentation training {train_time / 60:.1f} min)")
    print(f"checkpoint:  {output / 'best.pth'}")
    print(f"predictions: {output / 'predictions'}")
    print(f"next: litvit segment eval {output / 'best.pth'} --data-dir {data_dir}")
    return 0

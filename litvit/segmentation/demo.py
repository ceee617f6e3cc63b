"""``litvit demo --task segment``: Semantic FPN-LIT on the built-in shapes data, on the CPU.

Generates the ADE20K-layout shapes dataset (if absent), trains a narrowed LIT-Ti-shaped
Semantic FPN with the released pipeline scaled to 64 px images, evaluates it on the
held-out split, and writes predictions for a few held-out images.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any, Dict

__all__ = ["DEMO_SETTINGS", "DEMO_DATA", "run_demo"]

# The generated data: 6 shape classes + background at 64 px (the shapes then have the pixel
# size the classification demo trains on).
DEMO_DATA: Dict[str, Any] = dict(num_train=1200, num_val=100, image_size=64, seed=0)

# A narrowed LIT-Ti (the classification demo's backbone shape), a narrow FPN/head, and the
# released pipeline with its sizes scaled from (2048, 512) / 512 crops to 64 px images; the
# photometric distortion is left out and the rescale range narrowed, since this short schedule
# underfits rather than overfits.
DEMO_SETTINGS: Dict[str, Any] = dict(
    model="lit_ti",
    embed_dims=(32, 64, 128, 160),
    depths=(1, 1, 2, 1),
    num_heads=(1, 2, 4, 5),
    mlp_ratios=(4, 4, 4, 4),
    img_size=64,
    drop_path_rate=0.0,
    fpn_channels=64,
    head_channels=64,
    iterations=1200,
    batch_size=8,
    lr=2e-3,
    warmup_iters=50,
    lr_min=1e-5,
    crop_size=(64, 64),
    scale=(128, 64),
    ratio_range=(0.8, 1.25),
    photometric=False,
    test_scale=(128, 64),
    eval_interval=400,
    checkpoint_interval=400,
    keep_last=1,
    log_interval=50,
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


def run_demo(args: argparse.Namespace) -> int:
    """Run the segmentation demo. ``args`` may carry ``data_dir`` (the synthetic data goes to
    ``<data_dir>/segment``), ``output_dir``/``output``, ``iterations``, ``threads``, ``seed``, ``device``
    and ``from_scratch`` (ignore the classification demo checkpoint)."""
    import torch

    from ..data.synthetic import generate_segmentation
    from ..demo import classify_demo_backbone
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
    found = None if getattr(args, "from_scratch", False) else classify_demo_backbone()
    overrides = dict(DEMO_SETTINGS, data_dir=str(data_dir), output_dir=str(output), seed=seed)
    if found is not None:
        checkpoint, backbone = found
        overrides.update(backbone, backbone_checkpoint=str(checkpoint))
        print(f"[2/4] backbone: {backbone['model']} from the classification demo checkpoint {checkpoint}", flush=True)
    else:
        print(f"[2/4] backbone: {DEMO_SETTINGS['model']} from scratch (run 'litvit demo' first to start from "
              "the classification demo's weights)", flush=True)
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
    print(f"time: {(time.time() - start) / 60:.1f} min in all (training {train_time / 60:.1f} min)")
    print(f"checkpoint:  {output / 'best.pth'}")
    print(f"predictions: {output / 'predictions'}")
    print(f"next: litvit segment eval {output / 'best.pth'} --data-dir {data_dir}")
    return 0

"""``litvit demo --task detect``: RetinaNet-LIT and Mask R-CNN-LIT on the synthetic shapes data, on the CPU.

Generates the COCO-format shapes dataset (if absent), trains each detector with the same
trainer as ``litvit detect train`` (a narrowed LIT-Ti-shaped backbone, 128 px images, smaller
heads), evaluates it on the held-out split with the same pycocotools path as
``litvit detect eval``, and draws predictions for a few held-out images.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any, Dict, List

__all__ = ["run_demo", "DEMO_DATA", "DEMO_COMMON", "DEMO_DETECTORS"]

# 600 training / 100 held-out 128 px images with 1-5 shapes (6 classes) each.
DEMO_DATA: Dict[str, Any] = dict(num_train=600, num_val=100, image_size=128, seed=0)

# The classification demo's backbone shape: LIT-Ti layout (absolute position embeddings, MLP-only
# stages 1-2, DTMs), narrowed and shortened for a 2-core CPU.
DEMO_BACKBONE: Dict[str, Any] = dict(
    embed_dims=[32, 64, 128, 160], depths=[1, 1, 2, 1], num_heads=[1, 2, 4, 5], mlp_ratios=[4, 4, 4, 4], img_size=128
)

DEMO_COMMON: Dict[str, Any] = dict(
    model="lit_ti",
    backbone_kwargs=DEMO_BACKBONE,
    drop_path=0.0,
    # The images are already small: no resizing.
    min_size=128,
    max_size=128,
    batch_size=8,
    warmup_iters=50,
    hflip=0.5,
    workers=1,
    device="cpu",
    keep_last=1,
    log_every=25,
    eval_batch_size=8,
)

# Objects are 17-58 px: anchors start at 16 px instead of 32 px; heads are narrower.
DEMO_DETECTORS: Dict[str, Dict[str, Any]] = {
    "retinanet": dict(
        arch="retinanet",
        epochs=20,
        lr=1e-3,
        lr_steps=[15, 18],
        model_kwargs=dict(fpn_channels=64, head_convs=2, head_norm=True, octave_base_scale=2.0),
    ),
    "mask_rcnn": dict(
        arch="mask_rcnn",
        epochs=10,
        lr=1e-3,
        lr_steps=[8, 9],
        model_kwargs=dict(
            fpn_channels=64,
            box_head_dim=256,
            mask_head_channels=64,
            anchor_sizes=[16, 32, 64, 128, 256],
            # RoI budgets sized for at most 5 objects per image (CPU RoIAlign and NMS dominate).
            rpn_pre_nms_top_n_train=600,
            rpn_post_nms_top_n_train=300,
            rpn_pre_nms_top_n_test=300,
            rpn_post_nms_top_n_test=100,
            box_batch_size_per_image=64,
            box_detections_per_img=30,
        ),
    ),
}


def _threads(requested: Any) -> int:
    if requested:
        return int(requested)
    return max(1, min(4, os.cpu_count() or 1))


def _selected(args: argparse.Namespace) -> List[str]:
    choice = getattr(args, "detector", None) or getattr(args, "model", None) or "both"
    if choice in ("both", "all"):
        return list(DEMO_DETECTORS)
    if choice not in DEMO_DETECTORS:
        from ..errors import LitvitError

        raise LitvitError(f"unknown demo detector {choice!r}; choose retinanet, mask_rcnn or both")
    return [choice]


def run_demo(args: argparse.Namespace) -> int:
    """Run the detection demo.

    ``args`` may carry ``data_dir`` (data goes to ``<data_dir>/detect``), ``output_dir`` or
    ``output`` (runs go to ``<output>/{retinanet,mask_rcnn}``), ``model``/``detector``
    (``retinanet``, ``mask_rcnn`` or ``both``), ``epochs``, ``threads``, ``device``, ``seed``.
    """
    import torch

    from ..data.synthetic import generate_detection
    from ..engine.config import dump_config  # noqa: F401  (same config machinery as the CLI)
    from .config import resolve_detect_config
    from .engine import detector_from_checkpoint, train
    from .evaluate import format_summary
    from .predict import predict_images

    data_dir = Path(getattr(args, "data_dir", None) or "demo_data") / "detect"
    output = Path(getattr(args, "output_dir", None) or getattr(args, "output", None) or "runs/demo-detect")
    threads = _threads(getattr(args, "threads", None))
    torch.set_num_threads(threads)
    start = time.time()
    print(f"[1/3] synthetic COCO-format shapes data: {data_dir}", flush=True)
    generate_detection(data_dir, **DEMO_DATA)
    results = {}
    for name in _selected(args):
        overrides = dict(DEMO_COMMON, **DEMO_DETECTORS[name], data_root=str(data_dir), output=str(output / name),
                         seed=int(getattr(args, "seed", 0) or 0), threads=threads)
        if getattr(args, "epochs", None):
            overrides["epochs"] = int(args.epochs)
        if getattr(args, "device", None):
            overrides["device"] = args.device
        cfg = resolve_detect_config(**overrides)
        run_dir = Path(cfg.output)
        # A finished demo run starts afresh; an interrupted one continues where it stopped.
        if (run_dir / "eval.json").exists():
            for old in list(run_dir.glob("checkpoint-*.pth")) + [run_dir / "best.pth", run_dir / "metrics.jsonl", run_dir / "eval.json"]:
                old.unlink(missing_ok=True)
        cfg.resume = "auto"
        print(f"[2/3] training {name}-LIT for {cfg.epochs} epochs on {cfg.device} ({threads} threads) -> {run_dir}", flush=True)
        t0, cpu0 = time.time(), time.process_time()
        metrics = train(cfg)
        minutes, cpu_minutes = (time.time() - t0) / 60, (time.process_time() - cpu0) / 60
        results[name] = (metrics, minutes, cpu_minutes)
        print(f"{name}: held-out {format_summary(metrics)}  (training + evaluation {minutes:.1f} min wall, "
              f"{cpu_minutes:.1f} min CPU)", flush=True)

        model, meta = detector_from_checkpoint(str(run_dir / f"checkpoint-epoch{cfg.epochs:03d}.pth"))
        images = sorted((data_dir / "images" / "val").glob("*.png"))[:4]
        predict_images(model, images, run_dir / "predictions", meta["categories"]["names"], torch.device(cfg.device), 0.3)

    print("[3/3] summary (COCO metrics from pycocotools on the 100 held-out images)")
    for name, (metrics, minutes, cpu_minutes) in results.items():
        parts = [f"box AP50 {metrics['bbox']['AP50']:.3f} AP {metrics['bbox']['AP']:.3f}"]
        if "segm" in metrics:
            parts.append(f"mask AP50 {metrics['segm']['AP50']:.3f} AP {metrics['segm']['AP']:.3f}")
        print(f"  {name:10s} {', '.join(parts)}  ({minutes:.1f} min wall, {cpu_minutes:.1f} min CPU)  "
              f"drawings: {output / name / 'predictions'}")
    print(f"total time {(time.time() - start) / 60:.1f} min")
    return 0

"""Detection training configuration: the released 1x COCO recipe as defaults.

Resolution order (later wins): field defaults < per-detector recipe (learning rate) < YAML
file (``--config``) < command-line options; see :func:`litvit.engine.config.build_config`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

from ..engine.amp import AMP_CHOICES
from ..engine.config import build_config
from ..engine.config import setting

__all__ = ["DetectTrainConfig", "resolve_detect_config", "DEFAULT_LR"]

#: AdamW learning rate of the released 1x recipes (16 images per batch).
DEFAULT_LR = {"retinanet": 1e-4, "mask_rcnn": 2e-4}




@dataclass
class DetectTrainConfig:
    # data
    data_root: Optional[str] = setting(None, "COCO 2017 layout: annotations/instances_{train,val}2017.json, {train,val}2017/")
    train_split: str = setting("train", "training split name under --data-root (train -> train2017)")
    val_split: str = setting("val", "validation split name under --data-root ('' to skip evaluation)")
    train_images: Optional[str] = setting(None, "training images folder (instead of --data-root)")
    train_ann: Optional[str] = setting(None, "training instances JSON (instead of --data-root)")
    val_images: Optional[str] = setting(None, "validation images folder (instead of --data-root)")
    val_ann: Optional[str] = setting(None, "validation instances JSON (instead of --data-root)")
    skip_missing_images: bool = setting(False, "leave out (and count) images whose file is missing instead of stopping")
    keep_empty_images: bool = setting(False, "train on images without annotations too (as pure negatives)")
    output: str = setting("runs/detect", "run directory (checkpoints, metrics.jsonl, config.yaml, eval JSON)")
    # model
    arch: str = setting("retinanet", "detector", choices=("retinanet", "mask_rcnn"))
    model: str = setting("lit_ti", "LIT backbone",
                         choices=("lit_ti", "lit_s", "lit_m", "lit_b", "litv2_s", "litv2_m", "litv2_b", "litv2_b_384"))
    backbone_checkpoint: Optional[str] = setting(None, "ImageNet classification checkpoint for the backbone (released or litvit)")
    init_checkpoint: Optional[str] = setting(
        None, "start from a whole detector (released mmdetection file or litvit checkpoint); it sets --arch, --model "
        "and the backbone shape; with another class count the classifier layers start afresh")
    frozen_stages: int = setting(-1, "freeze the patch embedding and the first N stages (-1: none)")
    norm_eval: bool = setting(False, "keep the DTM BatchNorms in eval mode while training")
    drop_path: Optional[float] = setting(None, "backbone stochastic depth (default: the model's ImageNet rate)")
    min_size: int = setting(800, "shorter image side after resizing (keep ratio)")
    max_size: int = setting(1333, "longer image side limit after resizing")
    model_kwargs: Dict[str, Any] = setting({}, "extra detector-builder arguments as YAML, e.g. '{fpn_channels: 128}'")
    backbone_kwargs: Dict[str, Any] = setting({}, "extra LIT arguments as YAML, e.g. '{embed_dims: [32, 64, 128, 160]}'")
    # schedule and optimiser (released 1x: 8 GPUs x 2 images, 12 epochs)
    epochs: int = setting(12, "training epochs")
    batch_size: int = setting(2, "images per process per step")
    lr: Optional[float] = setting(None, "AdamW learning rate (default: 1e-4 RetinaNet, 2e-4 Mask R-CNN, for 16 images per step)")
    weight_decay: float = setting(1e-4, "weight decay (none on norms and position tables)")
    opt_betas: Tuple[float, ...] = setting((0.9, 0.999), "AdamW betas")
    offset_lr_scale: float = setting(0.01, "learning-rate factor of the DTM offset convolutions")
    warmup_iters: int = setting(500, "linear warm-up length in optimiser steps")
    warmup_ratio: float = setting(0.001, "learning-rate factor at the start of warm-up")
    lr_steps: Tuple[int, ...] = setting((8, 11), "epochs after which the learning rate is multiplied by lr-gamma")
    lr_gamma: float = setting(0.1, "learning-rate step factor")
    clip_grad: Optional[float] = setting(None, "gradient-norm clipping (none in the released recipe)")
    hflip: float = setting(0.5, "horizontal flip probability")
    # hardware
    device: str = setting("auto", "'auto', 'cpu', 'cuda' or 'cuda:N'")
    amp: str = setting("auto", "autocast dtype: 'auto' (fp16 on CUDA as released, none on CPU), 'bf16', 'fp16', 'none'",
                  choices=AMP_CHOICES)
    workers: int = setting(2, "data-loader worker processes per training process")
    threads: Optional[int] = setting(None, "CPU threads for torch (default: torch's choice)")
    # bookkeeping
    seed: int = setting(0, "random seed (data order, flips, initialisation)")
    resume: Optional[str] = setting(None, "'auto' (newest complete checkpoint in the run directory) or a checkpoint path")
    save_every_steps: int = setting(0, "also checkpoint every N optimiser steps (0: once per epoch only)")
    keep_last: int = setting(2, "periodic checkpoints to keep (best.pth is kept in addition)")
    eval_every: int = setting(1, "evaluate every N epochs (and after the last)")
    eval_batch_size: int = setting(2, "evaluation images per process")
    log_every: int = setting(50, "write a step record to metrics.jsonl every N steps")

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.epochs < 1:
            raise ValueError("batch_size and epochs must be positive")
        if self.warmup_iters < 0 or not 0 < self.warmup_ratio <= 1:
            raise ValueError("warmup_iters must be >= 0 and warmup_ratio in (0, 1]")


def resolve_detect_config(args: Any = None, yaml_path: Optional[str] = None, **overrides: Any) -> DetectTrainConfig:
    """A :class:`DetectTrainConfig` from parsed command-line ``args``, a YAML file and keyword overrides."""

    def defaults(user: Dict[str, Any]) -> Dict[str, Any]:
        return {"lr": DEFAULT_LR[user.get("arch", "retinanet")]}

    return build_config(DetectTrainConfig, args, defaults_fn=defaults, yaml_path=yaml_path, overrides=overrides or None)

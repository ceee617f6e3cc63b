"""Configuration of ``litvit segment train``: the released Semantic FPN ADE20K recipe by default."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

from ..engine.amp import AMP_CHOICES
from ..engine.config import setting
from .models import DEFAULT_SEG_DROP_PATH
from .transforms import IGNORE_INDEX

__all__ = ["SegTrainConfig"]


@dataclass
class SegTrainConfig:
    # data
    data_dir: Optional[str] = setting(None, "dataset root (ADEChallengeData2016, or a folder with images/ and annotations/)")
    dataset: str = setting("ade20k", "label convention and defaults: ade20k (150 classes, 0 = ignore, others shifted down) "
                      "or folder (values are class indices)", choices=("ade20k", "folder"))
    train_split: str = setting("training", "sub-folder of images/ and annotations/ to train on")
    val_split: Optional[str] = setting("validation", "sub-folder to evaluate on (none: no evaluation)")
    image_dirname: str = setting("images", "folder of images under the dataset root")
    label_dirname: str = setting("annotations", "folder of label PNGs under the dataset root")
    num_classes: Optional[int] = setting(None, "number of classes (default: the length of the class-name file, else 150 for ade20k)")
    reduce_zero_label: Optional[bool] = setting(None, "label 0 = ignore, others shifted down by one (default: on for ade20k)")
    ignore_index: int = setting(IGNORE_INDEX, "label value that marks unlabelled pixels (without --reduce-zero-label)")
    class_names: Optional[str] = setting(None, "text file with one class name per line (default: <data-dir>/classes.txt if present)")
    bad_data: str = setting("error", "missing pairs, size mismatches, RGB labels, out-of-range values: "
                       "error, or skip (leave pairs out / set values to ignore, with counts in the log)",
                       choices=("error", "skip"))
    # model
    model: str = setting("lit_ti", "LIT backbone: lit_ti, lit_s, lit_m, lit_b, litv2_s, litv2_m, litv2_b")
    backbone_checkpoint: Optional[str] = setting(None, "ImageNet classification checkpoint to initialise the backbone")
    init_checkpoint: Optional[str] = setting(
        None, "start from a whole segmenter (released mmsegmentation file or litvit checkpoint); it sets --model and the "
        "backbone shape; with another class count the classifier starts afresh")
    embed_dims: Optional[Tuple[int, ...]] = setting(None, "override the backbone widths (small experiments)")
    depths: Optional[Tuple[int, ...]] = setting(None, "override the backbone depths")
    num_heads: Optional[Tuple[int, ...]] = setting(None, "override the attention heads per stage")
    mlp_ratios: Optional[Tuple[float, ...]] = setting(None, "override the MLP ratios per stage")
    img_size: Optional[int] = setting(None, "size the backbone position tables are stored at (default: the model's)")
    drop_path_rate: float = setting(DEFAULT_SEG_DROP_PATH, "backbone stochastic depth")
    fpn_channels: int = setting(256, "FPN width")
    head_channels: int = setting(128, "Semantic FPN head width")
    dropout: float = setting(0.1, "dropout before the classifier")
    sync_bn: bool = setting(True, "SyncBatchNorm under DDP (CUDA only; PyTorch has no CPU SyncBatchNorm)")
    # optimisation
    iterations: int = setting(80000, "training iterations (optimiser steps)")
    batch_size: int = setting(2, "images per process per step (8 GPUs x 2 = the released 16)")
    lr: float = setting(1e-4, "AdamW learning rate")
    weight_decay: float = setting(1e-4, "AdamW weight decay")
    lr_min: float = setting(1e-6, "learning rate at the end of the poly decay")
    poly_power: float = setting(0.9, "poly decay power")
    warmup_iters: int = setting(0, "linear warm-up iterations (the released recipe has none)")
    offset_lr_mult: float = setting(0.01, "learning-rate factor of the DTM offset convolutions")
    clip_grad: Optional[float] = setting(None, "clip the gradient norm to this value")
    class_weights: Optional[Tuple[float, ...]] = setting(None, "cross-entropy weight per class (default: all 1, as released)")
    amp: str = setting("auto", "autocast dtype: 'auto' (fp16 on CUDA as released, none on CPU), 'bf16', "
                  "'fp16' (with a loss scaler), 'none'", choices=AMP_CHOICES)
    # augmentation
    crop_size: Tuple[int, ...] = setting((512, 512), "training crop (height width)")
    scale: Tuple[int, ...] = setting((2048, 512), "keep-ratio rescale target (long short) before the random ratio")
    ratio_range: Optional[Tuple[float, ...]] = setting((0.5, 2.0), "random rescale ratio range (none: fixed scale)")
    cat_max_ratio: float = setting(0.75, "re-draw crops in which one class covers this share or more (1: off)")
    flip: bool = setting(True, "random horizontal flip")
    photometric: bool = setting(True, "photometric distortion")
    # evaluation
    test_scale: Optional[Tuple[int, ...]] = setting((2048, 512), "resize test images to fit (long short); none: as is")
    eval_mode: str = setting("whole", "whole-image or sliding-window inference", choices=("whole", "slide"))
    eval_flip: bool = setting(False, "average with the mirrored image")
    slide_crop: Tuple[int, ...] = setting((512, 512), "sliding-window size")
    slide_stride: Tuple[int, ...] = setting((341, 341), "sliding-window stride")
    eval_batch_size: int = setting(1, "images per process during evaluation")
    eval_interval: int = setting(8000, "evaluate every N iterations (0: only at the end)")
    # bookkeeping
    checkpoint_interval: int = setting(8000, "checkpoint every N iterations (and at the end)")
    keep_last: int = setting(2, "periodic checkpoints to keep (best.pth is kept besides)")
    log_interval: int = setting(50, "log the loss every N iterations")
    workers: int = setting(4, "data-loading processes per training process")
    seed: int = setting(0, "random seed")
    device: Optional[str] = setting(None, "cpu, cuda, cuda:N (default: GPU if available)")
    output_dir: str = setting("runs/segment", "run directory (checkpoints, metrics.jsonl, config.yaml)")
    resume: Optional[str] = setting(None, "'auto' (newest checkpoint in the run directory) or a checkpoint path")

    def __post_init__(self) -> None:
        for name in ("crop_size", "scale", "slide_crop", "slide_stride"):
            if len(getattr(self, name)) != 2:
                raise ValueError(f"{name} takes two numbers")
        if self.ratio_range is not None and len(self.ratio_range) != 2:
            raise ValueError("ratio_range takes two numbers")
        if any(s % 32 for s in self.crop_size):
            raise ValueError(f"crop_size must be multiples of 32, got {tuple(self.crop_size)}")
        if self.iterations < 1 or self.batch_size < 1:
            raise ValueError("iterations and batch_size must be positive")

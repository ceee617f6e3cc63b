"""Training configuration: one dataclass, the released recipes as per-model defaults, presets.

Resolution order (later wins): field defaults < preset and per-model recipe < YAML file
(``--config``) < command-line options. See :func:`litvit.engine.config.build_config`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

from ..engine.amp import AMP_CHOICES
from ..engine.config import build_config
from ..engine.config import setting

__all__ = ["TrainConfig", "recipe_defaults", "PRESETS", "resolve_train_config"]




@dataclass
class TrainConfig:
    # data
    data_dir: Optional[str] = setting(None, "image folder with <train-split>/<class>/* and <val-split>/<class>/*")
    train_split: str = setting("train", "training split folder name")
    val_split: str = setting("val", "validation split folder name ('' to skip evaluation)")
    output: str = setting("runs/classify", "run directory (checkpoints, metrics.jsonl, config.yaml, curves.png)")
    strict: bool = setting(False, "stop at the first unreadable image instead of skipping it")
    # model
    model: str = setting("lit_ti", "lit_ti, lit_s, lit_m, lit_b or any timm model name")
    model_kwargs: Dict[str, Any] = setting({}, "extra model arguments as YAML, e.g. '{embed_dims: [32, 64, 128, 160]}'")
    num_classes: Optional[int] = setting(None, "class count (default: number of class folders)")
    img_size: int = setting(224, "training and evaluation resolution (LIT: a multiple of 32)")
    drop_path: Optional[float] = setting(None, "stochastic depth rate (default: the model's recipe)")
    drop: float = setting(0.0, "dropout before the classifier")
    init_checkpoint: Optional[str] = setting(None, "start from these weights (released or litvit); new class count -> new classifier")
    init_use_ema: bool = setting(False, "take the EMA weights of --init-checkpoint")
    preset: str = setting("imagenet", "recipe: 'imagenet' (the released one) or 'finetune'", choices=("imagenet", "finetune"))
    # schedule and optimiser
    epochs: int = setting(300, "training epochs")
    batch_size: int = setting(128, "images per process per step (global batch = this x processes x accum-steps)")
    accum_steps: int = setting(1, "gradient accumulation steps")
    opt: str = setting("adamw", "timm optimiser name")
    opt_eps: float = setting(1e-8, "optimiser epsilon")
    opt_betas: Tuple[float, ...] = setting((0.9, 0.999), "optimiser betas")
    momentum: float = setting(0.9, "momentum (SGD-like optimisers)")
    weight_decay: float = setting(0.05, "weight decay (not on biases, norms, position tables, class token)")
    lr: Optional[float] = setting(None, "peak learning rate (default: base-lr x global batch / 512)")
    base_lr: float = setting(5e-4, "learning rate per 512 images of global batch")
    min_lr: Optional[float] = setting(None, "final learning rate of the cosine")
    warmup_lr: Optional[float] = setting(None, "learning rate at the start of warm-up")
    scale_min_lr: Optional[bool] = setting(None, "multiply min-lr and warmup-lr by global batch / 512 (LIT-S/M/B recipe)")
    warmup_epochs: Optional[float] = setting(None, "linear warm-up length in epochs")
    sched: str = setting("cosine", "learning-rate schedule", choices=("cosine", "constant"))
    sched_per_step: bool = setting(True, "update the learning rate every optimiser step (else once per epoch, as released)")
    offset_lr_scale: float = setting(0.01, "learning-rate factor of the DTM offset convolutions")
    clip_grad: Optional[float] = setting(None, "gradient-norm clipping (default: 5.0 for LIT-S/M/B, none for LIT-Ti)")
    # augmentation (train) and evaluation transform
    no_aug: bool = setting(False, "no augmentation beyond resize and crop")
    scale: Tuple[float, ...] = setting((0.08, 1.0), "random-resized-crop area range")
    ratio: Tuple[float, ...] = setting((3 / 4, 4 / 3), "random-resized-crop aspect range")
    hflip: float = setting(0.5, "horizontal flip probability")
    vflip: float = setting(0.0, "vertical flip probability")
    auto_augment: Optional[str] = setting("rand-m9-mstd0.5-inc1", "timm auto-augment policy ('none' to disable)")
    color_jitter: float = setting(0.4, "colour jitter (timm applies it only without auto-augment)")
    train_interpolation: str = setting("bicubic", "interpolation of training crops")
    reprob: float = setting(0.25, "random erasing probability")
    remode: str = setting("pixel", "random erasing fill", choices=("const", "rand", "pixel"))
    recount: int = setting(1, "random erasing regions")
    mixup: float = setting(0.8, "Mixup alpha (0 disables)")
    cutmix: float = setting(1.0, "CutMix alpha (0 disables)")
    mixup_prob: float = setting(1.0, "probability of applying Mixup or CutMix to a batch")
    mixup_switch_prob: float = setting(0.5, "probability of CutMix instead of Mixup")
    mixup_mode: str = setting("batch", "Mixup granularity", choices=("batch", "pair", "elem"))
    smoothing: float = setting(0.1, "label smoothing")
    interpolation: str = setting("bicubic", "interpolation of the evaluation resize")
    crop_pct: float = setting(0.875, "evaluation centre-crop ratio (224 / 256)")
    mean: Tuple[float, ...] = setting((0.485, 0.456, 0.406), "normalisation mean")
    std: Tuple[float, ...] = setting((0.229, 0.224, 0.225), "normalisation std")
    # EMA
    model_ema: bool = setting(False, "keep an exponential moving average of the weights")
    model_ema_decay: float = setting(0.99996, "EMA decay per optimiser step")
    # hardware
    device: str = setting("auto", "'auto', 'cpu', 'cuda' or 'cuda:N'")
    amp: str = setting("auto", "autocast dtype: 'auto' (bf16 on CUDA, fp16 on GPUs without bf16, none on CPU), "
                  "'bf16', 'fp16' (with a loss scaler), 'none'", choices=AMP_CHOICES)
    grad_checkpointing: bool = setting(False, "recompute activations in backward to save memory")
    compile: bool = setting(False, "torch.compile the model")
    fused_optimizer: bool = setting(True, "Adam/AdamW as torch's fused kernel (fused=True) where the parameters' "
                                    "device has one (CPU, CUDA); --no-fused-optimizer: torch's default")
    optimize: bool = setting(True, "on a CPU, swap modules for faster twins with the same weights and outputs "
                             "(litvit.optimize); --no-optimize trains the plain model")
    onednn_weight_grad: Optional[bool] = setting(None, "with the CPU speed layer, weight gradients through oneDNN too "
                                                 "(default: where a timed product says oneDNN is markedly faster)")
    channels_last: bool = setting(False, "channels-last memory format (helps convolutions on recent GPUs)")
    sync_bn: bool = setting(False, "synchronise BatchNorm statistics across processes (CUDA)")
    workers: int = setting(8, "data-loader worker processes per training process")
    pin_memory: bool = setting(True, "pinned host memory for faster copies to the GPU")
    persistent_workers: bool = setting(True, "keep loader workers alive between epochs")
    prefetch_factor: int = setting(2, "batches prefetched per worker")
    threads: Optional[int] = setting(None, "CPU threads for torch (default: torch's choice)")
    # bookkeeping
    seed: int = setting(0, "random seed (data order, augmentation, initialisation)")
    deterministic: bool = setting(False, "deterministic algorithms (slower; for exact reproducibility)")
    resume: Optional[str] = setting(None, "'auto' (newest complete checkpoint in the run directory) or a checkpoint path")
    save_every_steps: int = setting(0, "also checkpoint every N optimiser steps (0: once per epoch only)")
    keep_last: int = setting(2, "periodic checkpoints to keep (best.pth is kept in addition)")
    eval_every: int = setting(1, "evaluate every N epochs (and after the last)")
    eval_batch_size: Optional[int] = setting(None, "evaluation batch size per process (default: 2 x batch-size)")
    progress: str = setting("auto", "progress display", choices=("auto", "bar", "lines", "none"))


# The released recipes (see the reference table). Values are absolute unless scale_min_lr.
_RECIPES: Dict[str, Dict[str, Any]] = {
    "lit_ti": dict(drop_path=0.1, min_lr=1e-5, warmup_lr=1e-6, scale_min_lr=False, warmup_epochs=5, clip_grad=None),
    "lit_s": dict(drop_path=0.2, min_lr=5e-6, warmup_lr=5e-7, scale_min_lr=True, warmup_epochs=20, clip_grad=5.0),
    "lit_m": dict(drop_path=0.3, min_lr=5e-6, warmup_lr=5e-7, scale_min_lr=True, warmup_epochs=20, clip_grad=5.0),
    "lit_b": dict(drop_path=0.5, min_lr=5e-6, warmup_lr=5e-7, scale_min_lr=True, warmup_epochs=20, clip_grad=5.0),
    # LITv2 trains with LIT-S/M/B's recipe (offset convolutions at 0.01x included).
    "litv2_s": dict(drop_path=0.2, min_lr=5e-6, warmup_lr=5e-7, scale_min_lr=True, warmup_epochs=20, clip_grad=5.0),
    "litv2_m": dict(drop_path=0.3, min_lr=5e-6, warmup_lr=5e-7, scale_min_lr=True, warmup_epochs=20, clip_grad=5.0),
    "litv2_b": dict(drop_path=0.5, min_lr=5e-6, warmup_lr=5e-7, scale_min_lr=True, warmup_epochs=20, clip_grad=5.0),
    # LITv2-B's 384 px fine-tune of the 224 px model: 30 epochs, evaluated without a crop.
    "litv2_b_384": dict(
        drop_path=0.5, epochs=30, base_lr=2e-5, min_lr=2e-7, warmup_lr=2e-8, scale_min_lr=True, warmup_epochs=5,
        clip_grad=5.0, weight_decay=1e-8, img_size=384, crop_pct=1.0,
    ),
}
# Non-LIT timm models get DeiT's defaults.
_GENERIC_RECIPE = dict(drop_path=0.1, min_lr=1e-5, warmup_lr=1e-6, scale_min_lr=False, warmup_epochs=5, clip_grad=None)

# Fine-tuning from a pre-trained checkpoint: a tenth of the learning rate, one warm-up epoch,
# no Mixup/CutMix (they slow convergence on small datasets), lighter regularisation.
PRESETS: Dict[str, Dict[str, Any]] = {
    "imagenet": {},
    "finetune": dict(
        epochs=30,
        base_lr=5e-5,
        min_lr=1e-6,
        warmup_lr=1e-7,
        scale_min_lr=False,
        warmup_epochs=1,
        mixup=0.0,
        cutmix=0.0,
        drop_path=0.1,
        weight_decay=0.05,
    ),
}


def recipe_defaults(model: str, preset: str = "imagenet") -> Dict[str, Any]:
    """Defaults of ``model`` under ``preset`` (the released recipe for ``'imagenet'``)."""
    values = dict(_RECIPES.get(model, _GENERIC_RECIPE))
    values.update(PRESETS[preset])
    return values


def resolve_train_config(args: Any = None, yaml_path: Optional[str] = None, **overrides: Any) -> TrainConfig:
    """A :class:`TrainConfig` from parsed command-line ``args``, a YAML file and keyword overrides."""

    def defaults(user: Dict[str, Any]) -> Dict[str, Any]:
        return recipe_defaults(user.get("model", "lit_ti"), user.get("preset", "imagenet"))

    return build_config(TrainConfig, args, defaults_fn=defaults, yaml_path=yaml_path, overrides=overrides or None)

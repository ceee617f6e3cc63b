"""Iteration-based Semantic FPN training and evaluation on the shared engine (``litvit.engine``).

The defaults are the released ADE20K recipe: AdamW lr 1e-4, weight decay 1e-4, poly decay
(power 0.9) to 1e-6 over 80k iterations, 2 images per GPU on 8 GPUs (16 per batch), SyncBN
under DDP, mixed precision on CUDA, a checkpoint and an evaluation every 8k iterations.
"""
from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader

from ..checkpoint import extract_state_dict, load_model_weights, read_checkpoint
from ..engine import (
    CheckpointManager,
    ChunkedDistributedSampler,
    EvalDistributedSampler,
    MetricsLogger,
    all_reduce_sum,
    capture_rng_state,
    check_finite,
    get_logger,
    init_distributed,
    progress,
    restore_rng_state,
    unwrap_model,
)
from ..engine.amp import AMP_CHOICES, autocast, grad_scaler, resolve_amp
from ..engine.config import config_to_dict
from ..engine.config import setting
from ..errors import CheckpointError, DataError, LitvitError
from .data import SegmentationDataset, ade20k_dirs, collate_eval, collate_train, find_pairs, read_class_names
from .inference import logits_to_labels, predict_logits
from .metrics import ConfusionMatrix, format_metrics
from .models import DEFAULT_SEG_DROP_PATH, SemanticFPN, model_config, semantic_fpn_lit
from .transforms import IGNORE_INDEX, EvalPreset, build_train_transforms

__all__ = [
    "SegTrainConfig",
    "DatasetInfo",
    "resolve_dataset",
    "build_param_groups",
    "segmentation_loss",
    "train",
    "evaluate",
    "load_trained_model",
]




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


@dataclass
class DatasetInfo:
    num_classes: int
    reduce_zero_label: bool
    ignore_index: int
    class_names: List[str]


def resolve_dataset(cfg: SegTrainConfig) -> DatasetInfo:
    """Class count, label convention and class names implied by the configuration."""
    names_file = cfg.class_names
    if names_file is None and cfg.data_dir and (Path(cfg.data_dir) / "classes.txt").is_file():
        names_file = str(Path(cfg.data_dir) / "classes.txt")
    num_classes = cfg.num_classes
    if num_classes is None and names_file is not None:
        num_classes = len(read_class_names(names_file, None))
    if cfg.dataset == "ade20k":
        num_classes = num_classes or 150
        reduce_zero_label = True if cfg.reduce_zero_label is None else cfg.reduce_zero_label
    else:
        if not num_classes:
            raise DataError("--dataset folder needs --num-classes (or a class-name file)")
        reduce_zero_label = bool(cfg.reduce_zero_label)
    return DatasetInfo(num_classes, reduce_zero_label, cfg.ignore_index, read_class_names(names_file, num_classes))


def build_dataset(
    data_dir: str, split: str, info: DatasetInfo, transform: Any, bad_data: str,
    image_dirname: str = "images", label_dirname: str = "annotations",
) -> SegmentationDataset:
    image_dir, label_dir = ade20k_dirs(data_dir, split, image_dirname, label_dirname)
    samples = find_pairs(image_dir, label_dir, bad_data=bad_data)
    return SegmentationDataset(samples, info.num_classes, transform, info.reduce_zero_label, info.ignore_index, bad_data)


def build_param_groups(model: nn.Module, lr: float, weight_decay: float, offset_lr_mult: float) -> List[Dict[str, Any]]:
    """Two AdamW groups: the DTM offset convolutions at ``offset_lr_mult x lr``, everything else at
    ``lr``; weight decay on all parameters, as in the released segmentation configs."""
    model = unwrap_model(model)
    offsets = {id(p) for p in (model.offset_parameters() if hasattr(model, "offset_parameters") else [])}
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if id(p) not in offsets], "lr": lr, "weight_decay": weight_decay, "name": "base"},
        {"params": [p for p in params if id(p) in offsets], "lr": lr * offset_lr_mult, "weight_decay": weight_decay,
         "name": "offsets"},
    ]
    return [g for g in groups if g["params"]]


def segmentation_loss(
    logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX, weight: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Pixel-wise cross-entropy over labelled pixels, optionally class-weighted (0, not NaN, for a
    batch without any labelled pixel)."""
    if not (labels != ignore_index).any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), labels, weight=weight, ignore_index=ignore_index)


def _model_kwargs(cfg: SegTrainConfig, num_classes: int) -> Dict[str, Any]:
    kwargs: Dict[str, Any] = dict(
        fpn_channels=cfg.fpn_channels, head_channels=cfg.head_channels, dropout=cfg.dropout,
        drop_path_rate=cfg.drop_path_rate,
    )
    for name in ("embed_dims", "depths", "num_heads", "mlp_ratios", "img_size"):
        if getattr(cfg, name) is not None:
            kwargs[name] = getattr(cfg, name)
    return model_config(cfg.model, num_classes, **kwargs)


def _batches(loader: DataLoader, sampler: ChunkedDistributedSampler, start: int) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
    """Endless batches; iteration ``start`` resumes inside its epoch at the right step."""
    per_epoch = sampler.steps_per_epoch
    epoch, skip = divmod(start, per_epoch)
    while True:
        sampler.set_epoch(epoch, skip)
        yield from loader
        epoch, skip = epoch + 1, 0


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: SegmentationDataset,
    device: torch.device,
    mode: str = "whole",
    flip: bool = False,
    crop_size: Sequence[int] = (512, 512),
    stride: Sequence[int] = (341, 341),
    batch_size: int = 1,
    workers: int = 0,
    amp_dtype: Optional[torch.dtype] = None,
    desc: str = "eval",
) -> Dict[str, Any]:
    """mIoU, mAcc, aAcc and per-class IoU/Acc of ``model`` on ``dataset`` (whose transform must be an
    :class:`EvalPreset`), each process taking its share; the confusion matrices are summed."""
    model = unwrap_model(model)
    was_training = model.training
    model.eval()
    sampler = EvalDistributedSampler(len(dataset))
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, collate_fn=collate_eval)
    confusion = ConfusionMatrix(dataset.num_classes, device=device)
    for batch in progress(loader, total=len(loader), desc=desc):
        images = batch["images"].to(device, non_blocking=True)
        with autocast(device, amp_dtype):
            scores = predict_logits(model, images, dataset.num_classes, mode, flip, crop_size, stride)
        preds = logits_to_labels(scores.float(), batch["sizes"], [tuple(l.shape) for l in batch["labels"]])
        for pred, label in zip(preds, batch["labels"]):
            confusion.update(pred, label.to(device))
    confusion.all_reduce()
    model.train(was_training)
    return confusion.compute()


def _save_state(
    manager: CheckpointManager, model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
    iteration: int, cfg: SegTrainConfig, info: DatasetInfo, model_cfg: Dict[str, Any], best: float, is_best: bool,
) -> Optional[Path]:
    state = {
        "model": unwrap_model(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "iteration": iteration,
        "best_miou": best,
        "rng": capture_rng_state(),
        "config": config_to_dict(cfg),
        "model_config": model_cfg,
        "dataset": {"num_classes": info.num_classes, "reduce_zero_label": info.reduce_zero_label,
                    "ignore_index": info.ignore_index, "class_names": info.class_names},
        "task": "segment",
    }
    return manager.save(state, f"iter{iteration:07d}", is_best=is_best)


def train(cfg: SegTrainConfig) -> Dict[str, Any]:
    """Train Semantic FPN-LIT; returns the last evaluation, the best mIoU and the run directory."""
    log = get_logger()
    if not cfg.data_dir:
        raise DataError("--data-dir is required")
    ctx = init_distributed(cfg.device)
    device = ctx.device
    torch.manual_seed(cfg.seed + ctx.rank)
    np.random.seed(cfg.seed + ctx.rank)
    random.seed(cfg.seed + ctx.rank)
    info = resolve_dataset(cfg)
    amp_dtype = resolve_amp(cfg.amp, device, auto_cuda=torch.float16)  # fp16 as released

    train_tf = build_train_transforms(
        cfg.crop_size, cfg.scale, tuple(cfg.ratio_range) if cfg.ratio_range else None, cfg.cat_max_ratio,
        cfg.flip, cfg.photometric,
    )
    train_set = build_dataset(cfg.data_dir, cfg.train_split, info, train_tf, cfg.bad_data, cfg.image_dirname, cfg.label_dirname)
    val_set = None
    if cfg.val_split:
        val_set = build_dataset(
            cfg.data_dir, cfg.val_split, info, EvalPreset(cfg.test_scale), cfg.bad_data, cfg.image_dirname, cfg.label_dirname
        )
    sampler = ChunkedDistributedSampler(len(train_set), cfg.batch_size, seed=cfg.seed)
    if sampler.steps_per_epoch < 1:
        raise DataError(
            f"{len(train_set)} training images are fewer than one global batch of {sampler.global_batch_size}"
        )
    loader = DataLoader(
        train_set, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.workers, collate_fn=collate_train,
        pin_memory=device.type == "cuda", persistent_workers=cfg.workers > 0, drop_last=False,
    )

    class_weight = None
    if cfg.class_weights is not None:
        if len(cfg.class_weights) != info.num_classes:
            raise LitvitError(f"--class-weights has {len(cfg.class_weights)} values for {info.num_classes} classes")
        class_weight = torch.tensor(cfg.class_weights, dtype=torch.float32, device=device)
    model_cfg = _model_kwargs(cfg, info.num_classes)
    model = semantic_fpn_lit(**{**model_cfg, "backbone_checkpoint": cfg.backbone_checkpoint})
    model.to(device)
    run_dir = Path(cfg.output_dir)
    manager = CheckpointManager(run_dir, keep_last=cfg.keep_last)
    metrics_log = MetricsLogger(run_dir)
    optimizer = torch.optim.AdamW(build_param_groups(model, cfg.lr, cfg.weight_decay, cfg.offset_lr_mult),
                                  lr=cfg.lr, weight_decay=cfg.weight_decay)
    scaler = grad_scaler(amp_dtype, device)
    from timm.scheduler import PolyLRScheduler

    scheduler = PolyLRScheduler(optimizer, t_initial=cfg.iterations, power=cfg.poly_power, lr_min=cfg.lr_min,
                                warmup_t=cfg.warmup_iters, warmup_lr_init=cfg.lr_min, t_in_epochs=False)
    start, best = 0, -1.0
    state = manager.find_resume(cfg.resume, required=("model", "optimizer", "iteration"))
    if state is not None:
        load_model_weights(model, state["model"], source=f"checkpoint {manager.resumed_from}")
        optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):  # empty unless the run trained in float16
            scaler.load_state_dict(state["scaler"])
        start, best = int(state["iteration"]), float(state.get("best_miou", -1.0))
        if "rng" in state:
            restore_rng_state(state["rng"])
        metrics_log.truncate_after("iteration", start)
        log.info("resumed from %s at iteration %d", manager.resumed_from, start)
        del state
    scheduler.step_update(start)
    if ctx.is_main:
        from ..engine.config import dump_config

        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(dump_config(cfg), encoding="utf-8")

    if ctx.is_distributed:
        if cfg.sync_bn and device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        elif cfg.sync_bn:
            log.info("SyncBatchNorm needs CUDA; batch norms stay per-process on %s", device)
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    log.info(
        "Semantic FPN-%s: %d classes, %d train / %d val images, %d iterations x %d images (%d per process), "
        "%.1fM parameters, device %s, amp %s",
        cfg.model, info.num_classes, len(train_set), len(val_set) if val_set else 0, cfg.iterations,
        sampler.global_batch_size, cfg.batch_size, sum(p.numel() for p in model.parameters()) / 1e6, device,
        amp_dtype or "none",
    )

    def run_eval(iteration: int) -> Optional[Dict[str, Any]]:
        if val_set is None:
            return None
        result = evaluate(model, val_set, device, cfg.eval_mode, cfg.eval_flip, cfg.slide_crop, cfg.slide_stride,
                          cfg.eval_batch_size, min(cfg.workers, 2), amp_dtype, desc=f"eval @{iteration}")
        metrics_log.log(iteration=iteration, split=cfg.val_split, mIoU=result["mIoU"], mAcc=result["mAcc"],
                        aAcc=result["aAcc"], IoU=result["IoU"])
        log.info("iteration %d: mIoU %.2f mAcc %.2f aAcc %.2f", iteration, 100 * result["mIoU"],
                 100 * result["mAcc"], 100 * result["aAcc"])
        return result

    model.train()
    last_eval: Optional[Dict[str, Any]] = None
    batches = _batches(loader, sampler, start)
    loss_sum = torch.zeros(2, device=device)
    tick = time.time()
    bar = progress(range(start, cfg.iterations), total=cfg.iterations - start, desc="train")
    for it in bar:
        images, labels = next(batches)
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        with autocast(device, amp_dtype):
            logits = model(images)
        loss = segmentation_loss(logits, labels, weight=class_weight)
        check_finite(loss, f"iteration {it + 1}")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if cfg.clip_grad:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step_update(it + 1)
        loss_sum += torch.stack([loss.detach().float(), torch.ones((), device=device)])
        done = it + 1
        if done % cfg.log_interval == 0 or done == cfg.iterations:
            steps = loss_sum[1].item()
            all_reduce_sum(loss_sum)
            mean_loss = (loss_sum[0] / loss_sum[1]).item()
            elapsed = time.time() - tick
            lr = optimizer.param_groups[0]["lr"]
            metrics_log.log(iteration=done, loss=mean_loss, lr=lr, sec_per_iter=elapsed / max(steps, 1))
            bar.set_postfix(loss=mean_loss, lr=lr)
            loss_sum.zero_()
            tick = time.time()
        evaluate_now = val_set is not None and (
            (cfg.eval_interval and done % cfg.eval_interval == 0) or done == cfg.iterations
        )
        improved = False
        if evaluate_now:
            last_eval = run_eval(done)
            improved = last_eval["mIoU"] > best
            best = max(best, last_eval["mIoU"])
        if improved or done % cfg.checkpoint_interval == 0 or done == cfg.iterations:
            _save_state(manager, model, optimizer, scaler, done, cfg, info, model_cfg, best, improved)
    if last_eval is not None and ctx.is_main:
        summary = {k: last_eval[k] for k in ("mIoU", "mAcc", "aAcc")}
        summary["per_class"] = {n: {"IoU": i, "Acc": a} for n, i, a in zip(info.class_names, last_eval["IoU"], last_eval["Acc"])}
        (run_dir / "eval.json").write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
        log.info("\n%s", format_metrics(last_eval, info.class_names))
    return {"run_dir": run_dir, "metrics": last_eval, "best_miou": best, "class_names": info.class_names}


def load_trained_model(path: str, device: Optional[torch.device] = None) -> Tuple[SemanticFPN, Dict[str, Any]]:
    """A Semantic FPN-LIT from a ``litvit segment train`` checkpoint, in eval mode, and the
    checkpoint's metadata (``dataset``: class count, label convention, class names; ``config``)."""
    state = read_checkpoint(path)
    if not isinstance(state, dict) or "model_config" not in state or "model" not in state:
        raise CheckpointError(f"{path} is not a litvit segmentation checkpoint (no model_config)")
    model = semantic_fpn_lit(**state["model_config"])
    load_model_weights(model, extract_state_dict(state), source=f"checkpoint {path}")
    model.to(device or torch.device("cpu")).eval()
    meta = {k: state.get(k) for k in ("dataset", "config", "iteration", "model_config")}
    return model, meta

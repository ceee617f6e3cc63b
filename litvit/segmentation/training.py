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
from ..engine.amp import autocast, grad_scaler, resolve_amp
from ..engine.config import config_to_dict
from ..errors import CheckpointError, DataError, LitvitError
from ..fileio import write_text_atomic
from .config import SegTrainConfig
from .data import SegmentationDataset, ade20k_dirs, collate_eval, collate_train, find_pairs, read_class_names
from .inference import logits_to_labels, predict_logits
from .metrics import ConfusionMatrix, format_metrics
from .models import SemanticFPN, model_config, semantic_fpn_lit
from .transforms import IGNORE_INDEX, EvalPreset, build_train_transforms

__all__ = [
    "DatasetInfo",
    "resolve_dataset",
    "build_param_groups",
    "segmentation_loss",
    "train",
    "evaluate",
    "load_trained_model",
]


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
    if cfg.init_checkpoint:
        from .released import segmenter_to_fine_tune

        if cfg.backbone_checkpoint:
            raise DataError("give --init-checkpoint (a whole segmenter) or --backbone-checkpoint, not both")
        model, model_cfg, report = segmenter_to_fine_tune(
            read_checkpoint(cfg.init_checkpoint), info.num_classes, f"checkpoint {cfg.init_checkpoint}",
            drop_path_rate=cfg.drop_path_rate, dropout=cfg.dropout)
        log.info("starting from %s (%s): %s%s", cfg.init_checkpoint, model_cfg["model_name"], report.summary(),
                 f", {len(report.reinitialised)} class-specific re-initialised" if report.reinitialised else "")
    else:
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
        write_text_atomic(run_dir / "config.yaml", dump_config(cfg))

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
        write_text_atomic(run_dir / "eval.json", json.dumps(summary, indent=2, default=str))
        log.info("\n%s", format_metrics(last_eval, info.class_names))
    return {"run_dir": run_dir, "metrics": last_eval, "best_miou": best, "class_names": info.class_names}


def load_trained_model(path: str, device: Optional[torch.device] = None) -> Tuple[SemanticFPN, Dict[str, Any]]:
    """A Semantic FPN-LIT from a ``litvit segment train`` checkpoint or a released mmsegmentation
    one (:mod:`litvit.segmentation.released`), in eval mode, and the checkpoint's metadata
    (``dataset``: class count, label convention, class names; ``config``)."""
    from .released import is_released_segmenter, load_released_segmenter

    state = read_checkpoint(path)
    if is_released_segmenter(state):
        model, meta, _ = load_released_segmenter(state, source=f"checkpoint {path}")
        return model.to(device or torch.device("cpu")), meta
    if not isinstance(state, dict) or "model_config" not in state or "model" not in state:
        raise CheckpointError(f"{path} is not a litvit segmentation checkpoint (no model_config)")
    model = semantic_fpn_lit(**state["model_config"])
    load_model_weights(model, extract_state_dict(state), source=f"checkpoint {path}")
    model.to(device or torch.device("cpu")).eval()
    meta = {k: state.get(k) for k in ("dataset", "config", "iteration", "model_config")}
    return model, meta

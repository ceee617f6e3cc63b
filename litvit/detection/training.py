"""Training RetinaNet-LIT / Mask R-CNN-LIT on COCO-format data with the shared engine.

The loop itself is detection-specific (lists of images and target dicts, a dict of losses);
process groups, checkpoints and resume, metrics, progress, the NaN guard and the sampler
come from :mod:`litvit.engine`.
"""
from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from ..checkpoint import extract_state_dict, load_model_weights, read_checkpoint
from ..engine import (
    ChunkedDistributedSampler,
    CheckpointManager,
    MetricsLogger,
    all_reduce_sum,
    capture_rng_state,
    check_finite,
    cleanup,
    get_logger,
    init_distributed,
    progress,
    restore_rng_state,
    unwrap_model,
)
from ..engine.amp import autocast, grad_scaler, resolve_amp
from ..engine.config import config_to_dict, dump_config
from ..errors import CheckpointError, DataError
from ..fileio import write_text_atomic
from .config import DetectTrainConfig
from .data import CocoDetectionDataset, coco_split_paths, collate_detection, eval_transforms, train_transforms
from .evaluate import evaluate_detector, format_summary
from .models import build_detector

__all__ = [
    "train",
    "param_groups",
    "lr_factor",
    "resolve_splits",
    "detector_from_checkpoint",
]

logger = get_logger("litvit.detection")


# ---------------------------------------------------------------------- pieces
def param_groups(
    model: nn.Module, lr: float, weight_decay: float, offset_lr_scale: float = 0.01
) -> List[Dict[str, Any]]:
    """AdamW groups of the released recipe: no weight decay on normalisation layers and
    position tables; the DTM offset convolutions at ``offset_lr_scale`` x the learning rate."""
    backbone = unwrap_model(model).backbone.body
    offset_ids = {id(p) for p in backbone.offset_parameters()}
    pos_names = {f"backbone.body.{n}" for n in backbone.no_weight_decay()}
    norm_ids = {
        id(p)
        for m in model.modules()
        if isinstance(m, (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm))
        for p in m.parameters(recurse=False)
    }
    groups: Dict[Tuple[bool, bool], List[nn.Parameter]] = {}
    for name, param in unwrap_model(model).named_parameters():
        if not param.requires_grad:
            continue
        no_decay = id(param) in norm_ids or name in pos_names
        groups.setdefault((id(param) in offset_ids, no_decay), []).append(param)
    return [
        {
            "params": params,
            "lr": lr * (offset_lr_scale if is_offset else 1.0),
            "weight_decay": 0.0 if no_decay else weight_decay,
            "name": ("offset" if is_offset else "main") + ("_no_decay" if no_decay else ""),
        }
        for (is_offset, no_decay), params in sorted(groups.items())
    ]


def lr_factor(step: int, steps_per_epoch: int, warmup_iters: int, warmup_ratio: float,
              lr_steps: Tuple[int, ...], gamma: float) -> float:
    """Learning-rate factor before optimiser step ``step`` (0-based): linear warm-up from
    ``warmup_ratio`` over ``warmup_iters`` steps, times ``gamma`` per passed epoch milestone."""
    epoch = step // max(steps_per_epoch, 1)
    factor = gamma ** sum(epoch >= m for m in lr_steps)
    if step < warmup_iters:
        factor *= 1.0 - (1.0 - warmup_ratio) * (1.0 - step / warmup_iters)
    return factor


def resolve_splits(cfg: DetectTrainConfig) -> Tuple[Tuple[Path, Path], Optional[Tuple[Path, Path]]]:
    """(images, annotations) of the training split and of the validation split (or None)."""
    if cfg.train_images or cfg.train_ann:
        if not (cfg.train_images and cfg.train_ann):
            raise DataError("give both --train-images and --train-ann")
        train = (Path(cfg.train_images), Path(cfg.train_ann))
    elif cfg.data_root:
        train = coco_split_paths(cfg.data_root, cfg.train_split)
    else:
        raise DataError("no training data: give --data-root (COCO layout) or --train-images and --train-ann")
    val = None
    if cfg.val_images or cfg.val_ann:
        if not (cfg.val_images and cfg.val_ann):
            raise DataError("give both --val-images and --val-ann")
        val = (Path(cfg.val_images), Path(cfg.val_ann))
    elif cfg.data_root and cfg.val_split:
        val = coco_split_paths(cfg.data_root, cfg.val_split)
    return train, val


def _model_spec(cfg: DetectTrainConfig, num_classes: int) -> Dict[str, Any]:
    backbone_kwargs = dict(cfg.backbone_kwargs)
    if cfg.drop_path is not None:
        backbone_kwargs["drop_path_rate"] = cfg.drop_path
    return dict(
        arch=cfg.arch,
        model_name=cfg.model,
        num_classes=num_classes,
        kwargs=dict(
            frozen_stages=cfg.frozen_stages,
            norm_eval=cfg.norm_eval,
            min_size=cfg.min_size,
            max_size=cfg.max_size,
            backbone_kwargs=backbone_kwargs,
            **cfg.model_kwargs,
        ),
    )


def build_from_spec(spec: Dict[str, Any], backbone_checkpoint: Optional[str] = None) -> nn.Module:
    """Rebuild a detector from the ``model_spec`` stored in litvit detection checkpoints."""
    kwargs = dict(spec.get("kwargs", {}))
    if backbone_checkpoint:
        kwargs["backbone_checkpoint"] = backbone_checkpoint
    try:
        return build_detector(spec["arch"], spec["model_name"], int(spec["num_classes"]), **kwargs)
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"cannot build the detector described by the checkpoint: {err}") from None


def detector_from_checkpoint(path: str, **overrides: Any) -> Tuple[nn.Module, Dict[str, Any]]:
    """A detector and its metadata (categories, config) from a ``litvit detect train`` checkpoint
    or a released mmdetection one (:mod:`litvit.detection.released`).

    ``overrides`` replace builder arguments (e.g. ``min_size``, ``score_thresh``).
    """
    from .released import is_released_detector, load_released_detector

    state = read_checkpoint(path)
    if is_released_detector(state):
        model, meta, _ = load_released_detector(state, source=f"checkpoint {path}", **overrides)
        return model, meta
    if not isinstance(state, dict) or "model_spec" not in state or "model" not in state:
        raise CheckpointError(f"{path} is not a litvit detection checkpoint (no 'model_spec'); train one with 'litvit detect train'")
    spec = dict(state["model_spec"])
    spec["kwargs"] = {**spec.get("kwargs", {}), **overrides}
    model = build_from_spec(spec)
    load_model_weights(model, extract_state_dict(state), source=f"checkpoint {path}")
    meta = {k: state.get(k) for k in ("categories", "config", "epoch", "metrics")}
    return model, meta


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _worker_init(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


# ---------------------------------------------------------------------- training
def train(cfg: DetectTrainConfig) -> Dict[str, Any]:
    """Train (or resume) a detector as ``cfg`` says; returns the last evaluation metrics."""
    ctx = init_distributed(cfg.device)
    try:
        return _train(cfg, ctx)
    finally:
        cleanup()


def _train(cfg: DetectTrainConfig, ctx) -> Dict[str, Any]:
    get_logger()  # now that the rank is known: INFO on rank 0 only
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = ctx.device
    init = None
    if cfg.init_checkpoint:
        from .released import checkpoint_spec

        if cfg.backbone_checkpoint:
            raise DataError("give --init-checkpoint (a whole detector) or --backbone-checkpoint, not both")
        # The file decides the detector and its backbone (and so whether the data need masks).
        init = read_checkpoint(cfg.init_checkpoint)
        file_spec = checkpoint_spec(init, f"checkpoint {cfg.init_checkpoint}")
        cfg.arch, cfg.model = file_spec["arch"], file_spec["model_name"]
    run_dir = Path(cfg.output)
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(run_dir / "config.yaml", dump_config(cfg))
    _seed_all(cfg.seed + ctx.rank)

    (train_images, train_ann), val_split = resolve_splits(cfg)
    with_masks = cfg.arch == "mask_rcnn"
    label_offset = 1 if with_masks else 0
    train_set = CocoDetectionDataset(
        train_images, train_ann, with_masks=with_masks, label_offset=label_offset, train=True,
        transforms=train_transforms(cfg.hflip), skip_missing_images=cfg.skip_missing_images,
        keep_empty_images=cfg.keep_empty_images, log=ctx.is_main,
    )
    val_set = None
    if val_split is not None:
        val_set = CocoDetectionDataset(
            *val_split, with_masks=False, label_offset=label_offset, train=False, transforms=eval_transforms(),
            skip_missing_images=cfg.skip_missing_images, log=ctx.is_main,
        )
        if val_set.cat_ids != train_set.cat_ids:
            raise DataError(f"the categories of {val_split[1]} differ from those of {train_ann}")
    logger.info(
        f"{cfg.arch} + {cfg.model}: {len(train_set)} training images, {train_set.num_classes} categories"
        + (f", {len(val_set)} validation images" if val_set else "")
    )

    spec = _model_spec(cfg, train_set.num_classes)
    if init is not None:
        from .released import detector_to_fine_tune

        kwargs = {k: v for k, v in spec["kwargs"].items() if k != "backbone_kwargs"}
        backbone_kwargs = {k: v for k, v in spec["kwargs"]["backbone_kwargs"].items() if k == "drop_path_rate"}
        model, spec, report = detector_to_fine_tune(init, train_set.num_classes, f"checkpoint {cfg.init_checkpoint}",
                                                    backbone_kwargs=backbone_kwargs, **kwargs)
        del init  # the file's tensors are in the model now
        logger.info(f"starting from {cfg.init_checkpoint} ({spec['arch']} + {spec['model_name']}): {report.summary()}"
                    + (f", {len(report.reinitialised)} class-specific re-initialised" if report.reinitialised else ""))
        model.to(device)
    else:
        model = build_from_spec(spec, cfg.backbone_checkpoint).to(device)
    groups = param_groups(model, cfg.lr, cfg.weight_decay, cfg.offset_lr_scale)
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.opt_betas))

    sampler = ChunkedDistributedSampler(len(train_set), cfg.batch_size, seed=cfg.seed)
    steps_per_epoch = sampler.steps_per_epoch
    if steps_per_epoch < 1:
        raise DataError(
            f"{len(train_set)} training images are fewer than one global batch "
            f"({cfg.batch_size} x {ctx.world_size} processes)"
        )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: lr_factor(step, steps_per_epoch, cfg.warmup_iters, cfg.warmup_ratio, tuple(cfg.lr_steps), cfg.lr_gamma),
    )
    amp_dtype = resolve_amp(cfg.amp, device, auto_cuda=torch.float16)  # fp16 as released
    scaler = grad_scaler(amp_dtype, device)

    ckpt = CheckpointManager(run_dir, keep_last=cfg.keep_last, is_main=ctx.is_main)
    metrics_log = MetricsLogger(run_dir)
    start_epoch, skip_steps, best_ap, last_metrics = 0, 0, -1.0, {}
    state = ckpt.find_resume(cfg.resume, required=("model", "optimizer", "scheduler", "epoch", "model_spec"))
    if state is not None:
        load_model_weights(model, extract_state_dict(state), source=f"checkpoint {ckpt.resumed_from}")
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):  # empty unless the run trained in float16
            scaler.load_state_dict(state["scaler"])
        start_epoch, skip_steps = int(state["epoch"]), int(state.get("step_in_epoch", 0))
        best_ap = float(state.get("best_ap", -1.0))
        last_metrics = state.get("metrics") or {}
        if state.get("rng") and ctx.world_size == 1:
            restore_rng_state(state["rng"])
        metrics_log.truncate_after("global_step", start_epoch * steps_per_epoch + skip_steps)
        logger.info(f"resumed from {ckpt.resumed_from} (epoch {start_epoch + 1}, step {skip_steps})")

    if ctx.is_distributed:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    loader = DataLoader(
        train_set,
        batch_size=cfg.batch_size,
        sampler=sampler,
        num_workers=cfg.workers,
        collate_fn=collate_detection,
        pin_memory=device.type == "cuda",
        worker_init_fn=_worker_init,
        persistent_workers=False,
    )
    categories = {"ids": train_set.cat_ids, "names": train_set.cat_names}

    def checkpoint(epoch: int, step_in_epoch: int, name: str, is_best: bool = False) -> None:
        ckpt.save(
            {
                "model": unwrap_model(model).state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "epoch": epoch,
                "step_in_epoch": step_in_epoch,
                "global_step": epoch * steps_per_epoch + step_in_epoch,
                "best_ap": best_ap,
                "metrics": last_metrics,
                "model_spec": spec,
                "categories": categories,
                "config": config_to_dict(cfg),
                "rng": capture_rng_state(),
            },
            name,
            is_best=is_best,
        )

    for epoch in range(start_epoch, cfg.epochs):
        sampler.set_epoch(epoch, skip_steps)
        model.train()
        sums: Dict[str, torch.Tensor] = {}
        count = 0
        start = time.time()
        bar = progress(loader, total=steps_per_epoch - skip_steps, desc=f"epoch {epoch + 1}/{cfg.epochs}")
        for i, (images, targets) in enumerate(bar):
            step_in_epoch = skip_steps + i + 1
            global_step = epoch * steps_per_epoch + step_in_epoch
            images = [img.to(device, non_blocking=True) for img in images]
            targets = [{k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in t.items()} for t in targets]
            with autocast(device, amp_dtype):
                losses = model(images, targets)
            loss = sum(losses.values())
            check_finite(loss, f"epoch {epoch + 1}, step {step_in_epoch} (global step {global_step})")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.clip_grad:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + v.detach().float()
            sums["loss"] = sums.get("loss", 0.0) + loss.detach().float()
            count += 1
            bar.set_postfix(loss=loss.item(), lr=_main_lr(optimizer))
            if cfg.log_every and global_step % cfg.log_every == 0:
                metrics_log.log(kind="step", epoch=epoch + 1, global_step=global_step, lr=_main_lr(optimizer),
                                **{k: v.item() for k, v in losses.items()}, loss=loss.item())
            if cfg.save_every_steps and step_in_epoch % cfg.save_every_steps == 0 and step_in_epoch < steps_per_epoch:
                checkpoint(epoch, step_in_epoch, f"epoch{epoch + 1:03d}-step{step_in_epoch:06d}")
        skip_steps = 0
        # Mean losses over all processes.
        keys = sorted(sums)
        totals = all_reduce_sum(torch.stack([sums[k] for k in keys] + [torch.tensor(float(count), device=device)]))
        epoch_losses = {k: (totals[j] / totals[-1].clamp(min=1)).item() for j, k in enumerate(keys)}
        record = dict(kind="epoch", epoch=epoch + 1, global_step=(epoch + 1) * steps_per_epoch,
                      lr=_main_lr(optimizer), time=round(time.time() - start, 1), **{f"train_{k}": v for k, v in epoch_losses.items()})
        logger.info(f"epoch {epoch + 1}/{cfg.epochs}: " + " ".join(f"{k} {v:.4f}" for k, v in epoch_losses.items()))

        is_best = False
        if val_set is not None and ((epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs):
            if ctx.is_distributed:
                # Every rank's BatchNorm statistics drift after DDP's per-step broadcast; evaluate
                # all shares with rank 0's, which are the ones the checkpoint keeps.
                for buffer in unwrap_model(model).buffers():
                    torch.distributed.broadcast(buffer, src=0)
            metrics = evaluate_detector(model, val_set, device, cfg.eval_batch_size, cfg.workers, amp_dtype, verbose=ctx.is_main)
            if ctx.is_main and metrics is not None:
                last_metrics = metrics
                logger.info(format_summary(metrics))
                for iou_type, values in metrics.items():
                    record.update({f"{iou_type}_{k}": v for k, v in values.items()})
                if metrics["bbox"]["AP"] > best_ap:
                    best_ap, is_best = metrics["bbox"]["AP"], True
        metrics_log.log(record)
        checkpoint(epoch + 1, 0, f"epoch{epoch + 1:03d}", is_best=is_best)
    if ctx.is_main and last_metrics:
        save_atomic_json(run_dir / "eval.json", {"checkpoint": str(ckpt.path_for(f"epoch{cfg.epochs:03d}")), "metrics": last_metrics})
    return last_metrics


def _main_lr(optimizer: torch.optim.Optimizer) -> float:
    for group in optimizer.param_groups:
        if group.get("name", "").startswith("main"):
            return group["lr"]
    return optimizer.param_groups[0]["lr"]


def save_atomic_json(path: Path, obj: Any) -> None:
    """Write JSON through a temporary file and a rename (never a half-written file)."""
    write_text_atomic(path, json.dumps(obj, indent=2))

"""``train(cfg)``: the whole training run, in one process or under ``torchrun``."""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Dict, List

import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from ..engine import (
    ChunkedDistributedSampler,
    CheckpointManager,
    EvalDistributedSampler,
    MetricsLogger,
    all_gather_object,
    barrier,
    capture_rng_state,
    cleanup,
    get_logger,
    init_distributed,
    restore_rng_state,
    unwrap_model,
)
from ..accel import optimize_for_device
from ..engine.amp import grad_scaler, resolve_amp
from ..engine.config import config_to_dict, dump_config
from ..errors import CheckpointError, DataError, LitvitError
from ..fileio import write_text_atomic
from .build import (
    build_mixup_and_loss,
    build_model,
    build_optimizer,
    build_scheduler,
    resolve_lr,
)
from .config import TrainConfig
from .data import EpochTaggedSampler, ImageFolderDataset, build_transforms, collate_with_flags
from .loops import evaluate, train_one_epoch

__all__ = ["train", "make_loader_kwargs"]


def make_loader_kwargs(cfg: TrainConfig, device: torch.device) -> Dict[str, Any]:
    """DataLoader options that keep a GPU fed: workers, pinned memory, persistent workers."""
    kwargs: Dict[str, Any] = dict(num_workers=cfg.workers, collate_fn=collate_with_flags)
    kwargs["pin_memory"] = bool(cfg.pin_memory and device.type == "cuda")
    if cfg.workers > 0:
        kwargs["persistent_workers"] = cfg.persistent_workers
        kwargs["prefetch_factor"] = cfg.prefetch_factor
    return kwargs


def _progress_kwargs(cfg: TrainConfig) -> Dict[str, Any]:
    if cfg.progress == "bar":
        return {"bar": True}
    if cfg.progress == "lines":
        return {"bar": False}
    if cfg.progress == "none":
        return {"enabled": False}
    return {}


def _check_resume_fits(state: Dict[str, Any], class_names: List[str], cfg: TrainConfig, source: Any) -> None:
    recorded = state.get("class_names")
    if recorded is not None and list(recorded) != list(class_names):
        raise DataError(
            f"checkpoint {source} was trained on {len(recorded)} classes but {cfg.data_dir}/{cfg.train_split} "
            f"has {len(class_names)} class folders" + ("" if len(recorded) != len(class_names) else " with other names")
        )
    if state.get("config", {}).get("model", cfg.model) != cfg.model:
        raise CheckpointError(f"checkpoint {source} holds a {state['config']['model']} model, not {cfg.model}")


def train(cfg: TrainConfig) -> Dict[str, Any]:
    """Train ``cfg.model`` on ``cfg.data_dir`` as configured; returns a summary (rank 0's view).

    Writes to ``cfg.output``: ``config.yaml``, ``metrics.jsonl``, ``checkpoint-epochNNNN.pth``
    (newest ``keep_last`` kept), ``best.pth`` and ``curves.png``.
    """
    if not cfg.data_dir:
        raise DataError("no data folder given (--data-dir DIR with DIR/train/<class>/* and DIR/val/<class>/*)")
    if cfg.batch_size < 1 or cfg.accum_steps < 1 or cfg.epochs < 1:
        raise LitvitError("batch-size, accum-steps and epochs must be at least 1")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    ctx = init_distributed(cfg.device)
    try:
        return _train(cfg, ctx)
    finally:
        cleanup()


def _train(cfg: TrainConfig, ctx) -> Dict[str, Any]:
    log = get_logger("litvit.train")
    device = ctx.device
    run_dir = Path(cfg.output)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    # ---------------------------------------------------------------- data
    train_set = ImageFolderDataset.from_folder(
        cfg.data_dir, cfg.train_split, transform=build_transforms(cfg, True), strict=cfg.strict, seed=cfg.seed
    )
    class_names = train_set.class_names
    val_set = None
    if cfg.val_split:
        val_set = ImageFolderDataset.from_folder(
            cfg.data_dir, cfg.val_split, class_names=class_names, transform=build_transforms(cfg, False),
            strict=cfg.strict, on_bad="mask",
        )
    num_classes = cfg.num_classes or len(class_names)
    if num_classes != len(class_names):
        raise DataError(
            f"--num-classes {cfg.num_classes} disagrees with the {len(class_names)} class folders in "
            f"{cfg.data_dir}/{cfg.train_split}"
        )
    sampler = ChunkedDistributedSampler(
        len(train_set), cfg.batch_size, ctx.world_size, ctx.rank, cfg.accum_steps, shuffle=True, seed=cfg.seed
    )
    steps_per_epoch = sampler.steps_per_epoch
    if steps_per_epoch == 0:
        raise DataError(
            f"global batch {sampler.global_batch_size} ({cfg.batch_size} per process x {ctx.world_size} processes x "
            f"{cfg.accum_steps} accumulation steps) is larger than the {len(train_set)} training images in "
            f"{cfg.data_dir}/{cfg.train_split}; lower --batch-size"
        )
    tagged = EpochTaggedSampler(sampler)
    loader_kwargs = make_loader_kwargs(cfg, device)
    # The loader's own generator: drawing worker seeds must not advance the global RNG
    # (augmentation is seeded per image anyway), or a resumed run would drift.
    loader_gen = torch.Generator().manual_seed(cfg.seed)
    train_loader = DataLoader(train_set, batch_size=cfg.batch_size, sampler=tagged, generator=loader_gen, **loader_kwargs)
    val_loader = None
    if val_set is not None:
        val_loader = DataLoader(
            val_set,
            batch_size=cfg.eval_batch_size or 2 * cfg.batch_size,
            sampler=EvalDistributedSampler(len(val_set), ctx.world_size, ctx.rank),
            generator=torch.Generator().manual_seed(cfg.seed),
            **loader_kwargs,
        )

    # ---------------------------------------------------------------- resume?
    manager = CheckpointManager(run_dir, keep_last=cfg.keep_last, is_main=ctx.is_main)
    state = manager.find_resume(cfg.resume, required=("model", "optimizer", "epoch", "step"))
    if cfg.resume == "auto" and state is None:
        log.info("no checkpoint in %s yet: starting from scratch", run_dir)
    if state is not None:
        _check_resume_fits(state, class_names, cfg, manager.resumed_from)

    # ---------------------------------------------------------------- model
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    model, reinit = build_model(cfg, num_classes, None if state is not None else cfg.init_checkpoint)
    if reinit and ctx.is_main:
        log.info("fine-tuning from %s; freshly initialised: %s", cfg.init_checkpoint, ", ".join(reinit))
    if cfg.grad_checkpointing:
        if not hasattr(model, "set_grad_checkpointing"):
            raise LitvitError(f"model {cfg.model} does not support gradient checkpointing")
        model.set_grad_checkpointing(True)
    if cfg.sync_bn and ctx.is_distributed:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    model = optimize_for_device(model, device, cfg.optimize, log, onednn_weight_grad=cfg.onednn_weight_grad)

    global_batch = sampler.global_batch_size
    lrs = resolve_lr(cfg, global_batch)
    optimizer = build_optimizer(model, cfg, lrs.lr)
    scheduler = build_scheduler(optimizer, cfg, lrs, steps_per_epoch)
    amp_dtype = resolve_amp(cfg.amp, device)
    scaler = grad_scaler(amp_dtype, device)
    mixup_fn, train_loss_fn = build_mixup_and_loss(cfg, num_classes)
    model_ema = None
    if cfg.model_ema:
        from timm.utils import ModelEmaV3

        model_ema = ModelEmaV3(model, decay=cfg.model_ema_decay)

    start_epoch, global_step, skip_steps, best_top1 = 0, 0, 0, -1.0
    if state is not None:
        from ..checkpoint import load_model_weights

        load_model_weights(model, state["model"], source=f"checkpoint {manager.resumed_from}")
        optimizer.load_state_dict(state["optimizer"])
        # The schedule is a function of the step and the configuration, so it is rebuilt rather
        # than restored: a resumed run may extend --epochs or change the learning rate.
        if state.get("scaler"):  # empty unless the run trained in float16
            scaler.load_state_dict(state["scaler"])
        if model_ema is not None:
            if state.get("model_ema"):
                model_ema.module.load_state_dict(state["model_ema"])
            else:
                model_ema.set(model)
        start_epoch, global_step = int(state["epoch"]), int(state["step"])
        skip_steps = int(state.get("step_in_epoch", 0))
        best_top1 = float(state.get("best_top1", -1.0))
        rng = state.get("rng")
        if isinstance(rng, list) and len(rng) == ctx.world_size:
            restore_rng_state(rng[ctx.rank])
        elif isinstance(rng, list) and rng:
            log.warning("resuming on %d processes from a run on %d: random streams restart", ctx.world_size, len(rng))
            torch.manual_seed(cfg.seed + 1000003 * start_epoch + ctx.rank)
        log.info("resumed from %s (epoch %d, step %d)", manager.resumed_from, start_epoch, global_step)
    else:
        # Per-rank streams for Mixup and stochastic depth.
        torch.manual_seed(cfg.seed + ctx.rank)
        import numpy as np
        import random

        np.random.seed((cfg.seed + ctx.rank) & 0xFFFFFFFF)
        random.seed(cfg.seed + ctx.rank)

    train_model: nn.Module = model
    if ctx.is_distributed:
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if cfg.compile:
        train_model = torch.compile(train_model)

    # ---------------------------------------------------------------- bookkeeping
    metrics = MetricsLogger(run_dir, enabled=ctx.is_main)
    resolved = config_to_dict(cfg)
    resolved_lrs = {"lr": lrs.lr, "min_lr": lrs.min_lr, "warmup_lr": lrs.warmup_lr, "global_batch": global_batch,
                    "world_size": ctx.world_size, "steps_per_epoch": steps_per_epoch}
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(run_dir / "config.yaml", dump_config(cfg))
        if state is not None:
            metrics.truncate_after("step", global_step)
        log.info(
            "training %s on %d images (%d classes), %d steps/epoch, global batch %d on %d process(es), "
            "lr %.3g -> %.3g, warm-up %.3g epochs from %.3g, device %s%s",
            cfg.model, len(train_set), num_classes, steps_per_epoch, global_batch, ctx.world_size, lrs.lr,
            lrs.min_lr, lrs.warmup_epochs, lrs.warmup_lr, device, f", autocast {amp_dtype}" if amp_dtype else "",
        )
        metrics.log(kind="start", step=global_step, epoch=start_epoch, **resolved_lrs)

    def checkpoint_state(epoch: int, step_in_epoch: int, step: int, extra: Dict[str, Any]) -> Dict[str, Any]:
        # Every rank's RNG state, so that a resumed run continues each stream exactly.
        rng = all_gather_object(capture_rng_state())
        return {
            "model": unwrap_model(model).state_dict(),
            "model_ema": model_ema.module.state_dict() if model_ema is not None else None,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "epoch": epoch,
            "step_in_epoch": step_in_epoch,
            "step": step,
            "best_top1": best_top1,
            "rng": rng,
            "config": resolved,
            "resolved": resolved_lrs,
            "class_names": list(class_names),
            "num_classes": num_classes,
            "arch": cfg.model,
            **extra,
        }

    log_every = max(1, steps_per_epoch // 20)
    summary: Dict[str, Any] = {"run_dir": str(run_dir), "best_top1": None, "epochs": cfg.epochs}
    last_eval: Dict[str, float] = {}
    train_start = time.time()
    for epoch in range(start_epoch, cfg.epochs):
        tagged.set_epoch(epoch, skip_steps=skip_steps)
        scheduler.step(epoch)
        scheduler.step_update(global_step)

        def on_step(step_in_epoch: int, step: int, stats: Dict[str, float], epoch: int = epoch) -> None:
            if ctx.is_main and (step % log_every == 0):
                metrics.log(kind="step", epoch=epoch + step_in_epoch / steps_per_epoch, step=step, **stats)
            if cfg.save_every_steps and step % cfg.save_every_steps == 0 and step_in_epoch < steps_per_epoch:
                manager.save(checkpoint_state(epoch, step_in_epoch, step, {}), f"step{step:08d}")

        train_stats = train_one_epoch(
            train_model, train_loader, optimizer, train_loss_fn,
            device=device, epoch=epoch, steps=steps_per_epoch - skip_steps, global_step=global_step,
            accum_steps=cfg.accum_steps, scheduler=scheduler, mixup_fn=mixup_fn, amp_dtype=amp_dtype,
            scaler=scaler, clip_grad=cfg.clip_grad, model_ema=model_ema, channels_last=cfg.channels_last,
            on_step=lambda s, g, st: on_step(s + skip_steps, g, st), progress_kwargs=_progress_kwargs(cfg),
        )
        global_step = train_stats["global_step"]
        skip_steps = 0
        record: Dict[str, Any] = {
            "kind": "epoch", "epoch": epoch + 1, "step": global_step, "train_loss": train_stats["loss"],
            "lr": train_stats["lr"], "epoch_time": train_stats["time"], "skipped_images": train_stats["skipped_images"],
        }
        if train_stats["skipped_images"] and ctx.is_main:
            log.warning("epoch %d: %d unreadable training images skipped", epoch + 1, train_stats["skipped_images"])
        is_best = False
        last_epoch = epoch + 1 == cfg.epochs
        if val_loader is not None and ((epoch + 1) % cfg.eval_every == 0 or last_epoch):
            pk = _progress_kwargs(cfg)
            last_eval = evaluate(unwrap_model(model), val_loader, device, amp_dtype, cfg.channels_last,
                                 desc="eval", progress_kwargs=pk)
            record.update({f"val_{k}": v for k, v in last_eval.items() if k != "skipped_images"})
            record["val_skipped_images"] = last_eval["skipped_images"]
            if model_ema is not None:
                ema_eval = evaluate(model_ema.module, val_loader, device, amp_dtype, cfg.channels_last,
                                    desc="eval ema", progress_kwargs=pk)
                record.update({f"ema_{k}": v for k, v in ema_eval.items() if k in ("loss", "top1", "top5")})
            if not math.isnan(last_eval["top1"]) and last_eval["top1"] > best_top1:
                best_top1, is_best = last_eval["top1"], True
            if ctx.is_main:
                log.info(
                    "epoch %d/%d: train loss %.4f, val loss %.4f, top-1 %.2f%%, top-5 %.2f%% (best %.2f%%), %.1fs",
                    epoch + 1, cfg.epochs, train_stats["loss"], last_eval["loss"], last_eval["top1"],
                    last_eval["top5"], best_top1, train_stats["time"],
                )
        elif ctx.is_main:
            log.info("epoch %d/%d: train loss %.4f, %.1fs", epoch + 1, cfg.epochs, train_stats["loss"], train_stats["time"])
        record["best_top1"] = best_top1 if best_top1 >= 0 else None
        metrics.log(record)
        manager.save(checkpoint_state(epoch + 1, 0, global_step, {"metrics": record}), f"epoch{epoch + 1:04d}", is_best=is_best)
        barrier()

    summary.update(
        best_top1=best_top1 if best_top1 >= 0 else None,
        last=last_eval,
        train_time=time.time() - train_start,
        checkpoint=str(manager.checkpoints()[-1]) if ctx.is_main and manager.checkpoints() else None,
        best_checkpoint=str(manager.best_path) if manager.best_path.exists() else None,
    )
    if ctx.is_main:
        try:
            from .plot import plot_run

            summary["curves"] = str(plot_run(run_dir))
        except Exception as err:  # plotting must never fail a finished training run
            log.warning("could not draw the training curves: %s", err)
    return summary

"""One training epoch and one evaluation pass, for one process or many under DDP."""
from __future__ import annotations

import contextlib
import time
from typing import Any, Callable, Dict, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..engine.amp import autocast, grad_scaler
from ..engine.distributed import all_reduce_sum, unwrap_model
from ..engine.guards import check_finite
from ..engine.logging import progress

__all__ = ["train_one_epoch", "evaluate"]


def _to_device(images: torch.Tensor, targets: torch.Tensor, device: torch.device, channels_last: bool):
    images = images.to(device, non_blocking=True)
    targets = targets.to(device, non_blocking=True)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, targets


def train_one_epoch(
    model: nn.Module,
    loader: Any,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    device: torch.device,
    epoch: int,
    steps: int,
    global_step: int,
    accum_steps: int = 1,
    scheduler: Any = None,
    mixup_fn: Optional[Callable] = None,
    amp_dtype: Optional[torch.dtype] = None,
    scaler: Optional[torch.amp.GradScaler] = None,
    clip_grad: Optional[float] = None,
    model_ema: Optional[nn.Module] = None,
    channels_last: bool = False,
    on_step: Optional[Callable[[int, int, Dict[str, float]], None]] = None,
    progress_kwargs: Optional[Dict[str, Any]] = None,
) -> Dict[str, float]:
    """Run ``steps`` optimiser steps of ``accum_steps`` micro-batches each from ``loader``.

    The learning rate follows ``scheduler.step_update(global_step)`` after every step (a no-op
    for per-epoch schedules). ``on_step(step_in_epoch, global_step, stats)`` runs after each
    step (step checkpoints, step metrics). A NaN/inf loss raises
    :class:`~litvit.errors.TrainingError` before it can reach the weights.

    Returns the mean training loss, the last learning rate, the step count reached, and the
    number of unreadable images that were skipped (all summed/averaged over processes).
    """
    if scaler is None:
        scaler = grad_scaler(None, device)  # a pass-through
    model.train()
    is_ddp = isinstance(model, nn.parallel.DistributedDataParallel) or isinstance(
        getattr(model, "_orig_mod", None), nn.parallel.DistributedDataParallel
    )
    ddp = model if isinstance(model, nn.parallel.DistributedDataParallel) else getattr(model, "_orig_mod", model)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    seen = torch.zeros((), dtype=torch.float64, device=device)
    skipped = torch.zeros((), dtype=torch.float64, device=device)
    batches = iter(loader)
    start = time.time()
    bar = progress(range(steps), total=steps, desc=f"epoch {epoch + 1}", **(progress_kwargs or {}))
    lr = optimizer.param_groups[0]["lr"]
    for step_in_epoch in bar:
        for micro in range(accum_steps):
            images, targets, flags = next(batches)
            skipped += flags.sum().item()
            images, targets = _to_device(images, targets, device, channels_last)
            if mixup_fn is not None:
                images, targets = mixup_fn(images, targets)
            last_micro = micro == accum_steps - 1
            sync = ddp.no_sync() if (is_ddp and not last_micro) else contextlib.nullcontext()
            with sync:
                with autocast(device, amp_dtype):
                    output = model(images)
                    loss = loss_fn(output, targets)
                check_finite(loss, f"epoch {epoch + 1}, step {step_in_epoch + 1} (global step {global_step + 1})")
                scaler.scale(loss / accum_steps).backward()
            loss_sum += loss.detach().double() * images.shape[0]
            seen += images.shape[0]
        if clip_grad:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        global_step += 1
        if model_ema is not None:
            model_ema.update(unwrap_model(model), step=global_step)
        lr = optimizer.param_groups[0]["lr"]
        if scheduler is not None:
            scheduler.step_update(global_step)
        bar.set_postfix(loss=loss.item(), lr=lr)
        if on_step is not None:
            on_step(step_in_epoch + 1, global_step, {"loss": loss.item(), "lr": lr})
    totals = all_reduce_sum(torch.stack([loss_sum, seen, skipped]))
    return {
        "loss": (totals[0] / totals[1].clamp(min=1)).item(),
        "lr": lr,
        "images": int(totals[1].item()),
        "skipped_images": int(totals[2].item()),
        "global_step": global_step,
        "time": time.time() - start,
    }


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Any,
    device: torch.device,
    amp_dtype: Optional[torch.dtype] = None,
    channels_last: bool = False,
    desc: str = "eval",
    progress_kwargs: Optional[Dict[str, Any]] = None,
) -> Dict[str, float]:
    """Top-1, top-5 (in %) and mean cross-entropy over every image of ``loader``, summed over
    processes (use an :class:`~litvit.engine.samplers.EvalDistributedSampler` so each image is
    seen once). Unreadable images (target -1) are left out and counted."""
    model.eval()
    sums = torch.zeros(5, dtype=torch.float64, device=device)  # loss, top1, top5, images, skipped
    for images, targets, flags in progress(loader, desc=desc, **(progress_kwargs or {})):
        images, targets = _to_device(images, targets, device, channels_last)
        valid = targets >= 0
        sums[4] += (~valid).sum()
        if not valid.any():
            continue
        with autocast(device, amp_dtype):
            output = model(images[valid])
        output = output.float()
        targets = targets[valid]
        sums[0] += F.cross_entropy(output, targets, reduction="sum").double()
        k = min(5, output.shape[1])
        top = output.topk(k, dim=1).indices
        hits = top.eq(targets[:, None])
        sums[1] += hits[:, 0].sum()
        sums[2] += hits.any(dim=1).sum()
        sums[3] += targets.numel()
    all_reduce_sum(sums)
    n = sums[3].item()
    if n == 0:
        return {"loss": float("nan"), "top1": float("nan"), "top5": float("nan"), "images": 0, "skipped_images": int(sums[4].item())}
    return {
        "loss": sums[0].item() / n,
        "top1": 100.0 * sums[1].item() / n,
        "top5": 100.0 * sums[2].item() / n,
        "images": int(n),
        "skipped_images": int(sums[4].item()),
    }

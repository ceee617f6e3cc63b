"""The measured step: an untrained model, its input, and one inference or training step."""
from __future__ import annotations

import ctypes
import sys
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
import torch.nn as nn

from ..errors import LitvitError
from .config import BenchmarkConfig
from .runtimes import RUNTIMES, _Skip
from .timing import TRAIN_FLOPS_PER_FORWARD, _autocast, count_flops

__all__ = ["tune_cpu_malloc", "create_bench_model"]


def tune_cpu_malloc() -> bool:
    """Keep freed memory in the process instead of returning it to the kernel (glibc only).

    glibc serves every allocation above 32 MB with a fresh ``mmap`` and unmaps it on
    free, so each large activation is page-faulted in (and zeroed by the kernel) on
    every forward pass. On CPU this doubled the time of LIT's elementwise ops (see the
    speed notes). Disabling ``mmap`` for malloc and trimming makes the heap reuse those
    pages, which is what jemalloc/tcmalloc do by default. Trimming is off entirely, not
    just above 1 GB as before: with several models interleaved in one process, a
    training step that freed more than that handed it back, and the next model faulted
    it in again (PVTv2-b2 training steps varied by 40 %). It is a process-wide setting:
    peak RSS then stays at its high-water mark. Returns whether it could be applied.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_max = -1, -4
        ok = libc.mallopt(m_mmap_max, 0) == 1
        ok = libc.mallopt(m_trim_threshold, -1) == 1 and ok  # -1: never trim (mallopt(3))
        return bool(ok)
    except (OSError, AttributeError):
        return False



def _lit_names() -> List[str]:
    from ..models import LIT_MODELS

    return list(LIT_MODELS)


def create_bench_model(name: str, img_size: int, config: BenchmarkConfig) -> nn.Module:
    """An untrained model (never downloads weights) built for ``img_size`` where the
    architecture takes the size as an argument (LIT, Swin, ViT); otherwise as is."""
    import timm

    from .. import models  # noqa: F401  (registers LIT with timm)

    if not timm.is_model(name):
        raise LitvitError(f"benchmark: unknown model {name!r} (not a litvit or timm model name)")
    kwargs = dict(pretrained=False, num_classes=config.num_classes, **config.model_kwargs)
    try:
        return timm.create_model(name, img_size=img_size, **kwargs)
    except TypeError as err:
        if "img_size" not in str(err):
            raise
        return timm.create_model(name, **kwargs)



def _build_step(
    model: nn.Module, name: str, mode: str, img_size: int, config: BenchmarkConfig, device: torch.device,
    runtime_name: Optional[str] = None,
) -> Tuple[Callable[[], None], float, float]:
    """A no-argument callable running one step; FLOPs per image of that step and of a forward pass."""
    batch = config.batch_size if mode == "inference" else config.train_batch_size
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    model.to(device=device, memory_format=memory_format)
    in_chans = getattr(model, "in_chans", None) or 3
    generator = torch.Generator().manual_seed(config.seed)
    x = torch.randn(batch, in_chans, img_size, img_size, generator=generator)
    x = x.to(device=device, memory_format=memory_format)
    flop_example = x[: min(2, batch)]
    with _autocast(device, config.precision):
        forward_flops = count_flops(model, flop_example)
    flops = forward_flops * (TRAIN_FLOPS_PER_FORWARD if mode == "train" else 1)
    runtime = RUNTIMES[runtime_name or config.runtime]
    if mode == "inference":
        model.eval()
        runner = runtime.prepare(model, x, config, mode)

        def step() -> None:
            with torch.inference_mode(), _autocast(device, config.precision):
                runner(x)

        return step, flops, forward_flops

    if not runtime.supports_training:
        raise _Skip(f"runtime {runtime.name!r} cannot train")
    model.train()
    runner = runtime.prepare(model, x, config, mode)
    target = torch.randint(0, max(config.num_classes, 1), (batch,), generator=generator).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    scaler = torch.amp.GradScaler(device.type, enabled=config.precision == "float16")
    loss_fn = nn.CrossEntropyLoss()

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with _autocast(device, config.precision):
            out = runner(x)
            loss = loss_fn(out.float(), target) if config.num_classes > 0 else out.float().mean()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    return train_step, flops, forward_flops




def _is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower()


def _record_failure(result: Dict[str, Any], err: BaseException) -> None:
    """Mark a model's result failed with a one-line reason; the run goes on with the others."""
    result.update(status="oom" if _is_oom(err) else "error", error=f"{type(err).__name__}: {err}".splitlines()[0])


def _setup_process(config: BenchmarkConfig) -> torch.device:
    if config.threads:
        torch.set_num_threads(config.threads)
    if config.tune_malloc and not config.device.startswith("cuda"):
        tune_cpu_malloc()
    torch.manual_seed(config.seed)
    return torch.device(config.device)

"""Mixed precision: one ``--amp`` vocabulary for every task, and the loss scaler float16 needs."""
from __future__ import annotations

import functools
import sys
from typing import Optional

import torch

from ..errors import LitvitError

__all__ = ["AMP_CHOICES", "resolve_amp", "autocast", "grad_scaler", "cpu_has_native_bf16"]

AMP_CHOICES = ("auto", "bf16", "fp16", "none")
# "off" was the segmentation configs' word; YAML reads an unquoted off/no/false as a boolean,
# which reaches here as "False".
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "none": None, "off": None, "false": None}


def resolve_amp(amp: str, device: torch.device, auto_cuda: torch.dtype = torch.bfloat16) -> Optional[torch.dtype]:
    """The autocast dtype for ``amp`` on ``device`` (``None``: full float32).

    ``auto`` means ``auto_cuda`` on CUDA (each task passes its released recipe's choice; bf16
    becomes fp16 on GPUs without bf16) and float32 elsewhere, where autocast rarely pays.
    ``fp16`` and ``bf16`` are honoured on any device: torch >= 2.4 autocasts both on the CPU,
    and fp16 trains there with a loss scaler too, which is how the scaler path is tested.
    ``off`` (and a YAML ``amp: off``) is accepted as another name for ``none``.
    """
    if amp == "auto":
        if device.type != "cuda":
            return None
        if auto_cuda == torch.bfloat16 and not torch.cuda.is_bf16_supported():
            return torch.float16
        return auto_cuda
    key = str(amp).lower()
    if key not in _DTYPES:
        raise LitvitError(f"unknown --amp {amp!r}; choose from {', '.join(AMP_CHOICES)}")
    if _DTYPES[key] is torch.bfloat16 and device.type == "cpu" and not cpu_has_native_bf16():
        _warn_slow_cpu_bf16()
    return _DTYPES[key]


@functools.lru_cache(maxsize=None)
def cpu_has_native_bf16() -> bool:
    """Whether oneDNN has bfloat16 kernels for this CPU (AVX-512 or AMX). Without them (AVX2-only
    CPUs) torch multiplies bfloat16 matrices on a scalar path, about 100x slower than float32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without the query: assume the best
        return True


@functools.lru_cache(maxsize=None)
def _warn_slow_cpu_bf16() -> None:
    print(
        "litvit: warning: this CPU has no native bfloat16 arithmetic; --amp bf16 will run far slower "
        "than float32 here (--amp none)",
        file=sys.stderr,
    )


def autocast(device: torch.device, amp_dtype: Optional[torch.dtype]) -> torch.autocast:
    """Autocast to ``amp_dtype`` on ``device``; a no-op for ``None``."""
    return torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None)


def grad_scaler(amp_dtype: Optional[torch.dtype], device: torch.device) -> torch.amp.GradScaler:
    """The loss scaler of a training loop: active for float16, whose narrow exponent lets
    small gradients underflow, and a pass-through otherwise (so loops need no branches)."""
    return torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)

"""Stop training on a diverged loss instead of writing NaN weights over a good checkpoint."""
from __future__ import annotations

from typing import Union

import torch

from ..errors import TrainingError
from .distributed import all_reduce_sum, get_world_size

__all__ = ["check_finite"]


def check_finite(loss: Union[torch.Tensor, float], where: str, distributed: bool = True) -> None:
    """Raise :class:`~litvit.errors.TrainingError` if ``loss`` is NaN or infinite.

    Under DDP the verdict is shared (one tiny all-reduce), so every rank stops at the same
    step instead of the healthy ranks hanging in the next collective.
    """
    value = loss.detach() if torch.is_tensor(loss) else torch.tensor(float(loss))
    bad = (~torch.isfinite(value)).any().to(torch.float32).reshape(1)
    if distributed and get_world_size() > 1:
        all_reduce_sum(bad)
    if bad.item() > 0:
        shown = value.float().mean().item() if value.numel() else float("nan")
        raise TrainingError(
            f"loss is {shown} at {where}; training stopped and the last good checkpoint was kept "
            "(lower the learning rate, enable gradient clipping, or use bf16 instead of fp16)"
        )

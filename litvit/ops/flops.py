"""FLOP formulas that ``torch.utils.flop_counter.FlopCounterMode`` lacks.

torch registers formulas for its CUDA attention kernels only; on the CPU,
``F.scaled_dot_product_attention`` runs ``aten._scaled_dot_product_flash_attention_for_cpu``
and would count as free. Mapping it to torch's own SDPA formulas makes CPU and CUDA counts
agree (and the paper's GMACs come out: LIT-S 4.08 against 4.1).
"""
from __future__ import annotations

from typing import Any, Callable, Dict

import torch

__all__ = ["cpu_attention_flop_formulas"]


def cpu_attention_flop_formulas() -> Dict[Any, Callable[..., int]]:
    """``custom_mapping`` entries for ``FlopCounterMode``: the CPU flash-attention kernel and its backward."""
    from torch.utils import flop_counter

    aten = torch.ops.aten
    mapping: Dict[Any, Callable[..., int]] = {}
    forward = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if forward is not None and hasattr(flop_counter, "sdpa_flop_count"):

        def sdpa_forward(query, key, value, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
            return flop_counter.sdpa_flop_count(query, key, value)

        mapping[forward] = sdpa_forward
    backward = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)
    if backward is not None and hasattr(flop_counter, "sdpa_backward_flop_count"):

        def sdpa_backward(grad_out, query, key, value, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
            return flop_counter.sdpa_backward_flop_count(grad_out, query, key, value)

        mapping[backward] = sdpa_backward
    return mapping

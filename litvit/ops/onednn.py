"""oneDNN matrix products with fused epilogues, for LIT's MLP blocks in CPU inference.

``torch.nn.functional.linear`` on a float32 CPU tensor runs MKL's ``sgemm`` after copying
the bias into every output row, and GELU and the residual add then make more passes over
memory. oneDNN's inner-product primitive (the one ``torch.compile`` uses for its CPU
Linear fusions, exposed as ``torch.ops.mkldnn._linear_pointwise``) adds the bias, applies
GELU or adds another tensor while each output tile is still in registers. On an
AVX-512 CPU that made LIT-Ti's MLP-only stages 1.14-1.21x faster in inference
(``benchmarks/RESULTS.md``, section 10); on the AVX2 machine of the earlier sessions the
fused GELU product was 4 % slower than ``addmm`` + GELU (section 4), so ``"auto"`` takes
oneDNN only where the CPU has AVX-512.

The op has no autograd formula, so it serves inference only; the ATen path stays the
reference everywhere else.
"""
from __future__ import annotations

import functools
from typing import Optional

import torch

from .settings import choice_from_environment

__all__ = ["set_cpu_mlp_kernel", "get_cpu_mlp_kernel", "onednn_linear_available", "linear_gelu", "linear_add"]

CPU_MLP_KERNELS = ("auto", "aten", "onednn")


def _kernel_from_environment() -> str:
    return choice_from_environment("LITVIT_CPU_MLP_KERNEL", CPU_MLP_KERNELS)


_cpu_mlp_kernel = _kernel_from_environment()


@functools.lru_cache(maxsize=None)
def onednn_linear_available() -> bool:
    """Whether this torch build has oneDNN's fused Linear op (x86 and ARM builds with mkldnn do)."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        op = torch.ops.mkldnn._linear_pointwise
        op.binary  # the residual-add overload
    except (AttributeError, RuntimeError):
        return False
    return True


@functools.lru_cache(maxsize=None)
def _cpu_has_avx512() -> bool:
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except AttributeError:  # torch without the query
        return False
    return capability.upper().startswith(("AVX512", "AMX"))


def set_cpu_mlp_kernel(name: str) -> None:
    """Choose how LIT's MLP-only stages multiply in CPU inference (see :mod:`litvit.ops.onednn`).

    ``"auto"`` (the default) uses oneDNN's fused products on CPUs with AVX-512 and ATen's
    ``addmm`` elsewhere; ``"aten"`` always uses ``addmm`` (the reference); ``"onednn"``
    uses oneDNN wherever the op exists. Only float32 inference outside autograd, autocast
    and graph capture is affected. The environment variable ``LITVIT_CPU_MLP_KERNEL`` sets
    the same choice at import time.
    """
    global _cpu_mlp_kernel
    if name not in CPU_MLP_KERNELS:
        raise ValueError(f"unknown CPU MLP kernel {name!r}; choose one of {', '.join(CPU_MLP_KERNELS)}")
    if name == "onednn" and not onednn_linear_available():
        raise RuntimeError("the 'onednn' CPU MLP kernel needs a torch build with oneDNN (mkldnn)")
    _cpu_mlp_kernel = name


def get_cpu_mlp_kernel(x: Optional[torch.Tensor] = None) -> str:
    """The choice :func:`set_cpu_mlp_kernel` made; with ``x``, the kernel its MLP would take
    (``"aten"`` or ``"onednn"``: only float32 CPU tensors can take oneDNN)."""
    if x is None:
        return _cpu_mlp_kernel
    if _cpu_mlp_kernel == "aten" or x.device.type != "cpu" or x.dtype != torch.float32:
        return "aten"
    if not onednn_linear_available() or (_cpu_mlp_kernel == "auto" and not _cpu_has_avx512()):
        return "aten"
    return "onednn"


def linear_gelu(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """``gelu(x @ weight.T + bias)`` (exact, erf GELU) in one oneDNN product; inference only."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "gelu", [], "none")


def linear_add(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]
) -> torch.Tensor:
    """``residual + x @ weight.T + bias`` in one oneDNN product; inference only."""
    return torch.ops.mkldnn._linear_pointwise.binary(x, residual, weight, bias, "add")

"""oneDNN matrix products with fused epilogues, for Linear layers on the CPU.

``torch.nn.functional.linear`` on a float32 CPU tensor runs MKL's ``sgemm`` after copying
the bias into every output row, and GELU and the residual add then make more passes over
memory. oneDNN's inner-product primitive (the one ``torch.compile`` uses for its CPU
Linear fusions, exposed as ``torch.ops.mkldnn._linear_pointwise``) adds the bias, applies
GELU or adds another tensor while each output tile is still in registers. On an
AVX-512 Xeon that made LIT-Ti's MLP-only stages 1.14-1.21x faster in inference; on an AVX2
Zen 3 EPYC the fused GELU product was 4 % slower than ``addmm`` + GELU, so :func:`litvit.accel.choose_plan` takes oneDNN
only where the CPU has AVX-512 (:func:`cpu_has_avx512`).

In training, :func:`linear` wraps the same product in an autograd function: oneDNN computes
the forward pass and the input gradient (the narrow K or N = 64/128 products, which MKL ran at
65-75 % of the matmul peak on an AVX-512 Zen 4 EPYC while oneDNN reached it), and MKL's ``mm``
the weight gradient, unless oneDNN's products are markedly faster than MKL's
(:func:`onednn_matmul_speedup`: 2.1-2.3x on a Zen 5 EPYC, whose full-width AVX-512 units oneDNN
uses and MKL apparently does not; 1.1x on Zen 4, about 1x on a Xeon). These functions
are the kernels; which layers use them is the speed layer's choice (:mod:`litvit.accel`).
"""
from __future__ import annotations

import functools
import time
from typing import Callable, Dict, Optional

import torch

__all__ = [
    "onednn_linear_available",
    "cpu_has_avx512",
    "cpu_has_amx",
    "onednn_matmul_speedup",
    "square_products",
    "linear",
    "linear_inference",
    "linear_gelu",
    "linear_add",
]

# oneDNN's product rate over MKL's from which the speed layer takes oneDNN for the weight
# gradients too. A Zen 5 EPYC measures 2.1-2.3x and trains 1.39-1.47x faster that way; a Zen 4
# measures 1.1x (1.1-1.45x on a loaded 2-core VM) and an AVX-512 Xeon about 1x, where oneDNN
# throughout training gained 1.5 % (Zen 4) or lost 2.5 % (Xeon). The threshold sits between the two groups, clear of a loaded machine's noise, so
# that two runs on one machine take the same arithmetic.
ONEDNN_TRAINING_SPEEDUP = 1.6


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
def cpu_has_avx512() -> bool:
    """Whether torch's CPU kernels run with AVX-512 (or AMX) here: where oneDNN's products win."""
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except AttributeError:  # torch without the query
        return False
    return capability.upper().startswith(("AVX512", "AMX"))


@functools.lru_cache(maxsize=None)
def cpu_has_amx() -> bool:
    """Whether this CPU has AMX tiles (Intel Xeon from Sapphire Rapids on), on which torch's CPU
    flash attention computes its bfloat16 / float16 products with oneDNN's AMX micro-kernels."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)  # not in every torch release
    try:
        return bool(probe()) if probe is not None else False
    except RuntimeError:
        return False


def square_products(a: torch.Tensor, b: torch.Tensor) -> Dict[str, Callable[[], torch.Tensor]]:
    """The plain products of two ``n x n`` matrices that torch offers for them, by library:
    ``"mm"`` (ATen's ``mm``: MKL on x86 CPUs, cuBLAS on CUDA) and, for float32 CPU tensors where
    the op exists, ``"onednn"`` (oneDNN's inner product, ``a @ b.T``: the same work)."""
    products = {"mm": lambda: torch.mm(a, b)}
    if a.device.type == "cpu" and a.dtype == torch.float32 and onednn_linear_available():
        products["onednn"] = lambda: torch.ops.mkldnn._linear_pointwise(a, b, None, "none", [], "")
    return products


@functools.lru_cache(maxsize=None)
def onednn_matmul_speedup(size: int = 1024, rounds: int = 5) -> float:
    """oneDNN's float32 ``size``-cubed product rate over ATen's ``mm`` (MKL) on this CPU, measured
    once per process (about 0.1 s) with the current thread count; the best of ``rounds`` each."""
    # A private generator: the probe must not move the global random state a training run seeds.
    generator = torch.Generator().manual_seed(0)
    products = square_products(torch.randn(size, size, generator=generator), torch.randn(size, size, generator=generator))
    if "onednn" not in products:
        return 0.0
    best = {name: float("inf") for name in products}
    with torch.no_grad():
        for round_ in range(rounds + 1):
            for name, product in products.items():
                start = time.perf_counter()
                product()
                if round_:  # the first round loads and warms up both libraries
                    best[name] = min(best[name], time.perf_counter() - start)
    return best["mm"] / best["onednn"]


def linear_inference(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """``x @ weight.T + bias`` for any leading dimensions, as one oneDNN product; inference only."""
    out = torch.ops.mkldnn._linear_pointwise(x.reshape(-1, x.shape[-1]), weight, bias, "none", [], "")
    return out.reshape(*x.shape[:-1], weight.shape[0])


def linear_gelu(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """``gelu(x @ weight.T + bias)`` (exact, erf GELU) in one oneDNN product; inference only."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "gelu", [], "none")


def linear_add(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]
) -> torch.Tensor:
    """``residual + x @ weight.T + bias`` in one oneDNN product; inference only."""
    return torch.ops.mkldnn._linear_pointwise.binary(x, residual, weight, bias, "add")


class _LinearFunction(torch.autograd.Function):
    """``x @ weight.T + bias`` for 2-D ``x``: oneDNN forward and input gradient; the weight gradient
    from ``mm``, or from oneDNN where ``onednn_weight_grad`` is set."""

    @staticmethod
    def forward(
        ctx, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], onednn_weight_grad: bool
    ) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        ctx.onednn_weight_grad = onednn_weight_grad
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")

    @staticmethod
    @torch.autograd.function.once_differentiable  # oneDNN's op has no derivative of its own
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad = grad.contiguous()
        grad_x = grad_weight = grad_bias = None
        product = torch.ops.mkldnn._linear_pointwise
        if ctx.needs_input_grad[0]:
            # The weight is small; transposing it once keeps oneDNN on its fast, plain layout.
            grad_x = product(grad, weight.t().contiguous(), None, "none", [], "")
        if ctx.needs_input_grad[1]:
            if not ctx.onednn_weight_grad or x.shape[0] == 0:  # oneDNN rejects an empty reduction
                grad_weight = torch.mm(grad.t(), x)
            elif x.shape[1] < grad.shape[1]:
                # oneDNN reads its first operand row-major: of grad^T and x^T, copy the narrower
                # one (fewer features), here x, and let the other pass as a transposed view.
                grad_weight = product(x.t().contiguous(), grad.t(), None, "none", [], "").t()
            else:
                grad_weight = product(grad.t().contiguous(), x.t(), None, "none", [], "")
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad.sum(0)
        return grad_x, grad_weight, grad_bias, None


def linear(
    x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], onednn_weight_grad: bool = False
) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` for float32 CPU tensors through oneDNN, with autograd; the
    weight gradient through oneDNN too with ``onednn_weight_grad``."""
    rows = x.reshape(-1, x.shape[-1])
    return _LinearFunction.apply(rows, weight, bias, onednn_weight_grad).reshape(*x.shape[:-1], weight.shape[0])

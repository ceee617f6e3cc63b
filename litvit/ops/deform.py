"""Pure-PyTorch 2x2 stride-2 deformable convolution, the sampling core of LIT's token merging.

LIT only ever uses a deformable convolution with a 2x2 kernel, stride 2, no padding,
dilation 1 and a single offset group. That special case needs no im2col kernel: each
output cell reads exactly four bilinear samples per input channel, which
``torch.nn.functional.grid_sample`` computes for all cells at once, and the
convolution is then one matrix product over (channel, tap). Both ops have fast
CPU and CUDA kernels, autograd formulas, ONNX symbolics and torch.compile support,
so nothing has to be compiled.

Sampling convention (identical to ``torchvision.ops.deform_conv2d``): for output cell
(i, j) and tap k = 2*ki + kj the input is read at row ``2i + ki + offset[2k]`` and column
``2j + kj + offset[2k+1]``, bilinearly, with pixel centres on integer coordinates and
every corner outside the map contributing zero.

On CUDA an optional Triton kernel (:mod:`litvit.ops.deform_triton`) can do the sampling;
:func:`set_dtm_kernel` picks it. It is the default there with triton >= 3.2 installed; the
``grid_sample`` path stays the reference, the CPU path and the fallback.
"""
from __future__ import annotations

import functools
import re
from contextlib import nullcontext
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from .capture import graph_capture_active
from .settings import choice_from_environment

__all__ = ["deform_sample2x2", "deform_conv2x2", "sampling_locations2x2", "set_dtm_kernel", "get_dtm_kernel"]

DTM_KERNELS = ("auto", "torch", "triton")


def _kernel_from_environment() -> str:
    return choice_from_environment("LITVIT_DTM_KERNEL", DTM_KERNELS)


_dtm_kernel = _kernel_from_environment()


# The oldest Triton release the kernels are tested on (in its interpreter: 3.0 and 3.1 give
# wrong values there, for every form of this kernel tried, and no GPU has run them).
# Older releases (torch 2.4-2.5 ship them) keep grid_sample under "auto".
TRITON_TESTED_FROM = (3, 2)


@functools.lru_cache(maxsize=None)
def _triton_version() -> Optional[Tuple[int, int]]:
    try:
        import triton
    except ImportError:
        return None
    parts = [int(p) for p in re.findall(r"\d+", triton.__version__)[:2]]
    return (parts + [0, 0])[0], (parts + [0, 0])[1]


def _triton_available() -> bool:
    return _triton_version() is not None


def set_dtm_kernel(name: str) -> None:
    """Choose how :func:`deform_sample2x2` samples CUDA tensors.

    ``"auto"`` (the default) uses the Triton kernel of :mod:`litvit.ops.deform_triton` when
    triton >= 3.2 is installed, else ``grid_sample``; ``"torch"`` always uses ``grid_sample`` (the
    reference); ``"triton"`` requires the Triton kernel. On an H100 in bfloat16 the Triton
    kernel made DTM forward+backward 1.4x faster than ``grid_sample`` and LIT-Ti training
    steps 1.18x faster, hence the default.

    The Triton kernel is used only for float32/float16/bfloat16 CUDA tensors outside
    ``torch.compile``, export and tracing; everything else keeps the ``grid_sample`` path. The
    environment variable ``LITVIT_DTM_KERNEL`` sets the same choice at import time.
    ``python benchmarks/dtm.py`` times both against ``torchvision.ops.deform_conv2d``.
    """
    global _dtm_kernel
    if name not in DTM_KERNELS:
        raise ValueError(f"unknown DTM kernel {name!r}; choose one of {', '.join(DTM_KERNELS)}")
    if name == "triton" and not _triton_available():
        raise RuntimeError("the 'triton' DTM kernel needs the triton package")
    _dtm_kernel = name


def get_dtm_kernel(device: Optional[torch.device | str] = None) -> str:
    """The choice :func:`set_dtm_kernel` made; with ``device``, the kernel that runs there
    (``"torch"`` or ``"triton"``: CPU tensors always take ``grid_sample``)."""
    if device is None:
        return _dtm_kernel
    if torch.device(device).type != "cuda" or _dtm_kernel == "torch":
        return "torch"
    version = _triton_version()
    if version is None or (_dtm_kernel == "auto" and version < TRITON_TESTED_FROM):
        return "torch"
    return "triton"


def _use_triton(x: torch.Tensor) -> bool:
    if not x.is_cuda or x.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        return False
    if get_dtm_kernel(x.device) != "triton":
        return False
    return not graph_capture_active()


# (row, column) of each kernel tap, in the order of the offset channels and weight taps.
_TAPS = ((0, 0), (0, 1), (1, 0), (1, 1))


def sampling_locations2x2(offset: torch.Tensor) -> torch.Tensor:
    """Absolute (row, column) input coordinates read by each tap of each output cell.

    Args:
        offset: ``B x 8 x Ho x Wo`` offsets (row shift, column shift per tap).

    Returns:
        ``B x 4 x Ho x Wo x 2`` tensor of (row, column) positions in input pixels.
    """
    batch, channels, out_h, out_w = offset.shape
    if channels != 8:
        raise ValueError(f"a 2x2 deformable kernel needs 8 offset channels, got {channels}")
    rows = torch.arange(out_h, device=offset.device, dtype=offset.dtype) * 2
    cols = torch.arange(out_w, device=offset.device, dtype=offset.dtype) * 2
    tap = torch.tensor(_TAPS, device=offset.device, dtype=offset.dtype)  # 4 x 2
    base = torch.stack(torch.meshgrid(rows, cols, indexing="ij"), dim=-1)  # Ho x Wo x 2
    base = base.unsqueeze(0) + tap.view(4, 1, 1, 2)  # 4 x Ho x Wo x 2
    return base.unsqueeze(0) + offset.view(batch, 4, 2, out_h, out_w).permute(0, 1, 3, 4, 2)


def _channels_last_only(x: torch.Tensor) -> bool:
    return x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


class _ChannelsLastGrad(torch.autograd.Function):
    """Identity whose backward hands the gradient on in channels-last layout.

    ``grid_sample``'s backward returns its input gradient as a plain NCHW buffer whatever the
    input's layout. For LIT's channels-last token maps that gradient, seen as tokens, is a
    transposed view; added into the residual stream it made every elementwise op, LayerNorm and
    GELU backward of the stage before run on mixed layouts (LIT-Ti: DTM's GELU backward 6x slower
    per element). One copy here keeps the backward pass in token layout.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad.contiguous(memory_format=torch.channels_last)


def deform_sample2x2(x: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of a 2x2 stride-2 deformable kernel, laid out for one matmul.

    Args:
        x: ``B x C x H x W`` input (any memory format; channels-last avoids a copy when
            the caller holds tokens).
        offset: ``B x 8 x H//2 x W//2`` sampling offsets.

    Returns:
        ``B x (C*4) x (H//2 * W//2)`` samples; row ``c*4 + k`` holds channel ``c`` at tap
        ``k``, matching ``weight.reshape(C_out, C*4)`` of a ``C_out x C x 2 x 2`` kernel.
    """
    batch, channels, height, width = x.shape
    out_h, out_w = offset.shape[-2:]
    if out_h != height // 2 or out_w != width // 2:
        raise ValueError(
            f"offset map {out_h}x{out_w} does not fit a stride-2 kernel over a {height}x{width} input"
        )
    if _use_triton(x):
        from .deform_triton import deform_sample2x2_triton

        return deform_sample2x2_triton(x, offset)
    # Sample positions must be exact to a fraction of a pixel, which half precision cannot
    # hold for maps wider than a few dozen pixels; interpolate in float32 and hand the
    # result back in the input's dtype.
    compute_dtype = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    loc = sampling_locations2x2(offset.to(compute_dtype))  # B x 4 x Ho x Wo x 2 (row, col)
    # grid_sample wants (x, y) in [-1, 1] with align_corners=True mapping -1 / +1 to the
    # centres of the first / last pixel; clamp(min=1) keeps 1-pixel-wide maps finite. The
    # scale is built from tensors, not Python floats, so torch.export / ONNX graphs keep the
    # image size symbolic instead of freezing the example input's.
    extent = torch.stack(
        [
            torch.scalar_tensor(width - 1, dtype=loc.dtype, device=loc.device),
            torch.scalar_tensor(height - 1, dtype=loc.dtype, device=loc.device),
        ]
    )
    scale = 2.0 / extent.clamp(min=1)
    grid = (loc.flip(-1) * scale - 1.0).reshape(batch, 4, out_h * out_w, 2)
    if x.requires_grad and _channels_last_only(x) and torch.is_grad_enabled() and not graph_capture_active():
        x = _ChannelsLastGrad.apply(x)
    # (The meta device, where shapes are worked out without data, has no autocast to leave.)
    no_autocast = nullcontext() if x.device.type == "meta" else torch.autocast(x.device.type, enabled=False)
    with no_autocast:
        samples = F.grid_sample(
            x.to(compute_dtype), grid, mode="bilinear", padding_mode="zeros", align_corners=True
        )  # B x C x 4 x N
    return samples.reshape(batch, channels * 4, out_h * out_w).to(x.dtype)


def deform_conv2x2(
    x: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """``torchvision.ops.deform_conv2d(x, offset, weight, bias, stride=2)`` for a 2x2 kernel.

    Returns ``B x C_out x H//2 x W//2`` in channels-last memory format (the layout the
    matrix product produces; call ``.contiguous()`` if a plain NCHW buffer is needed).
    """
    batch = x.shape[0]
    out_h, out_w = offset.shape[-2:]
    out_channels = weight.shape[0]
    samples = deform_sample2x2(x, offset)  # B x (C*4) x N
    # One (B*N x C*4) @ (C*4 x C_out) product with the bias fused: multiplying the shared
    # weight into a batch of sample matrices (matmul's batched path) is slower on CPU.
    samples = samples.transpose(1, 2).reshape(-1, samples.shape[1])
    weight = weight.reshape(out_channels, -1).t()
    out = torch.addmm(bias, samples, weight) if bias is not None else torch.mm(samples, weight)
    return out.view(batch, out_h, out_w, out_channels).permute(0, 3, 1, 2)

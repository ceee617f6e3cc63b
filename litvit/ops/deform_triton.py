"""Triton kernels for LIT's 2x2 stride-2 deformable sampling (CUDA), beside the PyTorch path.

:func:`litvit.ops.deform.deform_sample2x2` samples with ``grid_sample``, whose kernels give
one thread per sample position and walk the channels inside it; on a channels-last token map
neighbouring threads then read addresses ``2*C`` floats apart. These kernels put a block of
output cells on one axis and a block of channels on the other, so every load and store is
contiguous along the channels, and write the samples straight into the ``(cell, channel,
tap)`` order the following matrix product reads (no transposed copy), all four taps in one
store. The backward kernel
scatters the input gradient with atomic adds and reduces the offset gradient over the channels
inside one program, so it needs no second pass.

Semantics are those of :func:`~litvit.ops.deform.deform_sample2x2` (and of
``torchvision.ops.deform_conv2d``): tap ``k = 2*ki + kj`` of output cell ``(i, j)`` reads row
``2i + ki + offset[2k]``, column ``2j + kj + offset[2k+1]``, bilinearly, corners outside the
map reading zero. Positions and sums are in float32 whatever the input dtype.

The PyTorch path stays the reference and the CPU path; :func:`litvit.ops.deform.set_dtm_kernel`
chooses (Triton is the CUDA default when installed).
Tests run these kernels on the CPU through Triton's interpreter (``TRITON_INTERPRET=1``).
"""
from __future__ import annotations

import torch
import triton
from torch.autograd.function import once_differentiable
import triton.language as tl

__all__ = ["deform_sample2x2_triton"]


@triton.jit
def _tap_corners(off_ptr, b, i, j, k: tl.constexpr, cell_mask, H, W, sob, soc, soh, sow):
    """Position of tap ``k`` for a block of cells: top-left corner, fractions, validity masks."""
    ki: tl.constexpr = k // 2
    kj: tl.constexpr = k % 2
    base = off_ptr + b * sob + i * soh + j * sow
    dy = tl.load(base + (2 * k) * soc, mask=cell_mask, other=0.0).to(tl.float32)
    dx = tl.load(base + (2 * k + 1) * soc, mask=cell_mask, other=0.0).to(tl.float32)
    py = (2 * i + ki).to(tl.float32) + dy
    px = (2 * j + kj).to(tl.float32) + dx
    # Past one pixel outside the map every corner reads zero, so clamping there changes
    # neither value nor gradient; it keeps the integer conversion below in range.
    py = tl.minimum(tl.maximum(py, -2.0), H + 1.0)
    px = tl.minimum(tl.maximum(px, -2.0), W + 1.0)
    y0f = tl.floor(py)
    x0f = tl.floor(px)
    ly = py - y0f
    lx = px - x0f
    y0 = y0f.to(tl.int32)
    x0 = x0f.to(tl.int32)
    y_in0 = (y0 >= 0) & (y0 < H)
    y_in1 = (y0 + 1 >= 0) & (y0 + 1 < H)
    x_in0 = (x0 >= 0) & (x0 < W)
    x_in1 = (x0 + 1 >= 0) & (x0 + 1 < W)
    return y0, x0, ly, lx, y_in0, y_in1, x_in0, x_in1


@triton.jit
def _cell_block(total_cells, cells_per_image, Wo, BLOCK_N: tl.constexpr):
    """This program's output cells: flat index, validity, image, index in the image, row, column."""
    cells = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    rem = cells % cells_per_image
    return cells, cells < total_cells, (cells // cells_per_image).to(tl.int64), rem, rem // Wo, rem % Wo


@triton.jit
def _load_corners(image, y0, x0, sxh, sxw, ch_off, mask, y_in0, y_in1, x_in0, x_in1):
    """The four bilinear corners of each cell's sample, ``cells x channels`` each, in float32."""
    row0 = image + y0.to(tl.int64) * sxh
    row1 = row0 + sxh
    col0 = x0.to(tl.int64) * sxw
    col1 = col0 + sxw
    v00 = tl.load((row0 + col0)[:, None] + ch_off, mask=mask & (y_in0 & x_in0)[:, None], other=0.0)
    v01 = tl.load((row0 + col1)[:, None] + ch_off, mask=mask & (y_in0 & x_in1)[:, None], other=0.0)
    v10 = tl.load((row1 + col0)[:, None] + ch_off, mask=mask & (y_in1 & x_in0)[:, None], other=0.0)
    v11 = tl.load((row1 + col1)[:, None] + ch_off, mask=mask & (y_in1 & x_in1)[:, None], other=0.0)
    return v00.to(tl.float32), v01.to(tl.float32), v10.to(tl.float32), v11.to(tl.float32)


@triton.jit
def _tap_sample(off_ptr, b, i, j, k: tl.constexpr, cell_mask, H, W, sob, soc, soh, sow, image, sxh, sxw, ch_off, mask):
    """Tap ``k``'s bilinear sample for a block of cells and channels, in float32."""
    y0, x0, ly, lx, y_in0, y_in1, x_in0, x_in1 = _tap_corners(
        off_ptr, b, i, j, k, cell_mask, H, W, sob, soc, soh, sow
    )
    v00, v01, v10, v11 = _load_corners(image, y0, x0, sxh, sxw, ch_off, mask, y_in0, y_in1, x_in0, x_in1)
    hy = (1.0 - ly)[:, None]
    hx = (1.0 - lx)[:, None]
    vy = ly[:, None]
    vx = lx[:, None]
    return hy * (hx * v00 + vx * v01) + vy * (hx * v10 + vx * v11)


@triton.jit
def _sample_fwd_kernel(
    x_ptr, off_ptr, out_ptr,
    C, H, W, Wo, cells_per_image, total_cells,
    sxb, sxc, sxh, sxw,
    sob, soc, soh, sow,
    BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr,
):
    cells, cell_mask, b, rem, i, j = _cell_block(total_cells, cells_per_image, Wo, BLOCK_N)
    ch = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    ch_mask = ch < C
    ch_off = ch.to(tl.int64)[None, :] * sxc
    image = x_ptr + b * sxb
    m = cell_mask[:, None] & ch_mask[None, :]
    s0 = _tap_sample(off_ptr, b, i, j, 0, cell_mask, H, W, sob, soc, soh, sow, image, sxh, sxw, ch_off, m)
    s1 = _tap_sample(off_ptr, b, i, j, 1, cell_mask, H, W, sob, soc, soh, sow, image, sxh, sxw, ch_off, m)
    s2 = _tap_sample(off_ptr, b, i, j, 2, cell_mask, H, W, sob, soc, soh, sow, image, sxh, sxw, ch_off, m)
    s3 = _tap_sample(off_ptr, b, i, j, 3, cell_mask, H, W, sob, soc, soh, sow, image, sxh, sxw, ch_off, m)
    # One contiguous (channel, tap) store instead of four stores at a stride of 4 elements:
    # join appends a minor axis, so join(join(s0, s2), join(s1, s3))[..., t, s] is tap 2t + s.
    value = tl.reshape(tl.join(tl.join(s0, s2), tl.join(s1, s3)), [BLOCK_N, BLOCK_C, 4])
    tap = tl.arange(0, 4)
    out = out_ptr + cells.to(tl.int64)[:, None, None] * (4 * C) + ch[None, :, None] * 4 + tap[None, None, :]
    tl.store(out, value.to(out_ptr.dtype.element_ty), mask=m[:, :, None])


@triton.jit
def _sample_bwd_kernel(
    x_ptr, off_ptr, grad_ptr, grad_x_ptr, grad_off_ptr,
    C, H, W, Wo, cells_per_image, total_cells,
    sxb, sxc, sxh, sxw,
    sob, soc, soh, sow,
    BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr,
):
    cells, cell_mask, b, rem, i, j = _cell_block(total_cells, cells_per_image, Wo, BLOCK_N)
    image = x_ptr + b * sxb
    # grad_x is a contiguous B x H x W x C float32 buffer.
    grad_image = grad_x_ptr + b * H * W * C
    grad_row = grad_ptr + cells.to(tl.int64)[:, None] * (4 * C)
    grad_off = grad_off_ptr + b * (8 * cells_per_image) + rem
    for k in tl.static_range(4):
        y0, x0, ly, lx, y_in0, y_in1, x_in0, x_in1 = _tap_corners(
            off_ptr, b, i, j, k, cell_mask, H, W, sob, soc, soh, sow
        )
        hy = (1.0 - ly)[:, None]
        hx = (1.0 - lx)[:, None]
        vy = ly[:, None]
        vx = lx[:, None]
        g_row0 = grad_image + (y0.to(tl.int64) * W) * C
        g_row1 = g_row0 + W * C
        g_col0 = x0.to(tl.int64) * C
        g_col1 = g_col0 + C
        m00 = cell_mask & y_in0 & x_in0
        m01 = cell_mask & y_in0 & x_in1
        m10 = cell_mask & y_in1 & x_in0
        m11 = cell_mask & y_in1 & x_in1
        grad_py = tl.full([BLOCK_N], 0.0, tl.float32)
        grad_px = tl.full([BLOCK_N], 0.0, tl.float32)
        for c_start in range(0, C, BLOCK_C):
            ch = c_start + tl.arange(0, BLOCK_C)
            ch_mask = ch < C
            ch_x = ch.to(tl.int64)[None, :] * sxc
            m = cell_mask[:, None] & ch_mask[None, :]
            g = tl.load(grad_row + ch[None, :] * 4 + k, mask=m, other=0.0).to(tl.float32)
            v00, v01, v10, v11 = _load_corners(image, y0, x0, sxh, sxw, ch_x, m, y_in0, y_in1, x_in0, x_in1)
            grad_py += tl.sum(g * (hx * (v10 - v00) + vx * (v11 - v01)), axis=1)
            grad_px += tl.sum(g * (hy * (v01 - v00) + vy * (v11 - v10)), axis=1)
            ch_g = ch[None, :]
            # Only the sum matters, not the order of the adds: relaxed atomics skip the fences.
            tl.atomic_add(
                (g_row0 + g_col0)[:, None] + ch_g, g * (hy * hx), mask=m & m00[:, None], sem="relaxed"
            )
            tl.atomic_add(
                (g_row0 + g_col1)[:, None] + ch_g, g * (hy * vx), mask=m & m01[:, None], sem="relaxed"
            )
            tl.atomic_add(
                (g_row1 + g_col0)[:, None] + ch_g, g * (vy * hx), mask=m & m10[:, None], sem="relaxed"
            )
            tl.atomic_add(
                (g_row1 + g_col1)[:, None] + ch_g, g * (vy * vx), mask=m & m11[:, None], sem="relaxed"
            )
        tl.store(grad_off + (2 * k) * cells_per_image, grad_py, mask=cell_mask)
        tl.store(grad_off + (2 * k + 1) * cells_per_image, grad_px, mask=cell_mask)


# Launch shapes, from sweeps of the kernels alone on an H100 (bf16, batch 64, the six DTM
# shapes of LIT-Ti and LIT-S). Few cells per program and few warps win: the corner loads are
# scattered, and many small programs keep more of them in flight. Forward 4 cells x 64
# channels on one warp was 4.2x faster than 16 cells on four (with the joined store; 2.57x for
# the best launch without it); backward 4 cells on two warps, 1.13x.
_FWD_CELLS, _FWD_WARPS = 4, 1
_BWD_CELLS, _BWD_WARPS = 4, 2


def _channel_block(channels: int) -> int:
    return min(64, triton.next_power_of_2(channels))


class _DeformSample2x2(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        out_h, out_w = offset.shape[-2:]
        cells = out_h * out_w
        out = torch.empty(batch, cells, channels, 4, dtype=x.dtype, device=x.device)
        block_c = _channel_block(channels)
        launch = (triton.cdiv(batch * cells, _FWD_CELLS), triton.cdiv(channels, block_c))
        _sample_fwd_kernel[launch](
            x, offset, out, channels, height, width, out_w, cells, batch * cells,
            *x.stride(), *offset.stride(), BLOCK_N=_FWD_CELLS, BLOCK_C=block_c, num_warps=_FWD_WARPS,
        )
        ctx.save_for_backward(x, offset)
        return out.view(batch, cells, channels * 4).transpose(1, 2)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        x, offset = ctx.saved_tensors
        batch, channels, height, width = x.shape
        out_h, out_w = offset.shape[-2:]
        cells = out_h * out_w
        grad = grad.transpose(1, 2).contiguous()  # B x N x (C*4), the forward's output order
        grad_x = torch.zeros(batch, height, width, channels, dtype=torch.float32, device=x.device)
        grad_offset = torch.empty(batch, 8, out_h, out_w, dtype=torch.float32, device=x.device)
        launch = (triton.cdiv(batch * cells, _BWD_CELLS),)
        _sample_bwd_kernel[launch](
            x, offset, grad, grad_x, grad_offset, channels, height, width, out_w, cells, batch * cells,
            *x.stride(), *offset.stride(), BLOCK_N=_BWD_CELLS, BLOCK_C=_channel_block(channels),
            num_warps=_BWD_WARPS,
        )
        return grad_x.permute(0, 3, 1, 2).to(x.dtype), grad_offset.to(offset.dtype)


def deform_sample2x2_triton(x: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """:func:`litvit.ops.deform.deform_sample2x2` computed by the Triton kernels.

    Same arguments and result (``B x (C*4) x (H//2 * W//2)``, here a transposed view of a
    contiguous ``B x N x (C*4)`` buffer, the layout the DTM's matrix product reads).
    """
    batch, channels, height, width = x.shape
    out_h, out_w = offset.shape[-2:]
    if offset.shape[:2] != (batch, 8) or out_h != height // 2 or out_w != width // 2:
        raise ValueError(
            f"offset of shape {tuple(offset.shape)} does not fit a 2x2 stride-2 kernel over a "
            f"{batch} x {channels} x {height} x {width} input"
        )
    return _DeformSample2x2.apply(x, offset)

"""Training LIT's MLP-only stages a slab of token rows at a time, on the CPU.

A stage-1 block of LIT-Ti at batch 16 turns 50,176 tokens of 64 channels into a 512-wide
hidden layer: 103 MB that autograd writes and reads back about ten times per block (fc1's
output, GELU's output, their gradients, and the weight-gradient products that read them).
On a CPU those passes over memory cost as much as the block's matrix products.

Every op of these blocks acts on each token alone, so the forward pass can carry a slab of
rows through all of a stage's blocks while its hidden layer stays in cache, and the
backward pass can walk the same slab back through the blocks in reverse, accumulating the
weight gradients slab by slab. What crosses memory is each block's input, and either fc1's
output (``recompute=False``: written once, read once) or nothing (``recompute=True``: fc1
is recomputed in the backward pass, one extra product in six, with activations at 1/8 to
1/16 of autograd's). The module-by-module blocks stay the reference
(:func:`litvit.models.lit.fused_mlp_training_applies` decides where this runs).
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F

__all__ = ["residual_mlp_stack"]

_aten = torch.ops.aten
PARAMS_PER_BLOCK = 6  # LayerNorm weight, bias; fc1 weight, bias; fc2 weight, bias


class _ResidualMLPStack(torch.autograd.Function):
    """``x = x + scale * fc2(gelu(fc1(layer_norm(x))))`` for each block, slab by slab."""

    @staticmethod
    def forward(ctx, x, slab_rows, recompute, eps, scales, *params):  # type: ignore[override]
        dim = x.shape[-1]
        num_blocks = len(params) // PARAMS_PER_BLOCK
        rows = x.reshape(-1, dim).contiguous()
        num_rows = rows.shape[0]
        step = max(1, min(slab_rows, num_rows))
        widths = [params[PARAMS_PER_BLOCK * i + 2].shape[0] for i in range(num_blocks)]
        # Block i's input is kept for the backward pass; block i writes block i + 1's.
        inputs = [rows] + [torch.empty_like(rows) for _ in range(num_blocks - 1)]
        out = torch.empty_like(rows)
        hidden = [None if recompute else rows.new_empty(num_rows, w) for w in widths]
        buffer = rows.new_empty(step, max(widths, default=0))
        for start in range(0, num_rows, step):
            end = min(start + step, num_rows)
            current = rows[start:end]
            for i in range(num_blocks):
                norm_w, norm_b, w1, b1, w2, b2 = params[PARAMS_PER_BLOCK * i : PARAMS_PER_BLOCK * (i + 1)]
                normed = F.layer_norm(current, (dim,), norm_w, norm_b, eps)
                act = buffer[: end - start, : widths[i]]
                if recompute:
                    _aten.gelu_(torch.addmm(b1, normed, w1.t(), out=act))
                else:
                    pre = torch.addmm(b1, normed, w1.t(), out=hidden[i][start:end])
                    _aten.gelu.out(pre, out=act)
                target = out[start:end] if i == num_blocks - 1 else inputs[i + 1][start:end]
                if scales[i] is None:
                    torch.addmm(current, act, w2.t(), out=target).add_(b2)
                else:
                    torch.addcmul(current, torch.addmm(b2, act, w2.t()), scales[i][start:end, None], out=target)
                current = target
        ctx.meta = (step, recompute, eps, num_blocks, dim)
        ctx.scales = scales
        ctx.save_for_backward(*inputs, *[h for h in hidden if h is not None], *params)
        return out.reshape(x.shape)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):  # type: ignore[override]
        step, recompute, eps, num_blocks, dim = ctx.meta
        saved = ctx.saved_tensors
        inputs = saved[:num_blocks]
        hidden = [None] * num_blocks if recompute else saved[num_blocks : 2 * num_blocks]
        params = saved[num_blocks if recompute else 2 * num_blocks :]
        scales = ctx.scales
        wanted = ctx.needs_input_grad[5:]
        grads: List[Optional[torch.Tensor]] = [torch.zeros_like(p) if w else None for p, w in zip(params, wanted)]
        grad_rows = grad_out.reshape(-1, dim)
        num_rows = grad_rows.shape[0]
        grad_in = torch.empty_like(grad_rows) if ctx.needs_input_grad[0] else None
        widths = [params[PARAMS_PER_BLOCK * i + 2].shape[0] for i in range(num_blocks)]
        width = max(widths, default=0)
        buffer = grad_rows.new_empty(min(step, num_rows), width)
        pre_buffer = grad_rows.new_empty(min(step, num_rows), width) if recompute else None
        for start in range(0, num_rows, step):
            end = min(start + step, num_rows)
            grad = grad_rows[start:end]
            for i in reversed(range(num_blocks)):
                norm_w, norm_b, w1, b1, w2, b2 = params[PARAMS_PER_BLOCK * i : PARAMS_PER_BLOCK * (i + 1)]
                g_norm_w, g_norm_b, g_w1, g_b1, g_w2, g_b2 = grads[PARAMS_PER_BLOCK * i : PARAMS_PER_BLOCK * (i + 1)]
                block_in = inputs[i][start:end]
                normed, mean, rstd = _aten.native_layer_norm(block_in, (dim,), norm_w, norm_b, eps)
                if recompute:
                    pre = torch.addmm(b1, normed, w1.t(), out=pre_buffer[: end - start, : widths[i]])
                else:
                    pre = hidden[i][start:end]
                act = _aten.gelu.out(pre, out=buffer[: end - start, : widths[i]])
                grad_branch = grad if scales[i] is None else grad * scales[i][start:end, None]
                if g_b2 is not None:
                    g_b2.add_(grad_branch.sum(0))
                if g_w2 is not None:
                    g_w2.addmm_(grad_branch.t(), act)
                grad_act = torch.mm(grad_branch, w2, out=act)  # act is no longer needed
                grad_pre = _aten.gelu_backward.grad_input(grad_act, pre, approximate="none", grad_input=grad_act)
                if g_b1 is not None:
                    g_b1.add_(grad_pre.sum(0))
                if g_w1 is not None:
                    g_w1.addmm_(grad_pre.t(), normed)
                grad_normed = torch.mm(grad_pre, w1)
                mask = [True, g_norm_w is not None, g_norm_b is not None]
                grad_x, grad_norm_w, grad_norm_b = _aten.native_layer_norm_backward(
                    grad_normed, block_in, (dim,), mean, rstd, norm_w, norm_b, mask
                )
                if g_norm_w is not None:
                    g_norm_w.add_(grad_norm_w)
                if g_norm_b is not None:
                    g_norm_b.add_(grad_norm_b)
                grad = grad + grad_x
            if grad_in is not None:
                grad_in[start:end] = grad
        grad_x_out = None if grad_in is None else grad_in.reshape(grad_out.shape)
        return (grad_x_out, None, None, None, None, *grads)


def residual_mlp_stack(
    x: torch.Tensor,
    params: Sequence[torch.Tensor],
    eps: float,
    slab_rows: int,
    recompute: bool = False,
    scales: Optional[Sequence[Optional[torch.Tensor]]] = None,
) -> torch.Tensor:
    """``x = x + scale_i * fc2_i(gelu(fc1_i(layer_norm_i(x))))`` for blocks i = 0, 1, ... in turn,
    differentiable, with the tokens taken ``slab_rows`` rows at a time (see the module doc).

    Args:
        x: ``... x C`` tokens (float32 or float64, CPU).
        params: per block, LayerNorm weight and bias, fc1 weight and bias, fc2 weight and bias
            (``torch.nn.Linear`` layout), all blocks in order.
        eps: the LayerNorm epsilon (one for all blocks).
        slab_rows: rows per slab; about 4 MB of hidden layer fits a CPU's cache.
        recompute: recompute fc1 in the backward pass instead of keeping its output.
        scales: per block, ``None`` or a per-row factor on the MLP branch (stochastic depth's
            per-sample keep mask, repeated for each of a sample's tokens).
    """
    if len(params) % PARAMS_PER_BLOCK or any(p is None for p in params):
        raise ValueError("residual_mlp_stack needs six tensors per block, biases and norm affines included")
    num_blocks = len(params) // PARAMS_PER_BLOCK
    scales = list(scales) if scales is not None else [None] * num_blocks
    if len(scales) != num_blocks:
        raise ValueError(f"residual_mlp_stack: {len(scales)} scales for {num_blocks} blocks")
    return _ResidualMLPStack.apply(x, int(slab_rows), bool(recompute), float(eps), scales, *params)

"""LIT: Less attention vIsion Transformer.

"Less is More: Pay Less Attention in Vision Transformers", Pan et al., AAAI 2022
(https://arxiv.org/abs/2105.14217).

A four-stage hierarchical transformer: stages 1-2 hold MLP-only blocks, stages 3-4
global multi-head self-attention, and a deformable token merging (DTM) module halves
the resolution between stages. LIT-Ti and LIT-S/M/B differ in how they encode position
(per-stage absolute embeddings and a class token vs. relative position bias and mean
pooling); both are options of the one :class:`LIT` model below.

The released checkpoints use two other key layouts (a PVT-like one for LIT-Ti and a
Swin-like one for LIT-S/M/B); :func:`checkpoint_filter_fn` maps both to this file's names.
"""
from __future__ import annotations

import math
from functools import partial
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath, Mlp, trunc_normal_, use_fused_attn
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices

from ..ops.capture import graph_capture_active, is_exporting
from ..ops.deform import deform_sample2x2
from ..ops.onednn import get_cpu_mlp_kernel, linear_add, linear_gelu, training_linear_scope
from ..ops.onednn import linear_inference as onednn_linear_inference
from ..ops.onednn import linear as onednn_linear

__all__ = ["LIT", "DeformableTokenMerging", "checkpoint_filter_fn", "set_reference_path", "MODEL_CONFIGS"]


class PatchEmbed(nn.Module):
    """4x4 stride-4 convolution to tokens, then LayerNorm."""

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int = 4, norm_eps: float = 1e-5):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int]]:
        x = self.proj(x)
        grid = (x.shape[2], x.shape[3])
        return self.norm(x.flatten(2).transpose(1, 2)), grid


# Whether DTM hands the gradient of its input tokens back contiguous in token layout (see
# _TokenLayoutGrad); a switch so the two can be timed against each other.
DTM_TOKEN_LAYOUT_GRAD = True


class _TokenLayoutGrad(torch.autograd.Function):
    """Identity whose backward makes the gradient contiguous.

    DTM views ``B x N x C`` tokens as a channels-last map, and ``grid_sample``'s backward
    returns the input gradient as a plain NCHW buffer: seen as tokens, N varies fastest. Left
    so, that layout rides the residual stream of the whole previous stage in backward: every
    residual add and bias-gradient sum runs strided, and every LayerNorm backward first copies
    it. One copy here puts the stage back in token layout.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad.contiguous()


class DeformableTokenMerging(nn.Module):
    """Deformable token merging: a learned-offset 2x2 stride-2 convolution, BatchNorm, GELU.

    An offset convolution predicts, for every output cell, where each of the four kernel
    taps samples the input; the deformable convolution is computed by bilinear sampling
    plus one matrix product (:func:`litvit.ops.deform.deform_sample2x2`), so no compiled
    extension is needed. ``proj`` only holds the deformable kernel's weight and bias.
    """

    use_reference: bool = False

    def __init__(self, in_chans: int, out_chans: int):
        super().__init__()
        self.offset_conv = nn.Conv2d(in_chans, 8, kernel_size=2, stride=2)
        self.proj = nn.Conv2d(in_chans, out_chans, kernel_size=2, stride=2)
        self.norm = nn.BatchNorm2d(out_chans)
        self.act = nn.GELU()
        self.reset_offsets()

    def reset_offsets(self) -> None:
        # Zero offsets make an untrained module sample the regular 2x2 grid.
        nn.init.zeros_(self.offset_conv.weight)
        nn.init.zeros_(self.offset_conv.bias)

    def forward(
        self, x: torch.Tensor, grid: Tuple[int, int]
    ) -> Tuple[torch.Tensor, Tuple[int, int], torch.Tensor]:
        """Merge ``B x N x C`` tokens on an ``H x W`` grid into ``B x N/4 x C_out`` tokens.

        Returns the merged tokens, the new grid size and the predicted offsets
        (``B x 8 x H/2 x W/2``; channel ``2k`` row and ``2k+1`` column shift of tap ``k``).
        """
        if self.use_reference:
            return self.forward_reference(x, grid)
        batch, _, channels = x.shape
        height, width = grid
        if DTM_TOKEN_LAYOUT_GRAD and x.requires_grad and torch.is_grad_enabled():
            x = _TokenLayoutGrad.apply(x)
        # Viewing the tokens as a channels-last NCHW map costs no copy.
        x = x.reshape(batch, height, width, channels).permute(0, 3, 1, 2)
        offset = self.offset_conv(x)
        out_h, out_w = offset.shape[-2:]
        samples = deform_sample2x2(x, offset)  # B x (C*4) x N'
        out_channels = self.proj.out_channels
        if self.folds_norm():
            weight, bias = self.folded_projection()
            # BatchNorm is in the weights and the product is already in token layout: no layout
            # round trip for the norm, and the bias and GELU act on the product in place.
            out = torch.matmul(samples.transpose(1, 2), weight.t())
            out = F.gelu(out.add_(bias)) if torch.is_grad_enabled() else torch.ops.aten.gelu_(out.add_(bias))
            return out.reshape(batch, out_h * out_w, out_channels), (out_h, out_w), offset
        weight = self.proj.weight.reshape(out_channels, -1)
        # (B x N' x C*4) @ (C*4 x C_out): the result is already in token layout.
        out = torch.matmul(samples.transpose(1, 2), weight.t())
        if self.proj.bias is not None:
            out = out + self.proj.bias
        out = out.reshape(batch, out_h, out_w, out_channels).permute(0, 3, 1, 2)
        out = self.act(self.norm(out))
        out = out.permute(0, 2, 3, 1).reshape(batch, out_h * out_w, out_channels)
        return out, (out_h, out_w), offset

    def folds_norm(self) -> bool:
        """Whether BatchNorm can be folded into the projection: in eval mode with running
        statistics, a plain GELU, and no hooks that would miss the skipped modules."""
        norm, act = self.norm, self.act
        if self.training or norm.training or norm.running_mean is None or not FOLD_DTM_NORM:
            return False
        if type(act) is not nn.GELU or act.approximate != "none" or type(norm) is not nn.BatchNorm2d:
            return False
        return not _global_module_hooks() and not _has_hooks((norm, act))

    def folded_projection(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """The deformable kernel as a ``C_out x C*4`` matrix and a bias, with eval-mode BatchNorm
        folded in: ``norm(W x + b) = (s W) x + s (b - mean) + beta`` with ``s = gamma / std``."""
        norm, proj = self.norm, self.proj
        scale = torch.rsqrt(norm.running_var + norm.eps)
        if norm.weight is not None:
            scale = scale * norm.weight
        shift = -norm.running_mean if proj.bias is None else proj.bias - norm.running_mean
        bias = shift * scale if norm.bias is None else torch.addcmul(norm.bias, shift, scale)
        weight = proj.weight.reshape(proj.out_channels, -1) * scale[:, None]
        return weight, bias

    def forward_reference(
        self, x: torch.Tensor, grid: Tuple[int, int]
    ) -> Tuple[torch.Tensor, Tuple[int, int], torch.Tensor]:
        """The released formulation, kept to check the fast path against: a contiguous NCHW map
        through ``torchvision.ops.deform_conv2d``, BatchNorm and GELU, then back to tokens."""
        from torchvision.ops import deform_conv2d

        batch, _, channels = x.shape
        x = x.transpose(1, 2).reshape(batch, channels, grid[0], grid[1]).contiguous()
        offset = self.offset_conv(x)
        out = deform_conv2d(x, offset, self.proj.weight, self.proj.bias, stride=2)
        out = self.act(self.norm(out))
        out_h, out_w = out.shape[-2:]
        return out.flatten(2).transpose(1, 2), (out_h, out_w), offset


def set_reference_path(model: nn.Module, enable: bool = True) -> nn.Module:
    """Run ``model``'s LIT parts on their reference implementations (explicit softmax attention,
    torchvision's deformable convolution in DTM, the MLPs module by module) or, with
    ``enable=False``, on the fast ones.

    The reference path is slower; it exists so tests and users can check the fast path's output.
    """
    for module in model.modules():
        if isinstance(module, Attention):
            module.fused_attn = False if enable else use_fused_attn()
        elif isinstance(module, (DeformableTokenMerging, Block)):
            module.use_reference = enable
    return model


def relative_position_index(height: int, width: int, device: Optional[torch.device] = None) -> torch.Tensor:
    """Index into a ``(2H-1)(2W-1)`` bias table for every (query, key) pair of an ``H x W`` grid."""
    coords = torch.stack(
        torch.meshgrid(
            torch.arange(height, device=device), torch.arange(width, device=device), indexing="ij"
        )
    ).flatten(1)  # 2 x N
    rel = coords[:, :, None] - coords[:, None, :]  # 2 x N x N
    return (rel[0] + height - 1) * (2 * width - 1) + (rel[1] + width - 1)


def resize_abs_pos_embed(
    pos_embed: torch.Tensor, src_grid: Sequence[int], dst_grid: Sequence[int], num_prefix_tokens: int = 0
) -> torch.Tensor:
    """Resize a ``1 x (prefix + h*w) x C`` position embedding to another grid, bilinearly and
    without antialiasing (as the released dense backbones do); prefix tokens pass unchanged.

    timm's ``resample_abs_pos_embed`` does the same, but before timm 1.0.30 its size-match
    early-out runs under ``torch.export`` too and freezes exported graphs to the example size.
    """
    prefix, grid_embed = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    channels = grid_embed.shape[-1]
    image = grid_embed.float().reshape(1, src_grid[0], src_grid[1], channels).permute(0, 3, 1, 2)
    image = F.interpolate(image, size=(dst_grid[0], dst_grid[1]), mode="bilinear", align_corners=False)
    grid_embed = image.permute(0, 2, 3, 1).reshape(1, -1, channels).to(pos_embed.dtype)
    return torch.cat([prefix, grid_embed], dim=1) if num_prefix_tokens else grid_embed


def resize_rel_pos_table(table: torch.Tensor, src_grid: Tuple[int, int], dst_grid: Tuple[int, int]) -> torch.Tensor:
    """Resize a ``(2h-1)(2w-1) x heads`` bias table to another grid, bicubically (as the released
    dense backbones do)."""
    # No size-match early-out while exporting: it would freeze the graph to the example size.
    if not is_exporting() and tuple(src_grid) == tuple(dst_grid):
        return table
    heads = table.shape[1]
    src_h, src_w = 2 * src_grid[0] - 1, 2 * src_grid[1] - 1
    dst_h, dst_w = 2 * dst_grid[0] - 1, 2 * dst_grid[1] - 1
    image = table.t().reshape(1, heads, src_h, src_w)
    image = F.interpolate(image.float(), size=(dst_h, dst_w), mode="bicubic", align_corners=False)
    return image.to(table.dtype).reshape(heads, dst_h * dst_w).t()


# Inference at detection resolutions runs the biased attention in blocks of query rows so that
# the relative position bias is never materialised for all N x N token pairs at once: at
# 800 x 1344 LIT-S has 4200 stage-3 tokens, and a full 12-head bias is 847 MB per block.
# A block's bias holds at most this many elements: 32 MB in float32 on CPU; on CUDA 128 MB,
# because smaller blocks leave the GPU idle (H100, LIT-S at 800 x 1344: 157 ms at 2^23, 38 ms
# at 2^25, peak memory 271 -> 291 MB).
BIAS_BLOCK_ELEMENTS = 1 << 23
BIAS_BLOCK_ELEMENTS_CUDA = 1 << 25
# Row stride of those blocks, in elements: the alignment CUDA's memory-efficient attention
# wants of a mask (4200 tokens are not a multiple of it; 4208 are).
BIAS_ROW_ALIGNMENT = 16


class Attention(nn.Module):
    """Global multi-head self-attention with an optional learned relative position bias."""

    fused_attn: bool

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        rel_pos_grid: Optional[Tuple[int, int]] = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.fused_attn = use_fused_attn()
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.rel_pos_grid = tuple(rel_pos_grid) if rel_pos_grid is not None else None
        if self.rel_pos_grid is not None:
            h, w = self.rel_pos_grid
            self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * h - 1) * (2 * w - 1), num_heads))
            trunc_normal_(self.relative_position_bias_table, std=0.02)
        else:
            self.relative_position_bias_table = None

    @staticmethod
    def _check_grid(grid: Tuple[int, int], num_tokens: int) -> None:
        if grid[0] * grid[1] != num_tokens:
            raise ValueError(f"relative position bias needs {grid[0]}x{grid[1]} grid tokens, got {num_tokens}")

    def position_bias(self, grid: Tuple[int, int], num_tokens: int) -> Optional[torch.Tensor]:
        """``1 x heads x N x N`` additive bias for a ``grid`` of tokens, or None."""
        if self.relative_position_bias_table is None:
            return None
        self._check_grid(grid, num_tokens)
        table = resize_rel_pos_table(self.relative_position_bias_table, self.rel_pos_grid, grid)
        # Computed per call rather than kept as a buffer: an N x N int64 index per block would be
        # 134 MB for a model built at 1024 px, and only this reference form needs it.
        index = relative_position_index(grid[0], grid[1], device=table.device)
        bias = table[index.reshape(-1)].reshape(num_tokens, num_tokens, -1)
        return bias.permute(2, 0, 1).unsqueeze(0)

    def query_block_rows(self, q: torch.Tensor, num_tokens: int) -> Optional[int]:
        """How many query rows one biased SDPA call takes in inference (``num_tokens`` when the
        whole bias fits one block), or None where the bias is built whole by the one-call form.

        Blocking applies to inference only: under autograd every block's bias would be kept for
        the backward pass, which saves nothing. Exported and compiled graphs keep the one-call
        form so the graph does not depend on the token count.
        """
        table = self.relative_position_bias_table
        if table is None or is_exporting() or torch.compiler.is_compiling():
            return None
        if torch.is_grad_enabled() and (q.requires_grad or table.requires_grad):
            return None
        budget = BIAS_BLOCK_ELEMENTS_CUDA if q.is_cuda else BIAS_BLOCK_ELEMENTS
        return min(num_tokens, max(1, budget // (self.num_heads * num_tokens)))

    def reversed_key_bias(self, grid: Tuple[int, int], dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        """The relative position bias for keys (and values) taken in reverse token order, as a
        ``heads x h x w x h x w`` strided view of the bias table: no copy until reshaped."""
        height, width = grid
        table = self.relative_position_bias_table
        if tuple(grid) != self.rel_pos_grid:
            table = resize_rel_pos_table(table, self.rel_pos_grid, grid)
        table = table.t().reshape(self.num_heads, 2 * height - 1, 2 * width - 1)
        if dtype is not None:
            table = table.to(dtype)
        # With the keys reversed, query (y, x) and key (y', x') have bias table[y + y', x + x']
        # rather than table[y - y' + h - 1, x - x' + w - 1], so each query's bias row is a window
        # of the table and one strided view holds them all: materialising it is a copy, not a
        # gather through an N x N index (nor, in backward, a scatter-add).
        return table.unfold(1, height, 1).unfold(2, width, 1)

    def blocked_sdpa(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, grid: Tuple[int, int], rows: int
    ) -> torch.Tensor:
        """SDPA with the relative position bias, about ``rows`` queries (whole grid rows) at a time.

        Attention rows are independent, so this equals the one-call form while holding only a
        ``heads x rows x N`` slice of the bias. For inference only (the bias gets no gradient).
        """
        height, width = grid
        num_tokens = q.shape[2]
        self._check_grid(grid, num_tokens)
        # The table is cast before its windows are copied out: casting the built bias would hold
        # it twice (under bfloat16 autocast, LIT-S's whole stage-4 bias at 800 x 1344 was a 101 MB
        # float32 copy beside its 50 MB cast, the model's memory peak).
        windows = self.reversed_key_bias(grid, q.dtype)
        k, v = k.flip(2), v.flip(2)
        step = max(1, rows // width)
        blocks = [(y, min(y + step, height)) for y in range(0, height, step)]
        out = torch.empty_like(q) if len(blocks) > 1 else None
        # One buffer for every block's bias, its rows padded to BIAS_ROW_ALIGNMENT elements: CUDA's
        # memory-efficient kernel copies a mask with unaligned rows into a padded one, which
        # doubled the bias memory; and the windows are copied straight in, with no reshaped
        # intermediate.
        padded = -(-num_tokens // BIAS_ROW_ALIGNMENT) * BIAS_ROW_ALIGNMENT
        buffer = q.new_empty(self.num_heads, min(step, height) * width, padded)
        for y, y_end in blocks:
            bias = buffer[:, : (y_end - y) * width, :num_tokens]
            bias.unflatten(2, (height, width)).unflatten(1, (y_end - y, width)).copy_(windows[:, y:y_end])
            queries = q[:, :, y * width : y_end * width]
            block_out = F.scaled_dot_product_attention(queries, k, v, attn_mask=bias.unsqueeze(0))
            if out is None:
                return block_out
            out[:, :, y * width : y_end * width] = block_out
        return out

    def attention_probs(self, q: torch.Tensor, k: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
        attn = (q * self.scale) @ k.transpose(-2, -1)
        if bias is not None:
            attn = attn + bias
        return attn.softmax(dim=-1)

    def forward_queries(self, x: torch.Tensor, num_queries: int) -> torch.Tensor:
        """Attention outputs of the first ``num_queries`` tokens only, every token a key and value.

        For a head that reads only the class token: the last block's other queries are never
        used, so neither their query products nor their attention rows are computed.
        """
        if self.relative_position_bias_table is not None:
            raise ValueError("forward_queries is for attention without a relative position bias")
        batch, num_tokens, dim = x.shape
        weight, bias = self.qkv.weight, self.qkv.bias
        q = F.linear(x[:, :num_queries], weight[:dim], None if bias is None else bias[:dim])
        kv = F.linear(x, weight[dim:], None if bias is None else bias[dim:])
        q = q.reshape(batch, num_queries, self.num_heads, self.head_dim).transpose(1, 2)
        k, v = kv.reshape(batch, num_tokens, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        dropout_p = self.attn_drop.p if self.training else 0.0
        if self.fused_attn:
            x = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
        else:
            x = self.attn_drop(self.attention_probs(q, k, None)) @ v
        x = x.transpose(1, 2).reshape(batch, num_queries, dim)
        return self.proj_drop(self.proj(x))

    def forward(
        self,
        x: torch.Tensor,
        grid: Tuple[int, int],
        return_attn: bool = False,
        residual: Optional[torch.Tensor] = None,
        linear: Optional[Callable[[nn.Linear, torch.Tensor], torch.Tensor]] = None,
    ):
        """Attention output for ``B x N x C`` tokens; with ``residual``, ``residual`` + that output.

        Passing the residual is for CPU inference (see :func:`onednn_attention_applies`): qkv and
        the projection then run as oneDNN products, and the projection adds the residual as it
        writes its output. ``linear(layer, x)``, where given, computes qkv and the projection in
        place of calling those modules (:meth:`Block.forward` passes oneDNN's for CPU training).
        """
        batch, num_tokens, dim = x.shape
        if residual is not None:
            qkv = onednn_linear_inference(x, self.qkv.weight, self.qkv.bias)
        elif linear is not None:
            qkv = linear(self.qkv, x)
        else:
            qkv = self.qkv(x)
        qkv = qkv.reshape(batch, num_tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = None
        use_sdpa = self.fused_attn and not return_attn
        dropout_p = self.attn_drop.p if self.training else 0.0
        rows = self.query_block_rows(q, num_tokens) if use_sdpa and dropout_p == 0.0 else None
        if rows is not None:
            x = self.blocked_sdpa(q, k, v, grid, rows)
        else:
            if use_sdpa and self.relative_position_bias_table is not None and not is_exporting():
                self._check_grid(grid, num_tokens)
                bias = self.reversed_key_bias(grid).reshape(1, self.num_heads, num_tokens, num_tokens)
                k, v = k.flip(2), v.flip(2)
            else:
                bias = self.position_bias(grid, num_tokens)
            if use_sdpa and bias is not None and bias.requires_grad and q.device.type == "cpu":
                # No CPU SDPA kernel returns a gradient for attn_mask, so torch would fall back to its
                # math path, which is ~1.4x slower than the explicit product below (safe-softmax
                # checks, scaling q and k separately). CUDA's memory-efficient kernel handles it.
                use_sdpa = False
            if use_sdpa:
                if bias is not None:
                    bias = bias.to(q.dtype)
                x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout_p)
            else:
                attn = self.attention_probs(q, k, bias)
                x = self.attn_drop(attn) @ v
        x = x.transpose(1, 2).reshape(batch, num_tokens, dim)
        if residual is not None:
            x = linear_add(x.reshape(-1, dim), residual.reshape(-1, dim), self.proj.weight, self.proj.bias)
            x = x.reshape(batch, num_tokens, dim)
        else:
            x = self.proj_drop(self.proj(x) if linear is None else linear(self.proj, x))
        return (x, attn) if return_attn else x


class Block(nn.Module):
    """Pre-norm residual block; without attention (stages 1-2) it is the MLP residual alone."""

    use_reference: bool = False

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float,
        use_attn: bool,
        qkv_bias: bool = True,
        rel_pos_grid: Optional[Tuple[int, int]] = None,
        drop_path: float = 0.0,
        proj_drop: float = 0.0,
        attn_drop: float = 0.0,
        norm_layer: Callable[..., nn.Module] = nn.LayerNorm,
    ):
        super().__init__()
        if use_attn:
            self.norm1 = norm_layer(dim)
            self.attn = Attention(dim, num_heads, qkv_bias, rel_pos_grid, attn_drop, proj_drop)
        else:
            self.norm1 = None
            self.attn = None
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU, drop=proj_drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor, grid: Tuple[int, int], num_queries: Optional[int] = None) -> torch.Tensor:
        """``B x N x C`` tokens; with ``num_queries``, only the first ``num_queries`` tokens' outputs
        (every token still serves as a key and value)."""
        if num_queries is not None:
            if self.attn is None:
                raise ValueError("num_queries needs an attention block")
            x = x[:, :num_queries] + self.drop_path(self.attn.forward_queries(self.norm1(x), num_queries))
            return x + self.drop_path(self.mlp(self.norm2(x)))
        scope = None  # decided below, once the inference paths have declined
        if self.attn is not None and onednn_attention_applies(self, x):
            x = self.attn(self.norm1(x), grid, residual=x)
            scope = "none"
        elif self.attn is not None:
            scope = onednn_training_scope(self, x)
            linear = None if scope == "none" else partial(_onednn_layer, onednn_weight_grad=scope == "all")
            x = x + self.drop_path(self.attn(self.norm1(x), grid, linear=linear))
        if fused_mlp_applies((self,), x, whole_blocks=False):
            kernel = get_cpu_mlp_kernel(x) if ONEDNN_IN_ATTENTION_STAGES else "aten"
            return fused_mlp_inference((self,), x, kernel=kernel)
        if inplace_mlp_applies(self):
            # Inference on any device, autocast included: GELU overwrites fc1's output, and the
            # normalised tokens are released when fc1 returns rather than after fc2. At detection
            # resolutions the stage-1 MLPs hold the largest activations of a forward pass.
            hidden = self.mlp.fc1(self.norm2(x))
            update = self.mlp.fc2(torch.ops.aten.gelu_(hidden))
            del hidden  # not alive beside the residual sum: LIT-S's peak at 800 x 1344 on CUDA's path
            return x + update
        if scope is None:
            scope = onednn_training_scope(self, x)
        if scope != "none":
            mlp, onednn_weight_grad = self.mlp, scope == "all"
            hidden = mlp.drop1(mlp.act(_onednn_layer(mlp.fc1, self.norm2(x), onednn_weight_grad)))
            return x + self.drop_path(mlp.drop2(_onednn_layer(mlp.fc2, mlp.norm(hidden), onednn_weight_grad)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


# Fold DTM's BatchNorm into its projection in eval mode (module attribute so tests can compare).
FOLD_DTM_NORM = True

# Whether CPU inference with the oneDNN kernel also takes it in the attention stages (qkv, the
# projection with its residual, the MLPs). On an AVX-512 Xeon that was neither faster nor slower;
# on an AVX-512 Zen 4 EPYC, where MKL runs these products at 85-95 % of oneDNN's rate, it made
# LIT-Ti and LIT-S inference 1.03x and 1.07x faster.
ONEDNN_IN_ATTENTION_STAGES = True

# Rows per slab in fused_mlp_inference: about 4 MB of hidden activations, which stay in cache
# between fc1, GELU and fc2 (LIT-Ti batch 32 on 2 CPU threads: 1.065x).
MLP_SLAB_ELEMENTS = 1 << 20
# oneDNN's fused products were fastest with slabs twice as large (on an AVX-512 Xeon).
MLP_SLAB_ELEMENTS_ONEDNN = 1 << 21


def _autocast_enabled(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4 takes no device type
        return torch.is_autocast_cpu_enabled()


def _global_module_hooks() -> bool:
    # Global module hooks (FlopCounterMode's module tracker, for one) would miss the skipped calls.
    return bool(nn.modules.module._global_forward_hooks or nn.modules.module._global_forward_pre_hooks)


def _has_hooks(modules: Iterable[nn.Module]) -> bool:
    return any(m._forward_hooks or m._forward_pre_hooks for m in modules)


def fused_mlp_applies(blocks: Sequence[Block], x: torch.Tensor, whole_blocks: bool) -> bool:
    """Whether :func:`fused_mlp_inference` may stand in for the blocks' MLP residuals.

    It calls the ops of ``norm2`` and ``mlp`` directly, so it runs only where nothing could tell
    the difference: CPU inference without autograd, autocast or graph capture, blocks in eval
    mode with the standard LayerNorm -> Linear -> GELU -> Linear, and no hooks on the modules it
    skips (with ``whole_blocks``, the blocks themselves are skipped too). Anywhere else, and
    under :func:`set_reference_path`, the modules run as written.
    """
    if x.device.type != "cpu" or torch.is_grad_enabled() or graph_capture_active():
        return False
    if not x.is_floating_point() or _autocast_enabled("cpu"):
        return False
    if _global_module_hooks():
        return False
    for block in blocks:
        if not _standard_eval_mlp(block):
            return False
        skipped = [block.norm2, block.drop_path, *block.mlp.modules()]
        if _has_hooks(skipped) or (whole_blocks and _has_hooks((block,))):
            return False
    return True


def onednn_training_scope(block: Block, x: torch.Tensor) -> str:
    """Which Linear layers :meth:`Block.forward` computes through :func:`litvit.ops.onednn.linear`.

    Where the inference paths do not apply (training, mostly), on float32 CPU tensors, as
    :func:`~litvit.ops.onednn.training_linear_scope` decides: ``"mlp"`` (an MLP-only block's fc1
    and fc2, weight gradients from ``mm``), ``"all"`` (the MLP's and attention's qkv and projection,
    weight gradients from oneDNN) or ``"none"`` (the modules run). Never under autocast or graph
    capture, on the reference path, or with hooks on the modules whose calls it skips (the MLP,
    its Linear layers and attention's); GELU, dropouts and the drop path still run as modules.
    """
    mlp, attn = block.mlp, block.attn
    if block.use_reference or graph_capture_active() or _autocast_enabled("cpu"):
        return "none"
    layers = [mlp.fc1, mlp.fc2] if attn is None else [mlp.fc1, mlp.fc2, attn.qkv, attn.proj]
    if type(mlp) is not Mlp or (attn is not None and type(attn) is not Attention):
        return "none"
    if any(type(layer) is not nn.Linear or layer.weight.dtype != x.dtype for layer in layers):
        return "none"
    if _global_module_hooks() or _has_hooks((mlp, *layers)):
        return "none"
    scope = training_linear_scope(x)
    return "none" if attn is not None and scope != "all" else scope


def _onednn_layer(layer: nn.Linear, x: torch.Tensor, onednn_weight_grad: bool) -> torch.Tensor:
    return onednn_linear(x, layer.weight, layer.bias, onednn_weight_grad)


def onednn_attention_applies(block: Block, x: torch.Tensor) -> bool:
    """Whether :meth:`Block.forward` may run an attention residual's products through oneDNN.

    CPU inference without autograd, on float32 tokens, when :func:`~litvit.ops.onednn.get_cpu_mlp_kernel`
    picks oneDNN and :data:`ONEDNN_IN_ATTENTION_STAGES` is set; not under autocast or graph
    capture, on the reference path, in training mode (dropout and drop path), or with hooks on
    the attention module (its output then includes the residual) or the Linear layers it skips.
    """
    attn = block.attn
    if not ONEDNN_IN_ATTENTION_STAGES or attn is None or block.training or block.use_reference:
        return False
    if torch.is_grad_enabled() or graph_capture_active() or _autocast_enabled("cpu"):
        return False
    if get_cpu_mlp_kernel(x) != "onednn":
        return False
    if any(type(layer) is not nn.Linear or layer.weight.dtype != x.dtype for layer in (attn.qkv, attn.proj)):
        return False
    skipped = (attn, attn.qkv, attn.proj, attn.proj_drop, block.drop_path)
    return not _global_module_hooks() and not _has_hooks(skipped)


def _standard_eval_mlp(block: Block) -> bool:
    """Block in eval mode, on the fast path, with the MLP residual LayerNorm -> Linear -> GELU -> Linear."""
    mlp = block.mlp
    standard = (
        type(block.norm2) is nn.LayerNorm
        and type(mlp) is Mlp
        and type(mlp.fc1) is nn.Linear
        and type(mlp.fc2) is nn.Linear
        and type(mlp.act) is nn.GELU
        and mlp.act.approximate == "none"
        and isinstance(mlp.norm, nn.Identity)
    )
    return standard and not block.training and not block.use_reference


def inplace_mlp_applies(block: Block) -> bool:
    """Whether :meth:`Block.forward` may run its MLP residual with GELU in place.

    For inference without autograd on any device and under autocast; not under graph capture
    (exported and compiled graphs keep the modules' form). fc1's output is overwritten, so
    neither it nor the skipped modules (the MLP itself, its activation, dropouts and drop
    path) may carry hooks that could hold on to it; norm2, fc1 and fc2 still run as modules.
    """
    if torch.is_grad_enabled() or graph_capture_active() or not _standard_eval_mlp(block):
        return False
    mlp = block.mlp
    return not _global_module_hooks() and not _has_hooks((block.drop_path, mlp, mlp.fc1, mlp.act, mlp.drop1, mlp.drop2))


def fused_mlp_inference(
    blocks: Sequence[Block], x: torch.Tensor, slab_rows: Optional[int] = None, kernel: str = "aten"
) -> torch.Tensor:
    """``x = x + mlp(norm2(x))`` for each block in turn, for CPU inference (see :func:`fused_mlp_applies`).

    Equal to the blocks' own forward up to float rounding, with fewer passes over memory: GELU
    runs in place in a reused buffer and fc2's matrix product adds the residual as it writes.
    With ``slab_rows``, the tokens go through all the blocks a slab of rows at a time, so the
    hidden activations stay in cache; that is right for the MLP-only stages, where every op
    acts on each token alone. ``kernel="onednn"`` (float32 only) computes fc1 with its GELU and
    fc2 with the residual add as two oneDNN products (:mod:`litvit.ops.onednn`).
    """
    batch_shape, dim = x.shape[:-1], x.shape[-1]
    rows = x.reshape(-1, dim)
    out = torch.empty_like(rows)
    num_rows = rows.shape[0]
    step = max(1, num_rows if slab_rows is None else slab_rows)
    if kernel == "onednn":
        for start in range(0, num_rows, step):
            current = rows[start : start + step]
            for block in blocks:
                norm, fc1, fc2 = block.norm2, block.mlp.fc1, block.mlp.fc2
                normed = F.layer_norm(current, norm.normalized_shape, norm.weight, norm.bias, norm.eps)
                current = linear_add(linear_gelu(normed, fc1.weight, fc1.bias), current, fc2.weight, fc2.bias)
            out[start : start + step] = current
        return out.reshape(*batch_shape, dim)
    hidden_features = max(block.mlp.fc1.out_features for block in blocks)
    hidden_buffer = torch.empty(min(step, num_rows), hidden_features, dtype=x.dtype, device=x.device)
    for start in range(0, num_rows, step):
        end = min(start + step, num_rows)
        current = rows[start:end]
        for i, block in enumerate(blocks):
            norm, fc1, fc2 = block.norm2, block.mlp.fc1, block.mlp.fc2
            normed = F.layer_norm(current, norm.normalized_shape, norm.weight, norm.bias, norm.eps)
            hidden = hidden_buffer[: end - start, : fc1.out_features]
            if fc1.bias is not None:
                torch.addmm(fc1.bias, normed, fc1.weight.t(), out=hidden)
            else:
                torch.mm(normed, fc1.weight.t(), out=hidden)
            torch.ops.aten.gelu_(hidden)
            target = out[start:end] if i == len(blocks) - 1 else None
            current = torch.addmm(current, hidden, fc2.weight.t(), out=target)
            if fc2.bias is not None:
                current += fc2.bias
    return out.reshape(*batch_shape, dim)


class LITStage(nn.Module):
    """Token merging (DTM, or nothing in stage 1), optional absolute position embedding, blocks."""

    def __init__(
        self,
        in_dim: int,
        dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float,
        use_attn: bool,
        downsample: bool,
        grid: Tuple[int, int],
        abs_pos_embed: bool,
        rel_pos_bias: bool,
        num_prefix_tokens: int = 0,
        qkv_bias: bool = True,
        drop_path: Sequence[float] = (),
        proj_drop: float = 0.0,
        attn_drop: float = 0.0,
        norm_layer: Callable[..., nn.Module] = nn.LayerNorm,
    ):
        super().__init__()
        self.grid = tuple(grid)
        self.num_prefix_tokens = num_prefix_tokens
        self.grad_checkpointing = False
        self.mlp_only = not use_attn
        self.downsample = DeformableTokenMerging(in_dim, dim) if downsample else None
        if abs_pos_embed:
            self.pos_embed = nn.Parameter(torch.zeros(1, grid[0] * grid[1] + num_prefix_tokens, dim))
            trunc_normal_(self.pos_embed, std=0.02)
        else:
            self.pos_embed = None
        self.blocks = nn.ModuleList(
            [
                Block(
                    dim,
                    num_heads,
                    mlp_ratio,
                    use_attn,
                    qkv_bias=qkv_bias,
                    rel_pos_grid=grid if (use_attn and rel_pos_bias) else None,
                    drop_path=drop_path[i] if drop_path else 0.0,
                    proj_drop=proj_drop,
                    attn_drop=attn_drop,
                    norm_layer=norm_layer,
                )
                for i in range(depth)
            ]
        )

    def resized_pos_embed(self, grid: Tuple[int, int]) -> torch.Tensor:
        # Exported graphs always resize (an identity at the training size) so the image size stays dynamic.
        if not is_exporting() and tuple(grid) == self.grid:
            return self.pos_embed
        return resize_abs_pos_embed(self.pos_embed, self.grid, grid, self.num_prefix_tokens)

    def forward(
        self,
        x: torch.Tensor,
        grid: Tuple[int, int],
        prefix_tokens: Optional[torch.Tensor] = None,
        last_block_queries: Optional[int] = None,
    ) -> Tuple[torch.Tensor, Tuple[int, int], Optional[torch.Tensor]]:
        """Returns tokens (prefix tokens first, if given), grid size and the DTM offsets (or None).

        With ``last_block_queries`` the last block returns only its first that many tokens
        (:meth:`Block.forward`'s ``num_queries``).
        """
        offset = None
        if self.downsample is not None:
            x, grid, offset = self.downsample(x, grid)
        if self.pos_embed is not None:
            pos_embed = self.resized_pos_embed(grid)
            if prefix_tokens is None and self.num_prefix_tokens:
                pos_embed = pos_embed[:, self.num_prefix_tokens :]
            if prefix_tokens is not None:
                x = torch.cat((prefix_tokens.expand(x.shape[0], -1, -1), x), dim=1)
            x = x + pos_embed
        elif prefix_tokens is not None:
            x = torch.cat((prefix_tokens.expand(x.shape[0], -1, -1), x), dim=1)
        if self.mlp_only and len(self.blocks) and fused_mlp_applies(self.blocks, x, whole_blocks=True):
            kernel = get_cpu_mlp_kernel(x)
            slab = MLP_SLAB_ELEMENTS_ONEDNN if kernel == "onednn" else MLP_SLAB_ELEMENTS
            slab_rows = slab // max(block.mlp.fc1.out_features for block in self.blocks)
            return fused_mlp_inference(self.blocks, x, slab_rows, kernel=kernel), grid, offset
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            queries = last_block_queries if i == last else None
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x = torch.utils.checkpoint.checkpoint(block, x, grid, queries, use_reentrant=False)
            else:
                x = block(x, grid, queries) if queries is not None else block(x, grid)
        return x, grid, offset


class LIT(nn.Module):
    """LIT backbone and classifier.

    Args:
        img_size: training resolution; fixes the size of the position tables (other sizes
            that are multiples of 32 are handled by resizing them).
        embed_dims, depths, num_heads, mlp_ratios: per stage.
        attn_stages: which stages use self-attention (LIT: the last two).
        pos_embed: ``'abs'`` (LIT-Ti: learned embedding per stage, class token) or ``'rel'``
            (LIT-S/M/B: relative position bias in every attention block).
        global_pool: ``'token'`` (class token) or ``'avg'``.
        norm_eps: LayerNorm epsilon in blocks and the final norm (the stem LayerNorm always
            uses 1e-5, as released).
        feature_norms: add a LayerNorm on the stage 2-4 outputs of :meth:`forward_intermediates`
            (the convention of the released LIT-S dense backbone).
    """

    def __init__(
        self,
        img_size: Union[int, Tuple[int, int]] = 224,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        embed_dims: Sequence[int] = (96, 192, 384, 768),
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        mlp_ratios: Sequence[float] = (4, 4, 4, 4),
        attn_stages: Sequence[bool] = (False, False, True, True),
        pos_embed: str = "rel",
        patch_size: int = 4,
        qkv_bias: bool = True,
        norm_eps: float = 1e-5,
        drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        feature_norms: bool = False,
    ):
        super().__init__()
        if pos_embed not in ("abs", "rel"):
            raise ValueError(f"pos_embed must be 'abs' or 'rel', got {pos_embed!r}")
        if global_pool not in ("token", "avg", ""):
            raise ValueError(f"global_pool must be 'token', 'avg' or '', got {global_pool!r}")
        img_size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        num_stages = len(depths)
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.img_size = img_size
        self.patch_size = patch_size
        self.pos_embed_type = pos_embed
        self.embed_dims = list(embed_dims)
        self.num_features = self.head_hidden_size = embed_dims[-1]
        self.stride = patch_size * 2 ** (num_stages - 1)
        self.grad_checkpointing = False
        # The class token exists only where the head reads it.
        self.num_prefix_tokens = 1 if global_pool == "token" else 0
        norm_layer = partial(nn.LayerNorm, eps=norm_eps)

        self.patch_embed = PatchEmbed(in_chans, embed_dims[0], patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dims[-1])) if self.num_prefix_tokens else None

        dpr = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        stages, self.feature_info = [], []
        grid = (img_size[0] // patch_size, img_size[1] // patch_size)
        reduction = patch_size
        for i in range(num_stages):
            if i > 0:
                grid = (grid[0] // 2, grid[1] // 2)
                reduction *= 2
            stages.append(
                LITStage(
                    in_dim=embed_dims[max(i - 1, 0)],
                    dim=embed_dims[i],
                    depth=depths[i],
                    num_heads=num_heads[i],
                    mlp_ratio=mlp_ratios[i],
                    use_attn=bool(attn_stages[i]),
                    downsample=i > 0,
                    grid=grid,
                    abs_pos_embed=pos_embed == "abs",
                    rel_pos_bias=pos_embed == "rel",
                    num_prefix_tokens=self.num_prefix_tokens if i == num_stages - 1 else 0,
                    qkv_bias=qkv_bias,
                    drop_path=dpr[sum(depths[:i]) : sum(depths[: i + 1])],
                    proj_drop=proj_drop_rate,
                    attn_drop=attn_drop_rate,
                    norm_layer=norm_layer,
                )
            )
            self.feature_info.append(dict(num_chs=embed_dims[i], reduction=reduction, module=f"stages.{i}"))
        self.stages = nn.ModuleList(stages)
        self.norm = norm_layer(embed_dims[-1])
        self.feature_norms = (
            nn.ModuleList([nn.Identity()] + [norm_layer(d) for d in embed_dims[1:]]) if feature_norms else None
        )
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dims[-1], num_classes) if num_classes > 0 else nn.Identity()

        if self.cls_token is not None:
            trunc_normal_(self.cls_token, std=0.02)
        self.apply(self._init_weights)
        for stage in self.stages:
            if stage.downsample is not None:
                stage.downsample.reset_offsets()

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    # ----------------------------------------------------------------- timm model API
    @torch.jit.ignore
    def no_weight_decay(self) -> set:
        """Parameters exempt from weight decay besides biases and norms (which timm skips by ndim)."""
        names = {"cls_token"}
        for name, _ in self.named_parameters():
            if name.endswith("pos_embed") or name.endswith("relative_position_bias_table"):
                names.add(name)
        return names

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(
            stem=r"^cls_token|^patch_embed",
            blocks=r"^stages\.(\d+)" if coarse else [(r"^stages\.(\d+)\.blocks\.(\d+)", None), (r"^stages\.(\d+)", (0,))],
        )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable
        for stage in self.stages:
            stage.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            if global_pool == "token" and self.cls_token is None:
                raise ValueError("this model has no class token; use global_pool='avg'")
            self.global_pool = global_pool
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def offset_parameters(self) -> List[nn.Parameter]:
        """Parameters of the DTM offset predictors (trained at a reduced learning rate)."""
        return [p for s in self.stages if s.downsample is not None for p in s.downsample.offset_conv.parameters()]

    # ----------------------------------------------------------------- forward
    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4:
            raise ValueError(f"LIT expects a B x C x H x W image batch, got shape {tuple(x.shape)}")
        height, width = x.shape[-2:]
        if height % self.stride or width % self.stride:
            raise ValueError(
                f"LIT needs image height and width divisible by {self.stride}, got {height}x{width}"
            )

    def _stem(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int]]:
        self._check_input(x)
        return self.patch_embed(x)

    def forward_features(
        self, x: torch.Tensor, return_offsets: bool = False
    ) -> Union[torch.Tensor, Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Final normalised tokens (class token first for LIT-Ti); optionally the three DTM offset maps."""
        return self._forward_tokens(x, return_offsets, class_token_only=False)

    def _forward_tokens(
        self, x: torch.Tensor, return_offsets: bool, class_token_only: bool
    ) -> Union[torch.Tensor, Tuple[torch.Tensor, List[torch.Tensor]]]:
        x, grid = self._stem(x)
        offsets = []
        last = len(self.stages) - 1
        for i, stage in enumerate(self.stages):
            prefix = self.cls_token if (i == last and self.cls_token is not None) else None
            queries = self.num_prefix_tokens if (i == last and class_token_only) else None
            x, grid, offset = stage(x, grid, prefix, last_block_queries=queries)
            if offset is not None:
                offsets.append(offset)
        x = self.norm(x)
        return (x, offsets) if return_offsets else x

    def class_token_tail_applies(self) -> bool:
        """Whether :meth:`forward` may compute the last block for the class token alone.

        The class-token head reads one token of the last block's output, so that block's other
        queries, attention rows, projections and MLP rows (3.8 % of LIT-Ti's multiply-adds at
        224 px) change nothing it returns, in inference or in training. Hooks on that block or
        on the final norm would see one token instead of all; the reference path keeps them all.
        """
        if self.global_pool != "token" or self.cls_token is None or not self.num_prefix_tokens:
            return False
        stage = self.stages[-1]
        if not len(stage.blocks):
            return False
        block = stage.blocks[-1]
        if block.attn is None or block.attn.relative_position_bias_table is not None or block.use_reference:
            return False
        return not _has_hooks([*block.modules(), *self.norm.modules()])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self._forward_tokens(x, False, class_token_only=self.class_token_tail_applies()))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == "token":
            x = x[:, 0]
        elif self.global_pool == "avg":
            x = x[:, self.num_prefix_tokens :].mean(dim=1)
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward_with_offsets(self, x: torch.Tensor) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """Logits and the offsets predicted by the three DTMs (stage order, ``B x 8 x h x w`` each)."""
        features, offsets = self._forward_tokens(x, True, class_token_only=self.class_token_tail_applies())
        return self.forward_head(features), offsets

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: Optional[Union[int, List[int]]] = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Stage maps at strides 4, 8, 16, 32, as the released dense backbones compute them.

        Dense backbones carry no class token: in stage 4 of LIT-Ti the position embedding's
        class slot is dropped. With ``feature_norms`` the stage 2-4 maps pass their own
        LayerNorm. When ``intermediates_only`` is False the final (normalised) tokens of the
        dense pass are returned beside the maps.
        """
        if output_fmt != "NCHW":
            raise ValueError("LIT intermediates are only available as NCHW")
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        stages = self.stages[: max_index + 1] if stop_early else self.stages
        intermediates = []
        x, grid = self._stem(x)
        for i, stage in enumerate(stages):
            x, grid, _ = stage(x, grid)
            if i in take_indices:
                out = x
                if self.feature_norms is not None:
                    out = self.feature_norms[i](out)
                elif norm and i == len(self.stages) - 1:
                    out = self.norm(out)
                intermediates.append(out.transpose(1, 2).reshape(x.shape[0], -1, grid[0], grid[1]))
        if intermediates_only:
            return intermediates
        return self.norm(x), intermediates

    def prune_intermediate_layers(
        self, indices: Union[int, List[int]] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> List[int]:
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        self.stages = self.stages[: max_index + 1]
        if prune_norm or max_index < len(self.stages) - 1:
            self.norm = nn.Identity()
        if prune_head:
            self.cls_token = None
            self.num_prefix_tokens = 0
            self.reset_classifier(0, "")
        return take_indices


# --------------------------------------------------------------------- checkpoint mapping
def _map_released_key(key: str) -> Optional[str]:
    """Name in this file for a key of the released LIT-Ti / LIT-S/M/B layouts (None = drop)."""
    import re

    if key.endswith("relative_position_index") or key.endswith("attn_mask"):
        return None  # derived buffers, rebuilt by the model
    dtm = {
        "dconv.conv_offset.": "downsample.offset_conv.",
        "dconv.": "downsample.proj.",
        "norm_layer.": "downsample.norm.",
    }

    def rename_dtm(rest: str) -> str:
        for old, new in dtm.items():
            if rest.startswith(old):
                return new + rest[len(old) :]
        raise KeyError(key)

    # LIT-Ti (PVT-like): pos_embed{i}, patch_embed{i}, block{i}.
    m = re.match(r"^pos_embed(\d)$", key)
    if m:
        return f"stages.{int(m.group(1)) - 1}.pos_embed"
    m = re.match(r"^patch_embed(\d)\.(.*)$", key)
    if m:
        stage, rest = int(m.group(1)) - 1, m.group(2)
        return f"patch_embed.{rest}" if stage == 0 else f"stages.{stage}.{rename_dtm(rest)}"
    m = re.match(r"^block(\d)\.(.*)$", key)
    if m:
        return f"stages.{int(m.group(1)) - 1}.blocks.{m.group(2)}"
    # LIT-S/M/B (Swin-like): layers.{i}.blocks, layers.{i}.downsample (DTM after stage i).
    m = re.match(r"^layers\.(\d+)\.blocks\.(.*)$", key)
    if m:
        return f"stages.{m.group(1)}.blocks.{m.group(2)}"
    m = re.match(r"^layers\.(\d+)\.downsample\.(.*)$", key)
    if m:
        return f"stages.{int(m.group(1)) + 1}.{rename_dtm(m.group(2))}"
    return key


def _is_released_layout(state_dict: Dict[str, torch.Tensor]) -> bool:
    return any(k.startswith(("layers.", "block1.", "patch_embed1.", "pos_embed1")) for k in state_dict)


def checkpoint_filter_fn(state_dict: Dict[str, Any], model: LIT) -> Dict[str, torch.Tensor]:
    """Map a released or litvit state dict onto ``model``'s names and shapes.

    Accepts the released LIT-Ti (PVT-like) and LIT-S/M/B (Swin-like) layouts, litvit's own,
    a ``{'model': ...}`` / ``{'state_dict': ...}`` wrapper and the ``module.`` prefix of
    DDP. Position tables stored for another resolution are resized to the model's
    (bilinearly for absolute embeddings, bicubically for relative bias tables).
    """
    for wrapper in ("model", "state_dict"):
        if isinstance(state_dict.get(wrapper), dict):
            state_dict = state_dict[wrapper]
            break
    state_dict = {(k[7:] if k.startswith("module.") else k): v for k, v in state_dict.items()}
    released = _is_released_layout(state_dict)
    model_state = model.state_dict()
    out = {}
    for key, value in state_dict.items():
        if not torch.is_tensor(value):
            continue
        name = _map_released_key(key) if released else key
        if name is None:
            continue
        target = model_state.get(name)
        if target is not None and value.shape != target.shape:
            if name.endswith("pos_embed"):
                stage = model.stages[int(name.split(".")[1])]
                prefix = value.shape[1] - _square_side(value.shape[1] - stage.num_prefix_tokens) ** 2
                src_side = _square_side(value.shape[1] - prefix)
                value = resize_abs_pos_embed(value, (src_side, src_side), stage.grid, prefix)
                if prefix > stage.num_prefix_tokens:
                    value = value[:, prefix - stage.num_prefix_tokens :]
            elif name.endswith("relative_position_bias_table"):
                src_side = (_square_side(value.shape[0]) + 1) // 2
                dst_grid = model.get_submodule(name.rsplit(".", 1)[0]).rel_pos_grid
                value = resize_rel_pos_table(value, (src_side, src_side), dst_grid)
        out[name] = value
    return out


def _square_side(n: int) -> int:
    return math.isqrt(n)


# --------------------------------------------------------------------- configurations
MODEL_CONFIGS: Dict[str, Dict[str, Any]] = {
    "lit_ti": dict(
        embed_dims=(64, 128, 320, 512),
        depths=(3, 4, 6, 3),
        num_heads=(1, 2, 5, 8),
        mlp_ratios=(8, 8, 4, 4),
        pos_embed="abs",
        global_pool="token",
        norm_eps=1e-6,
    ),
    "lit_s": dict(
        embed_dims=(96, 192, 384, 768), depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), mlp_ratios=(4, 4, 4, 4)
    ),
    "lit_m": dict(
        embed_dims=(96, 192, 384, 768), depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24), mlp_ratios=(4, 4, 4, 4)
    ),
    "lit_b": dict(
        embed_dims=(128, 256, 512, 1024), depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), mlp_ratios=(4, 4, 4, 4)
    ),
}

# Drop-path rates of the released ImageNet recipes (used by the trainer as defaults).
DEFAULT_DROP_PATH = {"lit_ti": 0.1, "lit_s": 0.2, "lit_m": 0.3, "lit_b": 0.5}


def _cfg(**kwargs: Any) -> Dict[str, Any]:
    return {
        "url": "",
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": (7, 7),
        "crop_pct": 0.875,
        "interpolation": "bicubic",
        "fixed_input_size": False,
        "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225),
        "first_conv": "patch_embed.proj",
        "classifier": "head",
        "license": "apache-2.0",
        "paper_ids": "arXiv:2105.14217",
        "paper_name": "Less is More: Pay Less Attention in Vision Transformers",
        "origin_url": "https://github.com/ziplab/LIT",
        **kwargs,
    }


default_cfgs = generate_default_cfgs({f"{name}.untrained": _cfg() for name in MODEL_CONFIGS})


def _create_lit(variant: str, pretrained: bool = False, **kwargs: Any) -> LIT:
    config = dict(MODEL_CONFIGS[variant])
    if kwargs.get("features_only"):
        # The released LIT-S/M/B dense backbone normalises its stage 2-4 outputs.
        config.setdefault("feature_norms", config.get("pos_embed", "rel") == "rel")
    config.update(kwargs)
    out_indices = config.pop("out_indices", (0, 1, 2, 3))
    return build_model_with_cfg(
        LIT,
        variant,
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(out_indices=out_indices, feature_cls="getter"),
        **config,
    )


@register_model
def lit_ti(pretrained: bool = False, **kwargs: Any) -> LIT:
    """LIT-Ti: 19.9M parameters, 3.6 GMACs at 224 px, 81.1% ImageNet top-1."""
    return _create_lit("lit_ti", pretrained, **kwargs)


@register_model
def lit_s(pretrained: bool = False, **kwargs: Any) -> LIT:
    """LIT-S: 28.0M parameters, 4.1 GMACs at 224 px, 81.5% ImageNet top-1."""
    return _create_lit("lit_s", pretrained, **kwargs)


@register_model
def lit_m(pretrained: bool = False, **kwargs: Any) -> LIT:
    """LIT-M: 49.4M parameters, 8.6 GMACs at 224 px, 83.0% ImageNet top-1."""
    return _create_lit("lit_m", pretrained, **kwargs)


@register_model
def lit_b(pretrained: bool = False, **kwargs: Any) -> LIT:
    """LIT-B: 87.3M parameters, 15.0 GMACs at 224 px, 83.4% ImageNet top-1."""
    return _create_lit("lit_b", pretrained, **kwargs)


"""HiLo attention ("Fast Vision Transformers with HiLo Attention", Pan et al., NeurIPS 2022).

The heads of one layer split in two groups that see the map at two frequencies:

* Hi-Fi heads attend within non-overlapping ``s x s`` windows (local, high-frequency detail);
* Lo-Fi heads let every token attend to the ``s x s`` average-pooled map (global,
  low-frequency structure), so their keys and values are ``s^2`` times fewer.

Each group has its own projections; their outputs are concatenated along channels. Both run
through ``scaled_dot_product_attention``.
"""
from typing import List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import use_fused_attn
from timm.models import register_notrace_function

from ..ops.capture import is_exporting
from .layers import factory_kwargs

__all__ = ["HiLoAttention"]

Grid = Tuple[int, int]


# A leaf under torch.fx: whether to pad depends on the map's size, known only when it runs.
@torch.fx.wrap
@register_notrace_function
def pad_to_windows(x: torch.Tensor, window: int) -> torch.Tensor:
    """A ``B x H x W x C`` map zero-padded at the bottom and right to whole ``window x window`` windows."""
    height, width = x.shape[1], x.shape[2]
    # Written as ceil(side / ws) * ws - side so that a symbolic (exported) size simplifies.
    pad_h = (height + window - 1) // window * window - height
    pad_w = (width + window - 1) // window * window - width
    exporting = False
    if not torch.jit.is_scripting():
        exporting = is_exporting()
    # Exported graphs always pad (by zero where the window divides the map), so that the
    # padding follows the image size rather than the example's.
    if window > 1 and (exporting or pad_h > 0 or pad_w > 0):
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    return x


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, fused: bool, dropout_p: float) -> torch.Tensor:
    if fused:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
    attn = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
    return F.dropout(attn.softmax(dim=-1), dropout_p) @ v


class HiLoAttention(nn.Module):
    """HiLo attention on ``B x N x C`` tokens of an ``H x W`` grid.

    ``int(num_heads * alpha)`` heads form the Lo-Fi group (queries at every token, keys and
    values from the ``window x window`` average-pooled map); the rest form the Hi-Fi group
    (attention within each ``window x window`` window). Maps whose sides do not divide by the
    window are zero-padded at the bottom and right for both branches and cropped after, as the
    released dense backbones do. ``window == 1`` gives every head to Lo-Fi with no pooling:
    global multi-head self-attention.
    """

    fused_attn: bool

    def __init__(
        self, dim: int, num_heads: int, window: int = 2, alpha: float = 0.9, qkv_bias: bool = True, attn_drop: float = 0.0,
        device: Optional[torch.device] = None, dtype: Optional[torch.dtype] = None,
    ):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        if window < 1:
            raise ValueError(f"HiLo window must be at least 1, got {window}")
        self.head_dim = dim // num_heads
        self.window = window
        self.lofi_heads = num_heads if window == 1 else int(num_heads * alpha)
        self.hifi_heads = num_heads - self.lofi_heads
        self.attn_drop = attn_drop
        self.fused_attn = use_fused_attn()
        lofi_dim, hifi_dim = self.lofi_heads * self.head_dim, self.hifi_heads * self.head_dim
        self.hifi_qkv = nn.Linear(dim, 3 * hifi_dim, bias=qkv_bias, **dd) if self.hifi_heads else None
        self.hifi_proj = nn.Linear(hifi_dim, hifi_dim, **dd) if self.hifi_heads else None
        self.lofi_q = nn.Linear(dim, lofi_dim, bias=qkv_bias, **dd) if self.lofi_heads else None
        self.lofi_kv = nn.Linear(dim, 2 * lofi_dim, bias=qkv_bias, **dd) if self.lofi_heads else None
        self.lofi_proj = nn.Linear(lofi_dim, lofi_dim, **dd) if self.lofi_heads else None

    def _hifi_qkv(self, x: torch.Tensor) -> torch.Tensor:
        """``3 x (B * windows) x heads x ws*ws x head_dim`` from a ``B x H x W x C`` map."""
        batch, height, width, _ = x.shape
        ws, heads, head_dim = self.window, self.hifi_heads, self.head_dim
        qkv = self.hifi_qkv(x).view(batch, height // ws, ws, width // ws, ws, 3, heads, head_dim)
        # The one copy of the window split.
        return qkv.permute(5, 0, 1, 3, 6, 2, 4, 7).reshape(3, -1, heads, ws * ws, head_dim)

    def hifi(self, x: torch.Tensor) -> torch.Tensor:
        """Window attention of the Hi-Fi heads on a ``B x H x W x C`` map (sides divisible by the window)."""
        batch, height, width, _ = x.shape
        ws, heads, head_dim = self.window, self.hifi_heads, self.head_dim
        q, k, v = self._hifi_qkv(x).unbind(0)
        out = _attention(q, k, v, self.fused_attn, self.attn_drop if self.training else 0.0)
        out = out.view(batch, height // ws, width // ws, heads, ws, ws, head_dim).permute(0, 1, 4, 2, 5, 3, 6)
        return self.hifi_proj(out.reshape(batch, height, width, heads * head_dim))

    def _lofi_qkv(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        batch, height, width, channels = x.shape
        heads, head_dim = self.lofi_heads, self.head_dim
        q = self.lofi_q(x).view(batch, height * width, heads, head_dim).transpose(1, 2)
        pooled = x
        if self.window > 1:
            # A channels-last view in and out of the pooling.
            pooled = F.avg_pool2d(x.permute(0, 3, 1, 2), self.window).permute(0, 2, 3, 1)
        kv = self.lofi_kv(pooled.reshape(batch, -1, channels))
        k, v = kv.view(batch, -1, 2, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        return q, k, v

    def lofi(self, x: torch.Tensor) -> torch.Tensor:
        """Attention of the Lo-Fi heads from every token to the window-averaged ``B x H x W x C`` map."""
        batch, height, width, _ = x.shape
        q, k, v = self._lofi_qkv(x)
        out = _attention(q, k, v, self.fused_attn, self.attn_drop if self.training else 0.0)
        return self.lofi_proj(out.transpose(1, 2).reshape(batch, height, width, self.lofi_heads * self.head_dim))

    def _grid_tokens(self, x: torch.Tensor, grid: Grid) -> torch.Tensor:
        """``B x N x C`` tokens as a ``B x H x W x C`` map, padded to whole windows."""
        return pad_to_windows(x.reshape(x.shape[0], grid[0], grid[1], x.shape[-1]), self.window)

    def attention_probs(self, x: torch.Tensor, grid: Grid) -> torch.Tensor:
        """``B x heads x N x N`` attention weights of every head (see :meth:`_dense_probs`)."""
        return self._dense_probs(self._grid_tokens(x, grid), grid)

    def forward(self, x: torch.Tensor, grid: Grid) -> torch.Tensor:
        batch, num_tokens, channels = x.shape
        height, width = grid
        x = self._grid_tokens(x, grid)
        branches: List[torch.Tensor] = []
        if self.hifi_qkv is not None:
            branches.append(self.hifi(x))
        if self.lofi_q is not None:
            branches.append(self.lofi(x))
        out = branches[0] if len(branches) == 1 else torch.cat(branches, dim=-1)
        # Drops the padding; a view of the whole map where there is none.
        return out[:, :height, :width].reshape(batch, num_tokens, channels)

    def _dense_probs(self, x: torch.Tensor, grid: Grid) -> torch.Tensor:
        """``B x heads x N x N`` attention weights of every head on the grid tokens (Hi-Fi heads first).

        A Hi-Fi head's row is zero outside the query's window. A Lo-Fi head's weight on a pooled
        key is spread evenly over the ``window x window`` tokens it averages. Weights on padding
        are dropped, so rows next to a padded edge sum to less than one.
        """
        batch, padded_h, padded_w, _ = x.shape
        ws, rows, cols = self.window, padded_h // self.window, padded_w // self.window
        tokens = torch.arange(padded_h * padded_w, device=x.device).view(rows, ws, cols, ws)
        probs = []
        if self.hifi_heads:
            q, k, _ = self._hifi_qkv(x).unbind(0)
            attn = ((q * self.head_dim**-0.5) @ k.transpose(-2, -1)).softmax(dim=-1)
            attn = attn.view(batch, rows, cols, self.hifi_heads, ws * ws, ws * ws).permute(0, 3, 1, 2, 4, 5)
            in_window = tokens.permute(0, 2, 1, 3).reshape(rows, cols, ws * ws)  # token index of each window slot
            dense = attn.new_zeros(batch, self.hifi_heads, padded_h * padded_w, padded_h * padded_w)
            dense[:, :, in_window[..., :, None], in_window[..., None, :]] = attn
            probs.append(dense)
        if self.lofi_heads:
            q, k, _ = self._lofi_qkv(x)
            attn = ((q * self.head_dim**-0.5) @ k.transpose(-2, -1)).softmax(dim=-1)
            key_row = torch.arange(padded_h, device=x.device) // ws
            key_col = torch.arange(padded_w, device=x.device) // ws
            pooled_key = (key_row[:, None] * cols + key_col[None, :]).reshape(-1)  # pooled key of each token
            probs.append(attn[..., pooled_key] / (ws * ws))
        dense = torch.cat(probs, dim=1).view(batch, -1, padded_h, padded_w, padded_h, padded_w)
        height, width = grid
        dense = dense[:, :, :height, :width, :height, :width]
        return dense.reshape(batch, dense.shape[1], height * width, height * width)

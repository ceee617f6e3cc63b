"""Position tables on a token grid: a Swin-style relative position bias and per-stage absolute
embeddings, each learned for one grid and resized for others.

:func:`rel_pos_bias` and :func:`stage_pos_embed` take grids that are traced values under
``torch.fx`` and branch on them, so they are registered as leaves of traced graphs.
"""

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from timm.models import register_notrace_function

from ..ops.capture import is_exporting

__all__ = [
    "relative_position_index", "resize_abs_pos_embed", "resize_rel_pos_table", "rel_pos_bias", "stage_pos_embed",
]


def relative_position_index(height: int, width: int, device: Optional[torch.device] = None) -> torch.Tensor:
    """Index into a ``(2H-1)(2W-1)`` bias table for every (query, key) pair of an ``H x W`` grid."""
    coords = torch.stack(
        torch.meshgrid(torch.arange(height, device=device), torch.arange(width, device=device), indexing="ij")
    ).flatten(1)  # 2 x N
    rel = coords[:, :, None] - coords[:, None, :]  # 2 x N x N
    return (rel[0] + height - 1) * (2 * width - 1) + (rel[1] + width - 1)


def resize_abs_pos_embed(
    pos_embed: torch.Tensor, src_grid: Tuple[int, int], dst_grid: Tuple[int, int], num_prefix_tokens: int = 0
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
    if not is_exporting() and src_grid[0] == dst_grid[0] and src_grid[1] == dst_grid[1]:
        return table
    heads = table.shape[1]
    src_h, src_w = 2 * src_grid[0] - 1, 2 * src_grid[1] - 1
    dst_h, dst_w = 2 * dst_grid[0] - 1, 2 * dst_grid[1] - 1
    image = table.t().reshape(1, heads, src_h, src_w)
    image = F.interpolate(image.float(), size=(dst_h, dst_w), mode="bicubic", align_corners=False)
    return image.to(table.dtype).reshape(heads, dst_h * dst_w).t()


@register_notrace_function
def rel_pos_bias(table: torch.Tensor, table_grid: Tuple[int, int], grid: Tuple[int, int]) -> torch.Tensor:
    """``1 x heads x N x N`` attention bias of an ``H x W`` grid from a table learned for ``table_grid``."""
    if is_exporting() or table_grid[0] != grid[0] or table_grid[1] != grid[1]:
        table = resize_rel_pos_table(table, table_grid, grid)
    index = relative_position_index(grid[0], grid[1], device=table.device)
    num_tokens = grid[0] * grid[1]
    bias = table[index.reshape(-1)].reshape(num_tokens, num_tokens, -1)
    return bias.permute(2, 0, 1).unsqueeze(0)


@register_notrace_function
def stage_pos_embed(
    pos_embed: torch.Tensor, embed_grid: Tuple[int, int], grid: Tuple[int, int], num_prefix_tokens: int
) -> torch.Tensor:
    """A stage's absolute position embedding for an ``H x W`` grid (resized when it differs)."""
    if not is_exporting() and embed_grid[0] == grid[0] and embed_grid[1] == grid[1]:
        return pos_embed
    return resize_abs_pos_embed(pos_embed, embed_grid, grid, num_prefix_tokens)

"""Deformable token merging (DTM), LIT's downsampling between stages.

An offset convolution predicts where each tap of a 2x2 stride-2 convolution samples its
input; the deformable convolution is computed by bilinear sampling plus one matrix product
(:func:`litvit.ops.deform.deform_conv2x2`), so no compiled extension is needed. TorchScript
takes torchvision's ``deform_conv2d`` instead, which computes the same.
"""

from typing import Optional, Tuple

import torch
import torch.nn as nn
from timm.models import register_notrace_function
from torchvision.ops import deform_conv2d

from ..ops.deform import deform_conv2x2
from .layers import factory_kwargs

__all__ = ["DeformableTokenMerging"]


# A leaf under torch.fx: the op checks the offset map's shape against the input's.
@torch.fx.wrap
@register_notrace_function
def deform_conv(x: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    if torch.jit.is_scripting():
        # The grid_sample form picks its kernel in Python at run time, beyond TorchScript;
        # torchvision's op computes the same function.
        return deform_conv2d(x, offset, weight, bias, stride=(2, 2))
    return deform_conv2x2(x, offset, weight, bias)


class DeformableTokenMerging(nn.Module):
    """Deformable 2x2 stride-2 convolution with learned offsets, then BatchNorm and GELU.

    ``offset_conv`` predicts the offsets, ``proj`` holds the deformable kernel's weight and bias.
    """

    def __init__(
        self, in_chans: int, out_chans: int, device: Optional[torch.device] = None, dtype: Optional[torch.dtype] = None
    ):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        self.offset_conv = nn.Conv2d(in_chans, 8, kernel_size=2, stride=2, **dd)
        self.proj = nn.Conv2d(in_chans, out_chans, kernel_size=2, stride=2, **dd)
        self.norm = nn.BatchNorm2d(out_chans, **dd)
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

        Returns the merged tokens, the new grid and the predicted offsets (``B x 8 x H/2 x W/2``;
        channel ``2k`` is the row and ``2k+1`` the column shift of tap ``k``).
        """
        batch, _, channels = x.shape
        # The tokens seen as a channels-last map: no copy.
        x = x.reshape(batch, grid[0], grid[1], channels).permute(0, 3, 1, 2)
        offset = self.offset_conv(x)
        out = self.act(self.norm(deform_conv(x, offset, self.proj.weight, self.proj.bias)))
        return out.flatten(2).transpose(1, 2), (out.shape[2], out.shape[3]), offset

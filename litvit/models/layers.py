"""Pieces the LIT and LITv2 families share: the input check, the patch stem and the
device / dtype arguments every module takes (timm's factory convention)."""

from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn as nn
from timm.models import register_notrace_function

__all__ = ["PatchEmbed", "check_image", "factory_kwargs", "parent_factory_kwargs"]


def factory_kwargs(device: Optional[torch.device] = None, dtype: Optional[torch.dtype] = None) -> Dict[str, Any]:
    """``device`` / ``dtype`` for a layer constructor; empty when neither is set, so that timm
    layers of releases without these arguments still build."""
    return {k: v for k, v in (("device", device), ("dtype", dtype)) if v is not None}


def parent_factory_kwargs(module: nn.Module) -> Dict[str, Any]:
    """The device and dtype of ``module``'s parameters, for a layer built after it (a new head)."""
    parameter = next(module.parameters(), None)
    return {} if parameter is None else dict(device=parameter.device, dtype=parameter.dtype)


# A leaf under torch.fx (the checks read the traced input's shape): timm's tracers take it from
# this registration, torch.fx's own from the ``torch.fx.wrap`` beside each caller.
@register_notrace_function
def check_image(x: torch.Tensor, stride: int, model: str = "LIT") -> None:
    """A clear error for inputs the model cannot take (not ``B x C x H x W``, or sides not multiples of 32)."""
    if x.dim() != 4:
        raise ValueError("{} expects a B x C x H x W image batch, got shape {}".format(model, list(x.shape)))
    height, width = x.shape[-2], x.shape[-1]
    if height % stride != 0 or width % stride != 0:
        raise ValueError("{} needs image sides divisible by {}, got {}x{}".format(model, stride, height, width))


class PatchEmbed(nn.Module):
    """4x4 stride-4 convolution to tokens, then LayerNorm."""

    def __init__(
        self, in_chans: int, embed_dim: int, patch_size: int = 4, norm_eps: float = 1e-5,
        device: Optional[torch.device] = None, dtype: Optional[torch.dtype] = None,
    ):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size, **dd)
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps, **dd)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int]]:
        x = self.proj(x)
        grid = (x.shape[2], x.shape[3])
        return self.norm(x.flatten(2).transpose(1, 2)), grid

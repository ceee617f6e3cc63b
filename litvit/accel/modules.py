"""Drop-in replacements for ``nn.Linear``, timm's ``Mlp``, LIT's DTM and attention modules that run
CPU work faster.

Each replacement is a subclass of the module it stands in for, holds the same parameters and
buffers under the same names (the state dict does not change) and computes the same function up
to rounding. A faster form is taken only where nothing could tell the difference: the plain form
runs under graph capture (``torch.compile``, ``torch.export``, ONNX) and wherever autograd needs
what the faster form would overwrite; the float32 products step aside under autocast, and the
attention twins act only there (or on low-precision tensors), taking the module's own explicit
branch.
"""
from __future__ import annotations

import functools
from typing import Dict, Optional, Tuple, Type, TypeVar

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import Mlp

from ..models.dtm import DeformableTokenMerging
from ..ops import onednn
from ..ops.capture import graph_capture_active
from ..ops.deform import deform_sample2x2

__all__ = ["OneDNNLinear", "FusedMlp", "FastDTM", "rebind", "explicit_attention_twin", "explicit_attention_applies", "EXPLICIT_ATTENTION_MAX_SCORES"]

M = TypeVar("M", bound=nn.Module)


def rebind(module: nn.Module, cls: Type[M]) -> M:
    """A new ``cls`` instance holding ``module``'s parameters, buffers, children and hooks.

    The tensors are shared, not copied, so an optimizer built over the old module's parameters
    keeps training the new one; the dicts that hold them are copied, so the old module is left as
    it was.
    """
    new = cls.__new__(cls)
    new.__dict__ = {key: value.copy() if isinstance(value, dict) else value for key, value in module.__dict__.items()}
    return new


def _autocast_cpu() -> bool:
    return torch.is_autocast_enabled("cpu")


def _onednn_applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether oneDNN's product may compute ``x @ weight.T``: eager float32 CPU work, not empty."""
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and x.numel() > 0
        and not _autocast_cpu()
        and not graph_capture_active()
    )


def _onednn_dtype(x: torch.Tensor, weight: torch.Tensor) -> Optional[torch.dtype]:
    """The dtype in which oneDNN's product may compute ``x @ weight.T``: float32 for eager float32
    CPU work (as :func:`_onednn_applies`), bfloat16 under CPU bfloat16 autocast (the dtype autocast
    runs ``F.linear`` in) or for bfloat16 tensors; None elsewhere."""
    if x.device.type != "cpu" or x.numel() == 0 or graph_capture_active():
        return None
    if x.dtype not in (torch.float32, torch.bfloat16) or weight.dtype not in (torch.float32, torch.bfloat16):
        return None
    if _autocast_cpu():
        return torch.bfloat16 if torch.get_autocast_dtype("cpu") == torch.bfloat16 else None
    return x.dtype if x.dtype == weight.dtype else None


def _cast(dtype: torch.dtype, *tensors: Optional[torch.Tensor]):
    # Differentiable casts: under autocast the gradients flow back to the float32 parameters,
    # as they do through autocast's own casts.
    return tuple(None if t is None else t.to(dtype) for t in tensors)


def _records_grad(x: torch.Tensor, module: nn.Module) -> bool:
    """Whether autograd records this call (an input or a parameter asks for a gradient)."""
    if not torch.is_grad_enabled():
        return False
    return x.requires_grad or any(p.requires_grad for p in module.parameters())


class OneDNNLinear(nn.Linear):
    """``nn.Linear`` whose CPU products run on oneDNN's inner product.

    In inference the product is one oneDNN call with the bias fused, in float32 or, under CPU
    bfloat16 autocast or on bfloat16 tensors, in bfloat16 (3-4 % faster than autocast's
    ``F.linear`` for LIT's inference). Under autograd, float32 work takes oneDNN for the forward
    pass and the input gradient, and for the weight gradient too where ``onednn_weight_grad`` is set
    (else ATen's ``mm``). Any other dtype or device, bfloat16 training and graph capture run
    ``F.linear``.
    """

    onednn_weight_grad: bool = False

    @classmethod
    def from_linear(cls, layer: nn.Linear, onednn_weight_grad: bool = False) -> "OneDNNLinear":
        new = rebind(layer, cls)
        new.onednn_weight_grad = onednn_weight_grad
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = _onednn_dtype(x, self.weight)
        records_grad = _records_grad(x, self)
        # bfloat16 training stays on ATen: with oneDNN's forward it measured 4 % slower (LIT-Ti, Zen 4).
        if dtype is None or (records_grad and dtype != torch.float32):
            return F.linear(x, self.weight, self.bias)
        x, weight, bias = _cast(dtype, x, self.weight, self.bias)
        if records_grad:
            return onednn.linear(x, weight, bias, self.onednn_weight_grad)
        return onednn.linear_inference(x, weight, bias)


def mlp_fuses(mlp: nn.Module) -> bool:
    """Whether ``mlp`` is timm's ``Mlp`` as :class:`FusedMlp` can compute it: Linear layers, exact
    GELU, no hidden norm, and no hooks on the modules whose calls the fused form skips."""
    if not isinstance(mlp, Mlp) or not isinstance(mlp.fc1, nn.Linear) or not isinstance(mlp.fc2, nn.Linear):
        return False
    if type(mlp.act) is not nn.GELU or mlp.act.approximate != "none" or not isinstance(mlp.norm, nn.Identity):
        return False
    skipped = (mlp.act, mlp.drop1, mlp.norm)
    return not any(m._forward_hooks or m._forward_pre_hooks for m in skipped)


class FusedMlp(Mlp):
    """timm's ``Mlp`` (Linear, GELU, Linear) with GELU fused into its first product in inference.

    Where autograd does not record: on float32 or bfloat16 CPU work (bfloat16 autocast included)
    with oneDNN Linear layers, fc1 and GELU are one oneDNN product (GELU applied while each output
    tile is in registers); elsewhere GELU
    overwrites fc1's output in place, so the hidden activation is held once, not twice. Under
    autograd (training) it is the module form, whose Linear layers may still be oneDNN's.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _records_grad(x, self) or graph_capture_active() or (self.training and self.drop1.p > 0):
            return super().forward(x)
        fc1 = self.fc1
        dtype = _onednn_dtype(x, fc1.weight) if isinstance(fc1, OneDNNLinear) else None
        if dtype is not None:
            rows = onednn.linear_gelu(*_cast(dtype, x.reshape(-1, x.shape[-1]), fc1.weight, fc1.bias))
            hidden = rows.reshape(*x.shape[:-1], fc1.out_features)
        else:
            hidden = torch.ops.aten.gelu_(fc1(x))
        return self.drop2(self.fc2(hidden))


def dtm_folds(dtm: nn.Module) -> bool:
    """Whether :class:`FastDTM` can stand in for ``dtm``: LIT's DTM with a BatchNorm that keeps
    running statistics, exact GELU, and no hooks on the norm or activation it folds away."""
    if not isinstance(dtm, DeformableTokenMerging) or type(dtm.norm) is not nn.BatchNorm2d:
        return False
    if not dtm.norm.track_running_stats or type(dtm.act) is not nn.GELU or dtm.act.approximate != "none":
        return False
    return not any(m._forward_hooks or m._forward_pre_hooks for m in (dtm.norm, dtm.act))


class FastDTM(DeformableTokenMerging):
    """LIT's DTM with its BatchNorm folded into the deformable kernel in eval mode.

    With running statistics, ``BN(W s + b) = (k W) s + k (b - mean) + beta`` with
    ``k = gamma / sqrt(var + eps)``: one product then gives normalised tokens, already in token
    layout, and GELU acts on them in place (or, on float32 CPU work with ``onednn``, inside the
    product). The folded kernel is computed on every call, so loaded weights take effect at once.
    In training mode the batch statistics are needed and the module form runs.
    """

    onednn: bool = False

    @classmethod
    def from_dtm(cls, dtm: DeformableTokenMerging, onednn: bool = False) -> "FastDTM":
        new = rebind(dtm, cls)
        new.onednn = onednn
        return new

    def folded_projection(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """The kernel as a ``C_out x C*4`` matrix and its bias, with eval-mode BatchNorm folded in."""
        norm, proj = self.norm, self.proj
        scale = torch.rsqrt(norm.running_var + norm.eps)
        if norm.weight is not None:
            scale = scale * norm.weight
        shift = -norm.running_mean if proj.bias is None else proj.bias - norm.running_mean
        bias = shift * scale if norm.bias is None else torch.addcmul(norm.bias, shift, scale)
        return proj.weight.reshape(proj.out_channels, -1) * scale[:, None], bias

    def forward(
        self, x: torch.Tensor, grid: Tuple[int, int]
    ) -> Tuple[torch.Tensor, Tuple[int, int], torch.Tensor]:
        if self.training or self.norm.training or graph_capture_active():
            return super().forward(x, grid)
        batch, _, channels = x.shape
        x = x.reshape(batch, grid[0], grid[1], channels).permute(0, 3, 1, 2)
        offset = self.offset_conv(x)
        out_h, out_w = offset.shape[-2:]
        samples = deform_sample2x2(x, offset)  # B x (C*4) x N'
        rows = samples.transpose(1, 2).reshape(-1, samples.shape[1])
        weight, bias = self.folded_projection()
        out: Optional[torch.Tensor] = None
        if self.onednn and _onednn_applies(rows, weight) and not _records_grad(x, self):
            out = onednn.linear_gelu(rows, weight, bias)
        else:
            out = torch.addmm(bias.to(rows.dtype), rows, weight.t().to(rows.dtype))
            out = F.gelu(out) if torch.is_grad_enabled() and out.requires_grad else torch.ops.aten.gelu_(out)
        return out.reshape(batch, out_h * out_w, self.proj.out_channels), (out_h, out_w), offset


# Largest attention-score tensor (batch x heads x queries x keys elements) for which the explicit
# form is taken: 32 M scores, 64 MB in bfloat16. LIT-S's and Swin-T's at 224 px and batch 32 hold
# 15 M; at detection resolution (LIT-S at 800 x 1344: 212 M per image) SDPA's tiled kernel,
# which never holds the whole matrix, stays.
EXPLICIT_ATTENTION_MAX_SCORES = 1 << 25

_LOW_PRECISION = (torch.bfloat16, torch.float16)


@functools.lru_cache(maxsize=None)
def explicit_attention_types() -> Tuple[type, ...]:
    """The attention modules whose ``fused_attn`` flag :func:`explicit_attention_twin` may turn off
    per call: litvit's and those of timm's peers, each computing the same function either way."""
    from timm.models.pvt_v2 import Attention as PvtAttention
    from timm.models.swin_transformer import WindowAttention
    from timm.models.vision_transformer import Attention as VitAttention  # timm.layers' in newer timm

    from ..models.hilo import HiLoAttention
    from ..models.lit import Attention as LitAttention

    return (LitAttention, HiLoAttention, PvtAttention, WindowAttention, VitAttention)


def _key_length(module: nn.Module, queries: int) -> int:
    """Keys per query of ``module``'s (largest) attention over ``queries`` tokens."""
    if getattr(module, "pool", None) is not None:  # PVTv2's linear mode: keys pooled to 7 x 7
        return 49
    reduction = getattr(module, "sr", None)
    if isinstance(reduction, nn.Conv2d):  # PVTv2's spatial reduction of the keys
        return max(1, queries // (reduction.stride[0] * reduction.stride[1]))
    window = getattr(module, "window", None)
    if isinstance(window, int) and window > 1:  # HiLo's Lo-Fi keys, one per window
        return max(1, queries // (window * window))
    return queries


def explicit_attention_applies(module: nn.Module, x: torch.Tensor, inference: bool = True) -> bool:
    """Whether the explicit product-softmax-product form should replace SDPA for this call: CPU
    work in bfloat16 or float16 (autocast or not), eager, with a score tensor of bounded size, and,
    with ``inference=False``, only where autograd records the call (training)."""
    if x.device.type != "cpu" or x.dim() < 3 or graph_capture_active():
        return False
    if not inference and not _records_grad(x, module):
        return False
    if x.dtype not in _LOW_PRECISION and not (_autocast_cpu() and torch.get_autocast_dtype("cpu") in _LOW_PRECISION):
        return False
    queries = x.numel() // (x.shape[0] * x.shape[-1])
    heads = getattr(module, "num_heads", None) or getattr(module, "lofi_heads", 1)  # HiLo: its Lo-Fi heads
    scores = x.shape[0] * heads * queries * _key_length(module, queries)
    return scores <= EXPLICIT_ATTENTION_MAX_SCORES


class _ExplicitLowPrecisionAttention(nn.Module):
    """Mixin of :func:`explicit_attention_twin`'s classes."""

    explicit_in_inference: bool = True

    def forward(self, x: torch.Tensor, *args, **kwargs):
        if not (self.fused_attn and explicit_attention_applies(self, x, self.explicit_in_inference)):
            return super().forward(x, *args, **kwargs)
        # The module's own explicit branch; the flag is restored so a user's setting stands.
        self.fused_attn = False
        try:
            return super().forward(x, *args, **kwargs)
        finally:
            self.fused_attn = True


_TWINS: Dict[Tuple[type, bool], type] = {}


def explicit_attention_twin(cls: type, inference: bool = True) -> type:
    """A subclass of the attention module ``cls`` that computes its attention in the explicit form
    (the module's ``fused_attn=False`` branch) for low-precision CPU work; with ``inference=False``,
    only in training (where autograd records the call).

    On the CPU, ``scaled_dot_product_attention`` in bfloat16 runs its fused kernel (or, with a
    learned bias that needs a gradient, its math path, which also upcasts to float32) 1.1-2.6x
    slower in training than an explicit ``bmm``, softmax and ``bmm`` in bfloat16 at the sequence
    lengths of 224 px classification (196 global tokens, 49 per window, 3136 queries on 49 keys),
    and up to 1.8x slower in inference on CPUs without AMX. With AMX, SDPA's inference kernel
    computes on AMX tiles and is up to 2.5x faster than the explicit form, so the speed layer keeps
    it there (:func:`litvit.accel.choose_plan`). Float32 keeps SDPA, whose fused kernel wins.
    """
    key = (cls, inference)
    if key not in _TWINS:
        name = f"LowPrecisionCPU{'' if inference else 'Training'}{cls.__name__}"
        attrs = {"__module__": __name__, "explicit_in_inference": inference}
        _TWINS[key] = type(name, (_ExplicitLowPrecisionAttention, cls), attrs)
    return _TWINS[key]


def attention_switches(module: nn.Module) -> bool:
    """Whether ``module`` is exactly one of :func:`explicit_attention_types` (its forward is wrapped,
    not skipped, so its hooks still run)."""
    return type(module) in explicit_attention_types()

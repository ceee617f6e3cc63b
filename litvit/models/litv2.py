"""LITv2: LIT with HiLo attention.

"Fast Vision Transformers with HiLo Attention", Pan, Cai, Zhuang, NeurIPS 2022
(https://arxiv.org/abs/2205.13213).

The four-stage design of LIT, with deformable token merging (DTM, shared with
:mod:`litvit.models.lit`) between stages. Every feed-forward network carries a 3x3 depthwise
convolution between its two linear layers, which gives the model its position information
(there is no position embedding or bias). Stages 1-2 hold only those FFN residuals; stages 3-4
add HiLo attention, which splits the heads in two groups:

* Hi-Fi heads attend within non-overlapping ``s x s`` windows (local, high-frequency detail);
* Lo-Fi heads (the share ``alpha``) let every token attend to the ``s x s``-averaged map
  (global, low-frequency structure).

Their outputs are concatenated along channels. With a window of 1 (stage 4 of the released
models) HiLo is plain multi-head self-attention.

The released checkpoints use a Swin-like key layout; :func:`checkpoint_filter_fn` maps it.
"""
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from timm.layers import DropPath, trunc_normal_, use_fused_attn
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices

from .hilo import HiLoAttention
from .dtm import DeformableTokenMerging
from .layers import PatchEmbed, check_image, factory_kwargs, parent_factory_kwargs

# It reads the traced input's shape under torch.fx: the call stays a leaf of the graph.
torch.fx.wrap("check_image")

__all__ = ["LITv2", "HiLoAttention", "checkpoint_filter_fn", "MODEL_CONFIGS", "DEFAULT_DROP_PATH", "set_reference_path"]

Grid = Tuple[int, int]


class ConvFFN(nn.Module):
    """Linear -> 3x3 depthwise conv -> GELU -> Linear, on ``B x N x C`` tokens of an ``H x W`` grid."""

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0, device: Optional[torch.device] = None, dtype: Optional[torch.dtype] = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        self.fc1 = nn.Linear(dim, hidden_dim, **dd)
        self.dwconv = nn.Conv2d(hidden_dim, hidden_dim, kernel_size=3, padding=1, groups=hidden_dim, **dd)
        self.act = nn.GELU()
        self.drop = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden_dim, dim, **dd)

    def forward(self, x: torch.Tensor, grid: Grid) -> torch.Tensor:
        batch, num_tokens, _ = x.shape
        x = self.fc1(x)
        hidden = x.shape[-1]
        # Tokens seen as a channels-last map: no copy into the convolution, none out of it.
        x = self.dwconv(x.reshape(batch, grid[0], grid[1], hidden).permute(0, 3, 1, 2))
        x = x.permute(0, 2, 3, 1).reshape(batch, num_tokens, hidden)
        x = self.drop(self.act(x))
        return self.drop(self.fc2(x))


class ConvFFNBlock(nn.Module):
    """Stages 1-2: ``x = x + DropPath(ConvFFN(LN(x)))``."""

    def __init__(
        self, dim: int, mlp_ratio: float, drop_path: float = 0.0, proj_drop: float = 0.0, norm_eps: float = 1e-5,
        device: Optional[torch.device] = None, dtype: Optional[torch.dtype] = None,
    ):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps, **dd)
        self.mlp = ConvFFN(dim, int(dim * mlp_ratio), proj_drop, **dd)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor, grid: Grid) -> torch.Tensor:
        return x + self.drop_path(self.mlp(self.norm2(x), grid))


class HiLoBlock(nn.Module):
    """Stages 3-4: ``x = x + DropPath(HiLo(LN(x)))``, then the ConvFFN residual."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float,
        window: int,
        alpha: float,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
        proj_drop: float = 0.0,
        attn_drop: float = 0.0,
        norm_eps: float = 1e-5,
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
    ):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps, **dd)
        self.attn = HiLoAttention(dim, num_heads, window, alpha, qkv_bias, attn_drop, **dd)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps, **dd)
        self.mlp = ConvFFN(dim, int(dim * mlp_ratio), proj_drop, **dd)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor, grid: Grid) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), grid))
        return x + self.drop_path(self.mlp(self.norm2(x), grid))


class LITv2Stage(nn.Module):
    """DTM (none in stage 1), then ConvFFN blocks (``window == 0``) or HiLo blocks."""

    def __init__(
        self,
        in_dim: int,
        dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float,
        window: int,
        alpha: float,
        downsample: bool,
        qkv_bias: bool = True,
        drop_path: Sequence[float] = (),
        proj_drop: float = 0.0,
        attn_drop: float = 0.0,
        norm_eps: float = 1e-5,
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
    ):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        self.grad_checkpointing = False
        self.downsample = DeformableTokenMerging(in_dim, dim, **dd) if downsample else None
        rates = list(drop_path) or [0.0] * depth
        if window:
            blocks = [
                HiLoBlock(dim, num_heads, mlp_ratio, window, alpha, qkv_bias, rates[i], proj_drop, attn_drop, norm_eps, **dd)
                for i in range(depth)
            ]
        else:
            blocks = [ConvFFNBlock(dim, mlp_ratio, rates[i], proj_drop, norm_eps, **dd) for i in range(depth)]
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor, grid: Grid) -> Tuple[torch.Tensor, Grid, Optional[torch.Tensor]]:
        """Tokens, grid size and the DTM offsets (None in stage 1)."""
        offset = None
        if self.downsample is not None:
            x, grid, offset = self.downsample(x, grid)
        for block in self.blocks:
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x = torch.utils.checkpoint.checkpoint(block, x, grid, use_reentrant=False)
            else:
                x = block(x, grid)
        return x, grid, offset


def _stage_windows(local_ws: Union[int, Sequence[int]], num_stages: int) -> List[int]:
    """Per-stage HiLo windows (0 = no attention): an int sets stage 3's, released layout (0, 0, w, 1)."""
    if isinstance(local_ws, int):
        return [0] * (num_stages - 2) + [local_ws, 1]
    if len(local_ws) != num_stages:
        raise ValueError(f"local_ws needs one window per stage ({num_stages}), got {list(local_ws)}")
    return [int(w) for w in local_ws]


class LITv2(nn.Module):
    """LITv2 backbone and classifier.

    Args:
        img_size: nominal input size (any size with sides divisible by 32 runs).
        embed_dims, depths, num_heads, mlp_ratios: per stage.
        alpha: share of each HiLo layer's heads in the Lo-Fi group.
        local_ws: HiLo window per stage, 0 for the ConvFFN-only stages; an int sets the
            stage-3 window of the released layout ``(0, 0, w, 1)``.
        norm_eps: LayerNorm epsilon everywhere.
        feature_norms: a LayerNorm on the stage 2-4 maps of :meth:`forward_intermediates`
            (the released dense backbones' convention).
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
        alpha: float = 0.9,
        local_ws: Union[int, Sequence[int]] = 2,
        patch_size: int = 4,
        qkv_bias: bool = True,
        norm_eps: float = 1e-5,
        drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        feature_norms: bool = False,
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
    ):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        if global_pool not in ("avg", ""):
            raise ValueError(f"global_pool must be 'avg' or '', got {global_pool!r}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
        num_stages = len(depths)
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.in_chans = in_chans
        self.img_size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        self.embed_dims = list(embed_dims)
        self.alpha = alpha
        self.local_ws = _stage_windows(local_ws, num_stages)
        self.num_features = self.head_hidden_size = embed_dims[-1]
        self.stride = patch_size * 2 ** (num_stages - 1)
        self.num_prefix_tokens = 0
        self.grad_checkpointing = False

        self.patch_embed = PatchEmbed(in_chans, embed_dims[0], patch_size, norm_eps, **dd)
        dpr = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()  # also under a meta device
        stages, self.feature_info = [], []
        for i in range(num_stages):
            stages.append(
                LITv2Stage(
                    in_dim=embed_dims[max(i - 1, 0)],
                    dim=embed_dims[i],
                    depth=depths[i],
                    num_heads=num_heads[i],
                    mlp_ratio=mlp_ratios[i],
                    window=self.local_ws[i],
                    alpha=alpha,
                    downsample=i > 0,
                    qkv_bias=qkv_bias,
                    drop_path=dpr[sum(depths[:i]) : sum(depths[: i + 1])],
                    proj_drop=proj_drop_rate,
                    attn_drop=attn_drop_rate,
                    norm_eps=norm_eps,
                    **dd,
                )
            )
            self.feature_info.append(dict(num_chs=embed_dims[i], reduction=patch_size * 2**i, module=f"stages.{i}"))
        self.stages = nn.ModuleList(stages)
        self.norm = nn.LayerNorm(embed_dims[-1], eps=norm_eps, **dd)
        self.feature_norms = (
            nn.ModuleList([nn.Identity()] + [nn.LayerNorm(d, eps=norm_eps, **dd) for d in embed_dims[1:]])
            if feature_norms
            else None
        )
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dims[-1], num_classes, **dd) if num_classes > 0 else nn.Identity()

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
        elif isinstance(module, nn.Conv2d) and module.groups > 1:
            # The depthwise convolutions: He-normal over the fan-out of one channel's kernel.
            fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
            nn.init.normal_(module.weight, 0.0, (2.0 / fan_out) ** 0.5)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    # ----------------------------------------------------------------- timm model API
    @torch.jit.ignore
    def no_weight_decay(self) -> set:
        """Nothing beyond biases and norms (which timm skips by ndim): LITv2 has no position tables."""
        return set()

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(
            stem=r"^patch_embed",
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
            if global_pool not in ("avg", ""):
                raise ValueError(f"global_pool must be 'avg' or '', got {global_pool!r}")
            self.global_pool = global_pool
        dd = parent_factory_kwargs(self)
        self.head = nn.Linear(self.num_features, num_classes, **dd) if num_classes > 0 else nn.Identity()
        self.head.train(self.training)

    def offset_parameters(self) -> List[nn.Parameter]:
        """Parameters of the DTM offset predictors (trained at a reduced learning rate)."""
        return [p for s in self.stages if s.downsample is not None for p in s.downsample.offset_conv.parameters()]

    # ----------------------------------------------------------------- forward
    def _forward_stages(self, x: torch.Tensor) -> Tuple[torch.Tensor, Grid, List[torch.Tensor]]:
        """Tokens after the last stage, their grid and the DTM offsets."""
        check_image(x, self.stride, "LITv2")
        x, grid = self.patch_embed(x)
        offsets: List[torch.Tensor] = []
        for stage in self.stages:
            x, grid, offset = stage(x, grid)
            if offset is not None:
                offsets.append(offset)
        return x, grid, offsets

    @staticmethod
    def _to_map(x: torch.Tensor, grid: Grid) -> torch.Tensor:
        return x.transpose(1, 2).reshape(x.shape[0], x.shape[-1], grid[0], grid[1])

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The final normalised ``B x C x H/32 x W/32`` map."""
        x, grid, _ = self._forward_stages(x)
        return self._to_map(self.norm(x), grid)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == "avg":
            x = x.mean(dim=(2, 3))
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    @torch.jit.ignore
    def forward_with_offsets(self, x: torch.Tensor) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """Logits and the offsets predicted by the three DTMs (stage order, ``B x 8 x h x w`` each)."""
        x, grid, offsets = self._forward_stages(x)
        return self.forward_head(self._to_map(self.norm(x), grid)), offsets

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: Optional[Union[int, List[int]]] = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Stage maps at strides 4, 8, 16, 32 (``NCHW``).

        With ``feature_norms`` the stage 2-4 maps pass their own LayerNorm (as the released dense
        backbones' outputs do); otherwise ``norm`` applies the final norm to the last stage's map.
        Unless ``intermediates_only``, the final normalised map (as :meth:`forward_features`
        returns it) comes first.
        """
        if output_fmt != "NCHW":
            raise ValueError("LITv2 intermediates are only available as NCHW")
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        stages = self.stages[: max_index + 1] if stop_early else self.stages
        intermediates = []
        check_image(x, self.stride, "LITv2")
        x, grid = self.patch_embed(x)
        for i, stage in enumerate(stages):
            x, grid, _ = stage(x, grid)
            if i in take_indices:
                out = x
                if self.feature_norms is not None:
                    out = self.feature_norms[i](out)
                elif norm and i == len(self.stages) - 1:
                    out = self.norm(out)
                intermediates.append(self._to_map(out, grid))
        if intermediates_only:
            return intermediates
        return self._to_map(self.norm(x), grid), intermediates

    def prune_intermediate_layers(
        self, indices: Union[int, List[int]] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> List[int]:
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        self.stages = self.stages[: max_index + 1]
        if prune_norm or max_index < len(self.stages) - 1:
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0, "")
        return take_indices


def set_reference_path(model: nn.Module, enable: bool = True) -> nn.Module:
    """Run a LITv2's attention as explicit softmax products (``enable=False``: back to
    ``scaled_dot_product_attention``), to check the fused path."""
    for module in model.modules():
        if isinstance(module, HiLoAttention):
            module.fused_attn = False if enable else use_fused_attn()
    return model


# --------------------------------------------------------------------- checkpoint mapping
_RELEASED_RENAMES = (
    ("mlp.dwconv.dwconv.", "mlp.dwconv."),
    ("attn.h_qkv.", "attn.hifi_qkv."),
    ("attn.h_proj.", "attn.hifi_proj."),
    ("attn.l_q.", "attn.lofi_q."),
    ("attn.l_kv.", "attn.lofi_kv."),
    ("attn.l_proj.", "attn.lofi_proj."),
)
_RELEASED_DTM = (
    ("dconv.conv_offset.", "downsample.offset_conv."),
    ("dconv.", "downsample.proj."),
    ("norm_layer.", "downsample.norm."),
)
# The dense backbones' output norms: norm{i} after stage i.
_RELEASED_OUTPUT_NORM = re.compile(r"^norm(\d)\.(.*)$")


def _map_released_key(key: str) -> str:
    """This file's name for a key of the released LITv2 layout (``layers.{i}.blocks`` /
    ``layers.{i}.downsample``, the DTM after stage ``i``)."""
    m = re.match(r"^layers\.(\d+)\.blocks\.(.*)$", key)
    if m:
        rest = m.group(2)
        for old, new in _RELEASED_RENAMES:
            rest = rest.replace(old, new)
        return f"stages.{m.group(1)}.blocks.{rest}"
    m = re.match(r"^layers\.(\d+)\.downsample\.(.*)$", key)
    if m:
        for old, new in _RELEASED_DTM:
            if m.group(2).startswith(old):
                return f"stages.{int(m.group(1)) + 1}.{new}{m.group(2)[len(old):]}"
        raise KeyError(f"unknown released DTM key {key!r}")
    m = _RELEASED_OUTPUT_NORM.match(key)
    if m:
        return f"feature_norms.{m.group(1)}.{m.group(2)}"
    return key


def checkpoint_filter_fn(state_dict: Dict[str, Any], model: nn.Module) -> Dict[str, torch.Tensor]:
    """Map a released (classification or dense backbone) or litvit LITv2 state dict onto ``model``'s names.

    Accepts a ``{'model': ...}`` / ``{'state_dict': ...}`` wrapper and the ``module.`` prefix of DDP.
    """
    for wrapper in ("model", "state_dict"):
        if isinstance(state_dict.get(wrapper), dict):
            state_dict = state_dict[wrapper]
            break
    state_dict = {(k[7:] if k.startswith("module.") else k): v for k, v in state_dict.items() if torch.is_tensor(v)}
    if not any(k.startswith("layers.") for k in state_dict):
        return state_dict
    return {_map_released_key(k): v for k, v in state_dict.items()}


# --------------------------------------------------------------------- configurations
MODEL_CONFIGS: Dict[str, Dict[str, Any]] = {
    "litv2_s": dict(embed_dims=(96, 192, 384, 768), depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24)),
    "litv2_m": dict(embed_dims=(96, 192, 384, 768), depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24)),
    "litv2_b": dict(embed_dims=(128, 256, 512, 1024), depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32)),
    "litv2_b_384": dict(embed_dims=(128, 256, 512, 1024), depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), img_size=384),
}

# Drop-path rates of the released ImageNet recipes (used by the trainer as defaults).
DEFAULT_DROP_PATH = {"litv2_s": 0.2, "litv2_m": 0.3, "litv2_b": 0.5, "litv2_b_384": 0.5}

_RELEASE = "https://github.com/ziplab/LITv2/releases/download/v1.0"


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
        "paper_ids": "arXiv:2205.13213",
        "paper_name": "Fast Vision Transformers with HiLo Attention",
        "origin_url": "https://github.com/ziplab/LITv2",
        **kwargs,
    }


default_cfgs = generate_default_cfgs(
    {
        "litv2_s.in1k": _cfg(url=f"{_RELEASE}/litv2_s.pth"),
        "litv2_m.in1k": _cfg(url=f"{_RELEASE}/litv2_m.pth"),
        "litv2_b.in1k": _cfg(url=f"{_RELEASE}/litv2_b.pth"),
        # Fine-tuned and evaluated at 384 px without a crop.
        "litv2_b_384.in1k": _cfg(url=f"{_RELEASE}/litv2_b_384.pth", input_size=(3, 384, 384), pool_size=(12, 12), crop_pct=1.0),
    }
)


def _create_litv2(variant: str, pretrained: bool = False, **kwargs: Any) -> LITv2:
    config = dict(MODEL_CONFIGS[variant])
    if kwargs.get("features_only"):
        config.setdefault("feature_norms", True)  # the released dense backbones normalise stages 2-4
    config.update(kwargs)
    out_indices = config.pop("out_indices", (0, 1, 2, 3))
    return build_model_with_cfg(
        LITv2,
        variant,
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(out_indices=out_indices, feature_cls="getter"),
        **config,
    )


@register_model
def litv2_s(pretrained: bool = False, **kwargs: Any) -> LITv2:
    """LITv2-S: 27.8M parameters, 3.7 GMACs at 224 px, 82.0% ImageNet top-1."""
    return _create_litv2("litv2_s", pretrained, **kwargs)


@register_model
def litv2_m(pretrained: bool = False, **kwargs: Any) -> LITv2:
    """LITv2-M: 48.8M parameters, 7.5 GMACs at 224 px, 83.3% ImageNet top-1."""
    return _create_litv2("litv2_m", pretrained, **kwargs)


@register_model
def litv2_b(pretrained: bool = False, **kwargs: Any) -> LITv2:
    """LITv2-B: 86.5M parameters, 13.2 GMACs at 224 px, 83.6% ImageNet top-1."""
    return _create_litv2("litv2_b", pretrained, **kwargs)


@register_model
def litv2_b_384(pretrained: bool = False, **kwargs: Any) -> LITv2:
    """LITv2-B fine-tuned at 384 px: 86.5M parameters, 39.7 GMACs, 84.7% ImageNet top-1."""
    return _create_litv2("litv2_b_384", pretrained, **kwargs)

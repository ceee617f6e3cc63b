"""LIT: Less attention vIsion Transformer.

"Less is More: Pay Less Attention in Vision Transformers", Pan et al., AAAI 2022
(https://arxiv.org/abs/2105.14217), code and weights at https://github.com/ziplab/LIT.

A four-stage hierarchical transformer. Stages 1-2 hold MLP blocks only (no attention),
stages 3-4 pre-norm transformer blocks with global multi-head self-attention, and a
deformable token merging (DTM) module halves the resolution between stages. LIT-Ti encodes
position with a learned absolute embedding per stage and classifies from a class token;
LIT-S/M/B use a relative position bias in every attention block and mean pooling.

This file holds the model alone: CPU speed-ups are a separate layer (:func:`litvit.optimize`,
in :mod:`litvit.accel`) that swaps modules without touching the state dict. The released
checkpoints use two other key layouts (a PVT-like one for LIT-Ti, a Swin-like one for
LIT-S/M/B); :func:`checkpoint_filter_fn` maps both (:mod:`._lit_released` holds the names).
"""

import math
from functools import partial
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import DropPath, Mlp, trunc_normal_, use_fused_attn
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices

from ._lit_released import released_to_model_keys
from .dtm import DeformableTokenMerging
from .layers import PatchEmbed, check_image, factory_kwargs, parent_factory_kwargs
from .pos_embed import rel_pos_bias, resize_abs_pos_embed, resize_rel_pos_table, stage_pos_embed

# They read traced shapes under torch.fx: the calls stay leaves of the graph.
torch.fx.wrap("check_image")
torch.fx.wrap("rel_pos_bias")
torch.fx.wrap("stage_pos_embed")

__all__ = [
    "LIT", "DeformableTokenMerging", "PatchEmbed", "checkpoint_filter_fn", "set_reference_path", "MODEL_CONFIGS",
    "DEFAULT_DROP_PATH",
]


# --------------------------------------------------------------------- blocks
class Attention(nn.Module):
    """Global multi-head self-attention, with a learned relative position bias when built with a grid."""

    fused_attn: bool

    def __init__(
        self, dim: int, num_heads: int, qkv_bias: bool = True, rel_pos_grid: Optional[Tuple[int, int]] = None,
        attn_drop: float = 0.0, proj_drop: float = 0.0, device: Optional[torch.device] = None, dtype: Optional[torch.dtype] = None,
    ):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.fused_attn = use_fused_attn()
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias, **dd)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim, **dd)
        self.proj_drop = nn.Dropout(proj_drop)
        if rel_pos_grid is not None:
            h, w = rel_pos_grid
            self.rel_pos_grid = (int(h), int(w))
            self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * h - 1) * (2 * w - 1), num_heads, **dd))
            trunc_normal_(self.relative_position_bias_table, std=0.02)
        else:
            self.rel_pos_grid = (0, 0)
            self.relative_position_bias_table = None

    def position_bias(self, grid: Tuple[int, int], num_tokens: int) -> Optional[torch.Tensor]:
        """``1 x heads x N x N`` additive bias for a ``grid`` of tokens, or None without a table."""
        if self.relative_position_bias_table is None:
            return None
        torch._assert(grid[0] * grid[1] == num_tokens, "relative position bias needs grid tokens only")
        return rel_pos_bias(self.relative_position_bias_table, self.rel_pos_grid, grid)

    def qkv_heads(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        batch, num_tokens, _ = x.shape
        qkv = self.qkv(x).reshape(batch, num_tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        return q, k, v

    def attention_probs(self, x: torch.Tensor, grid: Tuple[int, int]) -> torch.Tensor:
        """The ``B x heads x N x N`` attention matrix (softmax of the biased query-key products)."""
        q, k, _ = self.qkv_heads(x)
        return self._probs(q, k, self.position_bias(grid, x.shape[1]))

    def _probs(self, q: torch.Tensor, k: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
        attn = (q * self.scale) @ k.transpose(-2, -1)
        if bias is not None:
            # In the scores' dtype, as SDPA takes it: under autocast a float32 bias would promote the
            # whole score matrix, its softmax and its gradient to float32.
            attn = attn + bias.to(attn.dtype)
        return attn.softmax(dim=-1)

    def forward(self, x: torch.Tensor, grid: Tuple[int, int]) -> torch.Tensor:
        batch, num_tokens, dim = x.shape
        q, k, v = self.qkv_heads(x)
        bias = self.position_bias(grid, num_tokens)
        if self.fused_attn:
            if bias is not None:
                bias = bias.to(q.dtype)
            x = F.scaled_dot_product_attention(
                q, k, v, attn_mask=bias, dropout_p=self.attn_drop.p if self.training else 0.0
            )
        else:
            x = self.attn_drop(self._probs(q, k, bias)) @ v
        x = x.transpose(1, 2).reshape(batch, num_tokens, dim)
        return self.proj_drop(self.proj(x))


class MlpBlock(nn.Module):
    """Pre-norm MLP residual, the whole block of stages 1-2: ``x + DropPath(MLP(LN(x)))``."""

    def __init__(
        self, dim: int, mlp_ratio: float, drop_path: float = 0.0, proj_drop: float = 0.0,
        norm_layer: Callable[..., nn.Module] = nn.LayerNorm, device: Optional[torch.device] = None, dtype: Optional[torch.dtype] = None,
    ):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        self.norm2 = norm_layer(dim, **dd)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU, drop=proj_drop, **dd)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor, grid: Tuple[int, int]) -> torch.Tensor:
        # ``grid`` is unused: every block of a stage takes the same arguments.
        return x + self.drop_path(self.mlp(self.norm2(x)))


class Block(nn.Module):
    """Pre-norm transformer block of stages 3-4: attention residual, then MLP residual."""

    def __init__(
        self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool = True,
        rel_pos_grid: Optional[Tuple[int, int]] = None, drop_path: float = 0.0, proj_drop: float = 0.0,
        attn_drop: float = 0.0, norm_layer: Callable[..., nn.Module] = nn.LayerNorm, device: Optional[torch.device] = None, dtype: Optional[torch.dtype] = None,
    ):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        self.norm1 = norm_layer(dim, **dd)
        self.attn = Attention(dim, num_heads, qkv_bias, rel_pos_grid, attn_drop, proj_drop, **dd)
        self.norm2 = norm_layer(dim, **dd)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU, drop=proj_drop, **dd)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor, grid: Tuple[int, int]) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), grid))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class LITStage(nn.Module):
    """Token merging (DTM; none in stage 1), optional absolute position embedding, blocks."""

    def __init__(
        self, in_dim: int, dim: int, depth: int, num_heads: int, mlp_ratio: float, use_attn: bool,
        downsample: bool, grid: Tuple[int, int], abs_pos_embed: bool, rel_pos_bias: bool,
        num_prefix_tokens: int = 0, qkv_bias: bool = True, drop_path: Sequence[float] = (),
        proj_drop: float = 0.0, attn_drop: float = 0.0, norm_layer: Callable[..., nn.Module] = nn.LayerNorm,
        device: Optional[torch.device] = None, dtype: Optional[torch.dtype] = None,
    ):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        self.grid = (int(grid[0]), int(grid[1]))
        self.num_prefix_tokens = num_prefix_tokens
        self.grad_checkpointing = False
        self.downsample = DeformableTokenMerging(in_dim, dim, **dd) if downsample else None
        if abs_pos_embed:
            self.pos_embed = nn.Parameter(torch.zeros(1, grid[0] * grid[1] + num_prefix_tokens, dim, **dd))
            trunc_normal_(self.pos_embed, std=0.02)
        else:
            self.pos_embed = None
        rates = list(drop_path) or [0.0] * depth
        if use_attn:
            rel_grid = self.grid if rel_pos_bias else None
            blocks = [
                Block(dim, num_heads, mlp_ratio, qkv_bias, rel_grid, rates[i], proj_drop, attn_drop, norm_layer, **dd)
                for i in range(depth)
            ]
        else:
            blocks = [MlpBlock(dim, mlp_ratio, rates[i], proj_drop, norm_layer, **dd) for i in range(depth)]
        self.blocks = nn.ModuleList(blocks)

    def forward(
        self, x: torch.Tensor, grid: Tuple[int, int], prefix_tokens: Optional[torch.Tensor] = None
    ) -> Tuple[torch.Tensor, Tuple[int, int], Optional[torch.Tensor]]:
        """Tokens (prefix tokens first, if given), the grid and the DTM offsets (None in stage 1)."""
        offset: Optional[torch.Tensor] = None
        if self.downsample is not None:
            x, grid, offset = self.downsample(x, grid)
        if prefix_tokens is not None:
            x = torch.cat((prefix_tokens.expand(x.shape[0], -1, -1), x), dim=1)
        if self.pos_embed is not None:
            pos_embed = stage_pos_embed(self.pos_embed, self.grid, grid, self.num_prefix_tokens)
            if prefix_tokens is None and self.num_prefix_tokens > 0:
                # Dense outputs carry no class token: its embedding slot is dropped.
                pos_embed = pos_embed[:, self.num_prefix_tokens :]
            x = x + pos_embed
        for block in self.blocks:
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x = torch.utils.checkpoint.checkpoint(block, x, grid, use_reentrant=False)
            else:
                x = block(x, grid)
        return x, grid, offset


# --------------------------------------------------------------------- model
class LIT(nn.Module):
    """LIT backbone and classifier.

    Args:
        img_size: training resolution; fixes the size of the position tables (other sizes
            that are multiples of 32 are handled by resizing them).
        embed_dims, depths, num_heads, mlp_ratios: per stage.
        attn_stages: which stages use self-attention (LIT: the last two).
        pos_embed: ``'abs'`` (LIT-Ti: learned embedding per stage, class token) or ``'rel'``
            (LIT-S/M/B: relative position bias in every attention block).
        global_pool: ``'token'`` (class token), ``'avg'`` or ``''`` (no pooling).
        norm_eps: LayerNorm epsilon in blocks and the final norm (the stem LayerNorm always
            uses 1e-5, as released).
        feature_norms: add a LayerNorm on the stage 2-4 outputs of :meth:`forward_intermediates`
            (the convention of the released LIT-S dense backbone).

    :meth:`forward_features` returns ``B x C x H x W`` maps, or ``B x N x C`` tokens with the
    class token first where the model has one (LIT-Ti).
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
        device: Optional[torch.device] = None, dtype: Optional[torch.dtype] = None,
    ):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        if pos_embed not in ("abs", "rel"):
            raise ValueError(f"pos_embed must be 'abs' or 'rel', got {pos_embed!r}")
        if global_pool not in ("token", "avg", ""):
            raise ValueError(f"global_pool must be 'token', 'avg' or '', got {global_pool!r}")
        img_size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        num_stages = len(depths)
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.in_chans = in_chans
        self.img_size = img_size
        self.patch_size = patch_size
        self.pos_embed_type = pos_embed
        self.embed_dims = list(embed_dims)
        self.num_features = self.head_hidden_size = embed_dims[-1]
        self.stride = patch_size * 2 ** (num_stages - 1)
        self.grad_checkpointing = False
        # The class token exists only where the head reads it.
        self.num_prefix_tokens = 1 if global_pool == "token" else 0
        norm_layer = partial(nn.LayerNorm, eps=norm_eps)  # device / dtype go with each call

        self.patch_embed = PatchEmbed(in_chans, embed_dims[0], patch_size, **dd)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dims[-1], **dd)) if self.num_prefix_tokens else None

        dpr = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()  # also under a meta device
        stages, self.feature_info = [], []
        grid = (img_size[0] // patch_size, img_size[1] // patch_size)
        reduction = patch_size
        for i in range(num_stages):
            if i > 0:
                grid = (grid[0] // 2, grid[1] // 2)
                reduction *= 2
            stages.append(
                LITStage(
                    embed_dims[max(i - 1, 0)], embed_dims[i], depths[i], num_heads[i], mlp_ratios[i],
                    use_attn=bool(attn_stages[i]), downsample=i > 0, grid=grid,
                    abs_pos_embed=pos_embed == "abs", rel_pos_bias=pos_embed == "rel",
                    num_prefix_tokens=self.num_prefix_tokens if i == num_stages - 1 else 0, qkv_bias=qkv_bias,
                    drop_path=dpr[sum(depths[:i]) : sum(depths[: i + 1])], proj_drop=proj_drop_rate,
                    attn_drop=attn_drop_rate, norm_layer=norm_layer, **dd,
                )
            )
            self.feature_info.append(dict(num_chs=embed_dims[i], reduction=reduction, module=f"stages.{i}"))
        self.stages = nn.ModuleList(stages)
        self.norm = norm_layer(embed_dims[-1], **dd)
        self.feature_norms = (
            nn.ModuleList([nn.Identity()] + [norm_layer(d, **dd) for d in embed_dims[1:]]) if feature_norms else None
        )
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dims[-1], num_classes, **dd) if num_classes > 0 else nn.Identity()

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
        tables = {n for n, _ in self.named_parameters() if n.endswith(("pos_embed", "relative_position_bias_table"))}
        return {"cls_token"} | tables

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
        dd = parent_factory_kwargs(self)
        self.head = nn.Linear(self.num_features, num_classes, **dd) if num_classes > 0 else nn.Identity()
        self.head.train(self.training)

    @torch.jit.ignore
    def offset_parameters(self) -> List[nn.Parameter]:
        """Parameters of the DTM offset predictors (trained at a reduced learning rate)."""
        return [p for s in self.stages if s.downsample is not None for p in s.downsample.offset_conv.parameters()]

    # ----------------------------------------------------------------- forward
    def _forward_stages(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int], List[torch.Tensor]]:
        """Tokens after the last stage (class token first, if any), their grid and the DTM offsets."""
        check_image(x, self.stride)
        x, grid = self.patch_embed(x)
        offsets: List[torch.Tensor] = []
        last = len(self.stages) - 1
        for i, stage in enumerate(self.stages):
            x, grid, offset = stage(x, grid, self.cls_token if i == last else None)
            if offset is not None:
                offsets.append(offset)
        return x, grid, offsets

    def _output_format(self, x: torch.Tensor, grid: Tuple[int, int]) -> torch.Tensor:
        """Final tokens as ``forward_features`` returns them: kept with a class token, else NCHW."""
        if self.cls_token is not None:
            return x
        return x.transpose(1, 2).reshape(x.shape[0], x.shape[-1], grid[0], grid[1])

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x, grid, _ = self._forward_stages(x)
        return self._output_format(self.norm(x), grid)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == "token":
            x = x[:, 0]
        elif self.global_pool == "avg":
            x = x.mean(dim=(2, 3)) if self.cls_token is None else x[:, self.num_prefix_tokens :].mean(dim=1)
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    @torch.jit.ignore
    def forward_with_offsets(self, x: torch.Tensor) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """Logits and the offsets predicted by the three DTMs (stage order, ``B x 8 x h x w`` each)."""
        x, grid, offsets = self._forward_stages(x)
        return self.forward_head(self._output_format(self.norm(x), grid)), offsets

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: Optional[Union[int, List[int]]] = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Stage maps at strides 4, 8, 16, 32 (NCHW), and unless ``intermediates_only`` the final
        output of :meth:`forward_features` beside them.

        A class token (LIT-Ti's classifier) joins stage 4 as in :meth:`forward_features` and is
        left out of that stage's map; headless backbones have none, as the released dense ones.
        With ``feature_norms`` the stage 2-4 maps pass their own LayerNorm, else ``norm`` applies
        the final norm to the last map.
        """
        if output_fmt != "NCHW":
            raise ValueError("LIT intermediates are only available as NCHW")
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        last = len(self.stages) - 1
        stages = self.stages[: max_index + 1] if stop_early or intermediates_only else self.stages
        intermediates = []
        check_image(x, self.stride)
        x, grid = self.patch_embed(x)
        for i, stage in enumerate(stages):
            x, grid, _ = stage(x, grid, self.cls_token if i == last else None)
            if i in take_indices:
                out = x[:, self.num_prefix_tokens :] if i == last else x
                if self.feature_norms is not None:
                    out = self.feature_norms[i](out)
                elif norm and i == last:
                    out = self.norm(out)
                intermediates.append(out.transpose(1, 2).reshape(x.shape[0], -1, grid[0], grid[1]))
        if intermediates_only:
            return intermediates
        return self._output_format(self.norm(x), grid), intermediates

    def prune_intermediate_layers(
        self, indices: Union[int, List[int]] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> List[int]:
        """Keep the stages up to the last one ``indices`` takes; returns the indices taken."""
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        drops_last = max_index < len(self.stages) - 1
        # The final norm and the head read stage 4: they go with it.
        prune_norm, prune_head = prune_norm or drops_last, prune_head or drops_last
        self.stages = self.stages[: max_index + 1]
        if prune_norm:
            self.norm = nn.Identity()
        if drops_last:  # the class token joins in stage 4 only
            self.cls_token = None
            self.num_prefix_tokens = 0
        if prune_head:
            self.reset_classifier(0, "")
        return take_indices


def set_reference_path(model: nn.Module, enable: bool = True) -> nn.Module:
    """Compute ``model``'s attention as an explicit softmax product (``enable=True``) rather than
    through ``scaled_dot_product_attention``; the explicit form also holds the attention matrix."""
    for module in model.modules():
        if isinstance(module, Attention):
            module.fused_attn = False if enable else use_fused_attn()
    return model


# --------------------------------------------------------------------- checkpoint mapping
def checkpoint_filter_fn(state_dict: Dict[str, Any], model: LIT) -> Dict[str, torch.Tensor]:
    """Map a released or litvit state dict onto ``model``'s names and shapes.

    Accepts the released LIT-Ti (PVT-like) and LIT-S/M/B (Swin-like) layouts, litvit's own,
    a ``{'model': ...}`` / ``{'state_dict': ...}`` wrapper and the ``module.`` prefix of
    DDP. Position tables stored for another resolution are resized to the model's
    (bilinearly for absolute embeddings, bicubically for relative bias tables).
    """
    state_dict = released_to_model_keys(state_dict)
    model_state = model.state_dict()
    out = {}
    for name, value in state_dict.items():
        target = model_state.get(name)
        if target is not None and value.shape != target.shape:
            if name.endswith("pos_embed"):
                stage = model.stages[int(name.split(".")[1])]
                prefix = value.shape[1] - math.isqrt(value.shape[1] - stage.num_prefix_tokens) ** 2
                src_side = math.isqrt(value.shape[1] - prefix)
                value = resize_abs_pos_embed(value, (src_side, src_side), stage.grid, prefix)
                if prefix > stage.num_prefix_tokens:
                    value = value[:, prefix - stage.num_prefix_tokens :]
            elif name.endswith("relative_position_bias_table"):
                src_side = (math.isqrt(value.shape[0]) + 1) // 2
                dst_grid = model.get_submodule(name.rsplit(".", 1)[0]).rel_pos_grid
                value = resize_rel_pos_table(value, (src_side, src_side), dst_grid)
        out[name] = value
    return out


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
    "lit_m": dict(embed_dims=(96, 192, 384, 768), depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24), mlp_ratios=(4,) * 4),
    "lit_b": dict(
        embed_dims=(128, 256, 512, 1024), depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), mlp_ratios=(4, 4, 4, 4)
    ),
}

# Drop-path rates of the released ImageNet recipes (used by the trainer as defaults).
DEFAULT_DROP_PATH = {"lit_ti": 0.1, "lit_s": 0.2, "lit_m": 0.3, "lit_b": 0.5}

_RELEASES = "https://github.com/ziplab/LIT/releases/download/v1.0"


def _cfg(url: str = "", **kwargs: Any) -> Dict[str, Any]:
    return {
        "url": url, "num_classes": 1000, "input_size": (3, 224, 224), "pool_size": (7, 7), "crop_pct": 0.875,
        "interpolation": "bicubic", "fixed_input_size": False, "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD, "first_conv": "patch_embed.proj", "classifier": "head",
        "license": "apache-2.0", "paper_ids": "arXiv:2105.14217",
        "paper_name": "Less is More: Pay Less Attention in Vision Transformers",
        "origin_url": "https://github.com/ziplab/LIT", **kwargs,
    }


# The weights of the LIT release (ImageNet-1k, 224 px, evaluated at crop 0.875 bicubic);
# the comments give the paper's top-1.
default_cfgs = generate_default_cfgs(
    {
        "lit_ti.in1k": _cfg(url=f"{_RELEASES}/lit_ti.pth", pool_size=None),  # 81.1
        "lit_s.in1k": _cfg(url=f"{_RELEASES}/lit_s.pth"),  # 81.5
        "lit_m.in1k": _cfg(url=f"{_RELEASES}/lit_m.pth"),  # 83.0
        "lit_b.in1k": _cfg(url=f"{_RELEASES}/lit_b.pth"),  # 83.4
    }
)


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

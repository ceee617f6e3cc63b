"""Self-attention maps of LIT's stage 3 and 4 blocks for one query.

A query is a pixel of the model input (it selects the token whose stride-16 / stride-32
patch contains it in stages 3 / 4) or, for LIT-Ti, the class token (stage 4 only: stage 3
has no class token). The attention probabilities of every block are captured with forward
hooks that compute ``Attention.attention_probs(x, grid)`` on the block's own input,
so the model code is untouched.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import DataError
from ._common import PathLike, SizeSpec, model_defaults, prepare_image, save_figure, to_image_tensor

__all__ = ["attention_blocks", "select_blocks", "attention_maps", "draw_attention", "render_attention"]

Query = Union[str, Tuple[float, float]]


def attention_blocks(model: nn.Module) -> List[Tuple[int, int, nn.Module]]:
    """``(stage, block, attention module)`` of every self-attention block (stages 1-based)."""
    found = []
    for s, stage in enumerate(model.stages):
        for b, block in enumerate(stage.blocks):
            if getattr(block, "attn", None) is not None:
                found.append((s + 1, b, block.attn))
    return found


def select_blocks(model: nn.Module, spec: Union[None, str, Sequence[Any]] = None) -> List[Tuple[int, int]]:
    """Blocks to show: ``'all'``, ``'last'`` (the last block of each attention stage), a list
    of ``(stage, block)`` or a string ``'3.0,4.1'``; None is ``'all'`` for up to six
    attention blocks and ``'last'`` beyond."""
    available = [(s, b) for s, b, _ in attention_blocks(model)]
    if spec is None:
        spec = "all" if len(available) <= 6 else "last"
    if isinstance(spec, str):
        if spec == "all":
            return available
        if spec == "last":
            last: Dict[int, int] = {}
            for s, b in available:
                last[s] = max(b, last.get(s, -1))
            return sorted(last.items())
        try:
            spec = [tuple(int(v) for v in item.split(".")) for item in spec.split(",") if item.strip()]
        except ValueError:
            raise DataError(f"blocks must be 'all', 'last' or STAGE.BLOCK[,...] (e.g. 3.0,4.1), got {spec!r}") from None
    chosen = []
    for item in spec:
        key = tuple(int(v) for v in item)
        if key not in available:
            raise DataError(f"block {key[0]}.{key[1]} has no self-attention; choose from "
                            + ", ".join(f"{s}.{b}" for s, b in available))
        chosen.append(key)
    return chosen


@torch.no_grad()
def attention_maps(model: nn.Module, image_tensor: Union[torch.Tensor, np.ndarray], query: Query = "center",
                   blocks: Union[None, str, Sequence[Any]] = "all") -> Dict[str, Any]:
    """Attention of the chosen blocks for one query, as numpy arrays.

    Args:
        image_tensor: one normalised image, ``3 x H x W`` or ``1 x 3 x H x W``.
        query: ``(row, col)`` pixel of the model input, ``'center'``, or ``'cls'`` (class
            token; only models with one, and only stage 4 blocks).
        blocks: see :func:`select_blocks` (default all attention blocks).

    Returns a dict with ``image_size``, ``query`` and ``blocks``: one dict per block with
    ``stage``, ``block``, ``grid`` (h, w), ``query_index`` (token index incl. prefix tokens),
    ``probs`` (heads x keys, every row sums to one; class token first where present),
    ``maps`` (heads x h x w, the weights on the grid tokens), ``mean`` (h x w, mean over
    heads) and ``prefix`` (heads: weight on the class token, 0 without one).
    """
    x = to_image_tensor(model, image_tensor)
    height, width = x.shape[-2:]
    wanted = set(select_blocks(model, blocks))
    num_prefix = int(getattr(model, "num_prefix_tokens", 0))
    last_stage = len(model.stages)
    if query == "cls":
        if num_prefix == 0:
            raise DataError("this model has no class token to use as the query; give a pixel position")
        wanted = {(s, b) for s, b in wanted if s == last_stage}
        if not wanted:
            raise DataError("the class token exists only in the last stage; choose a block of stage "
                            f"{last_stage}")
    elif query == "center":
        query = ((height - 1) / 2.0, (width - 1) / 2.0)
    if query != "cls":
        qy, qx = float(query[0]), float(query[1])
        if not (0 <= qy < height and 0 <= qx < width):
            raise DataError(f"query pixel ({qy:g}, {qx:g}) is outside the {height}x{width} model input")
        query = (qy, qx)

    records: List[Dict[str, Any]] = []
    handles = []

    def make_hook(stage: int, block: int):
        def hook(module: nn.Module, args: Tuple[Any, ...], kwargs: Dict[str, Any], output: Any) -> None:
            tokens = args[0] if args else kwargs["x"]
            grid = args[1] if len(args) > 1 else kwargs["grid"]
            probs = module.attention_probs(tokens, grid)
            records.append({"stage": stage, "block": block, "grid": tuple(int(g) for g in grid),
                            "probs_all": probs[0].float().cpu(), "num_tokens": tokens.shape[1]})
        return hook

    was_training = model.training
    model.eval()
    try:
        for stage, block, attn in attention_blocks(model):
            if (stage, block) in wanted:
                handles.append(attn.register_forward_hook(make_hook(stage, block), with_kwargs=True))
        model.forward_features(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)

    out_blocks = []
    for rec in records:
        gh, gw = rec["grid"]
        prefix = rec["num_tokens"] - gh * gw
        stride_h, stride_w = height / gh, width / gw
        if query == "cls":
            q = 0
        else:
            row = min(int(query[0] // stride_h), gh - 1)
            col = min(int(query[1] // stride_w), gw - 1)
            q = prefix + row * gw + col
        probs = rec["probs_all"][:, q, :].double().numpy()  # heads x keys
        maps = probs[:, prefix:].reshape(-1, gh, gw)
        out_blocks.append({
            "stage": rec["stage"], "block": rec["block"], "grid": (gh, gw), "query_index": q,
            "probs": probs, "maps": maps, "mean": maps.mean(0),
            "prefix": probs[:, :prefix].sum(1) if prefix else np.zeros(probs.shape[0]),
        })
    return {"image_size": (int(height), int(width)), "query": query, "blocks": out_blocks}


def _upsample(maps: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(maps, dtype=np.float32))[None]
    return F.interpolate(t, size=size, mode="bilinear", align_corners=False)[0].numpy()


def draw_attention(image: np.ndarray, result: Dict[str, Any], max_heads: Optional[int] = None,
                   title: Optional[str] = None, panel_inches: float = 1.9) -> Any:
    """A matplotlib Figure: one row per block, columns = mean over heads, then each head."""
    import matplotlib
    from matplotlib.figure import Figure

    blocks = result["blocks"]
    if not blocks:
        raise DataError("no attention blocks selected")
    h, w = image.shape[:2]
    heads = max(b["maps"].shape[0] for b in blocks)
    shown = heads if max_heads is None else max(1, min(heads, int(max_heads)))
    cols = 1 + shown
    aspect = h / w
    fig = Figure(figsize=(panel_inches * cols, panel_inches * aspect * len(blocks) + 0.8), layout="constrained")
    axes = fig.subplots(len(blocks), cols, squeeze=False)
    gray = image.mean(-1) if image.ndim == 3 else image.astype(np.float64)
    query = result["query"]
    cmap = matplotlib.colormaps["inferno"]
    for r, blk in enumerate(blocks):
        panels = np.concatenate([blk["mean"][None], blk["maps"][:shown]], 0)
        up = _upsample(panels, (h, w))
        for c in range(cols):
            ax = axes[r, c]
            ax.set_axis_off()
            if c >= len(up):
                continue
            ax.imshow(gray, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            # Min-max per panel shows each head's preferences; a uniform map shows none.
            lo, hi = float(up[c].min()), float(up[c].max())
            heat = (up[c] - lo) / (hi - lo) if hi - lo > 1e-6 * max(hi, 1e-12) else np.zeros_like(up[c])
            # Opacity follows the weight, so unattended regions show the image itself.
            rgba = cmap(heat)
            rgba[..., 3] = 0.15 + 0.7 * heat
            ax.imshow(rgba, interpolation="nearest")
            if query != "cls":
                ax.scatter([query[1]], [query[0]], marker="+", s=60, c="cyan", lw=1.5)
            name = "mean" if c == 0 else f"head {c}"
            extra = ""
            if blk["prefix"].any():
                cls_w = blk["prefix"].mean() if c == 0 else blk["prefix"][c - 1]
                extra = f", cls {cls_w:.2f}"
            ax.set_title(f"{blk['stage']}.{blk['block']} {name}{extra}", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def render_attention(model: nn.Module, image_path: Union[PathLike, Any], out_path: PathLike,
                     query: Union[Query, None] = None, blocks: Union[None, str, Sequence[Any]] = None,
                     img_size: SizeSpec = None, max_heads: Optional[int] = None,
                     mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None,
                     query_in_original: bool = True, panel_inches: float = 1.9, dpi: int = 100) -> Path:
    """Draw the attention of ``model`` on an image file for one query and save a grid PNG.

    ``query``: ``'cls'``, ``'center'`` (default) or a ``(row, col)`` pixel of the original
    image (of the model input when ``query_in_original`` is False). ``blocks``: see
    :func:`select_blocks`. ``img_size`` as in :func:`litvit.viz.render_offsets`. Returns ``out_path``.
    """
    from PIL import Image

    from ._common import load_image

    defaults = model_defaults(model)
    pil = image_path if isinstance(image_path, Image.Image) else load_image(image_path)
    x, image = prepare_image(pil, img_size, defaults["short"], mean or defaults["mean"], std or defaults["std"])
    if query is None:
        query = "center"
    if not isinstance(query, str):
        qy, qx = float(query[0]), float(query[1])
        if query_in_original:
            if not (0 <= qy < pil.height and 0 <= qx < pil.width):
                raise DataError(f"query pixel ({qy:g}, {qx:g}) is outside the {pil.height}x{pil.width} image")
            # Pixel centres map through the resize: (p + 0.5) * scale - 0.5.
            qy = (qy + 0.5) * x.shape[-2] / pil.height - 0.5
            qx = (qx + 0.5) * x.shape[-1] / pil.width - 0.5
            qy, qx = min(max(qy, 0.0), x.shape[-2] - 1.0), min(max(qx, 0.0), x.shape[-1] - 1.0)
        query = (qy, qx)
    result = attention_maps(model, x, query=query, blocks=blocks)
    name = Path(str(image_path)).name if not isinstance(image_path, Image.Image) else "image"
    what = "class token" if result["query"] == "cls" else "pixel ({:.0f}, {:.0f})".format(*result["query"])
    fig = draw_attention(image, result, max_heads=max_heads,
                         title=f"{name}: attention of query {what} ({x.shape[-2]}x{x.shape[-1]} input)",
                         panel_inches=panel_inches)
    return save_figure(fig, out_path, dpi=dpi)

"""Where deformable token merging samples: last-stage cells traced back to image pixels.

Conventions (all coordinates are (row, column); token and pixel centres sit on integers):

* DTM ``d`` (``d = 1, 2, 3``, between stages ``d`` and ``d+1``) gives output cell ``(i, j)``
  four sampling points in stage ``d``'s token grid: ``(2i + ki + dr, 2j + kj + dc)`` with the
  predicted offsets ``(dr, dc)`` of tap ``k = 2 ki + kj``
  (:func:`litvit.ops.deform.sampling_locations2x2`).
* **Which offsets a fractional point uses.** A point ``p`` in stage ``d``'s grid reads the
  tokens around it bilinearly; we follow the token whose centre is nearest, i.e. the cell
  ``floor(p + 0.5)`` (row and column separately), clamped into the map. That cell's own
  DTM ``d-1`` offsets give the next four points. Ties (``.5`` exactly) go to the larger
  index. A point is *inside* when ``-0.5 <= p <= size - 0.5`` in both axes (it lies on
  the map's cells); points outside are kept, traced from the clamped cell, and flagged.
* **Stage 1 to pixels.** Stage-1 token ``t`` is the stride-4 patch of pixels ``4t .. 4t+3``,
  whose centre is pixel ``4t + 1.5``; in general a point ``p`` of a stage with stride ``s``
  is drawn at pixel ``(p + 0.5) * s - 0.5`` of the model input.

With zero offsets (an untrained DTM) cell ``(r, c)`` of stage 4 thus reaches the 8 x 8
stage-1 tokens ``8r .. 8r+7`` x ``8c .. 8c+7``, i.e. pixels ``32r + 4m + 1.5``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn as nn

from ..ops.deform import sampling_locations2x2
from ._common import PathLike, SizeSpec, model_defaults, prepare_image, save_figure, to_image_tensor

__all__ = ["trace_from_offsets", "trace_sampling_points", "default_cells", "draw_offsets", "render_offsets",
           "prediction_label"]

# Stage-1 stride of LIT (the 4x4 patch embedding); DTM d's input map has stride 4 * 2**(d-1).
STEM_STRIDE = 4
LEVEL_COLOURS = ("#ff3b30", "#ffcc00", "#00e5ff")  # stage-3, stage-2, stage-1 points
ROOT_COLOUR = "#ffffff"


def _as_numpy_offset(offset: Union[torch.Tensor, np.ndarray]) -> torch.Tensor:
    t = torch.as_tensor(offset).detach().to("cpu", torch.float64)
    if t.ndim == 3:
        t = t.unsqueeze(0)
    if t.ndim != 4 or t.shape[0] != 1 or t.shape[1] != 8:
        raise ValueError(f"expected one offset map of shape 8 x h x w (or 1 x 8 x h x w), got {tuple(t.shape)}")
    return t


def default_cells(grid: Tuple[int, int], count: int = 4) -> np.ndarray:
    """An even spread of ``count`` (1, 4, 9, ...: the nearest square) last-stage cells."""
    h, w = grid
    side = max(1, int(round(np.sqrt(count))))
    rows = np.unique(np.clip(np.round((np.arange(side) + 0.5) * h / side - 0.5), 0, h - 1).astype(int))
    cols = np.unique(np.clip(np.round((np.arange(side) + 0.5) * w / side - 0.5), 0, w - 1).astype(int))
    return np.array([(r, c) for r in rows for c in cols], dtype=np.int64)


def trace_from_offsets(offsets: Sequence[Union[torch.Tensor, np.ndarray]], cells: Optional[Any] = None,
                       stem_stride: int = STEM_STRIDE) -> Dict[str, Any]:
    """Trace last-stage cells through three DTMs given their offset maps.

    Args:
        offsets: the three offset maps in stage order (DTM 1, 2, 3), each ``8 x h x w`` or
            ``1 x 8 x h x w`` (one image), as returned by ``model.forward_with_offsets``.
        cells: ``n x 2`` (row, column) last-stage cells; ``None`` for every cell.
        stem_stride: pixels per stage-1 token.

    Returns a dict of numpy arrays:
        ``cells`` (n x 2), ``grids`` (the four stage grid sizes),
        ``points`` (list of three arrays, n x 4 x 2, n x 16 x 2, n x 64 x 2: (row, col) in
        the token grids of stages 3, 2 and 1), ``pixels`` (the same points as model-input
        pixel coordinates), ``inside`` (n x 4, n x 16, n x 64 booleans: the point lies on its
        map), ``root_pixels`` (n x 2 centres of the root cells in pixels), ``strides``
        (stride of stage 3, 2, 1: the maps of ``points``). Point ``j`` of a level comes from
        point ``j // 4`` of the level before, tap ``j % 4``.
    """
    if len(offsets) != 3:
        raise ValueError(f"expected the offsets of 3 DTMs, got {len(offsets)}")
    maps = [_as_numpy_offset(o) for o in offsets]
    # locs[d]: 4 x h x w x 2 sampling points of DTM d+1 in the grid of stage d+1.
    locs = [sampling_locations2x2(m)[0].numpy() for m in maps]
    grids = [(2 * maps[0].shape[2], 2 * maps[0].shape[3])] + [tuple(m.shape[2:]) for m in maps]
    for d in range(1, 3):
        if tuple(maps[d].shape[2:]) != (grids[d][0] // 2, grids[d][1] // 2):
            raise ValueError(f"offset maps do not chain: DTM {d + 1} is {tuple(maps[d].shape[2:])} on a {grids[d]} grid")
    last = grids[3]
    if cells is None:
        cells = np.array([(r, c) for r in range(last[0]) for c in range(last[1])], dtype=np.int64)
    cells = np.asarray(cells, dtype=np.int64).reshape(-1, 2)
    bad = (cells < 0).any(1) | (cells[:, 0] >= last[0]) | (cells[:, 1] >= last[1])
    if bad.any():
        r, c = cells[bad][0]
        raise ValueError(f"cell ({r}, {c}) is outside the last-stage grid {last[0]}x{last[1]}")

    # Level 0: the four points DTM 3 samples in stage 3 for each root cell.
    pts = locs[2][:, cells[:, 0], cells[:, 1]].transpose(1, 0, 2)  # n x 4 x 2
    points, inside = [pts], []
    for level, dtm in ((3, 1), (2, 0)):  # stage of the current points, DTM that made that stage
        size = np.array(grids[level - 1], dtype=np.float64)
        inside.append(((pts >= -0.5) & (pts <= size - 0.5)).all(-1))
        cell = np.clip(np.floor(pts + 0.5), 0, size - 1).astype(np.int64)  # n x m x 2
        pts = locs[dtm][:, cell[..., 0], cell[..., 1]]  # 4 x n x m x 2
        pts = pts.transpose(1, 2, 0, 3).reshape(pts.shape[1], -1, 2)  # n x 4m x 2 (parent-major)
        points.append(pts)
    inside.append(((pts >= -0.5) & (pts <= np.array(grids[0], dtype=np.float64) - 0.5)).all(-1))

    strides = [stem_stride * 4, stem_stride * 2, stem_stride]
    pixels = [(p + 0.5) * s - 0.5 for p, s in zip(points, strides)]
    root_stride = stem_stride * 8
    return {
        "cells": cells,
        "grids": grids,
        "points": points,
        "pixels": pixels,
        "inside": inside,
        "root_pixels": (cells + 0.5) * root_stride - 0.5,
        "strides": strides,
        "root_stride": root_stride,
    }


@torch.no_grad()
def trace_sampling_points(model: nn.Module, image_tensor: Union[torch.Tensor, np.ndarray],
                          cells: Optional[Any] = None) -> Dict[str, Any]:
    """Run ``model`` on one (normalised) image and trace the DTM sampling points.

    ``image_tensor`` is ``3 x H x W`` or ``1 x 3 x H x W`` with sides multiples of 32;
    ``cells`` are last-stage (row, column) cells (default: all). Returns the dict of
    :func:`trace_from_offsets` plus ``image_size`` (H, W) and ``logits`` (numpy).
    """
    was_training = model.training
    model.eval()
    try:
        x = to_image_tensor(model, image_tensor)
        logits, offsets = model.forward_with_offsets(x)
    finally:
        model.train(was_training)
    stem = getattr(getattr(model, "patch_embed", None), "patch_size", STEM_STRIDE)
    result = trace_from_offsets(offsets, cells, stem_stride=int(stem))
    result["image_size"] = tuple(x.shape[-2:])
    result["logits"] = logits[0].float().cpu().numpy()
    result["offsets"] = [o[0].float().cpu().numpy() for o in offsets]
    return result


def _draw_cell(ax: Any, trace: Dict[str, Any], n: int, marker_scale: float) -> None:
    from matplotlib.patches import Rectangle

    r, c = trace["cells"][n]
    s = trace["root_stride"]
    ax.add_patch(Rectangle((c * s - 0.5, r * s - 0.5), s, s, fill=False, lw=1.2, ls="--", ec=ROOT_COLOUR, zorder=5))
    ry, rx = trace["root_pixels"][n]
    ax.scatter([rx], [ry], s=90 * marker_scale, marker="*", c=ROOT_COLOUR, edgecolors="black", lw=0.6, zorder=9)
    sizes = (46, 26, 12)
    for level in range(3):
        pix = trace["pixels"][level][n]
        ok = trace["inside"][level][n]
        colour = LEVEL_COLOURS[level]
        ax.scatter(pix[ok, 1], pix[ok, 0], s=sizes[level] * marker_scale, c=colour, edgecolors="black",
                   lw=0.4, zorder=6 + level)
        if (~ok).any():
            ax.scatter(pix[~ok, 1], pix[~ok, 0], s=sizes[level] * marker_scale * 1.3, c=colour, marker="x",
                       lw=1.2, zorder=6 + level)


def _legend_handles() -> List[Any]:
    from matplotlib.lines import Line2D

    def h(marker: str, colour: str, label: str, edge: str = "black", size: float = 7) -> Any:
        return Line2D([], [], ls="", marker=marker, mfc=colour, mec=edge, ms=size, label=label,
                      color=colour if marker == "x" else None)

    return [
        h("*", ROOT_COLOUR, "root cell (stage 4)", size=11),
        h("o", LEVEL_COLOURS[0], "DTM 3: 4 points in stage 3"),
        h("o", LEVEL_COLOURS[1], "DTM 2: 16 points in stage 2"),
        h("o", LEVEL_COLOURS[2], "DTM 1: 64 points in stage 1"),
        Line2D([], [], ls="", marker="x", color="grey", mew=1.5, ms=7, label="outside its map"),
    ]


def draw_offsets(image: np.ndarray, trace: Dict[str, Any], overview: Optional[Dict[str, Any]] = None,
                 title: Optional[str] = None, panel_inches: float = 3.6) -> Any:
    """A matplotlib Figure: one panel per traced cell and, if ``overview`` (a trace of all
    last-stage cells) is given, a panel with every cell's 64 points and mean displacement."""
    from matplotlib.figure import Figure

    h, w = image.shape[:2]
    n = len(trace["cells"])
    panels = n + (1 if overview is not None else 0)
    cols = int(np.ceil(np.sqrt(panels)))  # near-square grid of panels
    rows = int(np.ceil(panels / cols))
    aspect = h / w
    fig = Figure(figsize=(panel_inches * cols, panel_inches * aspect * rows + 0.9), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).reshape(-1)
    marker_scale = float(np.clip(panel_inches / 3.6, 0.5, 2.0))
    gray = image.mean(-1) if image.ndim == 3 else image
    for ax in axes:
        ax.set_axis_off()
    for i in range(n):
        ax = axes[i]
        ax.imshow(image, interpolation="nearest")
        ax.imshow(np.zeros_like(gray), cmap="gray", alpha=0.25, vmin=0, vmax=1)  # dim for contrast
        _draw_cell(ax, trace, i, marker_scale)
        r, c = trace["cells"][i]
        ax.set_title(f"cell ({r}, {c})", fontsize=9)
        ax.set_xlim(-0.5, w - 0.5)
        ax.set_ylim(h - 0.5, -0.5)
    if overview is not None:
        ax = axes[n]
        ax.imshow(image, interpolation="nearest")
        ax.imshow(np.zeros_like(gray), cmap="gray", alpha=0.35, vmin=0, vmax=1)
        import matplotlib

        cmap = matplotlib.colormaps["hsv"]
        m = len(overview["cells"])
        final = overview["pixels"][2]  # m x 64 x 2
        for k in range(m):
            ax.scatter(final[k, :, 1], final[k, :, 0], s=3 * marker_scale, color=cmap(k / max(m, 1)), lw=0, zorder=4)
        centre = overview["root_pixels"]
        mean = final.mean(1)
        ax.quiver(centre[:, 1], centre[:, 0], mean[:, 1] - centre[:, 1], mean[:, 0] - centre[:, 0],
                  angles="xy", scale_units="xy", scale=1, color="white", width=0.006, zorder=6)
        ax.scatter(centre[:, 1], centre[:, 0], s=8 * marker_scale, c="white", edgecolors="black", lw=0.3, zorder=7)
        ax.set_title(f"all {m} last-stage cells: 64 points each,\narrow = cell centre -> mean point", fontsize=8)
        ax.set_xlim(-0.5, w - 0.5)
        ax.set_ylim(h - 0.5, -0.5)
    # A single panel is too narrow for three legend columns.
    fig.legend(handles=_legend_handles(), loc="outside lower center", ncol=3 if cols > 1 else 2, fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def prediction_label(logits: np.ndarray, class_names: Optional[Sequence[str]] = None) -> str:
    """`` - predicted: NAME`` for a figure title (the class index where no name is known), or ''
    for a headless model."""
    if not logits.size:
        return ""
    pred = int(np.argmax(logits))
    return f" - predicted: {class_names[pred] if class_names and pred < len(class_names) else pred}"


def render_offsets(model: nn.Module, image_path: Union[PathLike, Any], out_path: PathLike,
                   cells: Optional[Any] = None, num_cells: int = 4, img_size: SizeSpec = None,
                   mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None,
                   overview: bool = True, class_names: Optional[Sequence[str]] = None,
                   panel_inches: float = 3.6, dpi: int = 100) -> Path:
    """Trace DTM sampling points of ``model`` on an image file and save the figure as PNG.

    ``cells``: last-stage (row, col) cells (default: an even spread of ``num_cells``);
    ``img_size``: ``N`` (shorter side, aspect kept, sides rounded to multiples of 32),
    ``(H, W)`` / ``'HxW'``, or None for the model's training resolution. Returns ``out_path``.
    """
    defaults = model_defaults(model)
    x, image = prepare_image(image_path, img_size, defaults["short"], mean or defaults["mean"], std or defaults["std"])
    grid = (x.shape[-2] // 32, x.shape[-1] // 32)
    if cells is None:
        cells = default_cells(grid, num_cells)
    cells = np.asarray(cells, dtype=np.int64).reshape(-1, 2)
    full = trace_sampling_points(model, x, None)
    # Every cell's trace is in ``full``; pick the requested ones (validated there too).
    index = {tuple(c): i for i, c in enumerate(full["cells"].tolist())}
    missing = [tuple(c) for c in cells.tolist() if tuple(c) not in index]
    if missing:
        from ..errors import DataError

        raise DataError(f"cell {missing[0]} is outside the last-stage grid {grid[0]}x{grid[1]} "
                        f"of a {x.shape[-2]}x{x.shape[-1]} input")
    sel = np.array([index[tuple(c)] for c in cells.tolist()])
    trace = dict(full, cells=full["cells"][sel], root_pixels=full["root_pixels"][sel],
                 points=[p[sel] for p in full["points"]], pixels=[p[sel] for p in full["pixels"]],
                 inside=[m[sel] for m in full["inside"]])
    name = Path(str(image_path)).name if not hasattr(image_path, "size") else "image"
    label = prediction_label(full["logits"], class_names)
    # With a single last-stage cell the overview would repeat the cell's own panel.
    overview = overview and len(full["cells"]) > 1
    fig = draw_offsets(image, trace, full if overview else None,
                       title=f"{name} ({x.shape[-2]}x{x.shape[-1]} input){label}", panel_inches=panel_inches)
    return save_figure(fig, out_path, dpi=dpi)

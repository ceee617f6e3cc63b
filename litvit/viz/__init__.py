"""See what LIT learned: DTM sampling points and self-attention maps.

* :func:`trace_sampling_points` / :func:`trace_from_offsets`: last-stage cells traced
  through the three deformable token merging modules to image pixels (numpy arrays).
* :func:`attention_maps`: attention of stage 3-4 blocks for a pixel or class-token query.
* :func:`render_offsets` / :func:`render_attention`: the figures as PNG files.
"""
from .attention import attention_maps, draw_attention, render_attention, select_blocks
from .offsets import default_cells, draw_offsets, render_offsets, trace_from_offsets, trace_sampling_points

__all__ = [
    "trace_from_offsets",
    "trace_sampling_points",
    "default_cells",
    "draw_offsets",
    "render_offsets",
    "attention_maps",
    "select_blocks",
    "draw_attention",
    "render_attention",
]

"""Whether PyTorch is capturing a graph rather than running eagerly."""
from __future__ import annotations

import torch

__all__ = ["graph_capture_active", "is_exporting"]


def is_exporting() -> bool:
    """True while ``torch.export`` (or the dynamo ONNX exporter) traces the model.

    Shape-dependent Python branches must step aside then, or the exported graph would be
    specialised to the example input. timm has the same helper only from 1.0.30 on, so it
    lives here to keep older timm releases working. Before torch 2.6 there is no export-only
    flag; ``torch.export`` sets the compiling flag instead, so there this is also true under
    ``torch.compile`` (those branches then take their graph-friendly form there too).
    """
    if torch.jit.is_scripting():
        return False
    exporting = getattr(torch.compiler, "is_exporting", None)
    if exporting is None:  # torch < 2.6
        return torch.compiler.is_compiling()
    return exporting()


def graph_capture_active() -> bool:
    """True under ``torch.compile``, ``torch.export``, ONNX export and ``torch.jit`` tracing.

    Eager-only fast paths (an opaque Triton launch, buffers reused across calls) must step
    aside there: the capture needs ops it can trace, and they gain nothing once compiled.
    """
    return (
        torch.compiler.is_compiling() or is_exporting() or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()
    )

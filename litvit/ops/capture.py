"""Whether PyTorch is capturing a graph rather than running eagerly."""
from __future__ import annotations

import torch

__all__ = ["graph_capture_active"]


def graph_capture_active() -> bool:
    """True under ``torch.compile``, ``torch.export``, ONNX export and ``torch.jit`` tracing.

    Eager-only fast paths (an opaque Triton launch, buffers reused across calls) must step
    aside there: the capture needs ops it can trace, and they gain nothing once compiled.
    """
    is_exporting = getattr(torch.compiler, "is_exporting", lambda: False)  # torch >= 2.5
    return (
        torch.compiler.is_compiling() or is_exporting() or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()
    )

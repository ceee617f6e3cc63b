"""Deployment: ONNX files checked with ONNX Runtime, and ``torch.export`` programs.

Two formats, both with a dynamic batch dimension:

* ``onnx`` -- by default through PyTorch's ``torch.export``-based ONNX exporter at opset 18,
  the lowest opset that exporter emits. Height and width are dynamic too (any multiple
  of 32): while exporting, the position tables are always resized to the input's grid
  (an identity at the training size) and the DTM sampling scale is computed from the
  input's shape, so nothing is frozen to the example input. Opsets 16 and 17 (for older
  runtimes) go through the TorchScript exporter, whose trace freezes the image size; 16
  is the floor because DTM sampling needs ``GridSample``, which first appears there.
  torch releases before 2.7 also take that path at every opset (their ``torch.export``-based
  exporter cannot convert LIT at a symbolic size), and ``litvit export`` says so.
  Every ONNX file is checked with ``onnx.checker`` and run in ONNX Runtime on CPU against
  PyTorch for several batch sizes (and image sizes, where dynamic) before it is moved
  into place.
* ``exported-program`` -- a ``torch.export`` program saved with :func:`torch.export.save`
  (``.pt2``); load it with :func:`torch.export.load` and call ``.module()``. Its image size
  is dynamic from torch 2.5 on (fixed on torch 2.4).

The exported graphs take the normalised ``B x 3 x H x W`` float32 batch the model takes;
resizing and mean/std normalisation stay outside (the values are stored in the ONNX
file's metadata).

The conversion itself lives in :mod:`litvit.graph` (shared with ``litvit benchmark``); this
package checks and writes it (:func:`export_model`), and builds each task's model through that
task's adapter (``litvit.<task>.export``).
"""
from __future__ import annotations

from ..errors import ExportError
from ..graph import (
    DEFAULT_OPSET,
    DYNAMIC_SIZE_TORCH,
    MIN_OPSET,
    dynamic_size_supported,
    export_onnx,
    export_program,
    onnxruntime_runner,
    require_onnx,
)
from .cli import add_parser, run
from .tasks import TASKS, build_export_model
from .verify import DEFAULT_BATCH_SIZES, verify_onnx, verify_program
from .writer import DEFAULT_ATOL, EXPORT_FORMATS, ExportResult, export_model

__all__ = [
    "EXPORT_FORMATS",
    "DEFAULT_OPSET",
    "MIN_OPSET",
    "ExportError",
    "ExportResult",
    "require_onnx",
    "dynamic_size_supported",
    "export_program",
    "export_onnx",
    "verify_onnx",
    "verify_program",
    "export_model",
    "build_export_model",
    "DetectorDenseOutputs",
    "onnxruntime_runner",
    "add_parser",
    "run",
    "TASKS",
    "DYNAMIC_SIZE_TORCH",
    "DEFAULT_ATOL",
    "DEFAULT_BATCH_SIZES",
]


def __getattr__(name: str):
    # The detection adapter imports torchvision's detection models: only when asked for.
    if name == "DetectorDenseOutputs":
        from ..detection.export import DetectorDenseOutputs

        return DetectorDenseOutputs
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""``export_model``: an export that reaches its destination only once written and checked."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch

from ..errors import ExportError
from ..fileio import atomic_path
from ..graph import DEFAULT_OPSET, dynamic_onnx, dynamic_size_supported, export_onnx, export_program, model_size_divisor, require_onnx
from .verify import DEFAULT_BATCH_SIZES, verify_onnx, verify_program

PathLike = Union[str, os.PathLike]

__all__ = ["EXPORT_FORMATS", "DEFAULT_ATOL", "ExportResult", "export_model"]

EXPORT_FORMATS = ("onnx", "exported-program")
DEFAULT_ATOL = 1e-4
_EXAMPLE_BATCH = 2  # torch.export specialises dimensions whose example size is 0 or 1


@dataclass
class ExportResult:
    """What :func:`export_model` wrote and measured."""

    path: Path
    format: str
    opset: Optional[int]
    dynamic_batch: bool
    dynamic_size: bool
    checks: List[Dict[str, Any]] = field(default_factory=list)  # shape + max_abs_diff per input
    atol: Optional[float] = None

    @property
    def max_abs_diff(self) -> Optional[float]:
        return max((c["max_abs_diff"] for c in self.checks), default=None)



def _second_size(height: int, width: int, divisor: int) -> Tuple[int, int]:
    # Another, non-square size: both dimensions really are dynamic.
    return height + divisor, width + 2 * divisor


def export_model(
    model: Any,
    out: PathLike,
    format: str = "onnx",
    img_size: Union[int, Tuple[int, int]] = 224,
    opset: int = DEFAULT_OPSET,
    verify: bool = True,
    atol: float = DEFAULT_ATOL,
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    output_names: Sequence[str] = ("logits",),
    metadata: Optional[Dict[str, str]] = None,
    in_chans: int = 3,
    program: Any = None,
) -> ExportResult:
    """Export ``model`` (image batch -> tensor or tuple of tensors) and check the result.

    The file appears at ``out`` only once written completely (and, with ``verify``, only
    if every check is within ``atol``; otherwise :class:`ExportError` names the worst
    difference). Verification runs ``batch_sizes`` at the export size and, when the
    image size is dynamic, at a second, non-square size. ``program`` reuses an
    :func:`export_program` result of ``model`` (dynamic batch and size) instead of exporting again.
    """

    if format not in EXPORT_FORMATS:
        raise ExportError(f"unknown format {format!r}; choose from {', '.join(EXPORT_FORMATS)}")
    height, width = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
    divisor = model_size_divisor(model)
    if height % divisor or width % divisor or height <= 0 or width <= 0:
        raise ExportError(f"image size {height}x{width} must be a positive multiple of {divisor}")
    if any(b < 1 for b in batch_sizes):
        raise ExportError(f"verification batch sizes must be positive, got {list(batch_sizes)}")
    out = Path(out)
    example = torch.randn(_EXAMPLE_BATCH, in_chans, height, width, generator=torch.Generator().manual_seed(0))

    if format == "onnx":
        require_onnx(need_exporter=dynamic_onnx(opset))
        with atomic_path(out, suffix=".onnx") as tmp:
            _, dynamic_size = export_onnx(
                model, tmp, example, opset=opset, output_names=output_names, metadata=metadata, program=program
            )
            result = ExportResult(out, format, opset, True, dynamic_size, atol=atol if verify else None)
            if verify:
                sizes = [(height, width)] + ([_second_size(height, width, divisor)] if dynamic_size else [])
                result.checks = verify_onnx(tmp, model, example, batch_sizes, sizes)
                _raise_if_off(result, atol)
        return result

    dynamic_size = dynamic_size_supported("exported-program")
    if program is None:
        program = export_program(model, example, size_divisor=divisor, dynamic_size=dynamic_size)
    result = ExportResult(out, format, None, True, dynamic_size, atol=atol if verify else None)
    with atomic_path(out, suffix=".pt2") as tmp:
        torch.export.save(program, str(tmp))
        if verify:
            # Check what was written, not the in-memory program.
            sizes = [(height, width)] + ([_second_size(height, width, divisor)] if dynamic_size else [])
            result.checks = verify_program(str(tmp), model, example, batch_sizes, sizes)
            _raise_if_off(result, atol)
    return result


def _raise_if_off(result: ExportResult, atol: float) -> None:
    worst = max(result.checks, key=lambda c: c["max_abs_diff"])
    if worst["max_abs_diff"] > atol:
        shape = "x".join(map(str, worst["shape"]))
        raise ExportError(
            f"the {result.format} export differs from PyTorch by {worst['max_abs_diff']:.3g} (> {atol:g}) "
            f"on a {shape} input; nothing was written"
        )


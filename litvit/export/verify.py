"""Checking an export against PyTorch: ONNX Runtime for ONNX files, the loaded program for ``.pt2``."""
from __future__ import annotations

import os
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch

from ..errors import ExportError
from ..graph import export_mode, require_onnx

PathLike = Union[str, os.PathLike]

__all__ = ["DEFAULT_BATCH_SIZES", "verify_onnx", "verify_program"]

DEFAULT_BATCH_SIZES = (1, 2, 4)


def _output_list(out: Any) -> List[Any]:
    import torch.utils._pytree as pytree

    return list(pytree.tree_leaves(out))



def _max_abs_diff(outputs: Sequence[Any], references: Sequence[Any]) -> float:
    import numpy as np

    if len(outputs) != len(references):
        raise ExportError(f"the export returns {len(outputs)} outputs, the model {len(references)}")
    worst = 0.0
    for got, want in zip(outputs, references):
        want = want.detach().cpu().numpy()
        got = np.asarray(got)
        if got.shape != want.shape:
            raise ExportError(f"exported output shape {got.shape} differs from the model's {want.shape}")
        if want.size:
            worst = max(worst, float(np.abs(got.astype(np.float64) - want.astype(np.float64)).max()))
    return worst


def _check_inputs(
    example: Any, batch_sizes: Sequence[int], image_sizes: Sequence[Tuple[int, int]], seed: int = 0
) -> Iterator[Tuple[Tuple[int, ...], Any]]:

    gen = torch.Generator().manual_seed(seed)
    channels = example.shape[1]
    for height, width in image_sizes:
        for batch in batch_sizes:
            shape = (batch, channels, height, width)
            yield shape, torch.randn(shape, generator=gen, dtype=example.dtype)



def verify_onnx(
    path: PathLike,
    model: Any,
    example: Any,
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    image_sizes: Optional[Sequence[Tuple[int, int]]] = None,
) -> List[Dict[str, Any]]:
    """``onnx.checker`` plus ONNX Runtime (CPU) against ``model`` for every batch and image size.

    Returns one ``{"shape", "max_abs_diff"}`` entry per input. Image sizes default to the
    example's.
    """
    require_onnx(need_exporter=False)
    import onnx
    import onnxruntime as ort

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as err:
        raise ExportError(f"{path} fails onnx.checker: {str(err).splitlines()[0]}") from None
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    image_sizes = image_sizes or [tuple(example.shape[-2:])]
    checks = []
    with export_mode(model), torch.no_grad():
        for shape, x in _check_inputs(example, batch_sizes, image_sizes):
            try:
                got = session.run(None, {input_name: x.numpy()})
            except Exception as err:  # onnxruntime raises its own Fail/InvalidArgument types
                raise ExportError(
                    f"ONNX Runtime cannot run {path} on a {'x'.join(map(str, shape))} input: "
                    f"{str(err).strip().splitlines()[0]}"
                ) from None
            checks.append({"shape": shape, "max_abs_diff": _max_abs_diff(got, _output_list(model(x)))})
    return checks


def verify_program(
    program: Any,
    model: Any,
    example: Any,
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    image_sizes: Optional[Sequence[Tuple[int, int]]] = None,
) -> List[Dict[str, Any]]:
    """Run an :class:`~torch.export.ExportedProgram` (or a saved ``.pt2`` path) against ``model``."""

    if isinstance(program, (str, os.PathLike)):
        program = torch.export.load(str(program))
    module = program.module()
    image_sizes = image_sizes or [tuple(example.shape[-2:])]
    checks = []
    with export_mode(model), torch.no_grad():
        for shape, x in _check_inputs(example, batch_sizes, image_sizes):
            got = _output_list(module(x))
            checks.append({"shape": shape, "max_abs_diff": _max_abs_diff(got, _output_list(model(x)))})
    return checks


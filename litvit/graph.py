"""Model graphs for deployment and for measuring: ``torch.export`` programs and ONNX files.

The conversion alone, shared by ``litvit export`` (which checks and writes the result, see
:mod:`litvit.export`) and by ``litvit benchmark``'s ONNX Runtime runtime, so both run the
same graph.

* ONNX -- by default through PyTorch's ``torch.export``-based ONNX exporter at opset 18,
  the lowest opset that exporter emits. Height and width are dynamic too (any multiple
  of 32): while exporting, the position tables are always resized to the input's grid
  (an identity at the training size) and the DTM sampling scale is computed from the
  input's shape, so nothing is frozen to the example input. Opsets 16 and 17 (for older
  runtimes) go through the TorchScript exporter, whose trace freezes the image size; 16
  is the floor because DTM sampling needs ``GridSample``, which first appears there.
  torch releases before 2.7 also take that path at every opset (their ``torch.export``-based
  exporter cannot convert LIT at a symbolic size).
* ``torch.export`` programs, with a dynamic batch and (from torch 2.5 on) image size.
"""
from __future__ import annotations

import contextlib
import importlib
import inspect
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch

from .errors import ExportError, MissingExtraError
from .fileio import atomic_path

PathLike = Union[str, os.PathLike]

__all__ = [
    "DEFAULT_OPSET",
    "MIN_OPSET",
    "DYNAMIC_SIZE_TORCH",
    "require_onnx",
    "dynamic_size_supported",
    "dynamic_onnx",
    "fixed_size_reason",
    "export_mode",
    "model_size_divisor",
    "export_program",
    "export_onnx",
    "onnxruntime_runner",
]

# torch's dynamo ONNX exporter has no implementations below opset 18 (a lower request is
# silently kept at 18), so 18 is the lowest opset with a dynamic image size.
DEFAULT_OPSET = 18
# GridSample, which DTM sampling becomes, first appears in opset 16.
MIN_OPSET = 16
# The oldest torch that exports LIT with a symbolic image size, per format. torch 2.4's shape
# solver runs for many minutes on the DTM sampling grid; the ONNX exporters of torch 2.5 and 2.6
# fail on the DTM BatchNorm and on the resize of the position table at a symbolic size.
DYNAMIC_SIZE_TORCH = {"exported-program": (2, 5), "onnx": (2, 7)}


def require_onnx(need_exporter: bool = True) -> None:
    """Raise :class:`MissingExtraError` (one line) unless the ``litvit[export]`` packages import."""
    modules = ["onnx", "onnxruntime"] + (["onnxscript"] if need_exporter else [])
    missing = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise MissingExtraError(
            f"ONNX export needs {', '.join(missing)} (not installed); install the extra: pip install 'litvit[export]'"
        )


def dynamic_size_supported(format: str = "onnx") -> bool:
    """Whether the installed torch can export ``format`` with a dynamic image size (older
    releases export a fixed one; see ``DYNAMIC_SIZE_TORCH``)."""
    return torch.__version__ >= DYNAMIC_SIZE_TORCH[format]


def dynamic_onnx(opset: int) -> bool:
    """Whether an ONNX export at ``opset`` goes through the dynamic-size exporter."""
    return opset >= DEFAULT_OPSET and dynamic_size_supported("onnx")


def fixed_size_reason(format: str) -> str:
    needed = ".".join(map(str, DYNAMIC_SIZE_TORCH[format]))
    return f"a dynamic image size in {format} needs torch >= {needed} (installed: {torch.__version__})"


@contextlib.contextmanager
def export_mode(model: Any) -> Iterator[Any]:
    """Eval mode with the explicit attention path, restored afterwards.

    Fused ``scaled_dot_product_attention`` computes the same values, but its decomposition
    under symbolic shapes yields a layout the following reshape cannot view, and ONNX
    below opset 23 has no attention operator anyway.
    """
    # Per module: a detector may hold frozen parts in eval mode inside a training model.
    modes = [(m, m.training) for m in model.modules()]
    fused = [(m, m.fused_attn) for m in model.modules() if isinstance(getattr(m, "fused_attn", None), bool)]
    model.eval()
    for m, _ in fused:
        m.fused_attn = False
    try:
        yield model
    finally:
        for m, value in fused:
            m.fused_attn = value
        for m, training in modes:
            m.training = training


def model_size_divisor(model: Any) -> int:
    """The side multiple a model's input needs: its ``size_divisor`` or ``stride``, else 32."""
    for attr in ("size_divisor", "stride"):
        value = getattr(model, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return 32


def export_program(
    model: Any,
    example: Any,
    dynamic_batch: bool = True,
    dynamic_size: bool = True,
    size_divisor: Optional[int] = None,
) -> Any:
    """``torch.export.export`` a tensor-to-tensor(s) model with dynamic batch / image size.

    ``example`` is a ``B x C x H x W`` tensor with ``B >= 2`` (``torch.export`` fixes
    dimensions whose example size is 1). Height and width are exported as multiples of
    ``size_divisor`` (the model's ``size_divisor`` or ``stride``, else 32).
    """
    from torch.export import Dim

    if example.ndim != 4:
        raise ExportError(f"the example input must be B x C x H x W, got shape {tuple(example.shape)}")
    if dynamic_batch and example.shape[0] < 2:
        raise ExportError("a dynamic batch needs an example batch of at least 2")
    if dynamic_size and not dynamic_size_supported("exported-program"):
        raise ExportError(fixed_size_reason("exported-program") + "; export with dynamic_size=False")
    divisor = size_divisor or model_size_divisor(model)
    spec: Dict[int, Any] = {}
    if dynamic_batch:
        spec[0] = Dim("batch", min=1, max=4096)
    if dynamic_size:
        height, width = example.shape[-2:]
        if height % divisor or width % divisor:
            raise ExportError(f"example image {height}x{width} is not a multiple of {divisor}")
        spec[2] = divisor * Dim("height_blocks", min=1, max=8192 // divisor)
        spec[3] = divisor * Dim("width_blocks", min=1, max=8192 // divisor)
    with export_mode(model), torch.no_grad():
        program = torch.export.export(model, (example,), dynamic_shapes=({**spec},) if spec else None, strict=False)
    fixed = [name for dim, name in ((0, "batch"), (2, "height"), (3, "width")) if dim in spec and not _is_dynamic(program, dim)]
    if fixed:
        # torch.export may narrow a dynamic dimension to the example's value instead of failing,
        # e.g. when a feature map of the example is 1 pixel wide; the graph would be wrong elsewhere.
        raise ExportError(
            f"exporting at {example.shape[-2]}x{example.shape[-1]} fixes the {' and '.join(fixed)}; "
            "export with a larger example image (--img-size)"
        )
    return program


def _is_dynamic(program: Any, dim: int) -> bool:
    """Whether dimension ``dim`` of the program's first user input stayed symbolic with a range."""
    placeholders = [n for n in program.graph_module.graph.nodes if n.op == "placeholder"]
    user_inputs = set(program.graph_signature.user_inputs)
    node = next(n for n in placeholders if n.name in user_inputs)
    size = node.meta["val"].shape[dim]
    if not isinstance(size, torch.SymInt):
        return False
    for symbol in size.node.expr.free_symbols:
        bounds = program.range_constraints.get(symbol)
        if bounds is not None and bounds.lower == bounds.upper:
            return False
    return True


def _set_metadata(path: Path, metadata: Dict[str, str]) -> None:
    import onnx

    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props}, **metadata})
    onnx.save(model, str(path))


def export_onnx(
    model: Any,
    path: PathLike,
    example: Any,
    opset: int = DEFAULT_OPSET,
    input_names: Sequence[str] = ("image",),
    output_names: Sequence[str] = ("logits",),
    metadata: Optional[Dict[str, str]] = None,
    program: Any = None,
) -> Tuple[Path, bool]:
    """Write ``model`` as ONNX to ``path`` (not verified; see :func:`litvit.export.verify_onnx`).

    Opset >= 18 uses the ``torch.export``-based exporter (dynamic batch, height and width;
    ``program`` may pass an already exported :func:`export_program` result); opsets 16-17,
    and every opset on torch releases older than ``DYNAMIC_SIZE_TORCH["onnx"]``, the
    TorchScript exporter (dynamic batch, image size fixed to the example's).
    Returns the path and whether the image size is dynamic.
    """
    dynamic_size = dynamic_onnx(opset)
    require_onnx(need_exporter=dynamic_size)

    if opset < MIN_OPSET:
        raise ExportError(
            f"opset {opset} is too old: DTM sampling needs GridSample (opset {MIN_OPSET} or newer)"
        )
    path = Path(path)
    with warnings.catch_warnings(), atomic_path(path, suffix=".onnx") as tmp:
        # Tracer and deprecation chatter is about the exporters, not the user's model.
        warnings.simplefilter("ignore")
        if dynamic_size:
            if program is None:
                program = export_program(model, example)
            onnx_program = torch.onnx.export(
                program,
                (example,),
                dynamo=True,
                opset_version=opset,
                input_names=list(input_names),
                output_names=list(output_names),
                optimize=True,
                verbose=False,
            )
            onnx_program.save(str(tmp), external_data=False)
        else:
            axes = {name: {0: "batch"} for name in list(input_names) + list(output_names)}
            with export_mode(model), torch.no_grad():
                # Newer torch defaults to the dynamo exporter; torch 2.4 has no such switch.
                legacy = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
                torch.onnx.export(
                    model,
                    (example,),
                    str(tmp),
                    opset_version=opset,
                    input_names=list(input_names),
                    output_names=list(output_names),
                    dynamic_axes=axes,
                    **legacy,
                )
        meta = {"litvit.dynamic_image_size": str(dynamic_size).lower()}
        if not dynamic_size:
            meta["litvit.image_size"] = "x".join(str(s) for s in example.shape[-2:])
        _set_metadata(tmp, {**meta, **(metadata or {})})
    return path, dynamic_size


def onnxruntime_runner(
    model: Any,
    example: Any,
    opset: int = DEFAULT_OPSET,
    threads: Optional[int] = None,
    providers: Optional[Sequence[str]] = None,
) -> Any:
    """Export ``model`` with :func:`export_onnx` (at the default opset: dynamic batch and size,
    the graph ``litvit export`` writes) and return a callable running it in an ONNX Runtime
    session: ``runner(x) -> list of numpy arrays``.

    ``threads`` sets ONNX Runtime's intra-op threads (default: torch's thread count, so a
    comparison with PyTorch on CPU uses the same cores). Used by ``litvit benchmark``.
    """
    require_onnx(need_exporter=dynamic_onnx(opset))
    import onnxruntime as ort

    example = example.detach().float().cpu().contiguous()
    if example.shape[0] < 2:
        example = example.expand(2, *example.shape[1:]).contiguous()
    with tempfile.TemporaryDirectory(prefix="litvit-ort-") as tmp:
        path = Path(tmp) / "model.onnx"
        export_onnx(model, path, example, opset=opset)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = threads or torch.get_num_threads()
        # The session holds the graph in memory; the file can go.
        session = ort.InferenceSession(str(path), options, providers=list(providers or ["CPUExecutionProvider"]))
    input_name = session.get_inputs()[0].name

    def run(x: Any) -> List[Any]:
        return session.run(None, {input_name: x.detach().cpu().float().contiguous().numpy()})

    return run


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
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import importlib
import inspect
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

# Cheap here: importing the litvit package has already imported torch.
import torch
import torch.nn as nn

from .errors import LitvitError, MissingExtraError
from .fileio import atomic_path

PathLike = Union[str, os.PathLike]

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
]

EXPORT_FORMATS = ("onnx", "exported-program")
# torch's dynamo ONNX exporter has no implementations below opset 18 (a lower request is
# silently kept at 18), so 18 is the lowest opset with a dynamic image size.
DEFAULT_OPSET = 18
# GridSample, which DTM sampling becomes, first appears in opset 16.
MIN_OPSET = 16
# The oldest torch that exports LIT with a symbolic image size, per format. torch 2.4's shape
# solver runs for many minutes on the DTM sampling grid; the ONNX exporters of torch 2.5 and 2.6
# fail on the DTM BatchNorm and on the resize of the position table at a symbolic size.
DYNAMIC_SIZE_TORCH = {"exported-program": (2, 5), "onnx": (2, 7)}
DEFAULT_ATOL = 1e-4
DEFAULT_BATCH_SIZES = (1, 2, 4)
_EXAMPLE_BATCH = 2  # torch.export specialises dimensions whose example size is 0 or 1


class ExportError(LitvitError):
    """An export cannot be made, or the exported graph does not reproduce the model."""


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


def _dynamic_onnx(opset: int) -> bool:
    """Whether an ONNX export at ``opset`` goes through the dynamic-size exporter."""
    return opset >= DEFAULT_OPSET and dynamic_size_supported("onnx")


def _fixed_size_reason(format: str) -> str:
    needed = ".".join(map(str, DYNAMIC_SIZE_TORCH[format]))
    return f"a dynamic image size in {format} needs torch >= {needed} (installed: {torch.__version__})"


@contextlib.contextmanager
def _export_mode(model: Any) -> Iterator[Any]:
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


def _size_divisor(model: Any) -> int:
    for attr in ("size_divisor", "stride"):
        value = getattr(model, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return 32


def _output_list(out: Any) -> List[Any]:
    import torch.utils._pytree as pytree

    return list(pytree.tree_leaves(out))


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
        raise ExportError(_fixed_size_reason("exported-program") + "; export with dynamic_size=False")
    divisor = size_divisor or _size_divisor(model)
    spec: Dict[int, Any] = {}
    if dynamic_batch:
        spec[0] = Dim("batch", min=1, max=4096)
    if dynamic_size:
        height, width = example.shape[-2:]
        if height % divisor or width % divisor:
            raise ExportError(f"example image {height}x{width} is not a multiple of {divisor}")
        spec[2] = divisor * Dim("height_blocks", min=1, max=8192 // divisor)
        spec[3] = divisor * Dim("width_blocks", min=1, max=8192 // divisor)
    with _export_mode(model), torch.no_grad():
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
    """Write ``model`` as ONNX to ``path`` (not verified; see :func:`verify_onnx`).

    Opset >= 18 uses the ``torch.export``-based exporter (dynamic batch, height and width;
    ``program`` may pass an already exported :func:`export_program` result); opsets 16-17,
    and every opset on torch releases older than ``DYNAMIC_SIZE_TORCH["onnx"]``, the
    TorchScript exporter (dynamic batch, image size fixed to the example's).
    Returns the path and whether the image size is dynamic.
    """
    dynamic_size = _dynamic_onnx(opset)
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
            with _export_mode(model), torch.no_grad():
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
    with _export_mode(model), torch.no_grad():
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
    with _export_mode(model), torch.no_grad():
        for shape, x in _check_inputs(example, batch_sizes, image_sizes):
            got = _output_list(module(x))
            checks.append({"shape": shape, "max_abs_diff": _max_abs_diff(got, _output_list(model(x)))})
    return checks


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
    divisor = _size_divisor(model)
    if height % divisor or width % divisor or height <= 0 or width <= 0:
        raise ExportError(f"image size {height}x{width} must be a positive multiple of {divisor}")
    if any(b < 1 for b in batch_sizes):
        raise ExportError(f"verification batch sizes must be positive, got {list(batch_sizes)}")
    out = Path(out)
    example = torch.randn(_EXAMPLE_BATCH, in_chans, height, width, generator=torch.Generator().manual_seed(0))

    if format == "onnx":
        require_onnx(need_exporter=_dynamic_onnx(opset))
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


def onnxruntime_runner(
    model: Any,
    example: Any,
    opset: int = DEFAULT_OPSET,
    threads: Optional[int] = None,
    providers: Optional[Sequence[str]] = None,
) -> Any:
    """Export ``model`` as :func:`export_model` does (dynamic batch and size) and return a
    callable running it in an ONNX Runtime session: ``runner(x) -> list of numpy arrays``.

    ``threads`` sets ONNX Runtime's intra-op threads (default: torch's thread count, so a
    comparison with PyTorch on CPU uses the same cores). Used by ``litvit benchmark``.
    """
    require_onnx(need_exporter=_dynamic_onnx(opset))
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


# ----------------------------------------------------------------------------- models
TASKS = ("classify", "segment", "detect")
IMAGENET_MEAN_STD = {"litvit.mean": "0.485,0.456,0.406", "litvit.std": "0.229,0.224,0.225"}


class DetectorDenseOutputs(nn.Module):
    """The tensor-to-tensors part of a litvit (torchvision) detector, for export.

    Input: the normalised batch the detector's transform produces (resized, padded to a
    multiple of 32). Outputs, in order: for RetinaNet the per-anchor ``cls_logits``
    (``B x A x K``, before the sigmoid) and ``bbox_regression`` (``B x A x 4`` box deltas
    against torchvision's anchors, levels P3-P7 concatenated), then the FPN levels
    (RetinaNet P3-P7, Mask R-CNN P2-P6). Anchor decoding, score thresholds, NMS and Mask
    R-CNN's region stages (data-dependent box counts) stay in the caller's code.
    """

    def __init__(self, detector: nn.Module):
        super().__init__()
        from torchvision.models.detection import RetinaNet
        from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7

        self.backbone = detector.backbone
        self.head = detector.head if isinstance(detector, RetinaNet) else None
        self.size_divisor = 32
        in_indices = list(getattr(self.backbone, "in_indices", range(4)))
        levels = [f"p{2 + i}" for i in in_indices]
        extra = getattr(getattr(self.backbone, "fpn", None), "extra_blocks", None)
        if isinstance(extra, LastLevelP6P7):
            levels += [f"p{3 + in_indices[-1]}", f"p{4 + in_indices[-1]}"]
        elif isinstance(extra, LastLevelMaxPool):
            levels += [f"p{3 + in_indices[-1]}"]
        self.output_names = (["cls_logits", "bbox_regression"] if self.head is not None else []) + levels
        # A new module starts in training mode; this one exists for inference (and would put
        # the detector's BatchNorms in training mode otherwise).
        self.train(detector.training)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        features = list(self.backbone(x).values())
        if self.head is None:
            return tuple(features)
        out = self.head(features)
        return (out["cls_logits"], out["bbox_regression"], *features)


def build_export_model(
    task: str,
    model_name: str,
    checkpoint_path: Optional[PathLike] = None,
    num_classes: Optional[int] = None,
    use_ema: bool = False,
    **model_kwargs: Any,
) -> Tuple[Any, Dict[str, str]]:
    """The model the CLI exports and the metadata stored beside it.

    ``classify``: a LIT (or timm) classifier; without ``num_classes`` the class count is
    read from the checkpoint's ``head.weight`` (1000 without a checkpoint).
    ``segment``: Semantic FPN-LIT, from a ``litvit segment train`` checkpoint (which
    holds its own configuration) or untrained (``num_classes``, default 150).
    ``detect``: the dense part of a RetinaNet / Mask R-CNN (:class:`DetectorDenseOutputs`),
    from a ``litvit detect train`` checkpoint or untrained (``arch`` in ``model_kwargs``,
    default ``retinanet``; ``num_classes`` default 80).
    """
    from .factory import create_model, model_from_checkpoint

    meta: Dict[str, str] = {"litvit.task": task, "litvit.model": model_name}
    if task == "classify":
        if checkpoint_path is not None:
            model, _ = model_from_checkpoint(checkpoint_path, model=model_name, use_ema=use_ema,
                                             num_classes=num_classes, model_kwargs=model_kwargs)
        else:
            model = create_model(model_name, **({} if num_classes is None else {"num_classes": num_classes}),
                                 **model_kwargs)
        cfg = getattr(model, "pretrained_cfg", None) or {}
        for key in ("mean", "std"):
            if key in cfg:
                meta[f"litvit.{key}"] = ",".join(f"{v:g}" for v in cfg[key])
    elif task == "segment":
        from .segmentation.models import semantic_fpn_lit

        if checkpoint_path is not None:
            from .segmentation.engine import load_trained_model

            if model_kwargs or num_classes is not None:
                raise ExportError("a segmentation checkpoint holds its own configuration; drop --num-classes/--model-kwargs")
            model, info = load_trained_model(str(checkpoint_path))
            meta["litvit.model"] = str(info.get("model_config", {}).get("model_name", model_name))
        else:
            model = semantic_fpn_lit(model_name, num_classes=150 if num_classes is None else num_classes, **model_kwargs)
        meta.update(IMAGENET_MEAN_STD)
    elif task == "detect":
        from .detection.engine import build_from_spec, detector_from_checkpoint

        if checkpoint_path is not None:
            if model_kwargs or num_classes is not None:
                raise ExportError("a detection checkpoint holds its own configuration; drop --num-classes/--model-kwargs")
            detector, _ = detector_from_checkpoint(str(checkpoint_path))
        else:
            arch = model_kwargs.pop("arch", "retinanet")
            spec = dict(arch=arch, model_name=model_name, num_classes=80 if num_classes is None else num_classes,
                        kwargs=model_kwargs)
            detector = build_from_spec(spec)
        model = DetectorDenseOutputs(detector.eval())
        transform = getattr(detector, "transform", None)
        meta["litvit.arch"] = type(detector).__name__
        meta["litvit.outputs"] = ",".join(model.output_names)
        for key in ("mean", "std"):
            values = getattr(transform, f"image_{key}", None)
            if values is not None:
                meta[f"litvit.{key}"] = ",".join(f"{v:g}" for v in values)
    else:
        raise ExportError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
    return model.eval(), meta


# ----------------------------------------------------------------------------- command line
def _kwarg(text: str) -> Tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        parsed = value  # a bare word, e.g. global_pool=avg
    return key.strip(), parsed


def _int_list(text: str) -> List[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "export",
        help="export a model to ONNX (checked with ONNX Runtime) or a torch.export program",
        description="Export a LIT classifier, a Semantic FPN-LIT segmenter or the dense part of a LIT detector "
        "with a dynamic batch dimension. "
        f"ONNX at opset >= {DEFAULT_OPSET} (default {DEFAULT_OPSET}) also has a dynamic image size (multiples of 32); "
        f"opsets {MIN_OPSET}-{DEFAULT_OPSET - 1} fix it to --img-size. The ONNX file is checked with onnx.checker "
        "and compared with PyTorch in ONNX Runtime before it is written.",
    )
    p.add_argument("--model", "-m", required=True, help="lit_ti, lit_s, lit_m, lit_b (or a timm model for --task classify)")
    p.add_argument("--checkpoint", default=None, help="weights: a classification checkpoint (any supported layout) "
                   "or, with --task segment / detect, a 'litvit segment train' / 'litvit detect train' checkpoint")
    p.add_argument("--task", choices=TASKS, default="classify",
                   help="classify: logits; segment: Semantic FPN logits at the input size; detect: RetinaNet "
                   "per-anchor class logits and box deltas plus FPN levels, or Mask R-CNN FPN levels "
                   "(arch=mask_rcnn in --model-kwargs); anchors, NMS and RoI stages stay outside (default classify)")
    p.add_argument("--format", choices=EXPORT_FORMATS, default="onnx", help="output format (default onnx)")
    p.add_argument("--out", "-o", required=True, help="output file (.onnx or .pt2)")
    p.add_argument("--img-size", type=int, nargs="+", default=[224], metavar="SIZE",
                   help="example input side, or H W (default 224); fixed input size for opsets below 18")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                   help=f"ONNX opset (default {DEFAULT_OPSET}; {MIN_OPSET} and {MIN_OPSET + 1} fix the image size)")
    p.add_argument("--num-classes", type=int, default=None,
                   help="class count (default: from the checkpoint's classifier, else 1000; 150 for segment, 80 for detect)")
    p.add_argument("--use-ema", action="store_true", help="export the EMA weights of a litvit training checkpoint")
    p.add_argument("--model-kwargs", nargs="*", type=_kwarg, default=[], metavar="KEY=VALUE",
                   help="extra model options, e.g. depths=(1,1,1,1) embed_dims=(16,32,40,64)")
    verify = p.add_mutually_exclusive_group()
    verify.add_argument("--verify", dest="verify", action="store_true", default=True,
                        help="compare the export with PyTorch (default on)")
    verify.add_argument("--no-verify", dest="verify", action="store_false", help="skip the comparison")
    p.add_argument("--atol", type=float, default=DEFAULT_ATOL, help=f"largest accepted output difference (default {DEFAULT_ATOL:g})")
    p.add_argument("--verify-batch-sizes", type=_int_list, default=list(DEFAULT_BATCH_SIZES), metavar="B1,B2,...",
                   help="batch sizes compared (default 1,2,4)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    if len(args.img_size) > 2:
        raise ExportError(f"--img-size takes one or two values, got {len(args.img_size)}")
    if args.format == "onnx":
        # Before building the model: a missing extra should fail fast.
        require_onnx(need_exporter=_dynamic_onnx(args.opset))
    img_size = tuple(args.img_size) if len(args.img_size) == 2 else args.img_size[0]
    model_kwargs = dict(args.model_kwargs)
    num_classes = args.num_classes
    if "num_classes" in model_kwargs:
        if num_classes is not None:
            raise ExportError("give the class count once: --num-classes or --model-kwargs num_classes=...")
        num_classes = model_kwargs.pop("num_classes")
    model, meta = build_export_model(args.task, args.model, args.checkpoint, num_classes, args.use_ema, **model_kwargs)
    if args.format == "onnx":
        print(f"exporting {args.model} ({args.task}) to ONNX opset {args.opset} ...", flush=True)
    else:
        print(f"exporting {args.model} ({args.task}) with torch.export ...", flush=True)
    result = export_model(
        model,
        args.out,
        output_names=getattr(model, "output_names", ("logits",)),
        format=args.format,
        img_size=img_size,
        opset=args.opset,
        verify=args.verify,
        atol=args.atol,
        batch_sizes=args.verify_batch_sizes,
        metadata=meta,
    )
    dims = "batch, height and width" if result.dynamic_size else "batch (image size fixed)"
    print(f"wrote {result.path} ({result.path.stat().st_size / 2**20:.1f} MiB; dynamic {dims})")
    if not result.dynamic_size and (args.format != "onnx" or args.opset >= DEFAULT_OPSET):
        print(f"note: {_fixed_size_reason(args.format)}")
    if result.checks:
        runtime = "ONNX Runtime (CPU)" if args.format == "onnx" else "the saved program"
        for check in result.checks:
            print(f"  {runtime} vs PyTorch, input {'x'.join(map(str, check['shape']))}: "
                  f"max abs diff {check['max_abs_diff']:.2e}")
        print(f"verified: max abs diff {result.max_abs_diff:.2e} <= {args.atol:g}")
    return 0

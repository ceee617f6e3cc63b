"""How a model is run while measured: eager, ``torch.compile``, ONNX Runtime, or a registered runtime."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict

import torch
import torch.nn as nn

if TYPE_CHECKING:
    from .config import BenchmarkConfig

__all__ = ["Runtime", "RUNTIMES", "register_runtime", "accel_plan"]


class _Skip(Exception):
    """A model, mode and runtime that cannot be measured together (reported as skipped)."""


@dataclass(frozen=True)
class Runtime:
    """How a model is executed.

    ``prepare(model, example, config, mode)`` returns the callable that maps an input
    batch to outputs; the model is already on the device, in the memory format and
    train/eval state of ``mode``. Runtimes that cannot train (exported graphs) set
    ``supports_training=False`` and are skipped for training. Runtimes that build their program
    in the first call (``torch.compile``) set ``compiles=True``: the report gives that call's extra
    time as the compile time.
    """

    name: str
    prepare: Callable[[nn.Module, torch.Tensor, BenchmarkConfig, str], Callable[[torch.Tensor], Any]]
    supports_training: bool = True
    description: str = ""
    compiles: bool = False


RUNTIMES: Dict[str, Runtime] = {}


def register_runtime(
    name: str, *, supports_training: bool = True, description: str = "", compiles: bool = False
) -> Callable[[Callable[..., Callable[[torch.Tensor], Any]]], Callable[..., Callable[[torch.Tensor], Any]]]:
    """Decorator: register ``prepare(model, example, config, mode)`` as runtime ``name``."""

    def decorator(prepare: Callable[..., Callable[[torch.Tensor], Any]]) -> Callable[..., Callable[[torch.Tensor], Any]]:
        RUNTIMES[name] = Runtime(name, prepare, supports_training, description, compiles)
        return prepare

    return decorator


@register_runtime("eager", description="plain PyTorch eager execution")
def _prepare_eager(model: nn.Module, example: torch.Tensor, config: BenchmarkConfig, mode: str):
    return model


@register_runtime(
    "optimized", description="eager through litvit.optimize, the CPU speed layer the litvit commands apply (any model)"
)
def _prepare_optimized(model: nn.Module, example: torch.Tensor, config: BenchmarkConfig, mode: str):
    from .. import accel

    return accel.optimize(model, plan=accel_plan(config))


def accel_plan(config: BenchmarkConfig):
    """The speed layer's plan for ``config``: the same for every model of a run once the runner has
    fixed ``config.onednn`` and ``config.onednn_weight_grad``."""
    from .. import accel

    return accel.choose_plan(config.device, onednn=config.onednn, onednn_weight_grad=config.onednn_weight_grad)


@register_runtime("compile", description="torch.compile (Inductor); --compile-mode, --fullgraph", compiles=True)
def _prepare_compiled(model: nn.Module, example: torch.Tensor, config: BenchmarkConfig, mode: str):
    return torch.compile(model, mode=config.compile_mode, fullgraph=config.fullgraph)


@register_runtime(
    "onnxruntime",
    supports_training=False,
    description="ONNX Runtime (CPU, float32) running the graph 'litvit export' writes (needs litvit[export])",
)
def _prepare_onnxruntime(model: nn.Module, example: torch.Tensor, config: BenchmarkConfig, mode: str):
    # The conversion ``litvit export`` uses, from the layer below both tools.
    from .. import graph

    if not config.device.startswith("cpu"):
        raise _Skip("the onnxruntime runtime runs on CPU (the onnxruntime package has no CUDA provider here)")
    if config.precision != "float32":
        raise _Skip("the onnxruntime runtime measures float32 only")
    # Same intra-op threads as torch, so the comparison with eager/compile uses the same cores.
    return graph.onnxruntime_runner(model, example, threads=torch.get_num_threads())

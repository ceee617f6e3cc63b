"""What ``litvit benchmark`` measures: :class:`BenchmarkConfig` and the result fields."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import torch

from ..errors import LitvitError
from .runtimes import RUNTIMES

__all__ = ["BenchmarkConfig", "PRECISIONS", "MODES", "RESULT_FIELDS"]


PRECISIONS = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
MODES = ("inference", "train")

# Columns of the CSV file and keys of every JSON result, in this order.
RESULT_FIELDS = [
    "model",
    "mode",
    "img_size",
    "batch_size",
    "precision",
    "channels_last",
    "runtime",
    "device",
    "status",
    "step_ms",
    "step_ms_min",
    "step_ms_max",
    "step_ms_repeats",
    "spread_pct",
    "img_per_s",
    "cpu_ms",
    "repeats",
    "steps_per_repeat",
    "settle_rounds",
    "first_step_ms",
    "compile_s",
    "gmacs",
    "gflops_per_img",
    "achieved_gflops",
    "peak_fraction",
    "cpu_peak_fraction",
    "peak_mem_mb",
    "mem_base_mb",
    "params_m",
    "error",
]


@dataclass
class BenchmarkConfig:
    """What to measure. Batch sizes and image sizes apply to every model."""

    models: List[str]
    modes: Sequence[str] = MODES
    batch_size: int = 32
    train_batch_size: int = 16
    img_sizes: Sequence[int] = (224,)
    precision: str = "float32"
    channels_last: bool = False
    runtime: str = "eager"
    # Several runtimes are measured side by side, interleaved like the models; empty: ``runtime`` alone.
    runtimes: Sequence[str] = ()
    compile_mode: Optional[str] = None
    fullgraph: bool = False
    device: str = "cpu"
    warmup: int = 1
    repeats: int = 5
    steps: int = 1
    num_classes: int = 1000
    matmul_peak: bool = False
    matmul_size: Optional[int] = None
    memory: bool = True
    threads: Optional[int] = None
    tune_malloc: bool = True
    seed: int = 0
    # The "optimized" runtime's choices (litvit.accel.choose_plan); None: decided once per run.
    onednn: Optional[bool] = None
    onednn_weight_grad: Optional[bool] = None
    model_kwargs: Dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        if not self.models:
            raise LitvitError("benchmark: give at least one model name")
        for mode in self.modes:
            if mode not in MODES:
                raise LitvitError(f"benchmark: unknown mode {mode!r} (choose from {', '.join(MODES)})")
        if self.precision not in PRECISIONS:
            raise LitvitError(f"benchmark: unknown precision {self.precision!r} (choose from {', '.join(PRECISIONS)})")
        for runtime in self.runtime_names():
            if runtime not in RUNTIMES:
                raise LitvitError(f"benchmark: unknown runtime {runtime!r} (choose from {', '.join(RUNTIMES)})")
        for name, value in (("batch size", self.batch_size), ("train batch size", self.train_batch_size),
                            ("repeats", self.repeats), ("steps", self.steps)):
            if value < 1:
                raise LitvitError(f"benchmark: {name} must be at least 1, got {value}")
        if self.warmup < 0:
            raise LitvitError(f"benchmark: warm-up must be 0 or more, got {self.warmup}")
        for size in self.img_sizes:
            if size < 1:
                raise LitvitError(f"benchmark: image size must be positive, got {size}")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise LitvitError(f"benchmark: device {self.device!r} requested but CUDA is not available")
        if self.precision == "float16" and not self.device.startswith("cuda"):
            raise LitvitError("benchmark: float16 autocast needs CUDA; use bfloat16 on CPU")

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def runtime_names(self) -> List[str]:
        return list(dict.fromkeys(self.runtimes)) or [self.runtime]

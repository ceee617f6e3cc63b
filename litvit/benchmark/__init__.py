"""Side-by-side speed, memory and FLOP measurements of litvit and timm models.

Written after timm's ``benchmark.py`` (which is not part of the timm package), with two
differences that matter on small shared machines:

* models are measured **interleaved**: every timed repeat visits every model (and the
  plain matrix-multiply probe) in turn, so a burst of load from another process slows
  all of them alike and the ratios between them stay meaningful; each repeat starts one
  model later than the one before, so no model always runs in the same place;
* peak memory is measured in a **fresh subprocess** per model and mode, so it is that
  model's own peak: the CUDA caching allocator's ``max_memory_allocated`` on GPU, the
  process's peak resident set size (``VmHWM``) on CPU. The CPU figure includes the
  interpreter, torch and the model weights; ``mem_base_mb`` is the same process's RSS
  after its imports, so ``peak_mem_mb - mem_base_mb`` is what the model added.

How a model is run is a *runtime* (:data:`RUNTIMES`): ``eager`` and ``compile``
(``torch.compile``) are built in; :func:`register_runtime` adds others (an ONNX Runtime
session, say) without touching the measuring code.

FLOPs are counted with :class:`torch.utils.flop_counter.FlopCounterMode` (matmuls,
convolutions and attention; elementwise ops are free), per image, for a forward pass
(inference) or a forward and backward pass (training). ``GMACs`` is half the forward
FLOP count, the convention of the LIT paper and of timm's tables.
The package: :mod:`~litvit.benchmark.config` (what to measure), :mod:`~litvit.benchmark.runtimes`,
:mod:`~litvit.benchmark.steps` (the measured step), :mod:`~litvit.benchmark.timing` (FLOPs and the
matmul peak), :mod:`~litvit.benchmark.memory`, :mod:`~litvit.benchmark.runner` (the interleaved
loop) and :mod:`~litvit.benchmark.report` (tables and files).
"""
from __future__ import annotations

from .config import MODES, PRECISIONS, RESULT_FIELDS, BenchmarkConfig
from .memory import LiveStorage, live_tensor_peak, live_tensor_peak_bytes, measure_peak_memory
from .report import format_ratios, format_table, pair_ratios, plot_sweep, write_csv, write_json
from .runner import CPU_SETTLE_ROUNDS, run_benchmark
from .runtimes import RUNTIMES, Runtime, register_runtime
from .steps import create_bench_model, tune_cpu_malloc
from .timing import MATMUL_PRODUCT_NAMES, TRAINING_SCOPE_WORDS, count_flops, measure_matmul_peak

__all__ = [
    "BenchmarkConfig",
    "Runtime",
    "RUNTIMES",
    "register_runtime",
    "run_benchmark",
    "measure_matmul_peak",
    "count_flops",
    "format_table",
    "format_ratios",
    "pair_ratios",
    "write_json",
    "write_csv",
    "plot_sweep",
    "tune_cpu_malloc",
    "live_tensor_peak_bytes",
    "live_tensor_peak",
    "LiveStorage",
    "RESULT_FIELDS",
    "MODES",
    "PRECISIONS",
    "measure_peak_memory",
    "CPU_SETTLE_ROUNDS",
    "create_bench_model",
    "MATMUL_PRODUCT_NAMES",
    "TRAINING_SCOPE_WORDS",
]

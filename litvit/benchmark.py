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
"""
from __future__ import annotations

import csv
import ctypes
import dataclasses
import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from .errors import LitvitError

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
]

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


# ----------------------------------------------------------------------------- config
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


# ----------------------------------------------------------------------------- runtimes
@dataclass(frozen=True)
class Runtime:
    """How a model is executed.

    ``prepare(model, example, config, mode)`` returns the callable that maps an input
    batch to outputs; the model is already on the device, in the memory format and
    train/eval state of ``mode``. Runtimes that cannot train (exported graphs) set
    ``supports_training=False`` and are skipped for training.
    """

    name: str
    prepare: Callable[[nn.Module, torch.Tensor, BenchmarkConfig, str], Callable[[torch.Tensor], Any]]
    supports_training: bool = True
    description: str = ""


RUNTIMES: Dict[str, Runtime] = {}


def register_runtime(
    name: str, *, supports_training: bool = True, description: str = ""
) -> Callable[[Callable[..., Callable[[torch.Tensor], Any]]], Callable[..., Callable[[torch.Tensor], Any]]]:
    """Decorator: register ``prepare(model, example, config, mode)`` as runtime ``name``."""

    def decorator(prepare: Callable[..., Callable[[torch.Tensor], Any]]) -> Callable[..., Callable[[torch.Tensor], Any]]:
        RUNTIMES[name] = Runtime(name, prepare, supports_training, description)
        return prepare

    return decorator


@register_runtime("eager", description="plain PyTorch eager execution")
def _prepare_eager(model: nn.Module, example: torch.Tensor, config: BenchmarkConfig, mode: str):
    return model


@register_runtime("compile", description="torch.compile (Inductor); --compile-mode, --fullgraph")
def _prepare_compiled(model: nn.Module, example: torch.Tensor, config: BenchmarkConfig, mode: str):
    return torch.compile(model, mode=config.compile_mode, fullgraph=config.fullgraph)


@register_runtime(
    "onnxruntime",
    supports_training=False,
    description="ONNX Runtime (CPU, float32) running the graph 'litvit export' writes (needs litvit[export])",
)
def _prepare_onnxruntime(model: nn.Module, example: torch.Tensor, config: BenchmarkConfig, mode: str):
    from .export import onnxruntime_runner

    if not config.device.startswith("cpu"):
        raise _Skip("the onnxruntime runtime runs on CPU (the onnxruntime package has no CUDA provider here)")
    if config.precision != "float32":
        raise _Skip("the onnxruntime runtime measures float32 only")
    # Same intra-op threads as torch, so the comparison with eager/compile uses the same cores.
    return onnxruntime_runner(model, example, threads=torch.get_num_threads())


# ----------------------------------------------------------------------------- helpers
def tune_cpu_malloc() -> bool:
    """Keep freed memory in the process instead of returning it to the kernel (glibc only).

    glibc serves every allocation above 32 MB with a fresh ``mmap`` and unmaps it on
    free, so each large activation is page-faulted in (and zeroed by the kernel) on
    every forward pass. On CPU this doubled the time of LIT's elementwise ops (see the
    speed notes). Disabling ``mmap`` for malloc and trimming makes the heap reuse those
    pages, which is what jemalloc/tcmalloc do by default. Trimming is off entirely, not
    just above 1 GB as before: with several models interleaved in one process, a
    training step that freed more than that handed it back, and the next model faulted
    it in again (PVTv2-b2 training steps varied by 40 %). It is a process-wide setting:
    peak RSS then stays at its high-water mark. Returns whether it could be applied.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_max = -1, -4
        ok = libc.mallopt(m_mmap_max, 0) == 1
        ok = libc.mallopt(m_trim_threshold, -1) == 1 and ok  # -1: never trim (mallopt(3))
        return bool(ok)
    except (OSError, AttributeError):
        return False


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(device: torch.device, precision: str):
    if precision == "float32":
        return torch.autocast(device_type=device.type, enabled=False)
    return torch.autocast(device_type=device.type, dtype=PRECISIONS[precision])


def _lit_names() -> List[str]:
    from .models import LIT_MODELS

    return list(LIT_MODELS)


def create_bench_model(name: str, img_size: int, config: BenchmarkConfig) -> nn.Module:
    """An untrained model (never downloads weights) built for ``img_size`` where the
    architecture takes the size as an argument (LIT, Swin, ViT); otherwise as is."""
    import timm

    from . import models  # noqa: F401  (registers LIT with timm)

    if not timm.is_model(name):
        raise LitvitError(f"benchmark: unknown model {name!r} (not a litvit or timm model name)")
    kwargs = dict(pretrained=False, num_classes=config.num_classes, **config.model_kwargs)
    try:
        return timm.create_model(name, img_size=img_size, **kwargs)
    except TypeError as err:
        if "img_size" not in str(err):
            raise
        return timm.create_model(name, **kwargs)


def count_flops(model: nn.Module, example: torch.Tensor) -> float:
    """FLOPs of one forward pass over ``example``, per image (matmuls, convolutions, attention)."""
    from torch.utils.flop_counter import FlopCounterMode

    from .ops.flops import cpu_attention_flop_formulas

    was_training = model.training
    model.eval()
    try:
        counter = FlopCounterMode(display=False, custom_mapping=cpu_attention_flop_formulas())
        with torch.no_grad(), counter:
            model(example)
    finally:
        model.train(was_training)
    return counter.get_total_flops() / example.shape[0]


# A training step is counted as three forward passes (the backward pass computes two
# products per forward product): FlopCounterMode's own backward count multiplies the
# cost of grouped (e.g. depthwise) convolutions by the group count in torch 2.x.
TRAIN_FLOPS_PER_FORWARD = 3


def measure_matmul_peak(
    device: torch.device, precision: str = "float32", size: Optional[int] = None, repeats: int = 5
) -> float:
    """Best plain ``size x size`` matrix-multiply throughput (GFLOP/s) in ``precision``: on the
    CPU in float32 the faster of ATen's ``mm`` and oneDNN's product, which litvit's CPU paths use
    and which some CPUs run twice as fast (a Zen 5 EPYC: 436-481 against MKL's 189-221 GFLOP/s)."""
    return max(wall for wall, _ in _matmul_peak(device, precision, size, repeats).values())


def _matmul_peak(
    device: torch.device, precision: str, size: Optional[int], repeats: int
) -> Dict[str, Tuple[float, float]]:
    """Per library of :func:`~litvit.ops.onednn.square_products`, (wall-clock, process-CPU-time)
    GFLOP/s, best of ``repeats``."""
    from .ops.onednn import square_products

    dtype = PRECISIONS[precision]
    size = size or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    products = square_products(a, b)
    inner = 10 if device.type == "cuda" else 2
    best = {name: (math.inf, math.inf) for name in products}
    for i in range(repeats + 1):
        for name, product in products.items():
            _sync(device)
            start, cpu_start = time.perf_counter(), time.process_time()
            for _ in range(inner):
                product()
            _sync(device)
            if i:  # the first round warms up the libraries
                wall = (time.perf_counter() - start) / inner
                cpu = max(time.process_time() - cpu_start, 1e-9) / inner
                best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
    flops = 2 * size**3 / 1e9
    return {name: (flops / wall, flops / cpu) for name, (wall, cpu) in best.items()}


MATMUL_PRODUCT_NAMES = {"mm": "torch.mm", "onednn": "oneDNN"}
# litvit.ops.onednn.training_linear_scope's answers, for the table's footer.
TRAINING_SCOPE_WORDS = {"none": "ATen", "mlp": "oneDNN in the MLP-only stages", "all": "oneDNN throughout"}


class _MatmulProbe:
    """One matmul timing per benchmark round, so the peak sees the same load as the models.

    The peak is the library's product (:func:`~litvit.ops.onednn.square_products`) with the
    highest median rate."""

    def __init__(self, device: torch.device, precision: str, size: Optional[int]):
        self.device, self.precision, self.size = device, precision, size
        self.samples: Dict[str, List[Tuple[float, float]]] = {}

    def __call__(self) -> None:
        for name, rates in _matmul_peak(self.device, self.precision, self.size, repeats=2).items():
            self.samples.setdefault(name, []).append(rates)

    def medians(self) -> Dict[str, float]:
        """Median wall-clock GFLOP/s of each product."""
        return {n: statistics.median(w for w, _ in v) for n, v in self.samples.items() if v}

    @property
    def product(self) -> Optional[str]:
        medians = self.medians()
        return max(medians, key=medians.get) if medians else None

    @property
    def values(self) -> List[float]:
        return [wall for wall, _ in self.samples[self.product]] if self.product else []

    @property
    def gflops(self) -> Optional[float]:
        return self.medians().get(self.product) if self.product else None

    @property
    def cpu_gflops(self) -> Optional[float]:
        """GFLOP per second of process CPU time: on CPU, unaffected by time spent descheduled."""
        return statistics.median(c for _, c in self.samples[self.product]) if self.product else None


def _build_step(
    model: nn.Module, name: str, mode: str, img_size: int, config: BenchmarkConfig, device: torch.device,
    runtime_name: Optional[str] = None,
) -> Tuple[Callable[[], None], float, float]:
    """A no-argument callable running one step; FLOPs per image of that step and of a forward pass."""
    batch = config.batch_size if mode == "inference" else config.train_batch_size
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    model.to(device=device, memory_format=memory_format)
    in_chans = getattr(model, "in_chans", None) or 3
    generator = torch.Generator().manual_seed(config.seed)
    x = torch.randn(batch, in_chans, img_size, img_size, generator=generator)
    x = x.to(device=device, memory_format=memory_format)
    flop_example = x[: min(2, batch)]
    with _autocast(device, config.precision):
        forward_flops = count_flops(model, flop_example)
    flops = forward_flops * (TRAIN_FLOPS_PER_FORWARD if mode == "train" else 1)
    runtime = RUNTIMES[runtime_name or config.runtime]
    if mode == "inference":
        model.eval()
        runner = runtime.prepare(model, x, config, mode)

        def step() -> None:
            with torch.inference_mode(), _autocast(device, config.precision):
                runner(x)

        return step, flops, forward_flops

    if not runtime.supports_training:
        raise _Skip(f"runtime {runtime.name!r} cannot train")
    model.train()
    runner = runtime.prepare(model, x, config, mode)
    target = torch.randint(0, max(config.num_classes, 1), (batch,), generator=generator).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    scaler = torch.amp.GradScaler(device.type, enabled=config.precision == "float16")
    loss_fn = nn.CrossEntropyLoss()

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with _autocast(device, config.precision):
            out = runner(x)
            loss = loss_fn(out.float(), target) if config.num_classes > 0 else out.float().mean()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    return train_step, flops, forward_flops


class _Skip(Exception):
    pass


def _is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower()


def _record_failure(result: Dict[str, Any], err: BaseException) -> None:
    """Mark a model's result failed with a one-line reason; the run goes on with the others."""
    result.update(status="oom" if _is_oom(err) else "error", error=f"{type(err).__name__}: {err}".splitlines()[0])


def _setup_process(config: BenchmarkConfig) -> torch.device:
    if config.threads:
        torch.set_num_threads(config.threads)
    if config.tune_malloc and not config.device.startswith("cuda"):
        tune_cpu_malloc()
    torch.manual_seed(config.seed)
    return torch.device(config.device)


# ----------------------------------------------------------------------------- memory worker
def _current_rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return _max_rss_mb()


@dataclass(frozen=True)
class LiveStorage:
    """One storage alive at the live-tensor peak: its size and what made it."""

    nbytes: int
    op: str  # the ATen op that returned it, e.g. "aten.linear.default"
    shape: Tuple[int, ...]  # of the tensor that op returned
    dtype: torch.dtype
    module: str  # qualified name of the innermost module that was running ("" outside any)


class _LiveTensorBytes(torch.utils._python_dispatch.TorchDispatchMode):
    """Sum of the storages that ops have created and that are still alive, and its peak.

    With ``module_names`` (``id(module) -> qualified name``) it also notes where each storage
    came from and keeps the list of storages alive at the peak.
    """

    def __init__(self, module_names: Optional[Dict[int, str]] = None) -> None:
        super().__init__()
        from torch.multiprocessing.reductions import StorageWeakRef

        self._weak_ref = StorageWeakRef
        self.live: Dict[Any, int] = {}
        self.current = self.peak = 0
        self._module_names = module_names
        self._origin: Dict[Any, Tuple[str, Tuple[int, ...], torch.dtype, str]] = {}
        self.at_peak: List[LiveStorage] = []
        self.module_stack: List[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for ref in [ref for ref in self.live if ref.expired()]:
            self.current -= self.live.pop(ref)
            self._origin.pop(ref, None)
        # Views and in-place results share an input's storage, which is either counted already
        # or existed before (a parameter, the input): only new storages count.
        inputs = {self._weak_ref(t.untyped_storage()) for t in _tensor_leaves((args, kwargs))}
        for t in _tensor_leaves(out):
            storage = t.untyped_storage()
            ref = self._weak_ref(storage)
            if ref not in inputs and ref not in self.live:
                self.live[ref] = storage.nbytes()
                self.current += storage.nbytes()
                if self._module_names is not None:
                    module = self.module_stack[-1] if self.module_stack else ""
                    self._origin[ref] = (str(func), tuple(t.shape), t.dtype, module)
        if self.current > self.peak:
            self.peak = self.current
            if self._module_names is not None:
                self.at_peak = [LiveStorage(self.live[ref], *self._origin[ref]) for ref in self.live]
        return out


def _tensor_leaves(tree: Any) -> List[torch.Tensor]:
    leaves = torch.utils._pytree.tree_leaves(tree)
    # Sparse and nested tensors have no single storage to count; meta tensors have no memory.
    return [t for t in leaves if isinstance(t, torch.Tensor) and t.layout == torch.strided and not t.is_meta]


def live_tensor_peak_bytes(fn: Callable[[], Any]) -> int:
    """Peak bytes of the tensors that ``fn``'s ops create and hold at once.

    Counted storage by storage at every op, so it is the same on every device and free of
    allocator slack; tensors that existed before (parameters, the input) are not counted, nor
    are an op's internal workspaces. Unlike ``torch.distributed._tools.mem_tracker`` it
    installs no module hooks, so code paths that step aside for hooks run as they would
    untracked.
    """
    with _LiveTensorBytes() as mode:
        fn()
    return mode.peak


def live_tensor_peak(fn: Callable[[], Any], model: nn.Module) -> Tuple[int, List[LiveStorage]]:
    """:func:`live_tensor_peak_bytes`, and the storages alive at that peak, largest first.

    Each storage names the op that made it and the innermost submodule of ``model`` called
    (through ``module(...)``) around that op; code that calls a module's weights directly, as the
    fused inference paths do, is named after the module it runs in. Their sizes add up to the
    peak, which equals :func:`live_tensor_peak_bytes`'s. Slower: it is for finding where memory goes.
    """
    names = {id(module): name for name, module in model.named_modules()}
    mode = _LiveTensorBytes(names)
    call = nn.Module.__call__

    # Which module runs is tracked by wrapping Module.__call__ for the duration, not with module
    # hooks: LIT's fast paths step aside when hooks are installed, and the point is to see the
    # path that runs untracked. (Reading ``self`` off the Python stack would not do either:
    # ``frame.f_locals`` keeps a frame's locals alive and so moves the peak.)
    def tracked_call(module: nn.Module, *args: Any, **kwargs: Any) -> Any:
        name = names.get(id(module))
        if name is None:
            return call(module, *args, **kwargs)
        mode.module_stack.append(name)
        try:
            return call(module, *args, **kwargs)
        finally:
            mode.module_stack.pop()

    nn.Module.__call__ = tracked_call
    try:
        with mode:
            fn()
    finally:
        nn.Module.__call__ = call
    return mode.peak, sorted(mode.at_peak, key=lambda s: -s.nbytes)


def _max_rss_mb() -> float:
    """This process's peak resident set size.

    Linux: ``VmHWM`` of ``/proc/self/status``. Not ``ru_maxrss``: Linux carries it over from
    the parent across fork and exec, so a worker started by a big benchmark process would
    report the parent's RSS.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB on Linux


def _memory_worker(spec: Dict[str, Any]) -> Dict[str, Any]:
    """Runs in a fresh process: build one model, run warm-up and two steps, report the peak."""
    config = BenchmarkConfig(**spec["config"])
    device = _setup_process(config)
    base = _current_rss_mb() if device.type == "cpu" else 0.0
    model = create_bench_model(spec["model"], spec["img_size"], config)
    step, _, _ = _build_step(model, spec["model"], spec["mode"], spec["img_size"], config, device, spec.get("runtime"))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(max(config.warmup, 1) + 2):
        step()
    _sync(device)
    if device.type == "cuda":
        return {"peak_mem_mb": torch.cuda.max_memory_allocated(device) / 2**20, "mem_base_mb": 0.0}
    return {"peak_mem_mb": _max_rss_mb(), "mem_base_mb": base}


def measure_peak_memory(
    name: str, mode: str, img_size: int, config: BenchmarkConfig, runtime: Optional[str] = None
) -> Dict[str, Any]:
    """Peak memory of one model and mode, measured in a fresh Python process."""
    from .ops.deform import get_dtm_kernel
    from .ops.onednn import get_cpu_mlp_kernel

    spec = {"model": name, "mode": mode, "img_size": img_size, "config": config.to_dict(), "runtime": runtime}
    proc = subprocess.run(
        [sys.executable, "-m", "litvit.benchmark", "--memory-worker", json.dumps(spec)],
        capture_output=True,
        text=True,
        # The worker is a new interpreter: hand it the kernel choices this process uses.
        env={**os.environ, "LITVIT_DTM_KERNEL": get_dtm_kernel(), "LITVIT_CPU_MLP_KERNEL": get_cpu_mlp_kernel()},
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"memory worker failed: {tail}"}
    return json.loads(lines[-1])


# ----------------------------------------------------------------------------- main loop
def _new_result(
    name: str, mode: str, img_size: int, config: BenchmarkConfig, runtime: Optional[str] = None
) -> Dict[str, Any]:
    result: Dict[str, Any] = {key: None for key in RESULT_FIELDS}
    result.update(
        model=name,
        mode=mode,
        img_size=img_size,
        batch_size=config.batch_size if mode == "inference" else config.train_batch_size,
        precision=config.precision,
        channels_last=config.channels_last,
        runtime=runtime or config.runtime,
        device=config.device,
        status="ok",
        steps_per_repeat=config.steps,
    )
    return result


def _log(message: str, log: Optional[Callable[[str], None]]) -> None:
    if log is not None:
        log(message)


def run_benchmark(config: BenchmarkConfig, log: Optional[Callable[[str], None]] = print) -> Dict[str, Any]:
    """Measure every model x mode x image size of ``config``. Returns ``{"meta", "results"}``."""
    config.validate()
    device = _setup_process(config)
    probe = _MatmulProbe(device, config.precision, config.matmul_size) if config.matmul_peak else None
    results: List[Dict[str, Any]] = []
    for img_size in config.img_sizes:
        for mode in config.modes:
            results.extend(_run_group(config, device, mode, img_size, probe, log))
    peak = probe.gflops if probe else None
    cpu_peak = probe.cpu_gflops if (probe and device.type == "cpu") else None
    for result in results:
        if peak and result["achieved_gflops"] is not None:
            result["peak_fraction"] = result["achieved_gflops"] / peak
        if cpu_peak and result["cpu_ms"] and result["gflops_per_img"] is not None:
            # FLOPs per CPU-second over the matmul's FLOPs per CPU-second.
            cpu_rate = result["gflops_per_img"] * result["batch_size"] / (result["cpu_ms"] / 1e3)
            result["cpu_peak_fraction"] = cpu_rate / cpu_peak
    meta = _meta(config, peak, probe.values if probe else [])
    meta["matmul_peak_cpu_gflops"] = cpu_peak
    meta["matmul_peak_product"] = probe.product if probe else None
    meta["matmul_product_gflops"] = probe.medians() if probe else {}
    return {"meta": meta, "results": results}


def _run_group(
    config: BenchmarkConfig,
    device: torch.device,
    mode: str,
    img_size: int,
    probe: Optional[_MatmulProbe],
    log: Optional[Callable[[str], None]],
) -> List[Dict[str, Any]]:
    entries = []
    runtimes = config.runtime_names()
    for name, runtime in [(n, r) for n in config.models for r in runtimes]:
        label = name if len(runtimes) == 1 else f"{name} ({runtime})"
        result = _new_result(name, mode, img_size, config, runtime)
        entries.append(result)
        try:
            model = create_bench_model(name, img_size, config)
            result["params_m"] = sum(p.numel() for p in model.parameters()) / 1e6
            step, flops, forward_flops = _build_step(model, name, mode, img_size, config, device, runtime)
            result["gflops_per_img"] = flops / 1e9
            result["gmacs"] = forward_flops / 2e9
            _log(f"[{mode} {img_size}px] {label}: warm-up ({config.warmup} steps)", log)
            for _ in range(config.warmup):
                step()
            _sync(device)
            result["_step"], result["_times"], result["_cpu"] = step, [], []
        except LitvitError:
            raise
        except _Skip as err:
            result.update(status="skipped", error=str(err))
        except Exception as err:  # noqa: BLE001  (one failing model must not end the run)
            _record_failure(result, err)
            _log(f"[{mode} {img_size}px] {label}: {result['status']}: {result['error']}", log)
            if device.type == "cuda":
                torch.cuda.empty_cache()

    live = [r for r in entries if "_step" in r]
    if device.type == "cpu" and config.warmup > 0:
        rounds = _settle_cpu_heap(live, f"[{mode} {img_size}px]", log)
        for result in live:
            result["settle_rounds"] = rounds
    for repeat in range(config.repeats):
        if probe is not None:
            probe()
        for result in _visiting_order(live, repeat):
            if result["status"] != "ok":
                continue
            try:
                _sync(device)
                start, cpu_start = time.perf_counter(), time.process_time()
                for _ in range(config.steps):
                    result["_step"]()
                _sync(device)
                result["_times"].append((time.perf_counter() - start) / config.steps)
                result["_cpu"].append((time.process_time() - cpu_start) / config.steps)
            except Exception as err:  # noqa: BLE001
                _record_failure(result, err)
        times = ", ".join(f"{_label(r, runtimes)} {1e3 * r['_times'][-1]:.0f} ms" for r in live if r["status"] == "ok" and r["_times"])
        _log(f"[{mode} {img_size}px] repeat {repeat + 1}/{config.repeats}: {times}", log)

    for result in entries:
        result.pop("_step", None)
        times = result.pop("_times", None)
        cpu_times = result.pop("_cpu", None)
        if result["status"] == "ok" and times:
            median = statistics.median(times)
            result.update(
                cpu_ms=1e3 * statistics.median(cpu_times),
                step_ms=1e3 * median,
                step_ms_min=1e3 * min(times),
                step_ms_max=1e3 * max(times),
                step_ms_repeats=[1e3 * t for t in times],
                spread_pct=100 * (max(times) - min(times)) / median,
                img_per_s=result["batch_size"] / median,
                repeats=len(times),
            )
            if result["gflops_per_img"] is not None:
                result["achieved_gflops"] = result["gflops_per_img"] * result["img_per_s"]
    if config.memory:
        for result in entries:
            if result["status"] != "ok":
                continue
            _log(f"[{mode} {img_size}px] {result['model']}: peak memory (fresh process)", log)
            memory = measure_peak_memory(result["model"], mode, img_size, config, result["runtime"])
            if "error" in memory:
                result["error"] = memory["error"]
            else:
                result.update(peak_mem_mb=memory["peak_mem_mb"], mem_base_mb=memory["mem_base_mb"])
    return entries


def _visiting_order(entries: List[Dict[str, Any]], repeat: int) -> List[Dict[str, Any]]:
    """The models of timed repeat ``repeat``, rotated by one place per repeat.

    On a small VM a step's time depends on what ran just before it (the probe, a model with a
    different memory footprint): in one sweep the variant timed last in every round read 5-10 %
    faster than when the order was shuffled. Rotating puts every model in every place equally
    often over ``len(entries)`` repeats, so no ratio inherits a fixed place's bias.
    """
    if not entries:
        return entries
    shift = repeat % len(entries)
    return entries[shift:] + entries[:shift]


# Untimed rounds over all models, at most, until the process stops page-faulting memory in.
CPU_SETTLE_ROUNDS = 5
# Fewer new pages than this in a round (1 MB) counts as settled: Python's own small allocations.
CPU_SETTLE_FAULTS = 256


def _minor_faults() -> Optional[int]:
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _page_size() -> int:
    import resource

    return resource.getpagesize()


def _settle_cpu_heap(live: List[Dict[str, Any]], prefix: str, log: Optional[Callable[[str], None]]) -> int:
    """Run untimed rounds over every model until a round needs no new memory; returns the rounds run.

    With several models in one process, the heap keeps growing for a few rounds after each
    model's own warm-up, as each model's buffers stop fitting the holes the others left; every
    step that grows it page-faults hundreds of MB in. PVTv2-b2 training took 2.2-3.4 s per
    step until then and 2.1-2.2 s after on an AVX-512 Xeon, so timing before the heap
    settles measures the allocator, not the model.
    """
    for round_ in range(1, CPU_SETTLE_ROUNDS + 1):
        before = _minor_faults()
        if before is None:
            return round_ - 1
        for result in live:
            if result["status"] != "ok":
                continue
            try:
                result["_step"]()
            except Exception as err:  # noqa: BLE001
                _record_failure(result, err)
        faults = _minor_faults() - before
        _log(f"{prefix} settling the heap, round {round_}: {faults * _page_size() / 2**20:.0f} MB paged in", log)
        if faults < CPU_SETTLE_FAULTS:
            return round_
    return CPU_SETTLE_ROUNDS


def _meta(config: BenchmarkConfig, peak: Optional[float], peak_samples: List[float]) -> Dict[str, Any]:
    import timm

    from . import __version__
    from .ops.deform import get_dtm_kernel
    from .ops.onednn import get_cpu_mlp_kernel, training_linear_scope

    device = torch.device(config.device)
    # What LIT's Linear layers ran on in float32 CPU inference, and which of them took oneDNN in
    # training; other runs use ATen throughout.
    cpu_float32 = device.type == "cpu" and config.precision == "float32"
    cpu_mlp = get_cpu_mlp_kernel(torch.empty(0)) if cpu_float32 else None
    cpu_train_scope = training_linear_scope(torch.empty(0)) if cpu_float32 and "train" in config.modes else None
    if device.type == "cuda":
        device_name = torch.cuda.get_device_name(device)
    else:
        device_name = _cpu_name()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "device_name": device_name,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "litvit": __version__,
        "python": platform.python_version(),
        "matmul_peak_gflops": peak,
        "matmul_peak_samples": peak_samples,
        "dtm_kernel": get_dtm_kernel(device),  # what ran: CPU always samples with grid_sample
        "cpu_mlp_kernel": cpu_mlp,
        "cpu_training_onednn_scope": cpu_train_scope,
        "config": config.to_dict(),
    }


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# ----------------------------------------------------------------------------- output
def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _label(result: Dict[str, Any], runtimes: Sequence[str]) -> str:
    """The model's name, with its runtime when several runtimes are measured."""
    return result["model"] if len(runtimes) < 2 else f"{result['model']} ({result['runtime']})"


def format_table(report: Dict[str, Any]) -> str:
    """The results as a fixed-width text table, plus the matmul peak if measured."""
    runtimes = sorted({r["runtime"] for r in report["results"]})
    header = ["model", "mode", "img", "batch", "step ms", "spread", "cpu ms", "img/s", "GMACs", "GFLOP/s", "%peak", "%peak cpu", "peak MB", "status"]
    rows = []
    for r in report["results"]:
        rows.append(
            [
                _label(r, runtimes),
                r["mode"],
                str(r["img_size"]),
                str(r["batch_size"]),
                _fmt(r["step_ms"], ".1f"),
                "-" if r["spread_pct"] is None else f"{r['spread_pct']:.0f}%",
                _fmt(r["cpu_ms"], ".0f"),
                _fmt(r["img_per_s"], ".2f"),
                _fmt(r["gmacs"], ".2f"),
                _fmt(r["achieved_gflops"], ".1f"),
                "-" if r["peak_fraction"] is None else f"{100 * r['peak_fraction']:.0f}%",
                "-" if r["cpu_peak_fraction"] is None else f"{100 * r['cpu_peak_fraction']:.0f}%",
                _fmt(r["peak_mem_mb"], ".0f"),
                r["status"],
            ]
        )
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) if i < 2 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths)))]
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        lines.append("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
    meta = report["meta"]
    config = meta["config"]
    lines.append(
        f"device: {meta['device_name']} ({config['device']}, {meta['threads']} threads); precision {config['precision']}; "
        f"runtime {', '.join(runtimes) or config['runtime']}; channels-last {'on' if config['channels_last'] else 'off'}; "
        f"{config['repeats']} repeats x {config['steps']} steps after {config['warmup']} warm-up"
        + (f"; DTM kernel {meta['dtm_kernel']}" if config["device"].startswith("cuda") and "dtm_kernel" in meta else "")
        + (f"; CPU MLP kernel {meta['cpu_mlp_kernel']}" if meta.get("cpu_mlp_kernel") else "")
        + (f" (training: {TRAINING_SCOPE_WORDS[meta['cpu_training_onednn_scope']]})" if meta.get("cpu_training_onednn_scope") else "")
    )
    if meta.get("matmul_peak_gflops"):
        products = meta.get("matmul_product_gflops") or {}
        line = f"matmul peak: {meta['matmul_peak_gflops']:.1f} GFLOP/s"
        if len(products) > 1:  # say which product set it, and what the others reached
            others = [f"{MATMUL_PRODUCT_NAMES[n]} {g:.1f}" for n, g in products.items() if n != meta["matmul_peak_product"]]
            line += f" from {MATMUL_PRODUCT_NAMES[meta['matmul_peak_product']]} ({', '.join(others)})"
        line += f", median of {len(meta['matmul_peak_samples'])} interleaved probes"
        if meta.get("matmul_peak_cpu_gflops"):
            line += f"; {meta['matmul_peak_cpu_gflops']:.1f} GFLOP per CPU-second (%peak cpu compares CPU time)"
        lines.append(line)
    for r in report["results"]:
        if r["error"]:
            lines.append(f"note: {_label(r, runtimes)} {r['mode']} {r['img_size']}px: {r['error']}")
    return "\n".join(lines)


def pair_ratios(report: Dict[str, Any], pairs: Iterable[Tuple[str, str]]) -> List[Dict[str, Any]]:
    """Images-per-second ratio ``a / b`` for each (a, b) pair, per mode, image size and runtime.

    ``ratio_min`` and ``ratio_max`` bound the ratio taken repeat by repeat (None with fewer than
    two paired repeats). The two models' steps of one timed round ran close together, so on a
    shared machine this range shows how much a single run's ratio can move; the ratio of the
    medians always lies within it.

    With a matmul probe in the report each row also has a ``ceiling``: the ratio ``a`` would reach
    if every FLOP it counts ran at the probe's rate and ``b`` stayed as measured. A ratio far below
    its ceiling leaves room in ``a``'s implementation; one near it is bounded by the FLOPs.
    """
    index = {(r["model"], r["mode"], r["img_size"], r["runtime"]): r for r in report["results"]}
    rows = []
    for a, b in pairs:
        for (model, mode, size, runtime), ra in index.items():
            rb = index.get((b, mode, size, runtime))
            if model != a or not (rb and ra["img_per_s"] and rb["img_per_s"]):
                continue
            ratio = ra["img_per_s"] / rb["img_per_s"]
            ceiling = ratio / ra["peak_fraction"] if ra.get("peak_fraction") else None
            paired = _paired_repeat_ratios(ra, rb)
            rows.append(
                dict(
                    a=a, b=b, mode=mode, img_size=size, runtime=runtime, ratio=ratio, ceiling=ceiling,
                    ratio_min=min(paired) if paired else None, ratio_max=max(paired) if paired else None,
                )
            )
    return rows


def _paired_repeat_ratios(ra: Dict[str, Any], rb: Dict[str, Any]) -> List[float]:
    """Images/s ratios of ``ra`` over ``rb``, one per timed round both completed; empty below two."""
    times_a, times_b = ra.get("step_ms_repeats"), rb.get("step_ms_repeats")
    if not times_a or not times_b or len(times_a) != len(times_b) or len(times_a) < 2:
        return []  # a model that failed midway no longer pairs round by round
    return [(ra["batch_size"] / ta) / (rb["batch_size"] / tb) for ta, tb in zip(times_a, times_b)]


def format_ratios(report: Dict[str, Any], pairs: Iterable[Tuple[str, str]]) -> str:
    """:func:`pair_ratios` as lines of text; with several runtimes also each runtime against the
    first, per model."""
    index = {(r["model"], r["mode"], r["img_size"], r["runtime"]): r for r in report["results"]}
    runtimes = list(dict.fromkeys(r["runtime"] for r in report["results"]))
    lines = []
    for row in pair_ratios(report, pairs):
        where = f"{row['mode']}, {row['img_size']}px" + (f", {row['runtime']}" if len(runtimes) > 1 else "")
        line = f"{row['a']} / {row['b']} ({where}): {row['ratio']:.2f}x images/s"
        if row["ratio_min"] is not None:
            line += f", {row['ratio_min']:.2f}-{row['ratio_max']:.2f}x repeat by repeat"
        if row["ceiling"] is not None:
            line += f" (ceiling {row['ceiling']:.2f}x: {row['a']} at the matmul peak)"
        lines.append(line)
    for (model, mode, size, runtime), ra in index.items():
        base = index.get((model, mode, size, runtimes[0]))
        if runtime != runtimes[0] and base and ra["img_per_s"] and base["img_per_s"]:
            lines.append(
                f"{model} {runtime} / {runtimes[0]} ({mode}, {size}px): {ra['img_per_s'] / base['img_per_s']:.2f}x images/s"
            )
    return "\n".join(lines)


def _atomic_text(path: str, write: Callable[[Any], None]) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "w", newline="") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json(report: Dict[str, Any], path: str) -> None:
    _atomic_text(path, lambda f: json.dump(report, f, indent=2))


def write_csv(report: Dict[str, Any], path: str) -> None:
    def write(f: Any) -> None:
        writer = csv.DictWriter(f, fieldnames=RESULT_FIELDS)
        writer.writeheader()
        for r in report["results"]:
            row = {k: r[k] for k in RESULT_FIELDS}
            if row["step_ms_repeats"] is not None:
                row["step_ms_repeats"] = " ".join(f"{t:.1f}" for t in row["step_ms_repeats"])
            writer.writerow(row)

    _atomic_text(path, write)


def plot_sweep(report: Dict[str, Any], path: str) -> None:
    """Step time per image and peak memory against image size, one line per model and mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_time, ax_mem) = plt.subplots(1, 2, figsize=(11, 4.2))
    series: Dict[Tuple[str, str], List[Dict[str, Any]]] = {}
    for r in report["results"]:
        series.setdefault((r["model"], r["mode"]), []).append(r)
    for (model, mode), rows in series.items():
        rows = sorted((r for r in rows if r["status"] == "ok"), key=lambda r: r["img_size"])
        if not rows:
            continue
        style = "-o" if mode == "inference" else "--s"
        sizes = [r["img_size"] for r in rows]
        ax_time.plot(sizes, [r["step_ms"] / r["batch_size"] for r in rows], style, label=f"{model} ({mode})")
        mem = [(r["img_size"], r["peak_mem_mb"]) for r in rows if r["peak_mem_mb"] is not None]
        if mem:
            ax_mem.plot(*zip(*mem), style, label=f"{model} ({mode})")
    config = report["meta"]["config"]
    ax_time.set(xlabel="image side (px)", ylabel="ms per image", yscale="log", title="time per image")
    mem_kind = "CUDA allocator peak" if config["device"].startswith("cuda") else "peak RSS of a fresh process"
    ax_mem.set(xlabel="image side (px)", ylabel="MB", yscale="log", title=f"peak memory ({mem_kind})")
    if not ax_mem.lines:
        ax_mem.text(0.5, 0.5, "not measured (--no-memory)", ha="center", va="center", transform=ax_mem.transAxes)
    for ax in (ax_time, ax_mem):
        ax.grid(True, which="both", alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    fig.suptitle(f"{report['meta']['device_name']}, {config['precision']}, runtime {config['runtime']}", fontsize=9)
    fig.tight_layout()
    tmp = f"{path}.tmp{os.getpid()}.png"
    try:
        fig.savefig(tmp, dpi=120)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.remove(tmp)


if __name__ == "__main__":
    # Internal entry point of the fresh process that measures peak memory.
    if len(sys.argv) == 3 and sys.argv[1] == "--memory-worker":
        print(json.dumps(_memory_worker(json.loads(sys.argv[2]))))
        sys.exit(0)
    sys.exit("usage: litvit benchmark ... (this module's own entry point is internal)")

"""Peak memory: of a model in a fresh process, and of the tensors a function holds at once."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
import torch.nn as nn

from .config import BenchmarkConfig
from .steps import _build_step, _setup_process, create_bench_model
from .timing import _sync

__all__ = ["LiveStorage", "live_tensor_peak_bytes", "live_tensor_peak", "measure_peak_memory"]


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
    from ..ops.deform import get_dtm_kernel
    from ..ops.onednn import get_cpu_mlp_kernel

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

"""``run_benchmark``: every model measured interleaved, repeat by repeat."""
from __future__ import annotations

import dataclasses
import datetime
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable, Dict, List, Optional

import torch

from ..errors import LitvitError
from .config import RESULT_FIELDS, BenchmarkConfig
from .memory import measure_peak_memory
from .report import _label
from .runtimes import RUNTIMES, _Skip, accel_plan
from .steps import _build_step, _record_failure, _setup_process, create_bench_model
from .timing import _MatmulProbe, _sync

__all__ = ["run_benchmark", "CPU_SETTLE_ROUNDS"]


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
    plan = None
    if "optimized" in config.runtime_names():
        # Decided once, before any model runs, and written into the config so that every model and
        # the memory workers (fresh processes) take the same arithmetic without probing again.
        plan = accel_plan(config)
        config = dataclasses.replace(config, onednn=plan.onednn, onednn_weight_grad=plan.onednn_weight_grad)
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
    meta["accel_plan"] = plan.describe() if plan else None
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
            for index in range(config.warmup):
                start = time.perf_counter()
                step()
                if index == 0:  # the first step builds what a runtime builds lazily (torch.compile's graphs)
                    _sync(device)
                    result["first_step_ms"] = 1e3 * (time.perf_counter() - start)
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
            if RUNTIMES[result["runtime"]].compiles and result["first_step_ms"] is not None:
                # Compilation happens in the first call; a timed step is what the same call costs compiled.
                result["compile_s"] = max(0.0, result["first_step_ms"] - 1e3 * median) / 1e3
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

    from .. import __version__
    from ..ops.deform import get_dtm_kernel

    device = torch.device(config.device)
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

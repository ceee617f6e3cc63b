"""The results as a table, ratios, JSON, CSV and a plot."""
from __future__ import annotations

import csv
import io
import json
from typing import Any, Dict, Iterable, List, Sequence, Tuple

from ..fileio import atomic_path, write_text_atomic
from .config import RESULT_FIELDS
from .timing import MATMUL_PRODUCT_NAMES

__all__ = ["format_table", "pair_ratios", "shipped_ratios", "format_ratios", "write_json", "write_csv", "plot_sweep"]


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
    )
    if meta.get("accel_plan"):
        lines.append(f"optimized: litvit.optimize with {meta['accel_plan']}")
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
    compiled = [r for r in report["results"] if r.get("compile_s") is not None]
    if compiled:
        times = ", ".join(f"{_label(r, runtimes)} {r['mode']} {r['compile_s']:.1f} s" for r in compiled)
        lines.append(f"compile time (first step less a timed one): {times}")
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


def shipped_ratios(report: Dict[str, Any], pairs: Iterable[Tuple[str, str]]) -> List[Dict[str, Any]]:
    """Images-per-second ratio of ``a`` on the ``optimized`` runtime over ``b`` on ``eager``, for each
    (a, b) pair, mode and image size: litvit's model as its commands run it against the peer as timm
    ships it. Same fields as :func:`pair_ratios`, without the ceiling."""
    index = {(r["model"], r["mode"], r["img_size"], r["runtime"]): r for r in report["results"]}
    rows = []
    for a, b in pairs:
        for (model, mode, size, runtime), ra in index.items():
            rb = index.get((b, mode, size, "eager"))
            if model != a or runtime != "optimized" or not (rb and ra["img_per_s"] and rb["img_per_s"]):
                continue
            paired = _paired_repeat_ratios(ra, rb)
            rows.append(dict(a=a, b=b, mode=mode, img_size=size, runtime="optimized/eager",
                             ratio=ra["img_per_s"] / rb["img_per_s"], ceiling=None,
                             ratio_min=min(paired) if paired else None, ratio_max=max(paired) if paired else None))
    return rows


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
    if "eager" in runtimes and "optimized" in runtimes:
        # As each library ships: litvit's models through its speed layer (the litvit commands apply
        # it), the others as timm builds them. The lines above pair like with like.
        for row in shipped_ratios(report, pairs):
            line = f"{row['a']} optimized / {row['b']} eager ({row['mode']}, {row['img_size']}px, as shipped): {row['ratio']:.2f}x images/s"
            if row["ratio_min"] is not None:
                line += f", {row['ratio_min']:.2f}-{row['ratio_max']:.2f}x repeat by repeat"
            lines.append(line)
    for (model, mode, size, runtime), ra in index.items():
        base = index.get((model, mode, size, runtimes[0]))
        if runtime != runtimes[0] and base and ra["img_per_s"] and base["img_per_s"]:
            lines.append(
                f"{model} {runtime} / {runtimes[0]} ({mode}, {size}px): {ra['img_per_s'] / base['img_per_s']:.2f}x images/s"
            )
    return "\n".join(lines)


def write_json(report: Dict[str, Any], path: str) -> None:
    write_text_atomic(path, json.dumps(report, indent=2), fsync=True)


def write_csv(report: Dict[str, Any], path: str) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=RESULT_FIELDS)
    writer.writeheader()
    for r in report["results"]:
        row = {k: r[k] for k in RESULT_FIELDS}
        if row["step_ms_repeats"] is not None:
            row["step_ms_repeats"] = " ".join(f"{t:.1f}" for t in row["step_ms_repeats"])
        writer.writerow(row)
    write_text_atomic(path, text.getvalue(), fsync=True)


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
    try:
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=120)
    finally:
        plt.close(fig)

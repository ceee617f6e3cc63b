"""Peak inference memory of LIT at a detection resolution against the attention matrix it avoids.

At 800 x 1344 input, LIT-S's stage-3 attention is global over 4200 tokens: one block's attention
matrix would be 807 MB in float32, which the fast path never materialises. This script runs one model's
forward pass at one input size on the fast path (SDPA; relative position bias built one block
of query rows at a time) and with the reference attention (explicit softmax over the whole
``heads x N x N`` matrix), each in a fresh process, and prints both peaks beside the size of
one block's attention matrix (``batch x heads x N x N`` elements, N the stage-3 token count).

    python benchmarks/attention_memory.py                           # LIT-S, 800x1344, batch 1
    python benchmarks/attention_memory.py --device cuda --precision bfloat16 --json out.json

Two memory figures per path, each the forward pass's peak above what the model and input
already hold: ``live``, the peak of the tensors alive at once, counted storage by storage at
every op (``litvit.benchmark.live_tensor_peak_bytes``; the same on every device); and the
device's own peak: the CUDA allocator's, or on CPU the peak resident set (VmHWM), which also
counts malloc's free lists and runtime buffers and so is an upper bound. The last line's ratio
uses the allocator's peak on CUDA and the live peak on CPU.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from typing import Any, Dict, List

import torch

import litvit
from litvit.benchmark import PRECISIONS, live_tensor_peak, live_tensor_peak_bytes, tune_cpu_malloc
from litvit.benchmark.memory import _current_rss_mb, _max_rss_mb
from litvit.models import MODEL_CONFIGS
from litvit.models.lit import Attention

PATHS = ("fast", "reference")


def parse_size(text: str) -> List[int]:
    parts = text.lower().split("x")
    if len(parts) not in (1, 2) or not all(p.isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"image size must be H or HxW, e.g. 800x1344, got {text!r}")
    sizes = [int(p) for p in parts]
    return sizes * 2 if len(sizes) == 1 else sizes


def attention_matrix_bytes(model: str, height: int, width: int, batch: int, itemsize: int) -> Dict[str, int]:
    """Elements and bytes of the largest attention matrix (``batch x heads x N x N``) of ``model``."""
    config = MODEL_CONFIGS[model]
    stages = config.get("attn_stages", (False, False, True, True))
    largest = {"tokens": 0, "heads": 0, "bytes": 0}
    for i, (heads, uses_attn) in enumerate(zip(config["num_heads"], stages)):
        if not uses_attn:
            continue
        stride = 4 * 2**i
        tokens = (height // stride) * (width // stride)
        size = batch * heads * tokens * tokens * itemsize
        if size > largest["bytes"]:
            largest = {"stage": i + 1, "tokens": tokens, "heads": heads, "bytes": size}
    return largest


def worker(spec: Dict[str, Any]) -> Dict[str, Any]:
    """In a fresh process: one model, one path; the forward pass's peak memory and time."""
    device = torch.device(spec["device"])
    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    if device.type == "cpu" and spec["tune_malloc"]:
        tune_cpu_malloc()
    torch.manual_seed(0)
    model = litvit.create_model(spec["model"]).eval().to(device)
    if spec["path"] == "reference":
        # Only the attention: the DTM reference (torchvision's kernel) has no bfloat16 on CPU.
        for module in model.modules():
            if isinstance(module, Attention):
                module.fused_attn = False
    x = torch.randn(spec["batch"], 3, spec["height"], spec["width"], device=device)
    dtype = PRECISIONS[spec["precision"]]

    def forward() -> None:
        with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            model(x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device) / 2**20
        torch.cuda.reset_peak_memory_stats(device)
    else:
        base = _current_rss_mb()
    times = []
    for _ in range(spec["repeats"] + 1):  # the first call is the warm-up
        start = time.perf_counter()
        forward()
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else _max_rss_mb()
    result = {"path": spec["path"], "peak_mb": peak - base, "ms": 1e3 * statistics.median(times[1:])}
    if spec.get("where"):
        live, storages = live_tensor_peak(forward, model)
        result["at_live_peak"] = [
            {"mb": s.nbytes / 2**20, "module": s.module, "op": s.op, "shape": list(s.shape), "dtype": str(s.dtype)}
            for s in storages[: spec["where"]]
        ]
    else:
        live = live_tensor_peak_bytes(forward)
    result["live_mb"] = live / 2**20  # above parameters, buffers and input
    return result


def run_path(spec: Dict[str, Any]) -> Dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"path": spec["path"], "peak_mb": None, "ms": None, "error": tail}
    return json.loads(lines[-1])


def main(argv: List[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="lit_s", choices=sorted(MODEL_CONFIGS))
    parser.add_argument("--img-size", type=parse_size, default=[800, 1344], help="H or HxW (default 800x1344)")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="float32", choices=sorted(PRECISIONS))
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (default: torch's choice)")
    parser.add_argument("--repeats", type=int, default=3, help="timed forward passes after one warm-up")
    parser.add_argument("--paths", nargs="+", default=list(PATHS), choices=PATHS)
    parser.add_argument(
        "--tune-malloc",
        action="store_true",
        help="CPU: keep freed memory in the process (faster, as litvit benchmark does, but the peak "
        "resident set then also counts reused free blocks)",
    )
    parser.add_argument(
        "--where",
        type=int,
        default=0,
        metavar="N",
        help="also list the N largest tensors alive at each path's live peak, with the module and op "
        "that made them (slower)",
    )
    parser.add_argument("--json", help="write the results to this file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0

    height, width = args.img_size
    if height % 32 or width % 32:
        parser.error(f"LIT needs image sides divisible by 32, got {height}x{width}")
    itemsize = torch.empty(0, dtype=PRECISIONS[args.precision]).element_size()
    matrix = attention_matrix_bytes(args.model, height, width, args.batch_size, itemsize)
    matrix_mb = matrix["bytes"] / 2**20
    spec = dict(
        model=args.model, height=height, width=width, batch=args.batch_size, device=args.device,
        precision=args.precision, threads=args.threads, repeats=args.repeats, tune_malloc=args.tune_malloc,
        where=args.where,
    )
    results = [run_path({**spec, "path": path}) for path in args.paths]

    print(
        f"{args.model}, {height}x{width}, batch {args.batch_size}, {args.precision}, {args.device}: "
        f"stage {matrix['stage']} attention over {matrix['tokens']} tokens x {matrix['heads']} heads; "
        f"one block's attention matrix is {matrix_mb:.0f} MB"
    )
    device_peak = "allocator MB" if args.device.startswith("cuda") else "peak RSS MB"
    print(f"{'path':10s} {'live MB':>9s} {'/ matrix':>9s} {device_peak:>13s} {'/ matrix':>9s} {'ms':>9s}")
    for r in results:
        if r["peak_mb"] is None:
            print(f"{r['path']:10s} failed: {r['error']}")
            continue
        live, peak = r["live_mb"], r["peak_mb"]
        print(f"{r['path']:10s} {live:9.0f} {live / matrix_mb:9.2f} {peak:13.0f} {peak / matrix_mb:9.2f} {r['ms']:9.0f}")
    for r in results:
        if r.get("at_live_peak"):
            print(f"{r['path']} path, the largest tensors alive at its live peak:")
            for s in r["at_live_peak"]:
                shape = "x".join(map(str, s["shape"]))
                print(f"  {s['mb']:8.1f} MB  {s['module'] or '(top level)':28s} {s['op']:28s} {shape} {s['dtype']}")
    fast = next((r for r in results if r["path"] == "fast" and r["peak_mb"] is not None), None)
    if fast is not None:
        # On CUDA the allocator's peak is the measure; on CPU the resident set also counts
        # malloc's free lists and runtime buffers, so the live-tensor peak is the comparable one.
        measure = fast["peak_mb"] if args.device.startswith("cuda") else fast["live_mb"]
        print(f"fast-path inference memory / one attention matrix: {measure / matrix_mb:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({**spec, "attention_matrix": matrix, "results": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Time litvit's pure-PyTorch DTM against ``torchvision.ops.deform_conv2d``, side by side.

For each deformable token merging of LIT-Ti and LIT-S (batch 32 at 224 px by default) both
implementations run on the same tensors, interleaved repeat by repeat so that load on the
machine hits both alike; outputs and gradients are checked to agree first. Reported
times are medians; the ratio is torchvision's time over litvit's (higher = litvit faster).

    python benchmarks/dtm.py                       # CPU (and CUDA if present)
    python benchmarks/dtm.py --device cpu --repeats 5 --json

On CUDA litvit's side runs twice, once per DTM kernel (``litvit.ops.deform.set_dtm_kernel``):
``torch`` (``grid_sample``) and ``triton`` (the fused Triton kernel, the CUDA default); the rows
say which (``cuda``, ``cuda triton``).

Rows ``deform conv`` compare the 2x2 deformable convolution alone (``deform_conv2x2`` vs
``deform_conv2d(stride=2)``); rows ``DTM module`` compare litvit's whole
``DeformableTokenMerging`` (offset conv, deformable conv, BatchNorm, GELU, on tokens) with
the same module built around torchvision's kernel.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Callable, Dict, List, Sequence, Tuple

import torch
import torch.nn as nn
from torch.testing import assert_close
from torchvision.ops import deform_conv2d

from litvit.models import MODEL_CONFIGS, DeformableTokenMerging
from litvit.ops.deform import deform_conv2x2, sampling_locations2x2, set_dtm_kernel

# (model, in channels, input side at 224 px, out channels) of the three DTMs of each model.
def dtm_shapes(models: Sequence[str], img_size: int) -> List[Tuple[str, int, int, int]]:
    shapes = []
    for name in models:
        dims = MODEL_CONFIGS[name]["embed_dims"]
        for i in (1, 2, 3):
            shapes.append((name, dims[i - 1], img_size // (4 * 2 ** (i - 1)), dims[i]))
    return shapes


class TorchvisionDTM(nn.Module):
    """The DTM of :class:`litvit.models.DeformableTokenMerging` computed with torchvision's kernel."""

    def __init__(self, dtm: DeformableTokenMerging):
        super().__init__()
        self.dtm = dtm

    def forward(self, x: torch.Tensor, grid: Tuple[int, int]):
        batch, _, channels = x.shape
        image = x.transpose(1, 2).reshape(batch, channels, *grid)
        offset = self.dtm.offset_conv(image)
        out = deform_conv2d(image, offset, self.dtm.proj.weight, self.dtm.proj.bias, stride=2)
        out = self.dtm.act(self.dtm.norm(out))
        return out.flatten(2).transpose(1, 2), offset.shape[-2:], offset


def has_triton() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device, steps: int = 1) -> float:
    """Seconds per call of ``steps`` back-to-back calls between two device synchronisations."""
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    sync(device)
    return (time.perf_counter() - start) / steps


def kernel_time(fn: Callable[[], object], device: torch.device, steps: int = 1) -> float:
    """Seconds per call of the device kernels ``fn`` launches (the profiler's summed self time)."""
    from torch.profiler import ProfilerActivity, profile

    sync(device)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            fn()
        sync(device)
    total_us = sum(
        getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0.0)
        for e in prof.key_averages()
    )
    return total_us * 1e-6 / steps


# Calls per timed repeat (--steps) and what is timed (--timer). One call per repeat, wall
# clock, times latency: on a GPU that includes the host's launch work and a synchronisation,
# which both sides pay and which at small batches hides the kernels' difference. Several calls
# time throughput; ``kernels`` times only the device kernels (what a model's training step
# pays once its launches run ahead of the GPU).
STEPS = 1
TIMER = timed


def compare(
    ours: Callable[[], object], theirs: Callable[[], object], device: torch.device, repeats: int, warmup: int
) -> Tuple[float, float]:
    """Median seconds per call of ``ours`` and ``theirs``, alternating which runs first."""
    for _ in range(warmup):
        ours()
        theirs()
    times_ours, times_theirs = [], []
    for i in range(repeats):
        pair = [(ours, times_ours), (theirs, times_theirs)]
        for fn, bucket in pair if i % 2 == 0 else pair[::-1]:
            bucket.append(TIMER(fn, device, STEPS))
    return statistics.median(times_ours), statistics.median(times_theirs)


def conv_case(batch: int, cin: int, side: int, cout: int, device: torch.device, gen: torch.Generator):
    x = torch.randn(batch, cin, side, side, generator=gen).to(device)
    # About half a pixel of shift, as trained DTMs predict, some samples past the border.
    offset = (torch.randn(batch, 8, side // 2, side // 2, generator=gen) * 0.5).to(device)
    weight = (torch.randn(cout, cin, 2, 2, generator=gen) / (4 * cin) ** 0.5).to(device)
    bias = torch.randn(cout, generator=gen).to(device)
    return x, offset, weight, bias


def check_conv(tensors, tol: Dict[str, float]) -> None:
    leaves = [t.detach().clone().requires_grad_() for t in tensors]
    ours = deform_conv2x2(*leaves)
    grads_ours = torch.autograd.grad(ours, leaves, torch.ones_like(ours))
    leaves_tv = [t.detach().clone().requires_grad_() for t in tensors]
    theirs = deform_conv2d(*leaves_tv, stride=2)
    grads_theirs = torch.autograd.grad(theirs, leaves_tv, torch.ones_like(theirs))
    assert_close(ours, theirs, **tol)
    # Bilinear sampling has a kink wherever a sample sits on a pixel row or column, so the
    # offset gradient is undefined there; float32 rounding of the position (~1e-5 px) may
    # put the two implementations on different sides of it. Compare away from the kinks.
    locations = sampling_locations2x2(tensors[1].detach().double())  # B x 4 x h x w x (row, col)
    smooth = ((locations - locations.round()).abs() > 1e-3).permute(0, 1, 4, 2, 3).flatten(1, 2)
    for name, a, b in zip(("input", "offset", "weight", "bias"), grads_ours, grads_theirs):
        if name == "offset":
            a, b = a[smooth], b[smooth]
        # Gradients sum over many cells; compare relative to their scale.
        scale = b.abs().max().clamp_min(1.0)
        assert_close(a / scale, b / scale, **tol, msg=lambda m: f"gradient wrt {name}: {m}")


def bench_conv(batch, cin, side, cout, device, repeats, warmup, gen) -> Dict[str, float]:
    x, offset, weight, bias = conv_case(batch, cin, side, cout, device, gen)
    tol = dict(atol=1e-3, rtol=1e-3)
    check_conv((x, offset, weight, bias), tol)

    with torch.no_grad():
        fwd = compare(
            lambda: deform_conv2x2(x, offset, weight, bias),
            lambda: deform_conv2d(x, offset, weight, bias, stride=2),
            device, repeats, warmup,
        )
    leaves = [t.clone().requires_grad_() for t in (x, offset, weight, bias)]
    grad_out = torch.ones(batch, cout, side // 2, side // 2, device=device)

    def backward(fn):
        def run():
            for t in leaves:
                t.grad = None
            fn(*leaves).backward(grad_out)
        return run

    fwd_bwd = compare(
        backward(deform_conv2x2), backward(lambda *a: deform_conv2d(*a, stride=2)), device, repeats, warmup
    )
    return {"fwd_ours": fwd[0], "fwd_tv": fwd[1], "fwdbwd_ours": fwd_bwd[0], "fwdbwd_tv": fwd_bwd[1]}


def bench_module(batch, cin, side, cout, device, repeats, warmup, gen) -> Dict[str, float]:
    torch.manual_seed(0)
    dtm = DeformableTokenMerging(cin, cout).to(device).train()
    with torch.no_grad():
        dtm.offset_conv.weight.normal_(0, 0.5 / (4 * cin) ** 0.5)
    reference = TorchvisionDTM(dtm)
    tokens = torch.randn(batch, side * side, cin, generator=gen).to(device)
    grid = (side, side)
    with torch.no_grad():
        assert_close(dtm(tokens, grid)[0], reference(tokens, grid)[0], atol=1e-3, rtol=1e-3)
        fwd = compare(lambda: dtm(tokens, grid), lambda: reference(tokens, grid), device, repeats, warmup)
    leaf = tokens.clone().requires_grad_()

    def backward(module):
        def run():
            module.zero_grad(set_to_none=True)
            leaf.grad = None
            module(leaf, grid)[0].sum().backward()
        return run

    fwd_bwd = compare(backward(dtm), backward(reference), device, repeats, warmup)
    return {"fwd_ours": fwd[0], "fwd_tv": fwd[1], "fwdbwd_ours": fwd_bwd[0], "fwdbwd_tv": fwd_bwd[1]}


def format_rows(rows: List[Dict[str, object]]) -> str:
    header = ["device", "what", "model", "shape (C x H x W -> C')", "fwd ms litvit", "fwd ms tv", "fwd x",
              "fwd+bwd ms litvit", "fwd+bwd ms tv", "fwd+bwd x"]
    lines = []
    for r in rows:
        lines.append([
            r["device"], r["what"], r["model"], r["shape"],
            f"{r['fwd_ours'] * 1e3:.1f}", f"{r['fwd_tv'] * 1e3:.1f}", f"{r['fwd_speedup']:.2f}",
            f"{r['fwdbwd_ours'] * 1e3:.1f}", f"{r['fwdbwd_tv'] * 1e3:.1f}", f"{r['fwdbwd_speedup']:.2f}",
        ])
    widths = [max(len(h), *(len(l[i]) for l in lines)) for i, h in enumerate(header)]

    def fmt(cells):
        return " | ".join(c.ljust(w) if i < 4 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([fmt(header), "-+-".join("-" * w for w in widths)] + [fmt(l) for l in lines])


def main(argv: Sequence[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="auto: CPU, then CUDA too when available (default)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--img-size", type=int, default=224, help="input size the DTM shapes derive from")
    parser.add_argument("--models", nargs="+", default=["lit_ti", "lit_s"], choices=list(MODEL_CONFIGS))
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per implementation (median reported)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=1,
                        help="calls per timed repeat: 1 times each call's latency (default); several "
                             "time throughput, without one host synchronisation per call")
    parser.add_argument("--timer", choices=["wall", "kernels"], default="wall",
                        help="wall: wall-clock time (default); kernels: the summed time of the CUDA "
                             "kernels (torch.profiler), leaving out the host's launch overhead")
    parser.add_argument("--no-module", action="store_true", help="skip the whole-module rows")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--kernels", nargs="+", choices=["torch", "triton"], default=["torch", "triton"],
                        help="litvit DTM kernels to time on CUDA (CPU always uses torch); default: both")
    args = parser.parse_args(argv)

    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available")
    if args.img_size % 32:
        parser.error("--img-size must be a multiple of 32")
    if args.steps < 1:
        parser.error("--steps must be at least 1")
    if args.timer == "kernels" and args.device != "cuda":
        parser.error("--timer kernels needs --device cuda")
    global STEPS, TIMER
    STEPS = args.steps
    TIMER = kernel_time if args.timer == "kernels" else timed
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = ["cpu", "cuda"] if args.device == "auto" else [args.device]
    devices = [torch.device(d) for d in devices if d == "cpu" or torch.cuda.is_available()]

    gen = torch.Generator().manual_seed(0)
    rows: List[Dict[str, object]] = []
    runs = []  # (device, kernel, label)
    for device in devices:
        kernels = args.kernels if device.type == "cuda" else ["torch"]
        for kernel in kernels:
            if kernel == "triton" and not has_triton():
                print("triton is not installed: skipping the triton kernel", file=sys.stderr)
                continue
            runs.append((device, kernel, device.type if kernel == "torch" else f"{device.type} {kernel}"))
    for device, kernel, label in runs:
        set_dtm_kernel(kernel)
        benches = [("deform conv", bench_conv)] + ([] if args.no_module else [("DTM module", bench_module)])
        for what, bench in benches:
            for model, cin, side, cout in dtm_shapes(args.models, args.img_size):
                result = bench(args.batch_size, cin, side, cout, device, args.repeats, args.warmup, gen)
                row = {"device": label, "kernel": kernel, "what": what, "model": model,
                       "shape": f"{cin}x{side}x{side} -> {cout}", **result,
                       "fwd_speedup": result["fwd_tv"] / result["fwd_ours"],
                       "fwdbwd_speedup": result["fwdbwd_tv"] / result["fwdbwd_ours"]}
                rows.append(row)
                if not args.json:
                    print(f"  {label} {what} {model} {row['shape']}: fwd {row['fwd_speedup']:.2f}x, "
                          f"fwd+bwd {row['fwdbwd_speedup']:.2f}x", file=sys.stderr, flush=True)

    set_dtm_kernel("auto")
    summary = []
    for _, _, label in runs:
        for what in ("deform conv", "DTM module"):
            sel = [r for r in rows if r["device"] == label and r["what"] == what]
            if not sel:
                continue
            total = {k: sum(r[k] for r in sel) for k in ("fwd_ours", "fwd_tv", "fwdbwd_ours", "fwdbwd_tv")}
            summary.append({
                "device": label, "what": what,
                "fwd_speedup": total["fwd_tv"] / total["fwd_ours"],
                "fwdbwd_speedup": total["fwdbwd_tv"] / total["fwdbwd_ours"],
                "min_fwd_speedup": min(r["fwd_speedup"] for r in sel),
                "min_fwdbwd_speedup": min(r["fwdbwd_speedup"] for r in sel),
            })
    meta = {"torch": torch.__version__, "threads": torch.get_num_threads(), "batch_size": args.batch_size,
            "img_size": args.img_size, "repeats": args.repeats, "steps": args.steps,
            "timer": args.timer}
    if args.json:
        print(json.dumps({"meta": meta, "rows": rows, "overall": summary}, indent=2))
    else:
        print(format_rows(rows))
        print()
        for s in summary:
            print(f"overall {s['device']} {s['what']}: forward {s['fwd_speedup']:.2f}x "
                  f"(min {s['min_fwd_speedup']:.2f}x), forward+backward {s['fwdbwd_speedup']:.2f}x "
                  f"(min {s['min_fwdbwd_speedup']:.2f}x)  [total time torchvision / litvit]")
        print(f"torch {meta['torch']}, {meta['threads']} threads, batch {args.batch_size}, "
              f"{args.img_size} px, median of {args.repeats} repeats of {args.steps} call(s) each, "
              f"{'wall-clock' if args.timer == 'wall' else 'CUDA kernel'} time")
    return 0


if __name__ == "__main__":
    sys.exit(main())

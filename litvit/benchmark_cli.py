"""``litvit benchmark``: side-by-side throughput, memory and FLOPs of litvit and timm models."""
from __future__ import annotations

import argparse
import sys
from typing import List, Tuple

from .errors import LitvitError

DEFAULT_MODELS = ["lit_ti", "pvt_v2_b2", "lit_s", "swin_tiny_patch4_window7_224"]
# Ratios printed when both models of a pair are measured: each LIT against the model the LIT
# paper compares it with, and LITv2-S against LIT-S (HiLo attention in place of MSA).
DEFAULT_PAIRS = [("lit_ti", "pvt_v2_b2"), ("lit_s", "swin_tiny_patch4_window7_224"), ("litv2_s", "lit_s")]


def _int_list(text: str) -> List[int]:
    try:
        values = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


def _kwarg(text: str) -> Tuple[str, object]:
    import ast

    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value  # a bare string such as global_pool=avg


def _pairs(text: str) -> List[Tuple[str, str]]:
    pairs = []
    for item in text.split(","):
        if item.count(":") != 1:
            raise argparse.ArgumentTypeError(f"expected MODEL_A:MODEL_B pairs separated by commas, got {item!r}")
        a, b = item.split(":")
        pairs.append((a.strip(), b.strip()))
    return pairs


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from .benchmark import MODES, PRECISIONS, RUNTIMES  # cheap: torch is imported lazily by the CLI anyway

    p = subparsers.add_parser(
        "benchmark",
        help="measure throughput, step time, peak memory and FLOPs of litvit/timm models side by side",
        description="Measure inference and training throughput, step time, peak memory and FLOPs of litvit "
        "and timm models, interleaved so that they share the machine's load fairly. Models are built untrained "
        "(no download).",
    )
    p.add_argument("--model", "-m", nargs="+", default=DEFAULT_MODELS, metavar="NAME",
                   help=f"litvit (lit_*, litv2_*) or timm model names (default: {' '.join(DEFAULT_MODELS)})")
    p.add_argument("--mode", nargs="+", choices=MODES, default=list(MODES), help="what to measure (default: both)")
    p.add_argument("--batch-size", "-b", type=int, default=32, help="inference batch size (default 32)")
    p.add_argument("--train-batch-size", type=int, default=16, help="training batch size (default 16)")
    p.add_argument("--img-size", type=int, default=224, help="square input side in pixels (default 224)")
    p.add_argument("--sweep-img-size", type=_int_list, default=None, metavar="S1,S2,...",
                   help="measure at each of these sides instead of --img-size, e.g. 224,384,512,800,1024")
    p.add_argument("--precision", choices=list(PRECISIONS), default="float32",
                   help="float32, or bfloat16/float16 autocast (float16 needs CUDA)")
    p.add_argument("--channels-last", action="store_true", help="model and input in channels-last memory format")
    p.add_argument("--runtime", choices=sorted(RUNTIMES), nargs="+", default=None,
                   help="how models run (default on a CPU: eager and optimized, so every model is measured as timm "
                   "ships it and through litvit's speed layer; elsewhere, or with --no-optimize, eager); several are measured side by side, interleaved like the "
                   "models (e.g. --runtime eager compile onnxruntime): "
                   + "; ".join(f"{n}: {r.description}" for n, r in sorted(RUNTIMES.items())))
    p.add_argument("--compile", action="store_true", help="shorthand for --runtime compile")
    p.add_argument("--no-optimize", action="store_true",
                   help="measure the plain models only (no 'optimized' runtime by default on the CPU)")
    p.add_argument("--onednn", choices=("auto", "on", "off"), default="auto",
                   help="the optimized runtime's Linear layers on oneDNN: auto (AVX-512 CPUs), on, off")
    p.add_argument("--onednn-weight-grad", choices=("auto", "on", "off"), default="auto",
                   help="the optimized runtime's weight gradients on oneDNN too: auto (where a timed product says "
                   "oneDNN is markedly faster), on, off")
    p.add_argument("--compile-mode", default=None, help="torch.compile mode (e.g. max-autotune) for --runtime compile")
    p.add_argument("--fullgraph", action="store_true", help="torch.compile(fullgraph=True): fail on graph breaks")
    p.add_argument("--device", default=None, help="cpu or cuda[:N] (default: cuda if available, else cpu)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps per model (default 1 on CPU, 10 on CUDA)")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats per model, interleaved across models; each repeat starts one model later (default 5)")
    p.add_argument("--steps", type=int, default=None, help="steps per timed repeat (default 1 on CPU, 10 on CUDA)")
    p.add_argument("--matmul-peak", action="store_true",
                   help="also time a plain square matmul in the same precision, once per repeat round, and report "
                   "each model's achieved GFLOP/s as a fraction of it (on the CPU in float32 both torch.mm and oneDNN's "
                   "product are timed and the faster sets the peak: on some CPUs, AMD Zen 5 for one, they differ 2x)")
    p.add_argument("--matmul-size", type=int, default=None, help="side of the matmul probe (default 2048 CPU, 8192 CUDA)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement (a fresh process per model)")
    p.add_argument("--no-tune-malloc", action="store_true",
                   help="leave glibc malloc as is (by default large CPU buffers are reused instead of re-mapped)")
    p.add_argument("--num-classes", type=int, default=1000, help="classifier size (default 1000)")
    p.add_argument("--model-kwargs", nargs="*", type=_kwarg, default=[], metavar="KEY=VALUE",
                   help="extra keyword arguments for every model, as Python literals (e.g. depths=(1,1,1,1))")
    p.add_argument("--ratios", type=_pairs, default=None, metavar="A:B,...",
                   help=f"print images/s ratios of model pairs (default: {','.join(f'{a}:{b}' for a, b in DEFAULT_PAIRS)} "
                   "when those models are measured); with --matmul-peak each also gets a ceiling, the ratio if A ran "
                   "every FLOP at the probe's rate")
    p.add_argument("--json", default=None, metavar="PATH", help="write all results and run metadata as JSON")
    p.add_argument("--csv", default=None, metavar="PATH", help="write one CSV row per model, mode and image size")
    p.add_argument("--plot", default=None, metavar="PNG", help="draw time and memory against image size to a PNG")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from .benchmark import (
        BenchmarkConfig, format_ratios, format_table, pair_ratios, plot_sweep, run_benchmark, shipped_ratios, write_csv,
        write_json,
    )

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    on_cuda = device.startswith("cuda")
    runtimes = ["compile"] if args.compile else list(args.runtime or ["eager"])
    if args.runtime is None and not args.compile and not args.no_optimize and not on_cuda:
        runtimes.append("optimized")
    choice = {"auto": None, "on": True, "off": False}
    config = BenchmarkConfig(
        models=list(args.model),
        modes=list(dict.fromkeys(args.mode)),
        batch_size=args.batch_size,
        train_batch_size=args.train_batch_size,
        img_sizes=args.sweep_img_size or [args.img_size],
        precision=args.precision,
        channels_last=args.channels_last,
        runtime=runtimes[0],
        runtimes=runtimes,
        onednn=choice[args.onednn],
        onednn_weight_grad=choice[args.onednn_weight_grad],
        compile_mode=args.compile_mode,
        fullgraph=args.fullgraph,
        device=device,
        warmup=args.warmup if args.warmup is not None else (10 if on_cuda else 1),
        repeats=args.repeats,
        steps=args.steps if args.steps is not None else (10 if on_cuda else 1),
        num_classes=args.num_classes,
        matmul_peak=args.matmul_peak,
        matmul_size=args.matmul_size,
        memory=not args.no_memory,
        threads=args.threads,
        tune_malloc=not args.no_tune_malloc,
        model_kwargs=dict(args.model_kwargs),
    )
    if args.plot and len(config.img_sizes) < 2:
        raise LitvitError("benchmark: --plot draws against image size; give --sweep-img-size with two or more sizes")
    progress = (lambda msg: print(msg, file=sys.stderr, flush=True))
    report = run_benchmark(config, log=progress)
    print(format_table(report))
    pairs = args.ratios
    if pairs is None:
        pairs = [p for p in DEFAULT_PAIRS if p[0] in config.models and p[1] in config.models]
    ratios = format_ratios(report, pairs)
    if ratios:
        print(ratios)
    report["ratios"] = pair_ratios(report, pairs) + shipped_ratios(report, pairs)
    if args.json:
        write_json(report, args.json)
    if args.csv:
        write_csv(report, args.csv)
    if args.plot:
        plot_sweep(report, args.plot)
    return 0 if all(r["status"] in ("ok", "skipped") for r in report["results"]) else 1

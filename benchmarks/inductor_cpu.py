"""Eager against Inductor with weight freezing (and its C++ GEMM template) for CPU inference.

`litvit benchmark --runtime eager compile` covers plain ``torch.compile``; this script tries the
two Inductor options aimed at what is left outside the matrix products in LIT's MLPs:
``freezing`` (weights become constants that Inductor can pack and fuse into) and
``max_autotune`` with the ``CPP`` GEMM backend (elementwise epilogues fused into the GEMM tiles).

    python benchmarks/inductor_cpu.py --variant eager --models lit_ti pvt_v2_b2
    python benchmarks/inductor_cpu.py --variant freeze --models lit_ti pvt_v2_b2
    python benchmarks/inductor_cpu.py --variant freeze-autotune --models lit_ti

Inductor's options are process-wide, so each variant runs in its own process. Within one run
the models are timed in interleaved rounds (median wall ms per batch).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Sequence

import timm
import torch

import litvit  # noqa: F401  (registers the LIT models)
from litvit.benchmark import tune_cpu_malloc


def main(argv: Sequence[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", choices=["eager", "compile", "freeze", "freeze-autotune"], default="eager")
    parser.add_argument("--models", nargs="+", default=["lit_ti", "pvt_v2_b2"])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    tune_cpu_malloc()
    torch.set_num_threads(args.threads)
    import torch._inductor.config as inductor_config

    if args.variant.startswith("freeze"):
        inductor_config.freezing = True
    if args.variant == "freeze-autotune":
        inductor_config.max_autotune = True
        inductor_config.max_autotune_gemm_backends = "CPP,ATEN"

    x = torch.randn(args.batch_size, 3, args.img_size, args.img_size)
    models = {}
    with torch.inference_mode():
        for name in args.models:
            model = timm.create_model(name, num_classes=1000).eval()
            if args.variant != "eager":
                model = torch.compile(model)
            start = time.perf_counter()
            model(x)  # warm-up; compiles
            print(f"{name}: first call {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
            models[name] = model
        times = {name: [] for name in models}
        for _ in range(args.rounds):
            for name, model in models.items():
                start = time.perf_counter()
                model(x)
                times[name].append(time.perf_counter() - start)
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{args.variant:16s} {name:32s} {median * 1e3:8.0f} ms/batch  {args.batch_size / median:7.2f} img/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

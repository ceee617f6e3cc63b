# Scratch record (session 11): ran against an uncommitted litvit whose lit.py had fused_mlp_training
# (the slab-wise autograd function of token_mlp_slab_training.py). That path lost and was not kept.
"""Time LIT's MLP-only stages in training, module by module against the slab-wise path.

    python benchmarks/mlp_training.py --model lit_ti --batch-size 16 --rounds 7

Each round times, in turn, forward + backward of one MLP-only stage on random tokens: the
blocks module by module (autograd), then ``litvit.ops.token_mlp`` keeping fc1's output and
recomputing it, at each slab size. Speed-ups are medians of per-round ratios, so a machine
that drifts during the run shifts both sides alike. ``--whole-model`` adds a full training
step (SGD, cross-entropy) of the model with and without the slab path.
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable, Dict, List

import timm
import torch

import litvit  # noqa: F401  (registers the LIT models)
from litvit.benchmark import tune_cpu_malloc
from litvit.models import lit


def _stage_variants(model: torch.nn.Module, stage_index: int, batch: int, slabs: List[int]) -> Dict[str, Callable[[], None]]:
    stage = model.stages[stage_index]
    size = model.img_size[0] // (4 << stage_index)
    grid = (size, size)
    dim = model.embed_dims[stage_index]
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randn(batch, size * size, dim, generator=generator)
    upstream = torch.randn(batch, size * size, dim, generator=generator)
    blocks = stage.blocks

    def modules() -> None:
        x = tokens.clone().requires_grad_()
        y = x
        for block in blocks:
            y = block(y, grid)
        y.backward(upstream)

    def slab_path(elements: int, recompute: bool) -> Callable[[], None]:
        def run() -> None:
            lit.MLP_TRAIN_SLAB_ELEMENTS = elements
            x = tokens.clone().requires_grad_()
            lit.fused_mlp_training(blocks, x, recompute=recompute).backward(upstream)

        return run

    def checkpointed() -> None:
        x = tokens.clone().requires_grad_()
        y = x
        for block in blocks:
            y = torch.utils.checkpoint.checkpoint(block, y, grid, use_reentrant=False)
        y.backward(upstream)

    variants = {"modules": modules, "checkpointed modules": checkpointed}
    for exponent in slabs:
        variants[f"keep-fc1 2^{exponent}"] = slab_path(1 << exponent, False)
        variants[f"recompute 2^{exponent}"] = slab_path(1 << exponent, True)
    return variants


def _whole_model_variants(model: torch.nn.Module, batch: int) -> Dict[str, Callable[[], None]]:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, *model.img_size, generator=generator)
    target = torch.randint(0, model.num_classes, (batch,), generator=generator)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    applies = lit.fused_mlp_training_applies

    def step(enabled: bool) -> Callable[[], None]:
        def run() -> None:
            lit.fused_mlp_training_applies = applies if enabled else (lambda *a: False)
            try:
                optimizer.zero_grad(set_to_none=True)
                torch.nn.functional.cross_entropy(model(images), target).backward()
                optimizer.step()
            finally:
                lit.fused_mlp_training_applies = applies

        return run

    return {"model: modules": step(False), "model: slabs": step(True)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="lit_ti")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--slabs", default="18,19,20", help="slab sizes as powers of two of hidden elements")
    parser.add_argument("--stages", default="0,1", help="MLP-only stages to time (0-based)")
    parser.add_argument("--whole-model", action="store_true", help="also time whole training steps")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tune_cpu_malloc()
    torch.manual_seed(0)
    model = timm.create_model(args.model).train()
    default_slab = lit.MLP_TRAIN_SLAB_ELEMENTS
    groups = {}
    for index in (int(s) for s in args.stages.split(",") if s):
        groups[f"stage {index + 1}"] = _stage_variants(model, index, args.batch_size, [int(e) for e in args.slabs.split(",")])
    if args.whole_model:
        groups["whole model"] = _whole_model_variants(model, args.batch_size)
    print(f"{args.model}, batch {args.batch_size}, {torch.get_num_threads()} threads, {args.rounds} rounds")
    for title, variants in groups.items():
        times: Dict[str, List[float]] = {name: [] for name in variants}
        for run in variants.values():  # warm-up
            run()
        lit.MLP_TRAIN_SLAB_ELEMENTS = default_slab
        for _ in range(args.rounds):
            for name, run in variants.items():
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
                lit.MLP_TRAIN_SLAB_ELEMENTS = default_slab
        base_name = next(iter(variants))
        print(f"{title}:")
        for name, values in times.items():
            ratios = [b / v for b, v in zip(times[base_name], values)]
            print(
                f"  {name:22s} {statistics.median(values) * 1000:9.1f} ms"
                f"  speed-up {statistics.median(ratios):.3f}x (per-round {min(ratios):.3f}-{max(ratios):.3f})"
            )


if __name__ == "__main__":
    main()

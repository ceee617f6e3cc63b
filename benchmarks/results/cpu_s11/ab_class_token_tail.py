"""Paired A/B: LIT-Ti with and without the class-token tail (session 11).

    python benchmarks/results/cpu_s11/ab_class_token_tail.py [rounds]

Inference batch 32 and a training step (SGD, cross-entropy) at batch 16, 224 px, alternating
the two forms each round; prints medians and the median of the per-round ratios."""
import statistics
import sys
import time

import timm
import torch

import litvit  # noqa: F401
from litvit.benchmark import tune_cpu_malloc
from litvit.models.lit import LIT

tune_cpu_malloc()
rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
model = timm.create_model("lit_ti")
applies = LIT.class_token_tail_applies
x32, x16 = torch.randn(32, 3, 224, 224), torch.randn(16, 3, 224, 224)
target = torch.randint(0, 1000, (16,))
optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)


def set_tail(enabled):
    LIT.class_token_tail_applies = applies if enabled else (lambda self: False)


def infer():
    model.eval()
    with torch.inference_mode():
        model(x32)


def train():
    model.train()
    optimizer.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(model(x16), target).backward()
    optimizer.step()


for mode, step in (("inference b32", infer), ("train b16", train)):
    times = {True: [], False: []}
    for enabled in (True, False):
        set_tail(enabled)
        step()
    for _ in range(rounds):
        for enabled in (False, True):
            set_tail(enabled)
            start = time.perf_counter()
            step()
            times[enabled].append(time.perf_counter() - start)
    ratios = [f / t for f, t in zip(times[False], times[True])]
    print(
        f"{mode}: full {statistics.median(times[False]) * 1000:.0f} ms, tail {statistics.median(times[True]) * 1000:.0f} ms,"
        f" speed-up {statistics.median(ratios):.3f}x (rounds {min(ratios):.3f}-{max(ratios):.3f})"
    )

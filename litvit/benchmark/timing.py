"""Timing primitives: device synchronisation, autocast, FLOP counts and the matmul peak."""
from __future__ import annotations

import math
import statistics
import time
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn

from .config import PRECISIONS

__all__ = ["count_flops", "measure_matmul_peak", "TRAIN_FLOPS_PER_FORWARD", "MATMUL_PRODUCT_NAMES", "TRAINING_SCOPE_WORDS"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(device: torch.device, precision: str):
    if precision == "float32":
        return torch.autocast(device_type=device.type, enabled=False)
    return torch.autocast(device_type=device.type, dtype=PRECISIONS[precision])



def count_flops(model: nn.Module, example: torch.Tensor) -> float:
    """FLOPs of one forward pass over ``example``, per image (matmuls, convolutions, attention)."""
    from torch.utils.flop_counter import FlopCounterMode

    from ..ops.flops import cpu_attention_flop_formulas

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
    from ..ops.onednn import square_products

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

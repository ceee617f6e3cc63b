"""LIT-Ti's last block at batch 32, 224 px (7 x 7 tokens + class token): every token against
the class token alone (session 11). Paired rounds, median of per-round ratios."""
import statistics
import time

import timm
import torch

import litvit  # noqa: F401
from litvit.benchmark import tune_cpu_malloc

tune_cpu_malloc()
model = timm.create_model("lit_ti").eval()
block = model.stages[-1].blocks[-1]
x = torch.randn(32, 50, 512)
times = {"all tokens": [], "class token": []}
with torch.inference_mode():
    for _ in range(3):
        block(x, (7, 7)), block(x, (7, 7), 1)
    for _ in range(30):
        for name, queries in (("all tokens", None), ("class token", 1)):
            start = time.perf_counter()
            block(x, (7, 7), queries) if queries else block(x, (7, 7))
            times[name].append(time.perf_counter() - start)
ratios = [a / c for a, c in zip(times["all tokens"], times["class token"])]
for name, values in times.items():
    print(f"{name}: {statistics.median(values) * 1000:.1f} ms")
print(f"speed-up {statistics.median(ratios):.2f}x; saves {(statistics.median(times['all tokens']) - statistics.median(times['class token'])) * 1000:.1f} ms per batch of 32")

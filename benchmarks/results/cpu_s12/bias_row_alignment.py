# Blocked, biased SDPA of LIT-S's stage 3 at 800x1344 (4200 tokens) on CPU: bias rows padded to
# 16 elements against unpadded (1), interleaved, median of 7.
import time, statistics, torch
from litvit.benchmark import tune_cpu_malloc
from litvit.models import lit
tune_cpu_malloc(); torch.set_num_threads(2); torch.manual_seed(0)
attn = lit.Attention(384, 12, rel_pos_grid=(14, 14)).eval()
x = torch.randn(1, 4200, 384)
times = {16: [], 1: []}
outs = {}
with torch.inference_mode():
    for r in range(8):
        for align in (16, 1):
            lit.BIAS_ROW_ALIGNMENT = align
            t = time.perf_counter(); outs[align] = attn(x, (50, 84)); dt = time.perf_counter() - t
            if r: times[align].append(dt)
print({a: round(1e3 * statistics.median(t), 1) for a, t in times.items()}, "ms; equal:", torch.equal(outs[16], outs[1]))

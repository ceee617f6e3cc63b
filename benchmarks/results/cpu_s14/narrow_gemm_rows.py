"""Stage-1 MLP products of LIT-Ti (K or N = 64, hidden 512) by rows per call, 2 threads:
GFLOP/s over the same 100352 rows, called in slabs of M rows (output buffers reused)."""
import sys, time, torch
from litvit.benchmark import tune_cpu_malloc
tune_cpu_malloc(); torch.set_num_threads(2); torch.manual_seed(0)
total = 100352
x = torch.randn(total, 64); h = torch.randn(total, 512)
w1 = torch.randn(512, 64); b1 = torch.randn(512); w2 = torch.randn(64, 512); b2 = torch.randn(64)
out1 = torch.empty(total, 512); out2 = torch.empty(total, 64)
for M in (2048, 8192, 32768, total):
    res = []
    for name, fn in (("fc1", lambda s, e: torch.addmm(b1, x[s:e], w1.t(), out=out1[s:e])),
                     ("fc2", lambda s, e: torch.addmm(x[s:e], h[s:e], w2.t(), out=out2[s:e])),
                     ("gelu_", lambda s, e: torch.ops.aten.gelu_(out1[s:e]))):
        ts = []
        for _ in range(7):
            t = time.perf_counter()
            for s in range(0, total, M):
                fn(s, min(s + M, total))
            ts.append(time.perf_counter() - t)
        t = sorted(ts)[3]
        res.append(f"{name} {1e3 * t:.0f} ms" + (f" ({2 * total * 64 * 512 / t / 1e9:.1f} GFLOP/s)" if name != "gelu_" else ""))
    print(f"M={M}:", "  ".join(res), flush=True)

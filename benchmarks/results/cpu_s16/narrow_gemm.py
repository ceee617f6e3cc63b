# Stage-1 training product shapes of LIT-Ti (batch 16): MKL's mm against oneDNN's inner
# product (torch.ops.mkldnn._linear_pointwise), operands laid out as each library wants them:
# the transposes a backward pass would need for oneDNN are not timed.
import statistics, time, torch
from litvit.benchmark import tune_cpu_malloc
tune_cpu_malloc(); torch.set_num_threads(2)
probe_a = torch.randn(4096, 4096); probe_b = torch.randn(4096, 4096)
def t(fn, n=9):
    fn(); fn(); ts = []
    for _ in range(n):
        s = time.perf_counter(); fn(); ts.append(time.perf_counter() - s)
    return statistics.median(ts)
peak = 2 * 4096 ** 3 / t(lambda: probe_a @ probe_b, 5) / 1e9
print(f"probe {peak:.1f} GFLOP/s")
M = 16 * 56 * 56
for (m, k, n) in [(M, 64, 512), (M, 512, 64), (64, M, 512), (512, M, 64)]:
    a = torch.randn(m, k); b = torch.randn(k, n); w = b.t().contiguous()
    flop = 2 * m * k * n / 1e9
    mkl = t(lambda: torch.mm(a, b))
    dnn = t(lambda: torch.ops.mkldnn._linear_pointwise(a, w, None, "none", [], ""))
    print(f"{m:6d} x {k:6d} -> {n:4d}: mm {flop / mkl:6.1f} GFLOP/s ({100 * flop / mkl / peak:3.0f} %), "
          f"oneDNN {flop / dnn:6.1f} ({100 * flop / dnn / peak:3.0f} %)")

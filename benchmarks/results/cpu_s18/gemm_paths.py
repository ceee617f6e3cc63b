# Matrix-product throughput of MKL (torch.mm) and oneDNN (_linear_pointwise) on this CPU, for a
# square product and LIT-Ti's training shapes (batch 16): forward y = x W^T, input gradient
# dx = g W, weight gradient dW = g^T x. python gemm_paths.py
import statistics, time, torch
from litvit.benchmark import tune_cpu_malloc
tune_cpu_malloc(); torch.set_num_threads(2)
lin = torch.ops.mkldnn._linear_pointwise
def t(fn, n=7):
    fn(); fn(); ts = []
    for _ in range(n):
        s = time.perf_counter(); fn(); ts.append(time.perf_counter() - s)
    return statistics.median(ts)
a = torch.randn(2048, 2048); b = torch.randn(2048, 2048)
f = 2 * 2048 ** 3 / 1e9
print(f"square 2048: mm {f / t(lambda: torch.mm(a, b)):6.1f}  oneDNN {f / t(lambda: lin(a, b, None, 'none', [], '')):6.1f} GFLOP/s")
for tokens, c, hidden in [(3136, 64, 512), (784, 128, 1024), (196, 320, 1280), (49, 512, 2048)]:
    for k, n in [(c, hidden), (hidden, c), (c, 3 * c)]:
        M = 16 * tokens
        x = torch.randn(M, k); w = torch.randn(n, k); g = torch.randn(M, n); wt = w.t().contiguous()
        fl = 2 * M * k * n / 1e9
        r = {
            "fwd mm": t(lambda: torch.mm(x, w.t())),
            "fwd dnn": t(lambda: lin(x, w, None, "none", [], "")),
            "dx mm": t(lambda: torch.mm(g, w)),
            "dx dnn": t(lambda: lin(g, wt, None, "none", [], "")),
            "dW mm": t(lambda: torch.mm(g.t(), x)),
            "dW dnn": t(lambda: lin(g.t().contiguous(), x.t(), None, "none", [], "")),
            "dW dnn2": t(lambda: lin(x.t().contiguous(), g.t(), None, "none", [], "").t()),
        }
        print(f"M={M:6d} {k:5d}->{n:5d}: " + "  ".join(f"{k_} {fl / s:5.0f}" for k_, s in r.items()))

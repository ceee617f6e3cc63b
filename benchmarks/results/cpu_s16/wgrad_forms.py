# Weight-gradient products of LIT-Ti's stage 1 (batch 16) through oneDNN with the transposes
# a backward pass really has: dW = g^T x, operands in the layouts autograd hands over.
import statistics, time, torch
from litvit.benchmark import tune_cpu_malloc
tune_cpu_malloc(); torch.set_num_threads(2)
def t(fn, n=9):
    fn(); fn(); ts = []
    for _ in range(n):
        s = time.perf_counter(); fn(); ts.append(time.perf_counter() - s)
    return statistics.median(ts)
lin = torch.ops.mkldnn._linear_pointwise
M = 16 * 56 * 56
for k, n in [(64, 512), (512, 64)]:
    x = torch.randn(M, k); g = torch.randn(M, n); flop = 2 * M * k * n / 1e9
    ref = g.t() @ x
    forms = {
        "mm(g.t(), x)": lambda: torch.mm(g.t(), x),
        "oneDNN(g.t().contiguous(), x.t())": lambda: lin(g.t().contiguous(), x.t(), None, "none", [], ""),
        "oneDNN(x.t().contiguous(), g.t()).t()": lambda: lin(x.t().contiguous(), g.t(), None, "none", [], "").t(),
        "oneDNN(g.t().contiguous(), x.t().contiguous())": lambda: lin(g.t().contiguous(), x.t().contiguous(), None, "none", [], ""),
    }
    for name, fn in forms.items():
        err = (fn() - ref).abs().max().item()
        s = t(fn)
        print(f"dW {n}x{k} from M={M}: {name:48s} {1e3 * s:6.1f} ms {flop / s:6.1f} GFLOP/s  max err {err:.1e}")

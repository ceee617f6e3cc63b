import torch, time
import torch.nn.functional as F
from litvit.benchmark import tune_cpu_malloc
tune_cpu_malloc()
def tm(f, n=9):
    f(); f(); ts=[]
    for _ in range(n):
        t0=time.perf_counter(); f(); ts.append(time.perf_counter()-t0)
    return sorted(ts)[n//2]*1000
lp = torch.ops.mkldnn._linear_pointwise
for M, K, N in [(50176, 64, 512), (50176, 512, 64), (12544, 128, 1024), (12544, 1024, 128), (3136, 320, 1280), (3136,1280,320)]:
    x = torch.randn(M, K); w = torch.randn(N, K); b = torch.randn(N)
    fl = 2*M*K*N/1e9
    r = {}
    r["F.linear"] = tm(lambda: F.linear(x, w, b))
    r["mm nobias"] = tm(lambda: x @ w.t())
    r["onednn lin+b"] = tm(lambda: lp(x, w, b, "none", [], ""))
    r["F.linear+gelu"] = tm(lambda: F.gelu(F.linear(x, w, b)))
    r["onednn lin+b+gelu"] = tm(lambda: lp(x, w, b, "gelu", [], "none"))
    print(f"{M}x{K}x{N}: " + "  ".join(f"{k} {v:.1f}ms({fl/v*1000:.0f})" for k, v in r.items()))
    print("   maxdiff", (lp(x, w, b, "gelu", [], "none") - F.gelu(F.linear(x, w, b))).abs().max().item())

import torch, time
from litvit.benchmark import tune_cpu_malloc
tune_cpu_malloc()
lp = torch.ops.mkldnn._linear_pointwise
def tm(f, n=9):
    f(); f(); ts=[]
    for _ in range(n):
        t0=time.perf_counter(); f(); ts.append(time.perf_counter()-t0)
    return sorted(ts)[n//2]*1000
for M, C, H in [(50176, 64, 512), (12544, 128, 1024), (3136, 320, 1280)]:
    # fc2 backward grad input: g[M,C] @ W2[C,H]; fc1 grad input: gh[M,H] @ W1[H,C]
    g = torch.randn(M, C); W2 = torch.randn(C, H); gh = torch.randn(M, H); W1 = torch.randn(H, C)
    W2t = W2.t().contiguous(); W1t = W1.t().contiguous()
    a = torch.randn(M, H); n = torch.randn(M, C)
    r = {
      "g@W2 mkl": tm(lambda: g @ W2), "g@W2 onednn": tm(lambda: lp(g, W2t, None, "none", [], "")),
      "gh@W1 mkl": tm(lambda: gh @ W1), "gh@W1 onednn": tm(lambda: lp(gh, W1t, None, "none", [], "")),
      "gW2=g^T@a mkl": tm(lambda: g.t() @ a), "gW1=gh^T@n mkl": tm(lambda: gh.t() @ n),
      "gW1 alt (n^T@gh)^T": tm(lambda: (n.t() @ gh).t()),
      "gb1 sum": tm(lambda: gh.sum(0)),
    }
    print(f"M={M} C={C} H={H}: " + "  ".join(f"{k} {v:.1f}" for k, v in r.items()))

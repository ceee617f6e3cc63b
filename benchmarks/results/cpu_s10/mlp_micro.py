import torch, time, statistics, sys
import torch.nn as nn, torch.nn.functional as F
from litvit.benchmark import tune_cpu_malloc
tune_cpu_malloc()
import os; exec(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "mlpfn.py")).read())
def run(fn, x, n_mod, fc1, fc2):
    n = n_mod(x)
    y = fn(x, n, fc1, fc2)
    y.backward(gy)
def orig(x, n, fc1, fc2): return x + fc2(F.gelu(fc1(n)))
def fused(x, n, fc1, fc2): return MlpResidual.apply(x, n, fc1.weight, fc1.bias, fc2.weight, fc2.bias)
def fwdonly(x, n, fc1, fc2): return MlpResidualFwd.apply(x, n, fc1.weight, fc1.bias, fc2.weight, fc2.bias)
shapes = {"ti1": (50176,64,512), "ti2": (12544,128,1024), "ti3": (3152,320,1280), "ti4": (800,512,2048),
          "s1": (50176,96,384), "s2": (12544,192,768), "s3": (3136,384,1536), "s4": (784,768,3072)}
for key in sys.argv[1].split(","):
    M, C, H = shapes[key]
    ln = nn.LayerNorm(C); fc1 = nn.Linear(C, H); fc2 = nn.Linear(H, C)
    x = torch.randn(16, M // 16, C, requires_grad=True); gy = torch.randn_like(x)
    fns = {"orig": orig, "fused": fused, "fwdonly": fwdonly}
    t = {k: [] for k in fns}
    for k, f in fns.items(): run(f, x, ln, fc1, fc2); run(f, x, ln, fc1, fc2)
    for r in range(11):
        for k, f in fns.items():
            t0 = time.perf_counter(); run(f, x, ln, fc1, fc2); t[k].append(time.perf_counter() - t0)
    o = statistics.median(t["orig"])
    print(f"{key} {M}x{C}x{H}: orig {o*1e3:.1f} ms; " + "; ".join(f"{k} {statistics.median(v)*1e3:.1f} ({o/statistics.median(v):.3f}x)" for k, v in t.items() if k != "orig"))

import time, torch
from litvit.benchmark import tune_cpu_malloc
tune_cpu_malloc(); torch.set_num_threads(2)
N = 16*3136
gy = torch.randn(N, 64); w = torch.randn(64, 512) * 0.02; x = torch.randn(N, 512)
def run(with_mm, n=6):
    ts = []; tm = []
    for i in range(n):
        a = time.perf_counter()
        g = gy @ w if with_mm else torch.randn(1)
        b = time.perf_counter()
        if not with_mm: g = gy_full
        import resource; f0 = resource.getrusage(0).ru_minflt; r = torch.ops.aten.gelu_backward(g, x); print("flt", resource.getrusage(0).ru_minflt - f0, end=" ")
        c = time.perf_counter(); del r
        ts.append(c - b); tm.append(b - a)
    return sorted(ts)[n//2]*1e3, sorted(tm)[n//2]*1e3
gy_full = gy @ w
print("gelu_bwd after mm (bwd ms, mm ms)", run(True))
print("gelu_bwd alone", run(False))
g = gy @ w
def fwd_after(n=6):
    ts=[]
    for i in range(n):
        h = torch.addmm(torch.zeros(512), gy, w); b=time.perf_counter(); r = torch.nn.functional.gelu(h); ts.append(time.perf_counter()-b)
    return sorted(ts)[n//2]*1e3
print("gelu fwd after addmm", fwd_after())

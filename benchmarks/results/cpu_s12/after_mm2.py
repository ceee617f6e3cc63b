import time, torch, sys
from litvit.benchmark import tune_cpu_malloc
tune_cpu_malloc(); torch.set_num_threads(2)
N = 16*3136
gy = torch.randn(N, 64); w = torch.randn(64, 512) * 0.02; x = torch.randn(N, 512); g0 = gy @ w
def run(label, pre, use_g, sleep=0.0, n=6):
    ts = []
    for i in range(n):
        g = pre()
        if sleep: time.sleep(sleep)
        b = time.perf_counter()
        r = torch.ops.aten.gelu_backward(g if use_g else g0, x)
        ts.append(time.perf_counter() - b); del r, g
    print(f"{label:40s} {sorted(ts)[n//2]*1e3:7.1f} ms")
run("after mm, on its output", lambda: gy @ w, True)
run("after mm, on other tensors", lambda: gy @ w, False)
run("after mm + sleep 0.3 s, on its output", lambda: gy @ w, True, 0.3)
run("after mm + sleep 0.3 s, other tensors", lambda: gy @ w, False, 0.3)
run("after clone of g0, on its output", lambda: g0.clone(), True)
run("after mul of g0, on its output", lambda: g0 * 2, True)
run("after nothing", lambda: None, False)

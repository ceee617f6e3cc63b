import torch, time
from litvit.benchmark import tune_cpu_malloc
tune_cpu_malloc()
for threads in (1, 2):
    torch.set_num_threads(threads)
    for n in (1 << 19, 25 << 20):
        x = torch.randn(n); out = torch.empty_like(x); g = torch.randn(n)
        ops = {
            "copy": lambda: out.copy_(x),
            "relu": lambda: torch.relu(x, out=out) if False else torch.clamp_min(x, 0, out=out),
            "exp": lambda: torch.exp(x, out=out),
            "erf": lambda: torch.erf(x, out=out),
            "tanh": lambda: torch.tanh(x, out=out),
            "gelu": lambda: torch.ops.aten.gelu.out(x, out=out),
            "gelu_tanh": lambda: torch.ops.aten.gelu.out(x, approximate="tanh", out=out),
            "gelu_bwd": lambda: torch.ops.aten.gelu_backward.grad_input(g, x, grad_input=out),
            "sigmoid": lambda: torch.sigmoid(x, out=out),
        }
        res = []
        for k, f in ops.items():
            f()
            reps = max(1, (20 << 20) // n)
            t = time.perf_counter()
            for _ in range(reps): f()
            dt = (time.perf_counter() - t) / reps
            res.append(f"{k} {n / dt / 1e9:.2f}")
        print(threads, n, "G elem/s:", ", ".join(res))

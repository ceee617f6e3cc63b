import time, torch
from litvit.benchmark import tune_cpu_malloc
tune_cpu_malloc(); torch.set_num_threads(2)
print(torch.backends.cpu.get_cpu_capability())
x = torch.randn(16*3136, 512); g = torch.randn_like(x)
def t(f, n=5):
    f(); ts=[]
    for _ in range(n):
        a=time.perf_counter(); f(); ts.append(time.perf_counter()-a)
    return sorted(ts)[n//2]*1e3
print("elements", x.numel())
print("gelu fwd ms", t(lambda: torch.nn.functional.gelu(x)))
print("gelu bwd ms", t(lambda: torch.ops.aten.gelu_backward(g, x)))
print("gelu tanh fwd ms", t(lambda: torch.nn.functional.gelu(x, approximate="tanh")))
print("gelu tanh bwd ms", t(lambda: torch.ops.aten.gelu_backward(g, x, approximate="tanh")))
print("exp ms", t(lambda: torch.exp(x)))
print("erf ms", t(lambda: torch.erf(x)))
print("mul ms", t(lambda: x * g))
print("copy ms", t(lambda: x.clone()))

# Capture the (grad, input) pairs of every gelu_backward in one LIT-Ti training step, then time
# the op on those very tensors, on contiguous copies and on fresh random tensors of the same shape.
import time, torch, litvit
from torch.utils._python_dispatch import TorchDispatchMode
from litvit.benchmark import tune_cpu_malloc
tune_cpu_malloc(); torch.set_num_threads(2)
m = litvit.create_model("lit_ti").train()
x = torch.randn(16, 3, 224, 224); y = torch.randint(0, 1000, (16,))
captured = []
class Grab(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func is torch.ops.aten.gelu_backward.default:
            captured.append((args[0], args[1], out))
        return out
for _ in range(2):
    torch.nn.functional.cross_entropy(m(x), y).backward()
loss = torch.nn.functional.cross_entropy(m(x), y)
with Grab():
    loss.backward()
def t(f, n=5):
    f(); ts = []
    for _ in range(n):
        s = time.perf_counter(); f(); ts.append(time.perf_counter() - s)
    return 1e3 * sorted(ts)[n // 2]
for g, inp, out in captured:
    if g.numel() < 1e6: continue
    real = t(lambda: torch.ops.aten.gelu_backward(g, inp))
    cont = t(lambda: torch.ops.aten.gelu_backward(g.contiguous(), inp.contiguous()))
    rg, ri = torch.randn_like(g), torch.randn_like(inp)
    rnd = t(lambda: torch.ops.aten.gelu_backward(rg, ri))
    print(f"{str(tuple(g.shape)):18s} g stride {g.stride()} x stride {inp.stride()} out {out.stride()} "
          f"| real {real:6.1f} ms  contiguous copies {cont:6.1f}  random {rnd:6.1f}  "
          f"| |g| max {g.abs().max():.2e} min-nonzero {g.abs()[g != 0].min():.2e} tiny {(g.abs() < 1.2e-38).sum().item()}")

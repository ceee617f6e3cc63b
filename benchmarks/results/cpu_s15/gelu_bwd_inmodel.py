# Time every large gelu_backward inside LIT-Ti's training step (batch 16, 2 threads), with the
# minor page faults it takes, and time the op again right after on the same tensors.
import resource, sys, time, torch, litvit
from torch.utils._python_dispatch import TorchDispatchMode
from litvit.benchmark import tune_cpu_malloc
if "--no-tune" not in sys.argv:
    tune_cpu_malloc()
torch.set_num_threads(2)
m = litvit.create_model("lit_ti").train()
x = torch.randn(16, 3, 224, 224); y = torch.randint(0, 1000, (16,))
opt = torch.optim.SGD(m.parameters(), lr=1e-4, momentum=0.9)
rows = []
class Time(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is not torch.ops.aten.gelu_backward.default or args[0].numel() < 4e6:
            return func(*args, **(kwargs or {}))
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        s = time.perf_counter(); out = func(*args, **(kwargs or {})); d = time.perf_counter() - s
        f1 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        s = time.perf_counter(); func(*args); again = time.perf_counter() - s
        rows.append((tuple(args[0].shape), 1e3 * d, f1 - f0, 1e3 * again))
        return out
def step(mode=None):
    opt.zero_grad(set_to_none=True)
    loss = torch.nn.functional.cross_entropy(m(x), y)
    if mode:
        with mode: loss.backward()
    else:
        loss.backward()
    opt.step()
for _ in range(3): step()
for i in range(2):
    rows.clear(); step(Time())
    for shape, ms, faults, again in rows:
        print(f"step {i} {str(shape):16s} in step {ms:6.1f} ms  faults {faults:6d}  again {again:6.1f} ms")

# Wall time per aten op inside one step, timed around each op from a TorchDispatchMode (no
# profiler): python op_walltime.py MODEL {train,inference} [--by-shape]
import collections, sys, time, torch, timm, litvit
from torch.utils._python_dispatch import TorchDispatchMode
from litvit.benchmark import tune_cpu_malloc
tune_cpu_malloc(); torch.set_num_threads(2)
name, mode = sys.argv[1], sys.argv[2]
by_shape = "--by-shape" in sys.argv
m = litvit.create_model(name) if name.startswith("lit") else timm.create_model(name)
batch = 16 if mode == "train" else 32
x = torch.randn(batch, 3, 224, 224); y = torch.randint(0, 1000, (batch,))
opt = torch.optim.SGD(m.parameters(), lr=1e-4, momentum=0.9)
m.train(mode == "train")
totals = collections.defaultdict(lambda: [0.0, 0])
class Time(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        s = time.perf_counter(); out = func(*args, **(kwargs or {})); d = time.perf_counter() - s
        key = str(func.overloadpacket.__name__)
        if by_shape:
            key += " " + str([tuple(a.shape) for a in args if isinstance(a, torch.Tensor)])[:70]
        totals[key][0] += d; totals[key][1] += 1
        return out
def step(timer=None):
    ctx = timer or torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t)
    if mode == "train":
        opt.zero_grad(set_to_none=True)
        with ctx:
            torch.nn.functional.cross_entropy(m(x), y).backward()
            opt.step()
    else:
        with torch.inference_mode(), ctx:
            m(x)
for _ in range(2): step()
s = time.perf_counter(); step(); plain = time.perf_counter() - s
s = time.perf_counter(); step(Time()); timed = time.perf_counter() - s
total = sum(v[0] for v in totals.values())
print(f"{name} {mode}: step {1e3*plain:.0f} ms plain, {1e3*timed:.0f} ms with the timer, ops {1e3*total:.0f} ms")
for k, (t, n) in sorted(totals.items(), key=lambda kv: -kv[1][0])[:25 if by_shape else 16]:
    print(f"  {k:70s} {1e3*t:8.1f} ms {100*t/total:5.1f} %  {n:4d} calls")

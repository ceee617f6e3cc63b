# Ops of one training step (batch 16) whose tensor arguments are not contiguous (stride-0
# broadcasts aside), with the wall time they take: where layouts cost time.
import collections, sys, time, torch, litvit
from torch.utils._python_dispatch import TorchDispatchMode
from litvit.benchmark import tune_cpu_malloc
from litvit.models import lit
tune_cpu_malloc(); torch.set_num_threads(2)
name = sys.argv[1]
lit.DTM_TOKEN_LAYOUT_GRAD = "--as-left" not in sys.argv
infer = "--inference" in sys.argv
m = litvit.create_model(name).train(not infer)
x = torch.randn(32 if infer else 16, 3, 224, 224); y = torch.randint(0, 1000, (x.shape[0],))
rows = collections.defaultdict(lambda: [0.0, 0])
VIEWS = {"view", "permute", "transpose", "t", "unbind", "select", "slice", "expand", "as_strided", "unsqueeze",
         "squeeze", "_unsafe_view", "alias", "detach", "split", "unflatten", "split_with_sizes", "_reshape_alias"}
GEMMS = {"mm", "addmm", "bmm", "_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention_for_cpu_backward"}
class Strided(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        s = time.perf_counter(); out = func(*args, **(kwargs or {})); d = time.perf_counter() - s
        name = func.overloadpacket.__name__
        tensors = [a for a in args if isinstance(a, torch.Tensor) and a.dim() > 1 and a.numel() > 1e5]
        odd = [a for a in tensors if not a.is_contiguous() and 0 not in a.stride()]
        if odd and name not in VIEWS and name not in GEMMS:
            key = f"{name} {[(tuple(a.shape), a.stride()) for a in tensors][:2]}"[:150]
            rows[key][0] += d; rows[key][1] += 1
        return out
def step():
    if infer:
        with torch.inference_mode():
            m(x)
    else:
        torch.nn.functional.cross_entropy(m(x), y).backward()
for _ in range(2):
    step()
m.zero_grad()
with Strided():
    step()
total = sum(v[0] for v in rows.values())
print(f"{name} {'inference' if infer else 'training'} ({'token-layout grad' if lit.DTM_TOKEN_LAYOUT_GRAD else 'as left'}): ops other than products with non-contiguous arguments {1e3*total:.0f} ms")
for k, (t, n) in sorted(rows.items(), key=lambda kv: -kv[1][0])[:30]:
    print(f"  {1e3*t:7.1f} ms {n:3d}x  {k}")

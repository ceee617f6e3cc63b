# One profiled training step (batch 16, 2 threads) after two untimed ones:
#   python prof_train.py MODEL             the top ops by self CPU time (profile_train.txt)
#   python prof_train.py MODEL --by-shape  GELU, its backward and the products, per input shape
import sys, time, torch, timm, litvit
from litvit.benchmark import tune_cpu_malloc
tune_cpu_malloc(); torch.set_num_threads(2)
name, by_shape = sys.argv[1], "--by-shape" in sys.argv
m = timm.create_model(name) if not name.startswith("lit") else litvit.create_model(name)
m.train()
x = torch.randn(16, 3, 224, 224); y = torch.randint(0, 1000, (16,))
opt = torch.optim.SGD(m.parameters(), lr=1e-4, momentum=0.9)
def step():
    opt.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(m(x), y).backward(); opt.step()
for _ in range(2): step()
t = time.perf_counter(); step(); print(name, "step s", time.perf_counter() - t)
from torch.profiler import profile, ProfilerActivity
with profile(activities=[ProfilerActivity.CPU], record_shapes=by_shape) as p:
    step()
if not by_shape:
    print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=18, max_name_column_width=40))
for e in p.key_averages(group_by_input_shape=True) if by_shape else ():
    if e.key in ("aten::gelu_backward", "aten::gelu", "aten::mm", "aten::addmm"):
        print(f"{e.key:22s} {e.count:3d} {e.self_cpu_time_total/1e3/e.count:9.1f} ms/call  {str(e.input_shapes)[:90]}")

import sys, time, torch, timm, litvit
from litvit.benchmark import tune_cpu_malloc
tune_cpu_malloc(); torch.set_num_threads(2)
name = sys.argv[1]
m = timm.create_model(name) if not name.startswith("lit") else litvit.create_model(name)
m.train()
x = torch.randn(16, 3, 224, 224); y = torch.randint(0, 1000, (16,))
opt = torch.optim.SGD(m.parameters(), lr=1e-4, momentum=0.9)
def step():
    opt.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(m(x), y).backward(); opt.step()
for _ in range(3): step()
from torch.profiler import profile, ProfilerActivity
with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as p:
    step()
for e in p.key_averages(group_by_input_shape=True):
    if e.key in ("aten::gelu_backward", "aten::gelu", "aten::mm", "aten::addmm"):
        print(f"{e.key:22s} {e.count:3d} {e.self_cpu_time_total/1e3/e.count:9.1f} ms/call  {str(e.input_shapes)[:90]}")

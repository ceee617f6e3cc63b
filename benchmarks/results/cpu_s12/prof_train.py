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
for _ in range(2): step()
t = time.perf_counter(); step(); print(name, "step s", time.perf_counter() - t)
from torch.profiler import profile, ProfilerActivity
with profile(activities=[ProfilerActivity.CPU]) as p:
    step()
print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=18, max_name_column_width=40))

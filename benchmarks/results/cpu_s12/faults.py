import sys, time, resource, torch, timm, litvit
from litvit.benchmark import tune_cpu_malloc
tune_cpu_malloc(); torch.set_num_threads(2)
m = litvit.create_model("lit_ti").train()
x = torch.randn(16, 3, 224, 224); y = torch.randint(0, 1000, (16,))
opt = torch.optim.SGD(m.parameters(), lr=1e-4, momentum=0.9)
def step():
    opt.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(m(x), y).backward(); opt.step()
for i in range(6):
    r0 = resource.getrusage(resource.RUSAGE_SELF); t = time.perf_counter(); step()
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    print(i, f"{time.perf_counter()-t:.2f}s minflt {r1.ru_minflt-r0.ru_minflt} user {r1.ru_utime-r0.ru_utime:.2f} sys {r1.ru_stime-r0.ru_stime:.2f}")

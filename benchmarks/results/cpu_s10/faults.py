import os, sys, time, resource, ctypes, torch, timm, torch.nn as nn
import litvit
mode = sys.argv[1]
libc = ctypes.CDLL("libc.so.6")
if mode == "tuned":
    from litvit.benchmark import tune_cpu_malloc; tune_cpu_malloc()
elif mode == "notrim":
    libc.mallopt(-4, 0); libc.mallopt(-1, -1)
elif mode == "notrim_pad":
    libc.mallopt(-4, 0); libc.mallopt(-1, -1); libc.mallopt(-2, 1 << 30)  # M_TOP_PAD
m = timm.create_model(sys.argv[2] if len(sys.argv) > 2 else "lit_ti").train()
x = torch.randn(16, 3, 224, 224); t = torch.randint(0, 1000, (16,))
opt = torch.optim.SGD(m.parameters(), lr=1e-4, momentum=0.9)
def step():
    opt.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(m(x), t).backward(); opt.step()
for i in range(6):
    r0 = resource.getrusage(resource.RUSAGE_SELF); t0 = time.perf_counter()
    step()
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    print(mode, i, f"{(time.perf_counter()-t0)*1000:.0f} ms", "minflt", r1.ru_minflt - r0.ru_minflt, "sys s", round(r1.ru_stime - r0.ru_stime, 3), "maxrss MB", r1.ru_maxrss // 1024)

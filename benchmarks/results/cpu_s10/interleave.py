import sys, time, resource, torch, timm, torch.nn as nn
import litvit
from litvit.benchmark import tune_cpu_malloc
tune_cpu_malloc()
names = sys.argv[1].split(",")
x = torch.randn(16, 3, 224, 224); t = torch.randint(0, 1000, (16,))
ms = {n: timm.create_model(n).train() for n in names}
opts = {n: torch.optim.SGD(m.parameters(), lr=1e-4, momentum=0.9) for n, m in ms.items()}
for r in range(6):
    for n in names:
        r0 = resource.getrusage(resource.RUSAGE_SELF); t0 = time.perf_counter()
        opts[n].zero_grad(set_to_none=True); nn.functional.cross_entropy(ms[n](x), t).backward(); opts[n].step()
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        print(r, n, f"{(time.perf_counter()-t0)*1000:.0f} ms minflt {r1.ru_minflt-r0.ru_minflt} sys {r1.ru_stime-r0.ru_stime:.2f} user {r1.ru_utime-r0.ru_utime:.2f}")

# One profiled inference step (batch 32, 2 threads) after two untimed ones: top ops by self CPU time.
import sys, time, torch, timm, litvit
from litvit.benchmark import tune_cpu_malloc
tune_cpu_malloc(); torch.set_num_threads(2)
name = sys.argv[1]
m = (timm.create_model(name) if not name.startswith("lit") else litvit.create_model(name)).eval()
x = torch.randn(32, 3, 224, 224)
with torch.inference_mode():
    for _ in range(2): m(x)
    t = time.perf_counter(); m(x); print(name, "step s", time.perf_counter() - t)
    from torch.profiler import profile, ProfilerActivity
    with profile(activities=[ProfilerActivity.CPU]) as p:
        m(x)
print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=16, max_name_column_width=40))

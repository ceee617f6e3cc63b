"""Per-op time of LIT-Ti stage 1's fused MLPs, slabs of 1 << 20 hidden elements against the whole
batch at once (batch 32, 2 threads, torch.profiler, three passes each, alternating)."""
import torch, litvit
from torch.profiler import profile, ProfilerActivity
from litvit.benchmark import tune_cpu_malloc
from litvit.models.lit import fused_mlp_inference
tune_cpu_malloc(); torch.set_num_threads(2); torch.manual_seed(0)
m = litvit.create_model("lit_ti").eval()
blocks = m.stages[0].blocks
x = torch.randn(32, 3136, 64)
variants = {"slab 1<<20": (1 << 20) // 512, "whole": None}
with torch.inference_mode():
    for rows in variants.values():
        fused_mlp_inference(blocks, x, rows)
    totals = {k: {} for k in variants}
    for _ in range(3):
        for name, rows in variants.items():
            with profile(activities=[ProfilerActivity.CPU]) as p:
                fused_mlp_inference(blocks, x, rows)
            for e in p.key_averages():
                totals[name][e.key] = totals[name].get(e.key, 0) + e.self_cpu_time_total / 3e3
for name, ops in totals.items():
    top = sorted(ops.items(), key=lambda kv: -kv[1])[:6]
    print(f"{name}: total {sum(ops.values()):.0f} ms;", ", ".join(f"{k} {v:.0f}" for k, v in top))

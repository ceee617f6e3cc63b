import torch, time, timm, sys, statistics
import litvit
from litvit.ops.onednn import set_cpu_mlp_kernel, get_cpu_mlp_kernel
from litvit.benchmark import tune_cpu_malloc
tune_cpu_malloc()
names = sys.argv[1].split(",")
models = {n: timm.create_model(n).eval() for n in names}
x = torch.randn(32, 3, 224, 224)
print("auto resolves to", get_cpu_mlp_kernel(x))
res = {(n, k): [] for n in names for k in ("aten", "auto")}
with torch.inference_mode():
    for n in names:
        set_cpu_mlp_kernel("aten"); a = models[n](x); set_cpu_mlp_kernel("auto"); b = models[n](x)
        print(n, "maxdiff", (a - b).abs().max().item())
    for r in range(int(sys.argv[2]) if len(sys.argv) > 2 else 7):
        for n in names:
            for k in ("aten", "auto"):
                set_cpu_mlp_kernel(k); t0 = time.perf_counter(); models[n](x); res[(n, k)].append(time.perf_counter() - t0)
for n in names:
    a = statistics.median(res[(n, "aten")]); b = statistics.median(res[(n, "auto")])
    print(f"{n}: aten {a*1000:.0f} ms onednn {b*1000:.0f} ms speed-up {a/b:.3f}")

import torch, timm, time, statistics, litvit
from litvit.benchmark import tune_cpu_malloc
from litvit.ops import onednn
tune_cpu_malloc()
m = timm.create_model("lit_ti").eval()
x = torch.randn(32, 3, 224, 224)
def run(k):
    onednn.set_cpu_mlp_kernel(k)
    with torch.inference_mode():
        t = time.perf_counter(); m(x); return time.perf_counter() - t
for k in ("aten", "onednn"): run(k)
ts = {"aten": [], "onednn": []}
for r in range(4):
    for k in ts: ts[k].append(run(k))
print({k: round(statistics.median(v)*1000) for k, v in ts.items()}, "ratio aten/onednn", statistics.median([a/b for a, b in zip(ts["aten"], ts["onednn"])]))
# micro: fc1+gelu on a slab
w = torch.randn(512, 64); b = torch.randn(512); xs = torch.randn(2048, 64); buf = torch.empty(2048, 512)
def aten_f(): torch.ops.aten.gelu_(torch.addmm(b, xs, w.t(), out=buf))
def dnn_f(): onednn.linear_gelu(xs, w, b)
for name, f in (("aten", aten_f), ("onednn", dnn_f)):
    f(); t = time.perf_counter()
    for _ in range(50): f()
    print(name, "fc1+gelu slab", round((time.perf_counter() - t) / 50 * 1000, 3), "ms")

import torch, time, timm, sys, statistics
import litvit, litvit.models.lit as L
from litvit.benchmark import tune_cpu_malloc
tune_cpu_malloc()
names = sys.argv[1].split(",")
models = {}
for n in names:
    m = timm.create_model(n).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.normal_(0, 0.5, generator=g); mod.running_var.uniform_(0.5, 2, generator=g)
                mod.weight.normal_(1, 0.2, generator=g); mod.bias.normal_(0, 0.2, generator=g)
    models[n] = m
x = torch.randn(32, 3, 224, 224)
res = {(n, k): [] for n in names for k in (False, True)}
with torch.inference_mode():
    for n in names:
        L.FOLD_DTM_NORM = False; a = models[n](x); L.FOLD_DTM_NORM = True; b = models[n](x)
        print(n, "maxdiff", (a - b).abs().max().item(), "scale", a.abs().max().item())
    for r in range(9):
        for n in names:
            for k in (False, True):
                L.FOLD_DTM_NORM = k; t0 = time.perf_counter(); models[n](x); res[(n, k)].append(time.perf_counter() - t0)
for n in names:
    a = statistics.median(res[(n, False)]); b = statistics.median(res[(n, True)])
    print(f"{n}: unfolded {a*1000:.0f} ms folded {b*1000:.0f} ms speed-up {a/b:.3f}")

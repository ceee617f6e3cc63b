import time, sys, torch, timm, statistics, collections
import litvit
from litvit.benchmark import tune_cpu_malloc
tune_cpu_malloc()
m = timm.create_model(sys.argv[1]).eval()
x = torch.randn(32, 3, 224, 224)
T = collections.defaultdict(list); st = {}
mods = [("patch_embed", m.patch_embed)] + [(f"stage{i}", s) for i, s in enumerate(m.stages)] + [(f"stage{i}.dtm", s.downsample) for i, s in enumerate(m.stages) if s.downsample is not None]
mods += [(f"stage{i}.attn", b.attn) for i, s in enumerate(m.stages) for b in s.blocks if b.attn is not None]
acc = collections.defaultdict(float)
for n, mod in mods:
    mod.register_forward_pre_hook(lambda mod, i, n=n: st.__setitem__(id(mod), time.perf_counter()))
    mod.register_forward_hook(lambda mod, i, o, n=n: acc.__setitem__(n, acc[n] + time.perf_counter() - st[id(mod)]))
with torch.inference_mode():
    for r in range(6):
        acc.clear(); t0 = time.perf_counter(); m(x); tot = time.perf_counter() - t0
        for k, v in acc.items(): T[k].append(v)
        T["total"].append(tot)
for k, v in T.items(): print(f"{k:14s} {statistics.median(v[1:])*1000:7.1f} ms")

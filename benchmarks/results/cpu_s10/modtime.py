import time, sys, torch, timm, torch.nn as nn, collections
import litvit
from litvit.benchmark import tune_cpu_malloc
tune_cpu_malloc()
name = sys.argv[1]; depth = int(sys.argv[2]) if len(sys.argv) > 2 else 3
m = timm.create_model(name).train()
x = torch.randn(16, 3, 224, 224); t = torch.randint(0, 1000, (16,))
fwd = collections.defaultdict(float); bwd = collections.defaultdict(float); st = {}
def group(n):
    parts = n.split(".")
    # collapse block index: stages.0.blocks.1.mlp -> stages.0.blocks.*.mlp
    parts = ["*" if (i > 0 and parts[i-1] == "blocks") else p for i, p in enumerate(parts)]
    return ".".join(parts)
for n, mod in m.named_modules():
    if n.count(".") + 1 != depth and not (n.count(".") + 1 < depth and len(list(mod.children())) == 0):
        continue
    g = group(n)
    def pre(mod, inp, g=g): st[("f", id(mod))] = time.perf_counter()
    def post(mod, inp, out, g=g): fwd[g] += time.perf_counter() - st[("f", id(mod))]
    def bpre(mod, gout, g=g): st[("b", id(mod))] = time.perf_counter()
    def bpost(mod, gin, gout, g=g): bwd[g] += time.perf_counter() - st[("b", id(mod))]
    mod.register_forward_pre_hook(pre); mod.register_forward_hook(post)
    mod.register_full_backward_pre_hook(bpre); mod.register_full_backward_hook(bpost)
opt = torch.optim.SGD(m.parameters(), lr=1e-4, momentum=0.9)
for i in range(4):
    fwd.clear(); bwd.clear()
    opt.zero_grad(set_to_none=True)
    t0 = time.perf_counter(); loss = nn.functional.cross_entropy(m(x), t); t1 = time.perf_counter(); loss.backward(); t2 = time.perf_counter()
print(f"total fwd {1000*(t1-t0):.0f} bwd {1000*(t2-t1):.0f}")
for k in fwd: print(f"{k:40s} fwd {1000*fwd[k]:7.1f}  bwd {1000*bwd.get(k,0):7.1f}")

import time, sys, torch, timm, torch.nn as nn
import litvit
from litvit.benchmark import tune_cpu_malloc
tune_cpu_malloc()
if len(sys.argv) > 1 and sys.argv[1] == "ftz": torch.set_flush_denormal(True)
times = []
class TimedGelu(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x); return torch.nn.functional.gelu(x)
    @staticmethod
    def backward(ctx, g):
        x, = ctx.saved_tensors
        t0 = time.perf_counter(); r = torch.ops.aten.gelu_backward(g, x)
        t1 = time.perf_counter(); r2 = torch.ops.aten.gelu_backward(g, x); t2 = time.perf_counter()
        gg = g.clone(); xx = x.clone(); t3 = time.perf_counter(); r3 = torch.ops.aten.gelu_backward(gg, xx); t4=time.perf_counter()
        times.append((tuple(x.shape), round((t1-t0)*1e3,1), round((t2-t1)*1e3,1), round((t4-t3)*1e3,1), g.stride(), x.stride(), g.is_contiguous()))
        return r
class G(nn.Module):
    def forward(self, x): return TimedGelu.apply(x)
m = timm.create_model("lit_ti").train()
for s in m.stages[:2]:
    for b in s.blocks: b.mlp.act = G()
x = torch.randn(16, 3, 224, 224); t = torch.randint(0, 1000, (16,))
for i in range(3):
    times.clear()
    nn.functional.cross_entropy(m(x), t).backward()
for r in times: print(r)

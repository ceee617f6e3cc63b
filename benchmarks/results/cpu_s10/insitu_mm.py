import time, sys, torch, timm, torch.nn as nn, torch.nn.functional as F
import litvit
from litvit.benchmark import tune_cpu_malloc
tune_cpu_malloc()
times = []
class TimedLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, b):
        ctx.save_for_backward(x, w); return F.linear(x, w, b)
    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        g2 = g.reshape(-1, g.shape[-1]); x2 = x.reshape(-1, x.shape[-1])
        t0 = time.perf_counter(); gi = g2 @ w
        t1 = time.perf_counter(); gw = g2.t() @ x2
        t2 = time.perf_counter(); gb = g2.sum(0); t3 = time.perf_counter()
        times.append((tuple(g2.shape), tuple(w.shape), g.is_contiguous(), round((t1-t0)*1e3,1), round((t2-t1)*1e3,1), round((t3-t2)*1e3,1)))
        return gi.reshape(x.shape), gw, gb
class L(nn.Module):
    def __init__(self, lin): super().__init__(); self.lin = lin
    def forward(self, x): return TimedLinear.apply(x, self.lin.weight, self.lin.bias)
m = timm.create_model("lit_ti").train()
for s in m.stages[:2]:
    for b in s.blocks: b.mlp.fc1 = L(b.mlp.fc1); b.mlp.fc2 = L(b.mlp.fc2)
x = torch.randn(16, 3, 224, 224); t = torch.randint(0, 1000, (16,))
for i in range(4):
    times.clear(); t0 = time.perf_counter()
    nn.functional.cross_entropy(m(x), t).backward()
    print("step", round((time.perf_counter()-t0)*1000))
print("grad_out shape, W shape, contiguous, grad_in ms, grad_w ms, grad_b ms")
for r in times: print(r)

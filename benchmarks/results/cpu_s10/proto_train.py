import torch, time, timm, sys, statistics
import torch.nn as nn, torch.nn.functional as F
import litvit
from litvit.benchmark import tune_cpu_malloc
tune_cpu_malloc()
lp = torch.ops.mkldnn._linear_pointwise
GW = sys.argv[2] if len(sys.argv) > 2 else "xg"
class FastLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, b):
        ctx.save_for_backward(x, w)
        return lp(x, w, b, "none", [], "")
    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        g2 = g.reshape(-1, g.shape[-1]); x2 = x.reshape(-1, x.shape[-1])
        gi = lp(g2, w.t().contiguous(), None, "none", [], "").reshape(x.shape) if ctx.needs_input_grad[0] else None
        if GW == "xg": gw = (x2.t() @ g2).t()
        else: gw = g2.t() @ x2
        gb = g2.sum(0)
        return gi, gw, gb
def fast_forward(self, x):
    if torch.is_grad_enabled() and x.dtype == torch.float32:
        return FastLinear.apply(x, self.weight, self.bias)
    return F.linear(x, self.weight, self.bias)
names = sys.argv[1].split(",")
torch.manual_seed(0)
models = {}
for n in names:
    a = timm.create_model(n).train(); b = timm.create_model(n).train(); b.load_state_dict(a.state_dict())
    for mod in b.modules():
        if type(mod) is nn.Linear and mod.bias is not None:
            mod.forward = fast_forward.__get__(mod)
    models[(n, "orig")] = a; models[(n, "fast")] = b
x = torch.randn(16, 3, 224, 224); t = torch.randint(0, 1000, (16,))
opts = {k: torch.optim.SGD(m.parameters(), lr=1e-4, momentum=0.9) for k, m in models.items()}
def step(k):
    opts[k].zero_grad(set_to_none=True); loss = F.cross_entropy(models[k](x), t); loss.backward(); opts[k].step(); return loss
# check gradients equal on first step
for n in names:
    la = F.cross_entropy(models[(n,"orig")](x), t); la.backward()
    lb = F.cross_entropy(models[(n,"fast")](x), t); lb.backward()
    md = max((p.grad - q.grad).abs().max().item() / (p.grad.abs().max().item() + 1e-12) for p, q in zip(models[(n,"orig")].parameters(), models[(n,"fast")].parameters()) if p.grad is not None)
    print(n, "loss diff", (la - lb).item(), "max rel grad diff", md)
res = {k: [] for k in models}
for k in models: step(k); step(k)
for r in range(6):
    for k in models:
        t0 = time.perf_counter(); step(k); res[k].append(time.perf_counter() - t0)
for n in names:
    a = statistics.median(res[(n, "orig")]); b = statistics.median(res[(n, "fast")])
    print(f"{n}: orig {a*1000:.0f} ms fast {b*1000:.0f} ms speed-up {a/b:.3f}")

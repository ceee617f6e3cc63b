import torch, time, timm, sys, statistics
import torch.nn as nn, torch.nn.functional as F
import litvit
from litvit.models.lit import Block
from litvit.benchmark import tune_cpu_malloc
tune_cpu_malloc()
lp = torch.ops.mkldnn._linear_pointwise
lpb = torch.ops.mkldnn._linear_pointwise.binary
STAGES = [int(s) for s in sys.argv[2].split(",")]
class MlpResidual(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, n, w1, b1, w2, b2):
        h = lp(n, w1, b1, "none", [], "")
        a = F.gelu(h)
        y = lpb(a, x, w2, b2, "add")
        ctx.save_for_backward(n, w1, w2, h, a)
        return y
    @staticmethod
    def backward(ctx, g):
        n, w1, w2, h, a = ctx.saved_tensors
        C = g.shape[-1]; H = h.shape[-1]
        g2 = g.reshape(-1, C); a2 = a.reshape(-1, H); n2 = n.reshape(-1, C)
        ga = lp(g2, w2.t().contiguous(), None, "none", [], "")
        gw2 = g2.t() @ a2
        gb2 = g2.sum(0)
        gh = torch.ops.aten.gelu_backward.grad_input(ga, h.reshape(-1, H), grad_input=ga)
        gw1 = (n2.t() @ gh).t()
        gb1 = gh.sum(0)
        gn = lp(gh, w1.t().contiguous(), None, "none", [], "").reshape(n.shape)
        return g, gn, gw1, gb1, gw2, gb2
def fast_block_forward(self, x, grid):
    if self.attn is not None:
        x = x + self.drop_path(self.attn(self.norm1(x), grid))
    if self.training and torch.is_grad_enabled():
        return MlpResidual.apply(x, self.norm2(x), self.mlp.fc1.weight, self.mlp.fc1.bias, self.mlp.fc2.weight, self.mlp.fc2.bias)
    return x + self.drop_path(self.mlp(self.norm2(x)))
names = sys.argv[1].split(",")
torch.manual_seed(0)
models = {}
for n in names:
    a = timm.create_model(n).train(); b = timm.create_model(n).train(); b.load_state_dict(a.state_dict())
    for si in STAGES:
        for blk in b.stages[si].blocks: blk.forward = fast_block_forward.__get__(blk)
    models[(n, "orig")] = a; models[(n, "fast")] = b
x = torch.randn(16, 3, 224, 224); t = torch.randint(0, 1000, (16,))
opts = {k: torch.optim.SGD(m.parameters(), lr=1e-4, momentum=0.9) for k, m in models.items()}
def step(k):
    opts[k].zero_grad(set_to_none=True); loss = F.cross_entropy(models[k](x), t); loss.backward(); opts[k].step(); return loss
for n in names:
    pa = dict(models[(n,"orig")].named_parameters()); pb = dict(models[(n,"fast")].named_parameters())
    la = F.cross_entropy(models[(n,"orig")](x), t); la.backward()
    lb = F.cross_entropy(models[(n,"fast")](x), t); lb.backward()
    worst = max(((pa[k].grad - pb[k].grad).abs().max().item() / (pa[k].grad.abs().max().item() + 1e-20), k) for k in pa if pa[k].grad is not None)
    print(n, "loss diff", (la - lb).item(), "worst rel grad diff", worst)
res = {k: [] for k in models}
for k in models: step(k); step(k)
for r in range(6):
    for k in models:
        t0 = time.perf_counter(); step(k); res[k].append(time.perf_counter() - t0)
for n in names:
    a = statistics.median(res[(n, "orig")]); b = statistics.median(res[(n, "fast")])
    print(f"{n}: orig {a*1000:.0f} ms fast {b*1000:.0f} ms speed-up {a/b:.3f}")

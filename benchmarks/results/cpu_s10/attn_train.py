import torch, time, statistics, sys
import torch.nn.functional as F
from litvit.benchmark import tune_cpu_malloc
tune_cpu_malloc()
B, H, N, D = 16, 12, 196, 32
if len(sys.argv) > 1: B, H, N, D = [int(v) for v in sys.argv[1].split(",")]
scale = D ** -0.5
g = torch.Generator().manual_seed(0)
q0 = torch.randn(B, H, N, D, generator=g); k0 = torch.randn(B, H, N, D, generator=g); v0 = torch.randn(B, H, N, D, generator=g)
bias0 = torch.randn(1, H, N, N, generator=g) * 0.5
go = torch.randn(B, H, N, D, generator=g)
def explicit(q, k, v, bias):
    attn = (q * scale) @ k.transpose(-2, -1)
    attn = attn + bias
    return attn.softmax(-1) @ v
def baddbmm_(q, k, v, bias):
    attn = torch.baddbmm(bias.expand(B, H, N, N).reshape(B * H, N, N), q.reshape(B * H, N, D), k.reshape(B * H, N, D).transpose(1, 2), alpha=scale)
    return (attn.softmax(-1) @ v.reshape(B * H, N, D)).reshape(B, H, N, D)
class FlashBiasAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, bias):
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.detach())
        ctx.save_for_backward(q, k, v, bias, out)
        return out
    @staticmethod
    def backward(ctx, dout):
        q, k, v, bias, out = ctx.saved_tensors
        s = torch.baddbmm(bias.expand(B, H, N, N).reshape(B * H, N, N), q.reshape(B * H, N, D), k.reshape(B * H, N, D).transpose(1, 2), alpha=scale)
        p = s.softmax(-1)
        do = dout.reshape(B * H, N, D)
        dv = p.transpose(1, 2) @ do
        dp = do @ v.reshape(B * H, N, D).transpose(1, 2)
        delta = (do * out.reshape(B * H, N, D)).sum(-1, keepdim=True)
        ds = p.mul_(dp.sub_(delta))
        dq = (ds @ k.reshape(B * H, N, D)).mul_(scale)
        dk = (ds.transpose(1, 2) @ q.reshape(B * H, N, D)).mul_(scale)
        dbias = ds.reshape(B, H, N, N).sum(0, keepdim=True)
        return dq.reshape(B, H, N, D), dk.reshape(B, H, N, D), dv.reshape(B, H, N, D), dbias
def flashbias(q, k, v, bias): return FlashBiasAttention.apply(q, k, v, bias)
def sdpa_math(q, k, v, bias): return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
fns = {"explicit": explicit, "baddbmm": baddbmm_, "flash+manual bwd": flashbias, "sdpa(math)": sdpa_math}
def run(f, backward=True):
    q, k, v, bias = (t.clone().requires_grad_() for t in (q0, k0, v0, bias0))
    out = f(q, k, v, bias)
    if backward:
        out.backward(go)
        return out, q.grad, k.grad, v.grad, bias.grad
    return (out,)
ref = run(explicit)
for name, f in fns.items():
    r = run(f)
    print(name, "max rel err", max(((a - b).abs().max() / b.abs().max()).item() for a, b in zip(r, ref)))
t = {k: [] for k in fns}; tf = {k: [] for k in fns}
for _ in range(9):
    for k, f in fns.items():
        t0 = time.perf_counter(); run(f); t[k].append(time.perf_counter() - t0)
        t0 = time.perf_counter(); run(f, False); tf[k].append(time.perf_counter() - t0)
for k in fns:
    print(f"{k:18s} fwd {statistics.median(tf[k])*1e3:6.1f} ms  fwd+bwd {statistics.median(t[k])*1e3:6.1f} ms")

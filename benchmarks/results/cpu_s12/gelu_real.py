import sys, time, torch, litvit
from litvit.benchmark import tune_cpu_malloc
tune_cpu_malloc(); torch.set_num_threads(2)
torch.manual_seed(0)
m = litvit.create_model("lit_ti").train()
x = torch.randn(16, 3, 224, 224); y = torch.randint(0, 1000, (16,))
cap = {}
act = m.stages[0].blocks[0].mlp.act
act.register_forward_hook(lambda mod, i, o: cap.__setitem__("x", i[0].detach().clone()))
act.register_full_backward_hook(lambda mod, gi, go: cap.__setitem__("g", go[0].detach().clone()))
torch.nn.functional.cross_entropy(m(x), y).backward()
xr, gr = cap["x"], cap["g"]
print("x absmax", xr.abs().max().item(), "x std", xr.std().item(), xr.shape, xr.is_contiguous(), gr.is_contiguous())
def t(f, n=5):
    f(); ts=[]
    for _ in range(n):
        a=time.perf_counter(); f(); ts.append(time.perf_counter()-a)
    return sorted(ts)[n//2]*1e3
xs, gs = torch.randn_like(xr), torch.randn_like(gr)
print("bwd real ms", t(lambda: torch.ops.aten.gelu_backward(gr, xr)))
print("bwd randn ms", t(lambda: torch.ops.aten.gelu_backward(gs, xs)))
print("bwd real x, randn g", t(lambda: torch.ops.aten.gelu_backward(gs, xr)))
print("bwd randn x, real g", t(lambda: torch.ops.aten.gelu_backward(gr, xs)))
print("fwd real", t(lambda: torch.nn.functional.gelu(xr)), "fwd randn", t(lambda: torch.nn.functional.gelu(xs)))
print("exp(-x^2/2) real", t(lambda: torch.exp(xr*xr*-0.5)), "randn", t(lambda: torch.exp(xs*xs*-0.5)))
torch.set_flush_denormal(True)
print("flush: bwd real ms", t(lambda: torch.ops.aten.gelu_backward(gr, xr)))

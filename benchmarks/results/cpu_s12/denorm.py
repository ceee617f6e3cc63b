import sys, time, torch, timm, litvit
from litvit.benchmark import tune_cpu_malloc
tune_cpu_malloc(); torch.set_num_threads(2)
torch.manual_seed(0)
m = litvit.create_model(sys.argv[1]).train()
x = torch.randn(16, 3, 224, 224); y = torch.randint(0, 1000, (16,))
stats = {}
def hook(mod, gin, gout):
    g = gout[0]; tiny = (g != 0) & (g.abs() < 1.1754944e-38)
    stats[mod.name] = (g.abs().max().item(), g.abs().mean().item(), tiny.float().mean().item(), (g == 0).float().mean().item())
for n, mod in m.named_modules():
    if isinstance(mod, torch.nn.GELU):
        mod.name = n; mod.register_full_backward_hook(hook)
torch.nn.functional.cross_entropy(m(x), y).backward()
for k, v in stats.items(): print(f"{k:35s} max {v[0]:.2e} mean {v[1]:.2e} denormal {v[2]:.4f} zero {v[3]:.4f}")

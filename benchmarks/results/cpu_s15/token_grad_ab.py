# A/B: DTM hands its input gradient back contiguous in token layout (B x N x C) or as
# grid_sample's backward leaves it (N fastest). Training steps interleaved, median per variant.
import statistics, sys, time, torch, timm, litvit
from litvit.benchmark import tune_cpu_malloc
from litvit.models import lit
tune_cpu_malloc(); torch.set_num_threads(2)
name = sys.argv[1] if len(sys.argv) > 1 else "lit_ti"
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 6
m = litvit.create_model(name).train()
x = torch.randn(16, 3, 224, 224); y = torch.randint(0, 1000, (16,))
opt = torch.optim.SGD(m.parameters(), lr=1e-4, momentum=0.9)
def step():
    opt.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(m(x), y).backward(); opt.step()
variants = {"as left": False, "token layout": True}
times = {k: [] for k in variants}
for _ in range(2):
    for flag in variants.values():
        lit.DTM_TOKEN_LAYOUT_GRAD = flag; step()
for r in range(rounds):
    order = list(variants.items()) if r % 2 == 0 else list(variants.items())[::-1]
    for key, flag in order:
        lit.DTM_TOKEN_LAYOUT_GRAD = flag
        s = time.perf_counter(); step(); times[key].append(time.perf_counter() - s)
for key, t in times.items():
    print(f"{name} {key:13s} median {1e3*statistics.median(t):7.0f} ms  all {[round(1e3*v) for v in t]}")
print(f"speed-up {statistics.median(times['as left']) / statistics.median(times['token layout']):.3f}x")

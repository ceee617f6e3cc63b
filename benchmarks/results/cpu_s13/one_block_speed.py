"""CPU, float32 inference at 224 px: biased attention as one padded block (new) vs the one-call form (old)."""
import statistics, time, sys
import torch
import litvit
from litvit.models.lit import Attention

torch.set_num_threads(2)
torch.manual_seed(0)
model = litvit.create_model(sys.argv[1] if len(sys.argv) > 1 else "lit_s").eval()
attns = [m for m in model.modules() if isinstance(m, Attention)]
x = torch.randn(32, 3, 224, 224)

def set_old(old):
    for a in attns:
        if old:
            a.query_block_rows = lambda q, n: None
        else:
            a.__dict__.pop("query_block_rows", None)

def run_layers():
    out = {}
    for name, a, tokens, grid in [("stage3", attns[0], 196, (14, 14)), ("stage4", attns[-1], 49, (7, 7))]:
        dim = a.qkv.in_features
        t = torch.randn(32, tokens, dim)
        out[name] = (a, t, grid)
    return out

layers = run_layers()
ratios = {k: [] for k in list(layers) + ["model"]}
with torch.inference_mode():
    for old in (True, False):
        set_old(old); model(x)
    for r in range(7):
        times = {}
        for old in (True, False):
            set_old(old)
            for name, (a, t, grid) in layers.items():
                s = time.perf_counter()
                for _ in range(5):
                    a(t, grid)
                times[(name, old)] = time.perf_counter() - s
            s = time.perf_counter(); model(x); times[("model", old)] = time.perf_counter() - s
        for k in ratios:
            ratios[k].append(times[(k, True)] / times[(k, False)])
        print(r, {k: round(v[-1], 3) for k, v in ratios.items()}, flush=True)
    set_old(True); a_ = model(x); set_old(False); b_ = model(x)
print("max abs diff", (a_ - b_).abs().max().item())
print("median old/new time:", {k: round(statistics.median(v), 3) for k, v in ratios.items()})

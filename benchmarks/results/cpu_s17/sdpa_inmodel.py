# LIT-S inference, batch 32: wall time of each SDPA call inside the model (perf_counter around the call):
# python sdpa_inmodel.py
import time, torch, torch.nn.functional as F, litvit
from litvit.benchmark import tune_cpu_malloc
from litvit.models import lit as L
tune_cpu_malloc(); torch.set_num_threads(2)
m = litvit.create_model("lit_s").eval(); x = torch.randn(32, 3, 224, 224)
orig = F.scaled_dot_product_attention; rec = []
def timed(q, k, v, attn_mask=None, **kw):
    s = time.perf_counter(); o = orig(q, k, v, attn_mask=attn_mask, **kw); rec.append((time.perf_counter() - s, tuple(q.shape), q.stride(), k.stride(), None if attn_mask is None else attn_mask.stride()))
    return o
L.F.scaled_dot_product_attention = timed
with torch.inference_mode():
    for i in range(4):
        rec.clear(); s = time.perf_counter(); m(x); tot = time.perf_counter() - s
for r in rec: print(f"{1e3*r[0]:.1f} ms", r[1:])
print(f"total {1e3*tot:.0f}")

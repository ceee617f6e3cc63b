# SDPA at LIT-S stage 3 shape in a loop: strided/contiguous q, k, v; with and without the bias: python sdpa32.py
import time, torch, torch.nn.functional as F
from litvit.benchmark import tune_cpu_malloc
tune_cpu_malloc(); torch.set_num_threads(2)
b, h, n, d = 32, 12, 196, 32
q, k, v = torch.randn(b, n, 3, h, d).permute(2, 0, 3, 1, 4).unbind(0)
qc, kc, vc = q.contiguous(), k.contiguous(), v.contiguous()
bias = torch.randn(1, h, n, n)
padded = torch.randn(h, n, 208)[:, :, :n].unsqueeze(0)
forms = {"strided qkv, mask": lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=bias),
         "strided qkv, no mask": lambda: F.scaled_dot_product_attention(q, k, v),
         "contig qkv, mask": lambda: F.scaled_dot_product_attention(qc, kc, vc, attn_mask=bias),
         "strided, padded mask": lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=padded),
         "LIT-Ti-like d=64 h=6": None}
q6, k6, v6 = torch.randn(b, n, 3, 6, 64).permute(2, 0, 3, 1, 4).unbind(0)
forms["LIT-Ti-like d=64 h=6"] = lambda: F.scaled_dot_product_attention(q6, k6, v6, attn_mask=torch.randn(1, 6, n, n))
t = {kk: [] for kk in forms}
for r in range(12):
    for kk, f in forms.items():
        s = time.perf_counter(); f(); dt = time.perf_counter() - s
        if r > 1: t[kk].append(dt)
for kk, v_ in t.items():
    print(f"{kk:24s} {1e3*sorted(v_)[len(v_)//2]:.2f} ms")

# SDPA against the plain product/softmax/product form at LIT's stage-3/4 shapes, CPU inference, 2 threads:
# python attn_forms.py [ROUNDS]
import sys, time, torch, torch.nn.functional as F
from litvit.benchmark import tune_cpu_malloc
tune_cpu_malloc(); torch.set_num_threads(2)
rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 9
def math(q, k, v, bias=None):
    a = torch.matmul(q * q.shape[-1] ** -0.5, k.transpose(-2, -1))
    if bias is not None: a += bias
    return torch.matmul(a.softmax(-1), v)
def sdpa(q, k, v, bias=None):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
cases = {"LIT-Ti s3 (5x197)": (32, 5, 197, None), "LIT-Ti s4 (8x50)": (32, 8, 50, None),
         "LIT-S s3 (10x196, bias)": (32, 10, 196, True), "LIT-S s4 (16x49, bias)": (32, 16, 49, True)}
with torch.inference_mode():
    for name, (b, h, n, bias) in cases.items():
        q, k, v = (torch.randn(b, n, 3, h, 64).permute(2, 0, 3, 1, 4)).unbind(0)
        bias = torch.randn(1, h, n, n) if bias else None
        assert (math(q, k, v, bias) - sdpa(q, k, v, bias)).abs().max() < 1e-4
        t = {"sdpa": [], "math": []}
        for r in range(rounds + 1):
            for kk, f in (("sdpa", sdpa), ("math", math)):
                s = time.perf_counter(); f(q, k, v, bias); d = time.perf_counter() - s
                if r: t[kk].append(d)
        fl = 4 * b * h * n * n * 64
        print(name, "  ".join(f"{kk} {1e3*sorted(v)[len(v)//2]:6.2f} ms ({fl/sorted(v)[len(v)//2]/1e9:5.1f} GFLOP/s)" for kk, v in t.items()))

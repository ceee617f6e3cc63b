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
def math_baddbmm(q, k, v, bias=None):
    b, h, n, d = q.shape
    q3, k3, v3 = q.reshape(b * h, n, d), k.reshape(b * h, n, d), v.reshape(b * h, n, d)
    if bias is None:
        a = torch.bmm(q3, k3.transpose(1, 2)).mul_(d ** -0.5)
    else:
        a = torch.baddbmm(bias.expand(b, h, n, n).reshape(b * h, n, n), q3, k3.transpose(1, 2), alpha=d ** -0.5)
    a = torch.softmax(a, -1)
    return torch.bmm(a, v3).reshape(b, h, n, d)
def sdpa(q, k, v, bias=None):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
cases = {"LIT-Ti s3 (5x196x64)": (32, 5, 196, None, 64), "LIT-Ti s4 (8x50x64)": (32, 8, 50, None, 64),
         "LIT-S s3 (12x196x32, bias)": (32, 12, 196, True, 32), "LIT-S s4 (24x49x32, bias)": (32, 24, 49, True, 32)}
with torch.inference_mode():
    for name, (b, h, n, bias, d) in cases.items():
        q, k, v = (torch.randn(b, n, 3, h, d).permute(2, 0, 3, 1, 4)).unbind(0)
        bias = torch.randn(1, h, n, n) if bias else None
        assert (math(q, k, v, bias) - sdpa(q, k, v, bias)).abs().max() < 1e-4
        assert (math_baddbmm(q, k, v, bias) - sdpa(q, k, v, bias)).abs().max() < 1e-4
        t = {"sdpa": [], "math": [], "baddbmm": []}
        for r in range(rounds + 1):
            for kk, f in (("sdpa", sdpa), ("math", math), ("baddbmm", math_baddbmm)):
                s = time.perf_counter(); f(q, k, v, bias); dt = time.perf_counter() - s
                if r: t[kk].append(dt)
        fl = 4 * b * h * n * n * d
        print(name, "  ".join(f"{kk} {1e3*sorted(v)[len(v)//2]:6.2f} ms ({fl/sorted(v)[len(v)//2]/1e9:5.1f} GFLOP/s)" for kk, v in t.items()))

"""LIT-S inference attention core (after qkv, before proj), batch 32, 2 threads: the current
one-block SDPA path against the explicit product, whole batch and in batch chunks."""
import time, torch, litvit
from litvit.benchmark import tune_cpu_malloc
tune_cpu_malloc(); torch.set_num_threads(2); torch.manual_seed(0)
m = litvit.create_model("lit_s").eval()
for stage, grid in ((2, (14, 14)), (3, (7, 7))):
    attn = m.stages[stage].blocks[0].attn
    n = grid[0] * grid[1]; dim = attn.qkv.in_features
    x = torch.randn(32, n, dim)
    with torch.inference_mode():
        qkv = attn.qkv(x).reshape(32, n, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        bias = attn.position_bias(grid, n)[0].contiguous()  # heads x N x N
        def current():
            return attn.blocked_sdpa(q, k, v, grid, n)
        def explicit(chunk=32):
            out = q.new_empty(q.shape)
            for s in range(0, 32, chunk):
                qs, ks, vs = q[s:s+chunk], k[s:s+chunk], v[s:s+chunk]
                a = torch.matmul(qs * attn.scale, ks.transpose(-2, -1))
                a += bias
                a = a.softmax(-1)
                torch.matmul(a, vs, out=out[s:s+chunk])
            return out
        ref = current()
        fns = {"sdpa(current)": current, "explicit": explicit,
               "explicit/4": lambda: explicit(4), "explicit/1": lambda: explicit(1)}
        for name, fn in fns.items():
            err = (fn() - ref).abs().max().item()
            assert err < 1e-4, (name, err)
        times = {k_: [] for k_ in fns}
        for _ in range(9):
            for name, fn in fns.items():
                t = time.perf_counter(); fn(); times[name].append(time.perf_counter() - t)
        base = sorted(times["sdpa(current)"])[4]
        print(f"stage {stage+1}:", "  ".join(f"{k_} {1e3*sorted(v_)[4]:.1f} ms ({base/sorted(v_)[4]:.2f}x)" for k_, v_ in times.items()), flush=True)

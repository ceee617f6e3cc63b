"""Scratch sweep run on the H100 on 2026-11-23 (output: run2_defaults/triton_block_sweep.txt): times the
Triton DTM sampling kernels alone, bf16, batch 64, per (BLOCK_N, BLOCK_C, num_warps). Kept as the
exact script that produced the recorded numbers. Run: PYTHONPATH=. python3 THIS_FILE out.json
"""
import itertools, math, re, sys
import torch, triton
from triton.testing import do_bench
import litvit.ops.deform_triton as K

torch.manual_seed(0)
shapes = [(64, 56, 56), (128, 28, 28), (320, 14, 14), (96, 56, 56), (192, 28, 28), (384, 14, 14)]
B = 64
configs = [(32, 64, 4), (16, 64, 4), (64, 64, 4), (32, 32, 4), (32, 128, 4), (32, 64, 2), (32, 64, 8), (64, 32, 4), (64, 128, 8), (16, 32, 2), (128, 32, 4)]
res = {}
for C, H, W in shapes:
    x = torch.randn(B, H, W, C, device="cuda", dtype=torch.bfloat16).permute(0, 3, 1, 2)
    off = (torch.randn(B, 8, H // 2, W // 2, device="cuda") * 2)
    cells = (H // 2) * (W // 2)
    out = torch.empty(B, cells, C, 4, dtype=x.dtype, device="cuda")
    grad = torch.randn(B, cells, C * 4, dtype=x.dtype, device="cuda")
    gx = torch.zeros(B, H, W, C, dtype=torch.float32, device="cuda")
    goff = torch.empty(B, 8, H // 2, W // 2, dtype=torch.float32, device="cuda")
    for bn, bc, nw in configs:
        if bc > 2 * triton.next_power_of_2(C):
            continue
        def fwd():
            K._sample_fwd_kernel[(triton.cdiv(B * cells, bn), triton.cdiv(C, bc))](
                x, off, out, C, H, W, W // 2, cells, B * cells, *x.stride(), *off.stride(),
                BLOCK_N=bn, BLOCK_C=bc, num_warps=nw)
        def bwd():
            gx.zero_()
            K._sample_bwd_kernel[(triton.cdiv(B * cells, bn),)](
                x, off, grad, gx, goff, C, H, W, W // 2, cells, B * cells, *x.stride(), *off.stride(),
                BLOCK_N=bn, BLOCK_C=bc, num_warps=nw)
        try:
            tf = do_bench(fwd, warmup=10, rep=40)
            tb = do_bench(bwd, warmup=10, rep=40)
        except Exception as e:
            print("fail", C, H, bn, bc, nw, type(e).__name__, str(e)[:100]); continue
        res[(C, H, bn, bc, nw)] = (tf, tb)
        print(C, H, bn, bc, nw, round(tf*1e3), round(tb*1e3), flush=True)
    d = res.get((C, H, 32, min(64, triton.next_power_of_2(C)), 4))
    best_f = min(((v[0], k) for k, v in res.items() if k[:2] == (C, H)))
    best_b = min(((v[1], k) for k, v in res.items() if k[:2] == (C, H)))
    print(f"C={C} H={H}: default fwd {d[0]*1e3:.0f}us bwd {d[1]*1e3:.0f}us | best fwd {best_f[0]*1e3:.0f}us {best_f[1][2:]} | best bwd {best_b[0]*1e3:.0f}us {best_b[1][2:]}", flush=True)
# one config for all shapes: geomean of ratio to default
for which, name in ((0, "fwd"), (1, "bwd")):
    scores = []
    for cfg in configs:
        r = []
        for C, H, W in shapes:
            bc = cfg[1]
            k = (C, H) + cfg
            dk = (C, H, 32, min(64, triton.next_power_of_2(C)), 4)
            if k in res:
                r.append(res[dk][which] / res[k][which])
        if len(r) == len(shapes):
            scores.append((math.exp(sum(map(math.log, r)) / len(r)), cfg, [round(v, 2) for v in r]))
    scores.sort(reverse=True)
    for s in scores[:6]:
        print(name, "speedup vs default", round(s[0], 3), "BLOCK_N,BLOCK_C,warps", s[1], s[2])
import json
json.dump({"|".join(map(str, k)): v for k, v in res.items()}, open(sys.argv[1], "w"))

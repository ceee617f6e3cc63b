"""Scratch sweep (session 9): Triton DTM sampling kernels alone, bf16, batch 64, channels-last.
Forward: the library kernel and a variant that writes all 4 taps as one contiguous store (tl.join).
Backward: the library kernel. Per (BLOCK_N, BLOCK_C, num_warps). PYTHONPATH=. python3 THIS out.json
"""
import json, math, sys
import torch, triton
import triton.language as tl
from triton.testing import do_bench
import litvit.ops.deform_triton as K


@triton.jit
def fwd_join(x_ptr, off_ptr, out_ptr, C, H, W, Wo, cells_per_image, total_cells,
             sxb, sxc, sxh, sxw, sob, soc, soh, sow, BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr):
    cells, cell_mask, b, rem, i, j = K._cell_block(total_cells, cells_per_image, Wo, BLOCK_N)
    ch = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    ch_mask = ch < C
    ch_off = ch.to(tl.int64)[None, :] * sxc
    image = x_ptr + b * sxb
    m = cell_mask[:, None] & ch_mask[None, :]
    vals = []
    for k in tl.static_range(4):
        y0, x0, ly, lx, y_in0, y_in1, x_in0, x_in1 = K._tap_corners(off_ptr, b, i, j, k, cell_mask, H, W, sob, soc, soh, sow)
        v00, v01, v10, v11 = K._load_corners(image, y0, x0, sxh, sxw, ch_off, m, y_in0, y_in1, x_in0, x_in1)
        hy = (1.0 - ly)[:, None]; hx = (1.0 - lx)[:, None]; vy = ly[:, None]; vx = lx[:, None]
        vals.append(hy * (hx * v00 + vx * v01) + vy * (hx * v10 + vx * v11))
    # [N, C, 2(t), 2(s)] with [..., t, s] = v_{2s+t}... arrange so that flat 2t+s = tap
    v = tl.join(tl.join(vals[0], vals[2]), tl.join(vals[1], vals[3]))
    v = tl.reshape(v, [BLOCK_N, BLOCK_C, 4])
    tap = tl.arange(0, 4)
    ptr = out_ptr + cells.to(tl.int64)[:, None, None] * (4 * C) + ch[None, :, None] * 4 + tap[None, None, :]
    tl.store(ptr, v.to(out_ptr.dtype.element_ty), mask=m[:, :, None])


if __name__ == "__main__":
    torch.manual_seed(0)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    B = int(sys.argv[2]) if len(sys.argv) > 2 else 64
    shapes = [(64, 56, 56), (128, 28, 28), (320, 14, 14), (96, 56, 56), (192, 28, 28), (384, 14, 14)]
    fwd_cfgs = [(16, 64, 4), (8, 64, 2), (8, 64, 4), (16, 64, 2), (16, 32, 2), (16, 32, 4), (32, 64, 4), (8, 32, 1), (16, 128, 4)]
    bwd_cfgs = [(16, 64, 4), (8, 64, 2), (8, 64, 4), (16, 64, 2), (16, 32, 2), (16, 32, 4), (16, 128, 4), (8, 32, 1), (32, 32, 4)]
    res = {}
    for C, H, W in shapes:
        x = torch.randn(B, H, W, C, device=dev, dtype=torch.bfloat16).permute(0, 3, 1, 2)
        off = torch.randn(B, 8, H // 2, W // 2, device=dev) * 2
        cells = (H // 2) * (W // 2)
        ref = torch.empty(B, cells, C, 4, dtype=x.dtype, device=dev)
        out = torch.empty_like(ref)
        grad = torch.randn(B, cells, C * 4, dtype=x.dtype, device=dev)
        gx = torch.zeros(B, H, W, C, dtype=torch.float32, device=dev)
        goff = torch.empty(B, 8, H // 2, W // 2, dtype=torch.float32, device=dev)
        args = lambda o: (x, off, o, C, H, W, W // 2, cells, B * cells, *x.stride(), *off.stride())
        K._sample_fwd_kernel[(triton.cdiv(B * cells, 16), triton.cdiv(C, 64))](*args(ref), BLOCK_N=16, BLOCK_C=64)
        for variant, kern in (("lib", K._sample_fwd_kernel), ("join", fwd_join)):
            for bn, bc, nw in fwd_cfgs:
                if bc > 2 * triton.next_power_of_2(C):
                    continue
                f = lambda: kern[(triton.cdiv(B * cells, bn), triton.cdiv(C, bc))](*args(out), BLOCK_N=bn, BLOCK_C=bc, num_warps=nw)
                try:
                    out.zero_(); f()
                    ok = torch.equal(out, ref)
                    t = do_bench(f, warmup=10, rep=40) if dev == "cuda" else float("nan")
                except Exception as e:
                    print("fail fwd", variant, C, H, bn, bc, nw, type(e).__name__, str(e)[:200], flush=True); continue
                res[f"fwd|{variant}|{C}|{H}|{bn}|{bc}|{nw}"] = t
                print("fwd", variant, C, H, bn, bc, nw, "equal" if ok else "DIFFERENT", round(t * 1e3, 1), flush=True)
        for bn, bc, nw in bwd_cfgs:
            if bc > 2 * triton.next_power_of_2(C):
                continue
            def bwd():
                gx.zero_()
                K._sample_bwd_kernel[(triton.cdiv(B * cells, bn),)](
                    x, off, grad, gx, goff, C, H, W, W // 2, cells, B * cells, *x.stride(), *off.stride(),
                    BLOCK_N=bn, BLOCK_C=bc, num_warps=nw)
            try:
                t = do_bench(bwd, warmup=10, rep=40) if dev == "cuda" else (bwd(), float("nan"))[1]
            except Exception as e:
                print("fail bwd", C, H, bn, bc, nw, type(e).__name__, str(e)[:200], flush=True); continue
            res[f"bwd|lib|{C}|{H}|{bn}|{bc}|{nw}"] = t
            print("bwd lib", C, H, bn, bc, nw, round(t * 1e3, 1), flush=True)
    # one config for all shapes: geomean speed-up over the library default (16, 64 capped, 4)
    for kind, variants, cfgs in (("fwd", ("lib", "join"), fwd_cfgs), ("bwd", ("lib",), bwd_cfgs)):
        scores = []
        for variant in variants:
            for bn, bc, nw in cfgs:
                r = []
                for C, H, W in shapes:
                    key = f"{kind}|{variant}|{C}|{H}|{bn}|{bc}|{nw}"
                    dkey = f"{kind}|lib|{C}|{H}|16|64|4"
                    if key in res and dkey in res:
                        r.append(res[dkey] / res[key])
                if len(r) == len(shapes):
                    scores.append((math.exp(sum(map(math.log, r)) / len(r)), variant, (bn, bc, nw), [round(v, 2) for v in r]))
        scores.sort(reverse=True)
        for s in scores[:8]:
            print(kind, "geomean speed-up vs lib(16,64,4):", round(s[0], 3), s[1], s[2], s[3], flush=True)
    json.dump(res, open(sys.argv[1], "w"), indent=0)

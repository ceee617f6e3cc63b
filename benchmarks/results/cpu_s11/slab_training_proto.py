"""Prototype: MLP-only stage training on row slabs (forward + backward in cache)."""
import sys
import time

import torch
import torch.nn.functional as F

import litvit  # noqa
import timm
from litvit.benchmark import tune_cpu_malloc

aten = torch.ops.aten


class SlabStage(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, slab_rows, store_hidden, eps, *params):
        C = x.shape[-1]
        L = len(params) // 6
        rows = x.reshape(-1, C).contiguous()
        M = rows.shape[0]
        inputs = [rows] + [torch.empty_like(rows) for _ in range(L - 1)]
        out = torch.empty_like(rows)
        hidden = [params[6 * i + 2].shape[0] for i in range(L)]
        hbuf = torch.empty(min(slab_rows, M), max(hidden), dtype=x.dtype)
        stores = [torch.empty(M, hidden[i], dtype=x.dtype) for i in range(L)] if store_hidden else None
        for start in range(0, M, slab_rows):
            end = min(start + slab_rows, M)
            cur = rows[start:end]
            for i in range(L):
                lw, lb, w1, b1, w2, b2 = params[6 * i : 6 * i + 6]
                n = F.layer_norm(cur, (C,), lw, lb, eps)
                h = stores[i][start:end] if store_hidden else hbuf[: end - start, : hidden[i]]
                torch.addmm(b1, n, w1.t(), out=h)
                if store_hidden:
                    a = hbuf[: end - start, : hidden[i]]
                    torch.ops.aten.gelu.out(h, out=a)
                else:
                    a = aten.gelu_(h)
                target = out[start:end] if i == L - 1 else inputs[i + 1][start:end]
                torch.addmm(cur, a, w2.t(), out=target)
                target += b2
                cur = target
        ctx.slab_rows, ctx.eps, ctx.L, ctx.C = slab_rows, eps, L, C
        ctx.store_hidden = store_hidden
        ctx.save_for_backward(*inputs, *(stores or []), *params)
        return out.reshape(x.shape)

    @staticmethod
    def backward(ctx, grad_out):
        L, C, eps, step = ctx.L, ctx.C, ctx.eps, ctx.slab_rows
        saved = ctx.saved_tensors
        inputs = saved[:L]
        if ctx.store_hidden:
            stores = saved[L : 2 * L]
            params = saved[2 * L :]
        else:
            stores = None
            params = saved[L:]
        grads = [torch.zeros_like(p) for p in params]
        g_rows = grad_out.reshape(-1, C)
        M = g_rows.shape[0]
        grad_in = torch.empty_like(g_rows)
        hidden = [params[6 * i + 2].shape[0] for i in range(L)]
        abuf = torch.empty(min(step, M), max(hidden), dtype=grad_out.dtype)
        hbuf = torch.empty(min(step, M), max(hidden), dtype=grad_out.dtype)
        for start in range(0, M, step):
            end = min(start + step, M)
            g = g_rows[start:end]
            for i in reversed(range(L)):
                lw, lb, w1, b1, w2, b2 = params[6 * i : 6 * i + 6]
                gw = grads[6 * i : 6 * i + 6]
                xi = inputs[i][start:end]
                n, mean, rstd = aten.native_layer_norm(xi, (C,), lw, lb, eps)
                if stores is not None:
                    h = stores[i][start:end]
                else:
                    h = hbuf[: end - start, : hidden[i]]
                    torch.addmm(b1, n, w1.t(), out=h)
                a = abuf[: end - start, : hidden[i]]
                torch.ops.aten.gelu.out(h, out=a)
                gw[5].add_(g.sum(0))
                gw[4].addmm_(g.t(), a)
                torch.mm(g, w2, out=a)  # da
                dh = aten.gelu_backward.grad_input(a, h, approximate="none", grad_input=a)
                gw[3].add_(dh.sum(0))
                gw[2].addmm_(dh.t(), n)
                dn = torch.mm(dh, w1)
                dx, dlw, dlb = aten.native_layer_norm_backward(dn, xi, (C,), mean, rstd, lw, lb, [True, True, True])
                gw[0].add_(dlw)
                gw[1].add_(dlb)
                g = g + dx
            grad_in[start:end] = g
        return (grad_in.reshape(grad_out.shape), None, None, None, *grads)


def stage_params(blocks):
    ps = []
    for b in blocks:
        ps += [b.norm2.weight, b.norm2.bias, b.mlp.fc1.weight, b.mlp.fc1.bias, b.mlp.fc2.weight, b.mlp.fc2.bias]
    return ps


def main():
    torch.manual_seed(0)
    tune_cpu_malloc()
    name = sys.argv[1] if len(sys.argv) > 1 else "lit_ti"
    si = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    batch = 16
    model = timm.create_model(name)
    for p in model.parameters():
        p.data.normal_(0, 0.05)
    model.train()
    stage = model.stages[si]
    blocks = stage.blocks
    grid = (56 >> si, 56 >> si)
    C = model.embed_dims[si]
    N = grid[0] * grid[1]
    x0 = torch.randn(batch, N, C)
    gy = torch.randn(batch, N, C)
    eps = blocks[0].norm2.eps
    params = stage_params(blocks)

    def run_module():
        x = x0.clone().requires_grad_()
        y = x
        for b in blocks:
            y = b(y, grid)
        y.backward(gy)
        return y, x.grad

    def run_slab(slab_elems, store):
        hidden = blocks[0].mlp.fc1.out_features
        def f():
            x = x0.clone().requires_grad_()
            y = SlabStage.apply(x, max(1, slab_elems // hidden), store, eps, *params)
            y.backward(gy)
            return y, x.grad
        return f

    for p in params:
        p.grad = None
    y_ref, gx_ref = run_module()
    g_ref = [p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    y, gx = run_slab(1 << 20, False)()
    print("max diff y", (y - y_ref).abs().max().item(), "gx", (gx - gx_ref).abs().max().item(),
          "params", max((p.grad - r).abs().max().item() / (r.abs().max().item() + 1e-12) for p, r in zip(params, g_ref)))
    variants = {"module": run_module}
    for e in (18, 19, 20, 21):
        variants[f"recompute_{e}"] = run_slab(1 << e, False)
        variants[f"store_{e}"] = run_slab(1 << e, True)
    times = {k: [] for k in variants}
    for k, f in variants.items():
        f()
    for r in range(int(sys.argv[3]) if len(sys.argv) > 3 else 5):
        for k, f in variants.items():
            for p in params:
                p.grad = None
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    base = sorted(times["module"])[len(times["module"]) // 2]
    for k, v in times.items():
        med = sorted(v)[len(v) // 2]
        print(f"{name} stage{si+1} {k:14s} {med*1000:8.1f} ms  speed-up {base/med:.3f}x")


if __name__ == "__main__":
    main()

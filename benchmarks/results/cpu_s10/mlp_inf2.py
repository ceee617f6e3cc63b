import torch, time, timm, sys, statistics
import torch.nn.functional as F
import litvit
from litvit.models.lit import fused_mlp_inference, MLP_SLAB_ELEMENTS
from litvit.benchmark import tune_cpu_malloc
tune_cpu_malloc()
lp = torch.ops.mkldnn._linear_pointwise
lpb = torch.ops.mkldnn._linear_pointwise.binary
def onednn_mlp(blocks, x, slab_rows, packed=None):
    dim = x.shape[-1]; rows = x.reshape(-1, dim); out = torch.empty_like(rows)
    for s in range(0, rows.shape[0], slab_rows):
        cur = rows[s:s+slab_rows]
        for i, blk in enumerate(blocks):
            w1, w2 = (blk.mlp.fc1.weight, blk.mlp.fc2.weight) if packed is None else packed[i]
            n = F.layer_norm(cur, blk.norm2.normalized_shape, blk.norm2.weight, blk.norm2.bias, blk.norm2.eps)
            a = lp(n, w1, blk.mlp.fc1.bias, "gelu", [], "none")
            cur = lpb(a, cur, w2, blk.mlp.fc2.bias, "add")
        out[s:s+slab_rows] = cur
    return out.reshape(x.shape)
m = timm.create_model(sys.argv[1]).eval()
torch.manual_seed(0)
for p in m.parameters(): p.data.normal_(0, 0.05)
stages = [int(s) for s in sys.argv[2].split(",")]
with torch.inference_mode():
    x = torch.randn(32, 3, 224, 224)
    feats = {}
    h = m.patch_embed(x); hx, grid = h
    xx = hx
    for si, st in enumerate(m.stages):
        if st.downsample is not None:
            xx, grid, _ = st.downsample(xx, grid)
        feats[si] = xx.clone()
        if si >= max(stages): break
        xx, grid, _ = st(xx, grid) if st.downsample is None else (xx, grid, None)
        if st.downsample is not None:
            for b in st.blocks: xx = b(xx, grid)
    for si in stages:
        blocks = list(m.stages[si].blocks); x = feats[si]
        hid = blocks[0].mlp.fc1.out_features
        base = MLP_SLAB_ELEMENTS // hid
        for mult in [1, 2, 4]:
            rows = base * mult
            packed = [(torch._C._nn.mkldnn_reorder_linear_weight(b.mlp.fc1.weight.to_mkldnn(), rows).to_dense() if False else b.mlp.fc1.weight, b.mlp.fc2.weight) for b in blocks]
            fns = {"cur": lambda: fused_mlp_inference(blocks, x, rows), "onednn": lambda: onednn_mlp(blocks, x, rows)}
            t = {k: [] for k in fns}
            for f in fns.values(): f(); f()
            for r in range(9):
                for k, f in fns.items():
                    t0 = time.perf_counter(); f(); t[k].append(time.perf_counter() - t0)
            c = statistics.median(t["cur"])
            print(f"{sys.argv[1]} stage {si+1} slab {rows}: cur {c*1e3:.1f} ms " + " ".join(f"{k} {statistics.median(v)*1e3:.1f} ({c/statistics.median(v):.3f}x)" for k, v in t.items() if k != "cur"))

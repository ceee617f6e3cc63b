# Time the MLP-only stages' inference forms on their own, batch 32, 2 threads:
# python mlp_stage_kernels.py [ROUNDS]
import sys, time, torch, torch.nn.functional as F, litvit
from litvit.benchmark import tune_cpu_malloc
from litvit.models import lit as L
tune_cpu_malloc(); torch.set_num_threads(2)
rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
ROUND = __import__('os').environ.get('ROUND') == '1'
name = __import__("os").environ.get("MODEL", "lit_ti")
m = litvit.create_model(name).eval()
stages = [m.stages[0], m.stages[1]]
xs = [torch.randn(32, 3136, stages[0].blocks[0].mlp.fc1.in_features), torch.randn(32, 784, stages[1].blocks[0].mlp.fc1.in_features)]
def form(kernel, slab):
    def run(stage, x):
        hid = max(b.mlp.fc1.out_features for b in stage.blocks)
        rows = None if slab is None else slab // hid
        if rows is not None and ROUND: rows = max(64, rows // 64 * 64)
        return L.fused_mlp_inference(stage.blocks, x, rows, kernel=kernel)
    return run
def gelu_separate(stage, x):  # oneDNN plain product, GELU in place, oneDNN binary add
    rows = x.reshape(-1, x.shape[-1])
    for b in stage.blocks:
        n = F.layer_norm(rows, b.norm2.normalized_shape, b.norm2.weight, b.norm2.bias, b.norm2.eps)
        h = torch.ops.mkldnn._linear_pointwise(n, b.mlp.fc1.weight, b.mlp.fc1.bias, "none", [], "")
        torch.ops.aten.gelu_(h)
        rows = torch.ops.mkldnn._linear_pointwise.binary(h, rows, b.mlp.fc2.weight, b.mlp.fc2.bias, "add")
    return rows
forms = {f"{k} slab {s}": form(k, s) for k in ("onednn",) for s in tuple(1 << int(e) for e in __import__("os").environ.get("SLABS", "21,22,23,24").split(",")) + (None,)}
forms["onednn, gelu apart, whole"] = gelu_separate
def flops(stage, x):
    return sum(4 * x.shape[0] * x.shape[1] * b.mlp.fc1.in_features * b.mlp.fc1.out_features for b in stage.blocks)
with torch.inference_mode():
    for si, (stage, x) in enumerate(zip(stages, xs)):
        ref = form("aten", None)(stage, x)
        times = {k: [] for k in forms}
        for r in range(rounds + 1):
            for k, f in forms.items():
                s = time.perf_counter(); out = f(stage, x); d = time.perf_counter() - s
                if r: times[k].append(d)
                if r == 0: assert (out.reshape_as(ref) - ref).abs().max() < 1e-3, k
        fl = flops(stage, x)
        print(f"stage {si+1}: {fl/1e9:.1f} GFLOP")
        for k, t in times.items():
            t.sort(); med = t[len(t)//2]
            print(f"  {k:28s} {1e3*med:7.1f} ms  {fl/med/1e9:6.1f} GFLOP/s")

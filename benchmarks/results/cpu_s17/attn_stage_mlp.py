# The attention stages' MLP residuals and qkv/proj products, ATen against oneDNN, CPU inference,
# batch 32, 2 threads: python attn_stage_mlp.py MODEL [ROUNDS]
import sys, time, torch, torch.nn.functional as F, litvit
from litvit.benchmark import tune_cpu_malloc
from litvit.models import lit as L
tune_cpu_malloc(); torch.set_num_threads(2)
name = sys.argv[1]; rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 9
m = litvit.create_model(name).eval()
pw = torch.ops.mkldnn._linear_pointwise
with torch.inference_mode():
    for si in (2, 3):
        st = m.stages[si]; b0 = st.blocks[0]; C = b0.mlp.fc1.in_features
        n = st.grid[0] * st.grid[1] + st.num_prefix_tokens
        x = torch.randn(32 * n, C)
        forms = {
            "mlp aten": lambda: L.fused_mlp_inference([b0], x, None, kernel="aten"),
            "mlp onednn": lambda: L.fused_mlp_inference([b0], x, None, kernel="onednn"),
            "qkv F.linear": lambda: F.linear(x, b0.attn.qkv.weight, b0.attn.qkv.bias),
            "qkv onednn": lambda: pw(x, b0.attn.qkv.weight, b0.attn.qkv.bias, "none", [], ""),
            "proj F.linear": lambda: F.linear(x, b0.attn.proj.weight, b0.attn.proj.bias),
            "proj onednn": lambda: pw(x, b0.attn.proj.weight, b0.attn.proj.bias, "none", [], ""),
            "proj+res onednn": lambda: pw.binary(x, x, b0.attn.proj.weight, b0.attn.proj.bias, "add"),
        }
        fl = {"mlp": 4 * x.shape[0] * C * b0.mlp.fc1.out_features, "qkv": 6 * x.shape[0] * C * C, "proj": 2 * x.shape[0] * C * C, "proj+res": 2 * x.shape[0] * C * C}
        t = {k: [] for k in forms}
        for r in range(rounds + 1):
            for k, f in forms.items():
                s = time.perf_counter(); f(); d = time.perf_counter() - s
                if r: t[k].append(d)
        print(f"{name} stage {si+1} rows {x.shape[0]} C {C}")
        for k, v in t.items():
            v.sort(); med = v[len(v) // 2]
            print(f"  {k:16s} {1e3*med:7.2f} ms  {fl[k.split()[0]]/med/1e9:6.1f} GFLOP/s")

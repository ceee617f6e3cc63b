# LIT-Ti stage-1 MLP residual, piece by piece, batch 32, 2 threads (oneDNN): python stage1_pieces.py [ROUNDS]
import sys, time, torch, torch.nn.functional as F, litvit
from litvit.benchmark import tune_cpu_malloc
tune_cpu_malloc(); torch.set_num_threads(2)
rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 9
pw = torch.ops.mkldnn._linear_pointwise
b = litvit.create_model("lit_ti").eval().stages[0].blocks[0]
x = torch.randn(32 * 3136, 64); n = F.layer_norm(x, (64,)); h = pw(n, b.mlp.fc1.weight, b.mlp.fc1.bias, "none", [], "")
w1, b1, w2, b2 = b.mlp.fc1.weight, b.mlp.fc1.bias, b.mlp.fc2.weight, b.mlp.fc2.bias
fl = 2 * x.shape[0] * 64 * 512
pieces = {
    "layer_norm": (lambda: F.layer_norm(x, (64,), b.norm2.weight, b.norm2.bias), 0),
    "fc1 plain": (lambda: pw(n, w1, b1, "none", [], ""), fl),
    "fc1 + gelu": (lambda: pw(n, w1, b1, "gelu", [], "none"), fl),
    "fc1 + gelu(tanh) [not exact]": (lambda: pw(n, w1, b1, "gelu", [], "tanh"), fl),
    "gelu_ in place": (lambda: torch.ops.aten.gelu_(h), 0),
    "fc2 plain": (lambda: pw(h, w2, b2, "none", [], ""), fl),
    "fc2 + residual": (lambda: pw.binary(h, x, w2, b2, "add"), fl),
    "fc1 no bias": (lambda: pw(n, w1, None, "none", [], ""), fl),
}
t = {k: [] for k in pieces}
with torch.inference_mode():
    for r in range(rounds + 1):
        for k, (f, _) in pieces.items():
            s = time.perf_counter(); f(); d = time.perf_counter() - s
            if r: t[k].append(d)
for k, v in t.items():
    v.sort(); med = v[len(v) // 2]; f = pieces[k][1]
    print(f"{k:30s} {1e3*med:7.2f} ms" + (f"  {f/med/1e9:6.1f} GFLOP/s" if f else ""))

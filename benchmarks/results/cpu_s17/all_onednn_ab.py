# Whole-model CPU inference, batch 32, 2 threads: the current code against oneDNN for every Linear
# and no slabs in the MLP-only stages, interleaved: python all_onednn_ab.py MODEL[,MODEL] ROUNDS [train]
import sys, time, torch, torch.nn as nn, torch.nn.functional as F, litvit, timm
from litvit.benchmark import tune_cpu_malloc
from litvit.models import lit as L
tune_cpu_malloc(); torch.set_num_threads(2)
names = sys.argv[1].split(","); rounds = int(sys.argv[2]); train = len(sys.argv) > 3
pw = torch.ops.mkldnn._linear_pointwise
variant = {"on": False}
orig_fused, orig_linear_fwd, orig_slab = L.fused_mlp_inference, nn.Linear.forward, L.MLP_SLAB_ELEMENTS_ONEDNN
import os
parts = set(os.environ.get("PARTS", "slab,amlp,lin").split(","))
def fused(blocks, x, slab_rows=None, kernel="aten"):
    if variant["on"]:
        if slab_rows is not None and "slab" in parts: slab_rows = None
        if kernel == "aten" and "amlp" in parts: kernel = "onednn"
        return orig_fused(blocks, x, slab_rows, kernel=kernel)
    return orig_fused(blocks, x, slab_rows, kernel=kernel)
def linear_fwd(self, x):
    if "lin" in parts and variant["on"] and x.dtype == torch.float32 and not torch.is_grad_enabled():
        return pw(x, self.weight, self.bias, "none", [], "")
    if "lin" in parts and variant["on"] and x.dtype == torch.float32:
        return litvit.ops.onednn.linear(x, self.weight, self.bias)
    return orig_linear_fwd(self, x)
L.fused_mlp_inference = fused; nn.Linear.forward = linear_fwd
batch = 16 if train else 32
for name in names:
    m = litvit.create_model(name).train(train)
    x = torch.randn(batch, 3, 224, 224); y = torch.randint(0, 1000, (batch,))
    opt = torch.optim.SGD(m.parameters(), lr=1e-4)
    def step():
        if train:
            opt.zero_grad(set_to_none=True); loss = F.cross_entropy(m(x), y); loss.backward(); opt.step(); return loss
        with torch.inference_mode():
            return m(x)
    t = {False: [], True: []}; outs = {}
    for r in range(rounds + 2):
        for on in (False, True):
            variant["on"] = on
            s = time.perf_counter(); o = step(); d = time.perf_counter() - s
            if r >= 2: t[on].append(d)
            if r == 0: outs[on] = o.detach().clone()
    med = {k: sorted(v)[len(v) // 2] for k, v in t.items()}
    print(f"[{sorted(parts)}] {name} {'train' if train else 'inference'}: current {1e3*med[False]:.0f} ms, all oneDNN {1e3*med[True]:.0f} ms, "
          f"{med[False]/med[True]:.3f}x; max |diff| {(outs[False]-outs[True]).abs().max():.2e}")

# How much of LIT's lead on this CPU is oneDNN against MKL: timm's pvt_v2_b2 and Swin-T with every
# nn.Linear routed through oneDNN (inference: the fused op; training: litvit.ops.onednn.linear,
# weight gradients included) beside the same models as timm runs them (MKL), and LIT as litvit
# runs it, interleaved; inference batch 32, training batch 16, 2 threads:
# python peers_onednn.py ROUNDS
import statistics, sys, time, torch, torch.nn as nn, torch.nn.functional as F, timm, litvit
from litvit.benchmark import tune_cpu_malloc
from litvit.ops import onednn
tune_cpu_malloc(); torch.set_num_threads(2)
rounds = int(sys.argv[1])
pw = torch.ops.mkldnn._linear_pointwise
routed = {"on": False}
plain_forward = nn.Linear.forward
def forward(self, x):
    if not routed["on"] or x.dtype != torch.float32:
        return plain_forward(self, x)
    if not torch.is_grad_enabled():
        return pw(x.reshape(-1, x.shape[-1]), self.weight, self.bias, "none", [], "").reshape(*x.shape[:-1], -1)
    return onednn.linear(x, self.weight, self.bias, True)
nn.Linear.forward = forward
variants = [("lit_ti", False), ("pvt_v2_b2", False), ("pvt_v2_b2", True),
            ("lit_s", False), ("swin_tiny_patch4_window7_224", False), ("swin_tiny_patch4_window7_224", True)]
for mode in ("inference", "train"):
    batch = 32 if mode == "inference" else 16
    x = torch.randn(batch, 3, 224, 224); y = torch.randint(0, 1000, (batch,))
    models = {}
    for name, _ in variants:
        if name not in models:
            torch.manual_seed(0)
            m = (litvit.create_model(name) if name.startswith("lit") else timm.create_model(name)).train(mode == "train")
            models[name] = (m, torch.optim.SGD(m.parameters(), lr=0.0))
    def step(name, on):
        routed["on"] = on
        m, opt = models[name]
        if mode == "inference":
            with torch.inference_mode():
                return m(x)
        opt.zero_grad(set_to_none=True); F.cross_entropy(m(x), y).backward(); opt.step()
    times = {v: [] for v in variants}
    for r in range(rounds + 1):
        order = variants[r % len(variants):] + variants[:r % len(variants)]
        for v in order:
            t0 = time.perf_counter(); step(*v); d = time.perf_counter() - t0
            if r: times[v].append(d)
    med = {v: statistics.median(t) for v, t in times.items()}
    for v in variants:
        print(f"{mode:9s} {v[0]:30s} {'oneDNN Linear' if v[1] else 'as built':13s} {1e3 * med[v]:7.0f} ms {batch / med[v]:6.2f} img/s")
    for lit_name, peer in (("lit_ti", "pvt_v2_b2"), ("lit_s", "swin_tiny_patch4_window7_224")):
        print(f"{mode:9s} {lit_name} / {peer}: {med[(peer, False)] / med[(lit_name, False)]:.2f}x against the peer as timm runs it, "
              f"{med[(peer, True)] / med[(lit_name, False)]:.2f}x against the peer on oneDNN")

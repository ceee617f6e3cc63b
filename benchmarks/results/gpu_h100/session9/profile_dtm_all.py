"""Scratch (session 9): GPU kernel time (torch.profiler, sum of device self time) per forward+backward
of litvit's deform_conv2x2 (Triton) and torchvision.ops.deform_conv2d, and of the whole DTM module,
for the six DTM shapes of LIT-Ti/LIT-S, float32, batch 64, inputs as benchmarks/dtm.py builds them."""
import sys
import torch
from torch.profiler import profile, ProfilerActivity
from torchvision.ops import deform_conv2d
sys.path.insert(0, "benchmarks")
import dtm as bench
from litvit.ops.deform import deform_conv2x2, set_dtm_kernel
from litvit.models import DeformableTokenMerging

set_dtm_kernel("triton")
dev = torch.device("cuda")
gen = torch.Generator().manual_seed(0)
B, N = 64, 10


def kernel_ms(run):
    for _ in range(3):
        run()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(N):
            run()
        torch.cuda.synchronize()
    tot = 0.0
    for e in prof.key_averages():
        tot += getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0.0)
    return tot / N / 1e3


rows = []
for model, cin, side, cout in bench.dtm_shapes(["lit_ti", "lit_s"], 224):
    x, off, w, b = bench.conv_case(B, cin, side, cout, dev, gen)
    leaves = [t.clone().requires_grad_() for t in (x, off, w, b)]
    g = torch.ones(B, cout, side // 2, side // 2, device=dev)

    def fb(fn):
        def run():
            for t in leaves:
                t.grad = None
            fn(*leaves).backward(g)
        return run
    ours = kernel_ms(fb(deform_conv2x2))
    theirs = kernel_ms(fb(lambda *a: deform_conv2d(*a, stride=2)))
    torch.manual_seed(0)
    dtm = DeformableTokenMerging(cin, cout).to(dev).train()
    tv = bench.TorchvisionDTM(dtm)
    tokens = torch.randn(B, side * side, cin, device=dev, requires_grad=True)

    def fbm(module):
        def run():
            tokens.grad = None
            module.zero_grad(set_to_none=True)
            module(tokens, (side, side))[0].float().sum().backward()
        return run
    m_ours = kernel_ms(fbm(dtm))
    m_theirs = kernel_ms(fbm(tv))
    rows.append((model, f"{cin}x{side}x{side}->{cout}", ours, theirs, m_ours, m_theirs))
    print(f"{model} {cin}x{side}x{side}->{cout}: deform conv fwd+bwd GPU ms litvit {ours:.3f} tv {theirs:.3f} = {theirs/ours:.2f}x | "
          f"DTM module litvit {m_ours:.3f} tv {m_theirs:.3f} = {m_theirs/m_ours:.2f}x", flush=True)
t = [sum(r[i] for r in rows) for i in range(2, 6)]
print(f"overall GPU kernel time, forward+backward: deform conv {t[1]/t[0]:.2f}x, DTM module {t[3]/t[2]:.2f}x "
      f"(min {min(r[3]/r[2] for r in rows):.2f}x / {min(r[5]/r[4] for r in rows):.2f}x); torch {torch.__version__}, batch {B}, float32")

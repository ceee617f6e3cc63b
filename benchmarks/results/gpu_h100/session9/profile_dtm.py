"""Scratch (session 9): torch.profiler of deform_conv2x2 forward+backward (Triton kernel) vs
torchvision.ops.deform_conv2d, float32, batch 64, LIT-Ti's first DTM (64x56x56 -> 128);
NCHW input as benchmarks/dtm.py uses it, and channels-last input as inside the model."""
import torch
from torch.profiler import profile, ProfilerActivity
from torchvision.ops import deform_conv2d
from litvit.ops.deform import deform_conv2x2

torch.manual_seed(0)
B, C, S, O = 64, 64, 56, 128
for layout in ("nchw", "channels_last"):
    x = torch.randn(B, C, S, S, device="cuda")
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    off = torch.randn(B, 8, S // 2, S // 2, device="cuda") * 0.5
    w = torch.randn(O, C, 2, 2, device="cuda") / (4 * C) ** 0.5
    b = torch.randn(O, device="cuda")
    leaves = [t.clone().requires_grad_() for t in (x, off, w, b)]
    g = torch.ones(B, O, S // 2, S // 2, device="cuda")
    for name, fn in (("litvit", deform_conv2x2), ("torchvision", lambda *a: deform_conv2d(*a, stride=2))):
        for _ in range(5):
            fn(*leaves).backward(g)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(10):
                fn(*leaves).backward(g)
            torch.cuda.synchronize()
        print(f"===== {name}, {layout} input, 10 x fwd+bwd")
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=14, max_name_column_width=70))

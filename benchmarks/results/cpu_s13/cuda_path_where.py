"""LIT-S 800x1344 batch 1, inference, the path CUDA takes (its bias block budget, no CPU MLP slabs), on the CPU:
live-tensor peak and the largest tensors alive at it (litvit.benchmark.live_tensor_peak)."""
import sys
import torch
import litvit
import litvit.models.lit as lit
from litvit.benchmark import live_tensor_peak

dtype = {"bfloat16": torch.bfloat16, "float32": torch.float32}[sys.argv[1]]
lit.BIAS_BLOCK_ELEMENTS = lit.BIAS_BLOCK_ELEMENTS_CUDA
lit.fused_mlp_applies = lambda *a, **k: False
torch.manual_seed(0)
model = litvit.create_model("lit_s").eval()
x = torch.randn(1, 3, 800, 1344)

def forward():
    with torch.inference_mode(), torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
        model(x)

peak, storages = live_tensor_peak(forward, model)
print(f"{sys.argv[1]}: live peak {peak / 2**20:.1f} MB = {peak / (12 * 4200**2 * dtype.itemsize):.2f} of the attention matrix")
for s in storages[:6]:
    print(f"  {s.nbytes / 2**20:7.1f} MB  {s.module or '(top level)':28s} {s.op:26s} {'x'.join(map(str, s.shape))} {s.dtype}")

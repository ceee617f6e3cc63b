"""Where LIT-S's live-tensor peak sits at 800x1344 (CPU, with CUDA's bias block budget)."""
# Run: .venv/bin/python benchmarks/results/cpu_s13/peak_where.py {bf16,fp32} cuda_budget no_cpu_fused
# (CPU, LIT-S, 800x1344, batch 1, with CUDA's 2^25 bias-block budget and without the CPU-only fused MLP slabs,
#  i.e. the path CUDA takes; the live-tensor peak and the largest live storages at that moment)
import sys, collections, traceback
import torch
import litvit
import litvit.models.lit as lit
from litvit.benchmark import _LiveTensorBytes, _tensor_leaves

dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[sys.argv[1]]
if len(sys.argv) > 2 and sys.argv[2] == "cuda_budget":
    lit.BIAS_BLOCK_ELEMENTS = lit.BIAS_BLOCK_ELEMENTS_CUDA
# Make CPU take the same inference path as CUDA (no fused CPU MLP slabs).
if len(sys.argv) > 3 and sys.argv[3] == "no_cpu_fused":
    lit.fused_mlp_applies = lambda *a, **k: False

class Where(_LiveTensorBytes):
    def __init__(self):
        super().__init__()
        self.origin = {}
        self.snapshot = None
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for ref in [ref for ref in self.live if ref.expired()]:
            self.current -= self.live.pop(ref)
            self.origin.pop(ref, None)
        inputs = {self._weak_ref(t.untyped_storage()) for t in _tensor_leaves((args, kwargs))}
        for t in _tensor_leaves(out):
            s = t.untyped_storage(); ref = self._weak_ref(s)
            if ref not in inputs and ref not in self.live:
                self.live[ref] = s.nbytes(); self.current += s.nbytes()
                stack = [f"{f.name}:{f.lineno}" for f in traceback.extract_stack()[-12:-1] if "lit" in f.filename and "python_dispatch" not in f.filename]
                self.origin[ref] = (str(func), tuple(t.shape), str(t.dtype), " < ".join(stack[-3:][::-1]))
        if self.current > self.peak:
            self.peak = self.current
            self.snapshot = sorted(((self.live[r], self.origin.get(r)) for r in self.live), key=lambda p: -p[0])
        return out

torch.manual_seed(0)
model = litvit.create_model("lit_s").eval()
x = torch.randn(1, 3, 800, 1344)
with Where() as mode, torch.inference_mode(), torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
    model(x)
print(f"peak {mode.peak/2**20:.1f} MB")
groups = collections.Counter()
for nbytes, origin in mode.snapshot:
    groups[(origin[0], origin[3])] += nbytes
for (op, where), nbytes in groups.most_common(15):
    print(f"{nbytes/2**20:8.1f} MB  {op:28s} {where}")

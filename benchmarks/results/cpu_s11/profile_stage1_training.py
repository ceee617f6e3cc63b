import torch, timm, litvit, sys
from litvit.models import lit
from litvit.benchmark import tune_cpu_malloc
tune_cpu_malloc()
m = timm.create_model("lit_ti").train()
blocks = m.stages[0].blocks
x0 = torch.randn(16, 3136, 64); gy = torch.randn(16, 3136, 64)
lit.MLP_TRAIN_SLAB_ELEMENTS = 1 << int(sys.argv[2])
def mod():
    x = x0.clone().requires_grad_(); y = x
    for b in blocks: y = b(y, (56, 56))
    y.backward(gy)
def slab():
    x = x0.clone().requires_grad_()
    lit.fused_mlp_training(blocks, x, recompute=False).backward(gy)
f = mod if sys.argv[1] == "mod" else slab
f(); f()
from torch.profiler import profile
with profile() as p:
    f()
print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=14))

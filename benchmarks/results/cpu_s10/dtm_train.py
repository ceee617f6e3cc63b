import torch, time, statistics, sys, types
import torch.nn.functional as F
from litvit.models.lit import DeformableTokenMerging
from litvit.ops.deform import deform_sample2x2
from litvit.benchmark import tune_cpu_malloc
tune_cpu_malloc()
def forward_2d(self, x, grid):
    batch, _, channels = x.shape
    height, width = grid
    x = x.reshape(batch, height, width, channels).permute(0, 3, 1, 2)
    offset = self.offset_conv(x)
    out_h, out_w = offset.shape[-2:]
    samples = deform_sample2x2(x, offset)
    weight = self.proj.weight.reshape(self.proj.out_channels, -1)
    out = torch.matmul(samples.transpose(1, 2), weight.t())
    if self.proj.bias is not None:
        out = out + self.proj.bias
    C = self.proj.out_channels
    n = self.norm
    if n.training and n.track_running_stats:
        n.num_batches_tracked.add_(1)
    out = F.batch_norm(out.reshape(-1, C), n.running_mean, n.running_var, n.weight, n.bias, n.training, n.momentum, n.eps)
    out = self.act(out)
    return out.reshape(batch, out_h * out_w, C), (out_h, out_w), offset
for (C, Co, Hh) in [(64, 128, 56), (96, 192, 56), (128, 320, 28), (192, 384, 28)]:
    torch.manual_seed(0)
    a = DeformableTokenMerging(C, Co).train(); b = DeformableTokenMerging(C, Co).train(); b.load_state_dict(a.state_dict())
    b.forward = types.MethodType(forward_2d, b)
    x0 = torch.randn(16, Hh * Hh, C)
    def run(m):
        x = x0.clone().requires_grad_()
        out, _, _ = m(x, (Hh, Hh)); out.square().mean().backward(); return out, x.grad
    ra, rb = run(a), run(b)
    print("diff", [(p - q).abs().max().item() for p, q in zip(ra, rb)], "running", (a.norm.running_var - b.norm.running_var).abs().max().item())
    t = {"cur": [], "2d": []}
    for _ in range(2): run(a); run(b)
    for _ in range(9):
        for k, m in (("cur", a), ("2d", b)):
            t0 = time.perf_counter(); run(m); t[k].append(time.perf_counter() - t0)
    c, d = statistics.median(t["cur"]), statistics.median(t["2d"])
    print(f"{C}x{Hh}x{Hh}->{Co}: current {c*1e3:.1f} ms  2d-bn {d*1e3:.1f} ms  {c/d:.2f}x")

# Whole-model CPU training steps (batch 16, 2 threads), interleaved: the current code against
# oneDNN for every Linear layer of LIT's blocks, with the weight gradient from MKL's mm (WGRAD=mm)
# or from oneDNN with the narrower operand transposed (WGRAD=onednn):
# python train_onednn_ab.py MODEL[,MODEL] ROUNDS
import os, sys, time, torch, torch.nn as nn, torch.nn.functional as F, litvit
from litvit.benchmark import tune_cpu_malloc
from litvit.ops import onednn as O
tune_cpu_malloc(); torch.set_num_threads(2)
names = sys.argv[1].split(","); rounds = int(sys.argv[2]); wgrad = os.environ.get("WGRAD", "mm")
pw = torch.ops.mkldnn._linear_pointwise
variant = {"on": False}
orig_linear_fwd = nn.Linear.forward
orig_backward = O._LinearFunction.backward
def backward(ctx, grad):
    if not variant["on"] or wgrad == "mm":
        return orig_backward(ctx, grad)
    x, weight = ctx.saved_tensors
    grad = grad.contiguous()
    gx = pw(grad, weight.t().contiguous(), None, "none", [], "") if ctx.needs_input_grad[0] else None
    gw = None
    if ctx.needs_input_grad[1]:
        if x.shape[1] < grad.shape[1]:
            gw = pw(x.t().contiguous(), grad.t(), None, "none", [], "").t()
        else:
            gw = pw(grad.t().contiguous(), x.t(), None, "none", [], "")
    gb = grad.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
    return gx, gw, gb
O._LinearFunction.backward = staticmethod(torch.autograd.function.once_differentiable(backward))
def linear_fwd(self, x):
    if variant["on"] and x.dtype == torch.float32:
        return O.linear(x, self.weight, self.bias)
    return orig_linear_fwd(self, x)
nn.Linear.forward = linear_fwd
for name in names:
    torch.manual_seed(0)
    m = litvit.create_model(name, drop_path_rate=0.0).train()
    x = torch.randn(16, 3, 224, 224); y = torch.randint(0, 1000, (16,))
    opt = torch.optim.SGD(m.parameters(), lr=0.0)
    def step():
        opt.zero_grad(set_to_none=True); loss = F.cross_entropy(m(x), y); loss.backward(); opt.step()
        return loss.detach(), torch.cat([p.grad.flatten() for p in m.parameters()])
    t = {False: [], True: []}; outs = {}
    for r in range(rounds + 2):
        for on in ((False, True) if r % 2 else (True, False)):
            variant["on"] = on
            s = time.perf_counter(); o = step(); d = time.perf_counter() - s
            if r >= 2: t[on].append(d)
            if r == 0: outs[on] = o
    med = {k: sorted(v)[len(v) // 2] for k, v in t.items()}
    gdiff = ((outs[False][1] - outs[True][1]).abs().max() / outs[False][1].abs().max()).item()
    print(f"[wgrad {wgrad}] {name} train: current {1e3*med[False]:.0f} ms, all oneDNN {1e3*med[True]:.0f} ms, "
          f"{med[False]/med[True]:.3f}x; loss diff {(outs[False][0]-outs[True][0]).abs():.1e}, grad diff/max {gdiff:.1e}")

# Whole-model CPU training steps (batch 16, 2 threads, SGD step included), interleaved, with the
# oneDNN training scope forced: "none" (ATen/MKL throughout), "mlp" (the code before section 18)
# and "all" (every block's Linear layers and weight gradients): python scope_ab.py MODEL[,MODEL] ROUNDS
import statistics, sys, time, torch, torch.nn.functional as F, litvit
from litvit.benchmark import tune_cpu_malloc
from litvit.models import lit
tune_cpu_malloc(); torch.set_num_threads(2)
names, rounds = sys.argv[1].split(","), int(sys.argv[2])
forced = {"scope": "none"}
lit.training_linear_scope = lambda x: forced["scope"] if x.dtype == torch.float32 else "none"
scopes = ("none", "mlp", "all")
for name in names:
    torch.manual_seed(0)
    model = litvit.create_model(name, drop_path_rate=0.0).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.0, momentum=0.9)
    x = torch.randn(16, 3, 224, 224); y = torch.randint(0, 1000, (16,))
    def step():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y); loss.backward(); opt.step()
        return loss.item()
    times = {s: [] for s in scopes}; losses = {}
    for r in range(rounds + 1):
        order = scopes if r % 2 == 0 else scopes[::-1]
        for s in order:
            forced["scope"] = s
            t0 = time.perf_counter(); loss = step(); d = time.perf_counter() - t0
            losses[s] = loss
            if r >= 1: times[s].append(d)
    med = {s: statistics.median(v) for s, v in times.items()}
    print(f"{name} train, batch 16, {rounds} rounds: " + ", ".join(f"{s} {1e3 * med[s]:.0f} ms" for s in scopes)
          + f"; all vs mlp {med['mlp'] / med['all']:.3f}x, all vs none {med['none'] / med['all']:.3f}x; losses "
          + " ".join(f"{losses[s]:.6f}" for s in scopes))

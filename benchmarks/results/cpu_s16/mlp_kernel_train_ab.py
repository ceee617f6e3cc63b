# Training steps with the CPU MLP kernel "aten" against "onednn" (litvit.ops.onednn.linear in
# the MLP-only stages), interleaved, batch 16: python mlp_kernel_train_ab.py MODEL ROUNDS
import statistics, sys, time, torch, litvit
from litvit.benchmark import tune_cpu_malloc
from litvit.ops.onednn import set_cpu_mlp_kernel
tune_cpu_malloc(); torch.set_num_threads(2)
name, rounds = sys.argv[1], int(sys.argv[2])
torch.manual_seed(0)
model = litvit.create_model(name).train()
opt = torch.optim.SGD(model.parameters(), lr=0.0, momentum=0.9)
x = torch.randn(16, 3, 224, 224); y = torch.randint(0, 1000, (16,))
def step(kernel):
    set_cpu_mlp_kernel(kernel)
    opt.zero_grad(set_to_none=True)
    loss = torch.nn.functional.cross_entropy(model(x), y); loss.backward(); opt.step()
    return loss.item()
print("loss aten", step("aten"), "onednn", step("onednn"))
times = {"aten": [], "onednn": []}
for r in range(rounds + 1):
    for kernel in ("aten", "onednn") if r % 2 == 0 else ("onednn", "aten"):
        s = time.perf_counter(); step(kernel); d = time.perf_counter() - s
        if r >= 1: times[kernel].append(d)
a, b = statistics.median(times["aten"]), statistics.median(times["onednn"])
print(f"{name} train step, batch 16, {rounds} rounds: aten {1e3 * a:.0f} ms, onednn {1e3 * b:.0f} ms, speed-up {a / b:.3f}x")

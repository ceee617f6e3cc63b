"""Slab size of fused_mlp_inference on this CPU: LIT-Ti's MLP-only stages, batch 32, 2 threads,
each variant timed once per round in a shuffled order (with --fixed-order: in the order given),
median of per-round ratios against 1 << 20 (the default). Arguments: log2 sizes or "whole"."""
import random, statistics, sys, time, torch, litvit
from litvit.benchmark import tune_cpu_malloc
from litvit.models.lit import fused_mlp_inference
tune_cpu_malloc(); torch.set_num_threads(2); torch.manual_seed(0)
m = litvit.create_model("lit_ti").eval()
sizes = [int(a) if a != "whole" else None for a in ([a for a in sys.argv[1:] if a != "--fixed-order"] or "18 19 20 21 22 whole".split())]
for idx, tokens in ((0, 3136), (1, 784)):
    blocks = m.stages[idx].blocks
    hidden = blocks[0].mlp.fc1.out_features
    x = torch.randn(32, tokens, blocks[0].mlp.fc1.in_features)
    rows = {s: (None if s is None else (1 << s) // hidden) for s in sizes}
    times = {s: [] for s in sizes}
    with torch.inference_mode():
        ref = fused_mlp_inference(blocks, x, rows[20])
        for s in sizes:
            assert torch.allclose(fused_mlp_inference(blocks, x, rows[s]), ref, atol=1e-5)
        order = list(sizes)
        for _ in range(11):
            if "--fixed-order" not in sys.argv:
                random.shuffle(order)
            for s in order:
                t = time.perf_counter(); fused_mlp_inference(blocks, x, rows[s]); times[s].append(time.perf_counter() - t)
    ratios = {s: statistics.median(b / a for a, b in zip(times[s], times[20])) for s in sizes}
    print(f"stage {idx + 1} (default {1e3 * statistics.median(times[20]):.0f} ms):",
          "  ".join(f"{'whole' if s is None else '1<<%d' % s} {r:.2f}" for s, r in ratios.items()), flush=True)

"""Scratch sweep run on the H100 on 2026-11-23 (output: bias_block_sweep.txt): LIT-S at 800 x 1344,
batch 1, inference time and allocator peak per BIAS_BLOCK_ELEMENTS. Kept as the exact script that
produced the recorded numbers. Run: PYTHONPATH=. python3 THIS_FILE
"""
import statistics, time, torch, litvit
import litvit.models.lit as L
torch.manual_seed(0)
model = litvit.create_model("lit_s").eval().cuda()
x = torch.randn(1, 3, 800, 1344, device="cuda")
for prec in (torch.float32, torch.bfloat16):
    for e in (23, 24, 25, 26, 27):
        L.BIAS_BLOCK_ELEMENTS = 1 << e
        def f():
            with torch.inference_mode(), torch.autocast("cuda", dtype=prec, enabled=prec != torch.float32):
                model(x)
            torch.cuda.synchronize()
        f()
        base = torch.cuda.memory_allocated() / 2**20
        torch.cuda.reset_peak_memory_stats()
        ts = []
        for _ in range(5):
            t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)
        peak = torch.cuda.max_memory_allocated() / 2**20 - base
        print(f"{prec} BIAS_BLOCK_ELEMENTS=1<<{e}: {1e3*statistics.median(ts):.1f} ms, peak {peak:.0f} MB", flush=True)

# Whole-model CPU inference, batch 32, 2 threads, interleaved: oneDNN in the attention stages
# (lit.ONEDNN_IN_ATTENTION_STAGES) on and off: python attn_onednn_ab.py MODEL[,MODEL] ROUNDS
import sys, time, torch, litvit
from litvit.benchmark import tune_cpu_malloc
from litvit.models import lit as L
tune_cpu_malloc(); torch.set_num_threads(2)
names = sys.argv[1].split(","); rounds = int(sys.argv[2])
for name in names:
    m = litvit.create_model(name).eval()
    x = torch.randn(32, 3, 224, 224)
    t = {False: [], True: []}; outs = {}
    with torch.inference_mode():
        for r in range(rounds + 2):
            for on in (False, True):
                L.ONEDNN_IN_ATTENTION_STAGES = on
                s = time.perf_counter(); o = m(x); d = time.perf_counter() - s
                if r >= 2: t[on].append(d)
                outs[on] = o
    med = {k: sorted(v)[len(v) // 2] for k, v in t.items()}
    print(f"{name}: attention stages on ATen {1e3*med[False]:.0f} ms, on oneDNN {1e3*med[True]:.0f} ms, "
          f"{med[False]/med[True]:.3f}x; max |diff| {(outs[False]-outs[True]).abs().max():.2e}", flush=True)

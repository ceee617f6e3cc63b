"""ATen's GELU against oneDNN's eltwise GELU (mkldnn tensors) on this CPU: rate and accuracy."""
import time, torch, torch.nn.functional as F
torch.manual_seed(0)
for threads in (1, 2):
    torch.set_num_threads(threads)
    for n in (1 << 19, 1 << 23):
        x = torch.randn(n)
        xm = x.to_mkldnn()
        def aten():
            return F.gelu(x)
        def onednn_only():
            return F.gelu(xm)
        def onednn_roundtrip():
            return F.gelu(x.to_mkldnn()).to_dense()
        ref = F.gelu(x.double()).float()
        res = {}
        for name, fn in (("aten", aten), ("onednn", onednn_only), ("onednn+convert", onednn_roundtrip)):
            out = fn()
            out = out.to_dense() if out.is_mkldnn else out
            err = (out - ref).abs().max().item()
            ts = []
            for _ in range(15):
                t = time.perf_counter(); fn(); ts.append(time.perf_counter() - t)
            ts.sort()
            res[name] = (n / ts[len(ts)//2] / 1e9, err)
        print(threads, n, {k: f"{v[0]:.2f} G/s err {v[1]:.1e}" for k, v in res.items()}, flush=True)

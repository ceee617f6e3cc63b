# Each recorded run of the command: the ratio and its ceiling (the ratio if the first
# model ran every counted FLOP at the run's matmul probe rate), from the JSON files.
import glob, json, os, sys
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", ".."))
from litvit.benchmark import pair_ratios
pairs = [("lit_ti", "pvt_v2_b2"), ("lit_s", "swin_tiny_patch4_window7_224")]
here = os.path.join(os.path.dirname(__file__), "..")
print("| run | CPU | probe GFLOP/s | LIT-Ti/PVTv2 inf | train | LIT-S/Swin-T inf | train |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for path in sorted(glob.glob(os.path.join(here, "cpu_224_*.json"))):
    report = json.load(open(path))
    meta = report["meta"]
    if not meta.get("matmul_peak_gflops") or meta["config"]["batch_size"] != 32:
        continue
    rows = {(r["a"], r["mode"]): r for r in pair_ratios(report, pairs)}
    cells = [f"{rows[(a, mode)]['ratio']:.2f} / {rows[(a, mode)]['ceiling']:.2f}" for a, _ in pairs for mode in ("inference", "train")]
    print(f"| `{os.path.basename(path)}` | {meta['device_name'][:38]} | {meta['matmul_peak_gflops']:.1f} | " + " | ".join(cells) + " |")

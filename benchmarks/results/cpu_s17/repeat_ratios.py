# Ratios round by round from the per-repeat lines of a benchmark log (runs made before the
# benchmark stored step_ms_repeats): python repeat_ratios.py LOG...
import re, sys
pairs = [("lit_ti", "pvt_v2_b2"), ("lit_s", "swin_tiny_patch4_window7_224")]
for path in sys.argv[1:]:
    rounds = {}
    for line in open(path):
        m = re.match(r"\[(\w+) 224px\] repeat \d+/\d+: (.*)", line)
        if m:
            times = dict((name, float(ms)) for name, ms in re.findall(r"(\S+) (\d+) ms", m.group(2)))
            rounds.setdefault(m.group(1), []).append(times)
    for mode, rs in rounds.items():
        batch = {"inference": 32, "train": 16}[mode]
        for a, b in pairs:
            r = sorted(t[b] / t[a] for t in rs)
            print(f"{path}: {a} / {b} ({mode}): {r[0]:.2f}-{r[-1]:.2f}x repeat by repeat")

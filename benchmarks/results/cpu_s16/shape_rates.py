# GFLOP/s of each matrix-product shape in op_walltime_train_lit_ti_shapes.txt (mm: (m,k),(k,n);
# addmm: (bias),(m,k),(k,n)), as a share of the run's matmul probe: python shape_rates.py PROBE
import re, sys
probe = float(sys.argv[1])
for line in open("op_walltime_train_lit_ti_shapes.txt"):
    m = re.match(r"\s+(mm|addmm) \[(.*)\]\s+([\d.]+) ms .*?(\d+) calls", line)
    if not m:
        continue
    dims = [(int(x), int(y)) for x, y in re.findall(r"\((\d+), (\d+)\)", m.group(2))]
    (a, k), (_, n) = dims[-2], dims[-1]
    gflops = 2 * a * k * n * int(m.group(4)) / float(m.group(3)) / 1e6
    print(f"{m.group(1):6s} {a:6d} x {k:5d} -> {n:5d}  {gflops:6.1f} GFLOP/s  {100 * gflops / probe:4.0f} %")

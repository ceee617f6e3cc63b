"""``litvit benchmark``: result fields, JSON/CSV/PNG outputs, runtimes and errors, on a tiny LIT."""
from __future__ import annotations

import csv
import json
import statistics
import time

import pytest
import timm
import torch

import litvit
from litvit import benchmark as bench
from litvit.benchmark import memory, runner
from litvit.cli import main
from litvit.ops.onednn import square_products

TINY = dict(embed_dims=(16, 32, 40, 64), depths=(1, 1, 1, 1), num_heads=(1, 2, 5, 8))
TINY_CLI = ["embed_dims=(16,32,40,64)", "depths=(1,1,1,1)", "num_heads=(1,2,5,8)"]


def _config(**overrides) -> bench.BenchmarkConfig:
    kwargs = dict(
        models=["lit_s"],
        batch_size=2,
        train_batch_size=2,
        img_sizes=[64],
        warmup=1,
        repeats=2,
        memory=False,
        num_classes=10,
        model_kwargs=dict(TINY),
    )
    kwargs.update(overrides)
    return bench.BenchmarkConfig(**kwargs)


def test_results_are_complete_and_consistent():
    report = bench.run_benchmark(_config(models=["lit_ti", "lit_s"], matmul_peak=True, matmul_size=128), log=None)
    results = report["results"]
    assert [(r["model"], r["mode"]) for r in results] == [
        ("lit_ti", "inference"), ("lit_s", "inference"), ("lit_ti", "train"), ("lit_s", "train")
    ]
    peak = report["meta"]["matmul_peak_gflops"]
    assert peak > 0 and len(report["meta"]["matmul_peak_samples"]) == 2 * 2  # one probe per round
    # Every plain product torch offers here was timed; the peak is the fastest one's median.
    products = report["meta"]["matmul_product_gflops"]
    assert list(products) == list(square_products(torch.zeros(2, 2), torch.zeros(2, 2)))
    assert peak == max(products.values()) == products[report["meta"]["matmul_peak_product"]]
    assert peak == pytest.approx(statistics.median(report["meta"]["matmul_peak_samples"]))
    for r in results:
        assert set(r) == set(bench.RESULT_FIELDS)
        assert r["status"] == "ok" and r["error"] is None
        assert r["repeats"] == 2 and r["img_size"] == 64 and r["batch_size"] == 2
        assert r["step_ms_min"] <= r["step_ms"] <= r["step_ms_max"]
        assert r["img_per_s"] == pytest.approx(r["batch_size"] / (r["step_ms"] / 1e3))
        assert r["cpu_ms"] > 0
        assert r["achieved_gflops"] == pytest.approx(r["gflops_per_img"] * r["img_per_s"])
        assert r["peak_fraction"] == pytest.approx(r["achieved_gflops"] / peak)
        cpu_rate = r["gflops_per_img"] * r["batch_size"] / (r["cpu_ms"] / 1e3)
        assert r["cpu_peak_fraction"] == pytest.approx(cpu_rate / report["meta"]["matmul_peak_cpu_gflops"])
        assert r["peak_mem_mb"] is None  # memory=False
    # FLOPs agree with an independent count on the same architecture; training counts 3 passes.
    model = timm.create_model("lit_s", num_classes=10, img_size=64, **TINY)
    forward = bench.count_flops(model, torch.randn(1, 3, 64, 64))
    by_mode = {(r["model"], r["mode"]): r for r in results}
    assert by_mode[("lit_s", "inference")]["gmacs"] == pytest.approx(forward / 2e9)
    assert by_mode[("lit_s", "train")]["gflops_per_img"] == pytest.approx(3 * forward / 1e9)
    assert by_mode[("lit_s", "inference")]["params_m"] == pytest.approx(sum(p.numel() for p in model.parameters()) / 1e6)


def test_ratio_ceiling_puts_the_first_model_at_the_matmul_peak():
    report = bench.run_benchmark(_config(models=["lit_ti", "lit_s"], matmul_peak=True, matmul_size=128), log=None)
    rows = bench.pair_ratios(report, [("lit_ti", "lit_s")])
    assert [(row["mode"], row["img_size"]) for row in rows] == [("inference", 64), ("train", 64)]
    peak = report["meta"]["matmul_peak_gflops"]
    by_mode = {(r["model"], r["mode"]): r for r in report["results"]}
    for row in rows:
        a, b = by_mode[("lit_ti", row["mode"])], by_mode[("lit_s", row["mode"])]
        assert row["ratio"] == pytest.approx(a["img_per_s"] / b["img_per_s"])
        # lit_ti's seconds per image if its counted FLOPs ran at the probe's rate, against lit_s's as measured
        assert row["ceiling"] == pytest.approx((1 / b["img_per_s"]) / (a["gflops_per_img"] / peak))
        # Round by round: the same two repeats' steps, paired; the medians' ratio lies within.
        assert len(a["step_ms_repeats"]) == len(b["step_ms_repeats"]) == 2
        assert statistics.median(a["step_ms_repeats"]) == pytest.approx(a["step_ms"])
        paired = [tb / ta for ta, tb in zip(a["step_ms_repeats"], b["step_ms_repeats"])]  # equal batch sizes
        assert (row["ratio_min"], row["ratio_max"]) == pytest.approx((min(paired), max(paired)))
        assert row["ratio_min"] <= row["ratio"] * (1 + 1e-9) and row["ratio"] <= row["ratio_max"] * (1 + 1e-9)
        assert (
            f"lit_ti / lit_s ({row['mode']}, 64px): {row['ratio']:.2f}x images/s, "
            f"{row['ratio_min']:.2f}-{row['ratio_max']:.2f}x repeat by repeat (ceiling {row['ceiling']:.2f}x"
        ) in bench.format_ratios(report, [("lit_ti", "lit_s")])
    # A model with fewer repeats (it failed midway) gives no round-by-round range.
    report["results"][0]["step_ms_repeats"] = report["results"][0]["step_ms_repeats"][:1]
    assert all(row["ratio_min"] is None for row in bench.pair_ratios(report, [("lit_ti", "lit_s")])[:1])
    assert "repeat by repeat" not in bench.format_ratios(report, [("lit_ti", "lit_s")]).splitlines()[0]
    # Without a probe there is no ceiling.
    for result in report["results"]:
        result["peak_fraction"] = None
    assert all(row["ceiling"] is None for row in bench.pair_ratios(report, [("lit_ti", "lit_s")]))
    assert "ceiling" not in bench.format_ratios(report, [("lit_ti", "lit_s")])


def test_flop_count_of_a_linear_layer():
    flops = bench.count_flops(torch.nn.Linear(8, 4), torch.randn(3, 8))
    assert flops == 2 * 8 * 4  # per input row


def test_flop_count_includes_cpu_attention():
    class Attend(torch.nn.Module):
        def forward(self, q):
            return torch.nn.functional.scaled_dot_product_attention(q, q, q)

    heads, tokens, width = 3, 10, 8
    flops = bench.count_flops(Attend(), torch.randn(2, heads, tokens, width))
    # Scores and weighted values: two products of tokens x tokens x width per head, per image.
    assert flops == 2 * 2 * heads * tokens * tokens * width


def test_peak_memory_comes_from_a_fresh_process():
    # A big parent must not leak into the worker's figure (Linux's ru_maxrss would: it is
    # inherited across fork and exec).
    ballast = torch.ones(256 * 2**20 // 4 * 4)  # 1 GiB, touched
    parent_rss = memory._current_rss_mb()
    report = bench.run_benchmark(_config(modes=["inference"], memory=True, repeats=1), log=None)
    del ballast
    (r,) = report["results"]
    assert r["status"] == "ok", r["error"]
    assert r["mem_base_mb"] > 10  # the worker's RSS after importing torch
    assert r["mem_base_mb"] < r["peak_mem_mb"] < parent_rss - 512


def test_cli_writes_json_csv_and_table(tmp_path, capsys):
    json_path, csv_path = tmp_path / "out" / "b.json", tmp_path / "b.csv"
    code = main(
        ["benchmark", "--device", "cpu", "--model", "lit_ti", "lit_s", "--img-size", "64", "-b", "2", "--train-batch-size", "2",
         "--repeats", "2", "--no-memory", "--num-classes", "10", "--ratios", "lit_ti:lit_s",
         "--matmul-peak", "--matmul-size", "64",
         "--json", str(json_path), "--csv", str(csv_path), "--model-kwargs", *TINY_CLI]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "img/s" in out and "GMACs" in out and "lit_ti / lit_s (inference, 64px, eager)" in out
    meta = json.loads(json_path.read_text())["meta"]
    peak_line = f"matmul peak: {meta['matmul_peak_gflops']:.1f} GFLOP/s"
    if len(meta["matmul_product_gflops"]) > 1:  # names the faster product and gives the other's rate
        slower = [n for n in meta["matmul_product_gflops"] if n != meta["matmul_peak_product"]][0]
        peak_line += (
            f" from {bench.MATMUL_PRODUCT_NAMES[meta['matmul_peak_product']]}"
            f" ({bench.MATMUL_PRODUCT_NAMES[slower]} {meta['matmul_product_gflops'][slower]:.1f})"
        )
    assert peak_line + f", median of {len(meta['matmul_peak_samples'])} interleaved probes" in out
    report = json.loads(json_path.read_text())
    assert {"date", "command", "device_name", "torch", "timm", "config"} <= set(report["meta"])
    assert report["meta"]["config"]["model_kwargs"]["depths"] == [1, 1, 1, 1]
    # On the CPU every model runs plain and through the speed layer: like-for-like ratios per runtime,
    # then litvit's models as its commands run them against the others as timm ships them.
    assert sorted((row["a"], row["b"], row["mode"], row["runtime"]) for row in report["ratios"]) == [
        ("lit_ti", "lit_s", mode, runtime) for mode in ("inference", "train") for runtime in ("eager", "optimized", "optimized/eager")
    ]
    assert "lit_ti optimized / lit_s eager (inference, 64px, as shipped)" in out
    assert report["meta"]["accel_plan"] and f"optimized: litvit.optimize with {report['meta']['accel_plan']}" in out
    assert report["meta"]["dtm_kernel"] == "torch"
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == bench.RESULT_FIELDS
    assert [(row["model"], row["mode"]) for row in rows] == [(r["model"], r["mode"]) for r in report["results"]]
    for row, r in zip(rows, report["results"]):
        assert float(row["img_per_s"]) == pytest.approx(r["img_per_s"])
        assert [float(t) for t in row["step_ms_repeats"].split()] == pytest.approx(r["step_ms_repeats"], abs=0.05)


def test_sweep_plot(tmp_path):
    path = tmp_path / "sweep.png"
    code = main(
        ["benchmark", "--model", "lit_s", "--mode", "inference", "--sweep-img-size", "64,96", "-b", "1",
         "--repeats", "1", "--no-memory", "--num-classes", "10", "--plot", str(path), "--model-kwargs", *TINY_CLI]
    )
    assert code == 0
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_custom_runtime_is_used_and_inference_only_runtimes_skip_training():
    calls = []

    @bench.register_runtime("test-counting", supports_training=False)
    def prepare(model, example, config, mode):
        def run(x):
            calls.append(x.shape)
            return model(x)

        return run

    try:
        report = bench.run_benchmark(_config(runtime="test-counting"), log=None)
    finally:
        del bench.RUNTIMES["test-counting"]
    inference, train = report["results"]
    assert inference["status"] == "ok" and inference["runtime"] == "test-counting"
    # Warm-up, the untimed rounds that let the CPU heap settle (at least one), two timed repeats.
    assert inference["settle_rounds"] >= 1
    assert len(calls) == 1 + inference["settle_rounds"] + 2
    assert train["status"] == "skipped" and "cannot train" in train["error"]


def test_each_timed_repeat_starts_one_model_later():
    visits, prepared = [], []

    @bench.register_runtime("test-order", supports_training=False)
    def prepare(model, example, config, mode):
        index = len(prepared)  # models are prepared in the order given
        prepared.append(index)

        def run(x):
            visits.append(index)
            return model(x)

        return run

    models = ["lit_ti", "lit_s", "lit_m"]
    try:
        report = bench.run_benchmark(
            _config(models=models, runtime="test-order", modes=["inference"], repeats=3), log=None
        )
    finally:
        del bench.RUNTIMES["test-order"]
    assert all(r["status"] == "ok" and r["repeats"] == 3 for r in report["results"])
    timed = visits[-9:]
    rounds = [timed[i : i + 3] for i in range(0, 9, 3)]
    assert rounds == [[0, 1, 2], [1, 2, 0], [2, 0, 1]]


def test_a_failing_model_is_reported_not_fatal():
    report = bench.run_benchmark(_config(models=["lit_s"], img_sizes=[48]), log=None)  # not a multiple of 32
    assert {r["status"] for r in report["results"]} == {"error"}
    assert all("divisible by 32" in r["error"] for r in report["results"])


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model", "no_such_model_xyz"], "unknown model 'no_such_model_xyz'"),
        (["--precision", "float16", "--device", "cpu"], "float16 autocast needs CUDA"),
        (["--repeats", "0"], "repeats must be at least 1"),
        (["--plot", "x.png"], "--sweep-img-size"),
    ],
)
def test_bad_options_are_one_line_errors(argv, message, capsys):
    assert main(["benchmark", "--no-memory", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_memory_is_the_allocator_peak():
    report = bench.run_benchmark(_config(device="cuda", memory=True, repeats=1), log=None)
    for r in report["results"]:
        assert r["status"] == "ok", r["error"]
        assert r["peak_mem_mb"] > 0 and r["mem_base_mb"] == 0


def _load_script(name: str):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_attention_memory_sizes_the_largest_attention_matrix():
    script = _load_script("attention_memory")
    # LIT-S at 800 x 1344: stage 3 holds 50 x 84 = 4200 tokens and 12 heads.
    matrix = script.attention_matrix_bytes("lit_s", 800, 1344, batch=1, itemsize=4)
    assert matrix == {"stage": 3, "tokens": 4200, "heads": 12, "bytes": 12 * 4200**2 * 4}
    assert script.parse_size("800x1344") == [800, 1344] and script.parse_size("512") == [512, 512]


def test_attention_memory_live_peak_counts_the_materialised_matrix():
    model = litvit.create_model("lit_s", embed_dims=(16, 32, 48, 64), depths=(1, 1, 1, 1), num_heads=(1, 2, 12, 16))
    model.eval()
    x = torch.randn(1, 3, 128, 192)

    def forward():
        with torch.inference_mode():
            model(x)

    fast = bench.live_tensor_peak_bytes(forward) / 2**20
    litvit.models.set_reference_path(model)
    reference = bench.live_tensor_peak_bytes(forward) / 2**20
    # The reference path holds stage 3's 12 x 96 x 96 attention matrix (and its bias); SDPA does not.
    matrix_mb = 12 * 96**2 * 4 / 2**20
    assert reference - fast > matrix_mb
    # ... and the breakdown at that peak names the attention module and its N x N tensors.
    peak, storages = bench.live_tensor_peak(forward, model)
    assert peak / 2**20 == reference
    assert storages[0].module == "stages.2.blocks.0.attn" and storages[0].nbytes == 12 * 96**2 * 4
    assert any(s.shape == (1, 12, 96, 96) for s in storages if s.module == "stages.2.blocks.0.attn")


def test_memory_worker_inherits_the_kernel_choices(monkeypatch):
    """The worker is a new interpreter; the kernels chosen in this one must reach it."""
    import subprocess

    import litvit.ops.deform as deform

    seen = {}

    def fake_run(cmd, **kwargs):
        seen["env"] = kwargs.get("env") or {}
        return subprocess.CompletedProcess(cmd, 0, stdout='{"peak_mem_mb": 1.0, "mem_base_mb": 0.5}\n', stderr="")

    monkeypatch.setattr(memory.subprocess, "run", fake_run)
    monkeypatch.setattr(deform, "_dtm_kernel", "triton")
    result = bench.measure_peak_memory("lit_ti", "inference", 64, bench.BenchmarkConfig(models=["lit_ti"]))
    assert result == {"peak_mem_mb": 1.0, "mem_base_mb": 0.5}
    assert seen["env"]["LITVIT_DTM_KERNEL"] == "triton"


def test_dtm_script_times_steps_per_repeat_and_checks_the_timer(capsys):
    script = _load_script("dtm")
    calls = []
    assert script.timed(lambda: calls.append(1), torch.device("cpu"), steps=3) >= 0 and len(calls) == 3
    assert script.main(["--device", "cpu", "--batch-size", "1", "--repeats", "1", "--models", "lit_ti",
                        "--no-module", "--steps", "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["meta"]["steps"] == 2 and report["meta"]["timer"] == "wall"
    # the three DTMs of LIT-Ti, each checked against torchvision before it is timed
    assert [r["shape"] for r in report["rows"]] == ["64x56x56 -> 128", "128x28x28 -> 320", "320x14x14 -> 512"]
    assert all(r["fwdbwd_ours"] > 0 and r["fwdbwd_tv"] > 0 for r in report["rows"])
    with pytest.raises(SystemExit):
        script.main(["--device", "cpu", "--timer", "kernels"])


def test_cpu_rounds_run_untimed_until_the_heap_stops_growing(monkeypatch):
    # Each settling round reads the fault counter twice; the first two rounds page in 4 MB.
    readings = iter([0, 1000, 1000, 2000, 2000, 2010])
    monkeypatch.setattr(runner, "_minor_faults", lambda: next(readings))
    logged = []
    report = bench.run_benchmark(_config(modes=["inference"]), log=logged.append)
    (result,) = report["results"]
    assert result["status"] == "ok" and result["settle_rounds"] == 3 and result["repeats"] == 2
    assert sum("settling the heap" in line for line in logged) == 3

    monkeypatch.setattr(runner, "_minor_faults", iter(range(0, 10**9, 10**5)).__next__)  # never settles
    (result,) = bench.run_benchmark(_config(modes=["inference"]), log=None)["results"]
    assert result["settle_rounds"] == bench.CPU_SETTLE_ROUNDS

    (result,) = bench.run_benchmark(_config(modes=["inference"], warmup=0), log=None)["results"]
    assert result["settle_rounds"] is None  # no warm-up asked for: none at all


def test_live_tensor_peak_counts_storages_alive_at_once():
    before = torch.ones(10_000)  # existed before: not counted

    def fn() -> None:
        a = torch.ones(1000)  # 4000 bytes
        b = torch.ones(2000, dtype=torch.float64)  # 16000 bytes
        a.view(10, 100).add_(before[:1000].view(10, 100))  # a view and an in-place op: no new storage
        del a
        c = b[:500].float()  # 2000 bytes, beside b but after a was freed
        del b, c

    assert bench.live_tensor_peak_bytes(fn) == 4000 + 16000


def test_live_tensor_peak_names_the_op_and_module_of_each_storage_at_the_peak():
    model = torch.nn.Sequential(torch.nn.Linear(8, 512), torch.nn.GELU(), torch.nn.Linear(512, 8)).eval()
    x = torch.randn(4, 8)
    with torch.inference_mode():
        peak, storages = bench.live_tensor_peak(lambda: model(x), model)
        assert peak == bench.live_tensor_peak_bytes(lambda: model(x))
    # The peak is while GELU writes its output beside fc1's: two 4 x 512 float32 tensors.
    assert peak == 2 * 4 * 512 * 4 == sum(s.nbytes for s in storages)
    assert [(s.module, s.shape, s.dtype) for s in storages] == [("0", (4, 512), torch.float32), ("1", (4, 512), torch.float32)]
    assert storages[0].op.startswith("aten.") and "gelu" in storages[1].op


def test_a_compiling_runtime_reports_its_first_call_as_compile_time():
    @bench.register_runtime("test-slow-first-call", supports_training=False, compiles=True)
    def prepare(model, example, config, mode):
        calls = []

        def run(x):
            if not calls:
                time.sleep(0.5)  # what building a compiled program costs, once
            calls.append(1)
            return model(x)

        return run

    try:
        report = bench.run_benchmark(_config(runtime="test-slow-first-call", modes=["inference"]), log=None)
    finally:
        del bench.RUNTIMES["test-slow-first-call"]
    (result,) = report["results"]
    assert result["first_step_ms"] >= 500
    assert 0.5 <= result["compile_s"] <= result["first_step_ms"] / 1e3
    assert "compile time (first step less a timed one): lit_s inference" in bench.format_table(report)
    # An eager run reports the first step but no compile time.
    eager = bench.run_benchmark(_config(runtime="eager", modes=["inference"]), log=None)["results"][0]
    assert eager["first_step_ms"] is not None and eager["compile_s"] is None

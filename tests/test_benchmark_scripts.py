"""The scripts in ``benchmarks/`` run, with tiny arguments, and print what benchmarks/README.md cites."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"benchmark_script_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def test_dtm_script_checks_and_times_every_dtm_shape(capsys):
    script = _load_script("dtm")
    args = ["--device", "cpu", "--batch-size", "1", "--img-size", "64", "--repeats", "1", "--models", "lit_ti", "--json"]
    assert script.main(args) == 0
    report = json.loads(capsys.readouterr().out)
    # LIT-Ti's three DTMs at 64 px, for the deformable convolution alone and for the whole module.
    shapes = ["64x16x16 -> 128", "128x8x8 -> 320", "320x4x4 -> 512"]
    assert [(r["what"], r["shape"]) for r in report["rows"]] == [
        (what, shape) for what in ("deform conv", "DTM module") for shape in shapes
    ]
    for row in report["rows"]:
        assert row["device"] == "cpu" and row["fwd_speedup"] > 0 and row["fwdbwd_speedup"] > 0
    assert [s["what"] for s in report["overall"]] == ["deform conv", "DTM module"]


def test_attention_memory_script_measures_both_paths(tmp_path):
    out = tmp_path / "memory.json"
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / "attention_memory.py"), "--device", "cpu", "--img-size", "64",
         "--repeats", "1", "--json", str(out)],
        capture_output=True, text=True, env=_env(), timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert report["attention_matrix"] == {"stage": 3, "tokens": 16, "heads": 12, "bytes": 12 * 16**2 * 4}
    assert [r["path"] for r in report["results"]] == ["fast", "reference"]
    for r in report["results"]:
        assert "error" not in r, r
        assert r["live_mb"] > 0 and r["ms"] > 0
    assert "fast-path inference memory / one attention matrix:" in proc.stdout


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_gpu_script_runs_its_model_comparison_on_the_cpu(tmp_path):
    # DEVICE=cpu is the script's smoke mode; step 1 is the only step that calls `litvit benchmark`
    # itself (steps 2 and 3 run the two scripts tested above with the same flags).
    env = {**_env(), "DEVICE": "cpu", "PYTHON": sys.executable, "OUT": str(tmp_path), "STEPS": "1",
           "MODELS": "lit_ti", "SMOKE_IMG": "64"}
    proc = subprocess.run(["bash", str(BENCHMARKS / "gpu_figures.sh")], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads((tmp_path / "bf16_b2.json").read_text())
    assert report["meta"]["config"]["precision"] == "bfloat16"
    # On the CPU the benchmark measures each model eager and through the speed layer.
    assert sorted((r["model"], r["mode"], r["runtime"], r["status"]) for r in report["results"]) == [
        ("lit_ti", "inference", "eager", "ok"), ("lit_ti", "inference", "optimized", "ok"),
        ("lit_ti", "train", "eager", "ok"), ("lit_ti", "train", "optimized", "ok"),
    ]
    assert (tmp_path / "machine.txt").read_text().count("torch") >= 1

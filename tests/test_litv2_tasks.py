"""LITv2 through the commands: ONNX export (checked in ONNX Runtime), benchmark, detection and
segmentation on the built-in synthetic data, the demos, and the graph-capture contract."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

import litvit  # noqa: F401  (registers the models)
from litvit.cli import main

# Four HiLo heads in stage 3 (three Lo-Fi, one Hi-Fi at the released alpha 0.9).
ARCH = dict(embed_dims=(16, 32, 64, 128), depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8))
ARCH_CLI = ["embed_dims=(16,32,64,128)", "depths=(1,1,1,1)", "num_heads=(1,2,4,8)"]
ARCH_FLAGS = ["--embed-dims", "16", "32", "64", "128", "--depths", "1", "1", "1", "1", "--num-heads", "1", "2", "4", "8"]


def _onnx_run(path: Path, x: torch.Tensor) -> list:
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})


# ----------------------------------------------------------------------------- export
def test_onnx_export_follows_the_image_size_through_hilo_padding(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    from litvit.export import dynamic_size_supported

    if not dynamic_size_supported("onnx"):
        pytest.skip("a dynamic image size in ONNX needs a newer torch")
    # Window 4 (the dense backbones' setting): at 128 px stage 3 is 8 x 8 tokens, at the second
    # size the export is checked at (160 x 192) 10 x 12, which HiLo pads to 12 x 12. A graph that
    # kept the example's padding could not run there.
    torch.manual_seed(0)
    model = timm.create_model("litv2_s", num_classes=10, local_ws=4, img_size=128, **ARCH).eval()
    checkpoint = tmp_path / "litv2.pth"
    torch.save({"model": model.state_dict()}, checkpoint)
    out = tmp_path / "litv2.onnx"
    code = main(["export", "--model", "litv2_s", "--checkpoint", str(checkpoint), "--out", str(out),
                 "--img-size", "128", "--verify-batch-sizes", "2", "--model-kwargs", *ARCH_CLI, "local_ws=4",
                 "img_size=128"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "input 2x3x160x192" in printed and "verified: max abs diff" in printed
    # Independently: another padded size (stage 3 of 96 x 224 is 6 x 14, padded to 8 x 16).
    x = torch.randn(1, 3, 96, 224)
    with torch.no_grad():
        want = model(x).numpy()
    np.testing.assert_allclose(_onnx_run(out, x)[0], want, atol=1e-4, rtol=0)


# ----------------------------------------------------------------------------- benchmark
def test_benchmark_measures_litv2_beside_lit(tmp_path, capsys):
    report_path = tmp_path / "bench.json"
    code = main(["benchmark", "--device", "cpu", "--model", "litv2_s", "lit_s", "--mode", "inference",
                 "--img-size", "64", "-b", "2", "--repeats", "1", "--no-memory", "--num-classes", "10",
                 "--json", str(report_path), "--model-kwargs", *ARCH_CLI])
    out = capsys.readouterr().out
    assert code == 0, out
    # A default pair, like with like on each runtime (on a CPU: eager and the speed layer).
    assert "litv2_s / lit_s (inference, 64px, eager)" in out
    assert "litv2_s / lit_s (inference, 64px, optimized)" in out
    results = json.loads(report_path.read_text())["results"]
    assert sorted((r["model"], r["runtime"], r["status"]) for r in results) == [
        ("lit_s", "eager", "ok"), ("lit_s", "optimized", "ok"), ("litv2_s", "eager", "ok"), ("litv2_s", "optimized", "ok")
    ]
    assert results[0]["img_per_s"] > 0 and results[0]["gmacs"] > 0


# ----------------------------------------------------------------------------- dense tasks
def test_detect_train_eval_predict_export_with_litv2(tmp_path, capsys):
    from litvit.synthetic import generate_detection

    data = generate_detection(tmp_path / "shapes", num_train=2, num_val=2, image_size=64)
    run = tmp_path / "run"
    assert main(["detect", "train", "--data-root", str(data), "--output", str(run), "--arch", "retinanet",
                 "--model", "litv2_s", "--min-size", "64", "--max-size", "64", "--epochs", "1", "--workers", "0",
                 "--device", "cpu", "--warmup-iters", "1", "--batch-size", "2",
                 "--backbone-kwargs", json.dumps(dict(ARCH, local_ws=4)),
                 "--model-kwargs", json.dumps(dict(fpn_channels=16, head_convs=1))]) == 0
    saved = torch.load(run / "best.pth", weights_only=True)
    assert any(k.startswith("backbone.body.stages.2.blocks.0.attn.lofi_") for k in saved["model"])  # HiLo weights
    assert main(["detect", "eval", "--checkpoint", str(run / "best.pth"), "--data-root", str(data),
                 "--output", str(tmp_path / "eval.json"), "--workers", "0", "--device", "cpu"]) == 0
    assert set(json.loads((tmp_path / "eval.json").read_text())["metrics"]) == {"bbox"}
    assert main(["detect", "predict", "--checkpoint", str(run / "best.pth"), str(data / "images" / "val"),
                 "--output-dir", str(tmp_path / "pred"), "--score-thresh", "0.0", "--device", "cpu"]) == 0
    assert len(list((tmp_path / "pred").glob("*.png"))) == 2
    pytest.importorskip("onnxruntime")
    out = tmp_path / "det.onnx"
    code = main(["export", "--task", "detect", "--model", "litv2_s", "--checkpoint", str(run / "best.pth"),
                 "--out", str(out), "--opset", "16", "--img-size", "64", "--verify-batch-sizes", "1"])
    assert code == 0 and out.is_file(), capsys.readouterr().err


def test_segment_train_predict_export_with_litv2(tmp_path, capsys):
    from PIL import Image

    from litvit.synthetic import generate_segmentation

    data = generate_segmentation(tmp_path / "shapes", num_train=2, num_val=1, image_size=64)
    run = tmp_path / "run"
    assert main(["segment", "train", "--data-dir", str(data), "--output-dir", str(run), "--model", "litv2_s",
                 *ARCH_FLAGS, "--fpn-channels", "16", "--head-channels", "8", "--drop-path-rate", "0",
                 "--iterations", "2", "--batch-size", "2", "--crop-size", "64", "64", "--scale", "64", "64",
                 "--test-scale", "64", "64", "--eval-interval", "2", "--checkpoint-interval", "2",
                 "--workers", "0", "--device", "cpu"]) == 0
    image = sorted((data / "images" / "validation").glob("*.png"))[0]
    assert main(["segment", "predict", str(run / "best.pth"), str(image), "--output-dir", str(tmp_path / "pred")]) == 0
    assert Image.open(tmp_path / "pred" / f"{image.stem}_mask.png").size == (64, 64)
    pytest.importorskip("onnxruntime")
    out = tmp_path / "seg.onnx"
    code = main(["export", "--task", "segment", "--model", "litv2_s", "--checkpoint", str(run / "best.pth"),
                 "--out", str(out), "--opset", "16", "--img-size", "64", "--verify-batch-sizes", "1"])
    assert code == 0, capsys.readouterr().err
    assert _onnx_run(out, torch.randn(1, 3, 64, 64))[0].shape[-2:] == (64, 64)  # logits at the input size


# ----------------------------------------------------------------------------- demos
def test_classification_demo_trains_litv2(tmp_path, monkeypatch, capsys):
    from litvit.classification import demo

    monkeypatch.setattr(demo, "DEMO_DATA", dict(num_train_per_class=2, num_val_per_class=1, image_size=32, seed=0))
    monkeypatch.setattr(demo, "DEMO_SETTINGS", {**demo.DEMO_SETTINGS, "model_kwargs": {k: list(v) for k, v in ARCH.items()},
                                                "batch_size": 8, "workers": 0, "threads": 1})
    out = tmp_path / "run"
    assert main(["demo", "--model", "litv2_s", "--data-dir", str(tmp_path / "data"), "--output-dir", str(out),
                 "--epochs", "1"]) == 0
    assert "training litv2_s" in capsys.readouterr().out
    assert (out / "offsets.png").is_file()
    found = demo.classify_demo_backbone(out / "best.pth")
    assert found is not None and found[1]["model"] == "litv2_s"


def test_dense_demos_follow_the_model_option(tmp_path, monkeypatch, capsys):
    from litvit.classification import demo as top_demo
    from litvit.detection import demo as detect_demo
    from litvit.segmentation import demo as segment_demo

    # A model the demos cannot train is one line and exit status 2, before any work.
    assert main(["demo", "--model", "resnet18", "--data-dir", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert "litv2_s" in err and err.count("\n") == 1 and not (tmp_path / "none").exists()
    scratch = detect_demo.demo_overrides("retinanet", None, model="litv2_s")
    assert scratch["model"] == "litv2_s" and scratch["backbone_checkpoint"] is None
    # A classification demo checkpoint of another model is not reused: the classifier is trained
    # again, with the model asked for.
    lit_s = (tmp_path / "lit_s.pth", {"model": "lit_s"})
    litv2 = (tmp_path / "litv2.pth", {"model": "litv2_s"})
    available = {"found": lit_s}
    trained = []

    def fake_classification_demo(data_dir, model=None, **kwargs):
        trained.append(model)
        available["found"] = litv2 if model == "litv2_s" else lit_s
        return {}

    monkeypatch.setattr(top_demo, "classify_demo_backbone", lambda: available["found"])
    monkeypatch.setattr(top_demo, "run_demo", fake_classification_demo)
    assert detect_demo._classifier("lit_s", False, tmp_path, None, None, 0) == lit_s and trained == []
    assert detect_demo._classifier("litv2_s", False, tmp_path, None, None, 0) == litv2 and trained == ["litv2_s"]
    available["found"] = lit_s
    assert segment_demo._classifier("litv2_s", False, tmp_path, None, None, 0) == (litv2, True)
    assert trained == ["litv2_s", "litv2_s"]


# ----------------------------------------------------------------------------- graph capture
def test_compiles_without_graph_breaks():
    # torch.compile(fullgraph=True) fails on any graph break; the eager backend skips Inductor.
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = timm.create_model("litv2_s", num_classes=10, local_ws=4, img_size=64, **ARCH).eval()
    x = torch.randn(2, 3, 64, 96)  # stage 3 is 4 x 6 tokens: the padded path
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x))

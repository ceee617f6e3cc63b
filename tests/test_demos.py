"""Every demo run to its end, with a few images and steps: the files each step promises and
the summary lines, through the same library calls as ``litvit demo``."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from PIL import Image

# The classification demo's shape, narrowed further; it is also the detection and segmentation
# demos' backbone, which they read from its checkpoint.
TINY_CLASSIFIER = dict(embed_dims=[16, 32, 40, 64], depths=[1, 1, 1, 1], num_heads=[1, 2, 5, 8], mlp_ratios=[2, 2, 2, 2])


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    """A working directory in which the classification demo has run (as after ``make demo``):
    the detection and segmentation demos look for its checkpoint under ``runs/``."""
    root = tmp_path_factory.mktemp("demo")
    old = os.getcwd()
    os.chdir(root)
    try:
        from litvit.classification.demo import run_demo

        result = run_demo("demo_data", epochs=2, seed=0,
                          data=dict(num_train_per_class=4, num_val_per_class=2, image_size=32),
                          overrides=dict(model_kwargs=TINY_CLASSIFIER, batch_size=8, workers=0))
    finally:
        os.chdir(old)
    return root, result


@pytest.fixture
def in_demo_dir(demo_dir, monkeypatch):
    monkeypatch.chdir(demo_dir[0])
    return demo_dir[0]


def _summary_value(text: str, label: str) -> float:
    match = re.search(rf"^{re.escape(label)}\s*([0-9.]+)", text, re.MULTILINE)
    assert match, f"no '{label}' line in:\n{text}"
    return float(match.group(1))


def test_classify_demo_end_to_end(demo_dir, capsys):
    from litvit.classification.demo import CLASSIFY_DEMO_CHECKPOINT, classify_demo_backbone
    from litvit.engine import read_metrics

    root, result = demo_dir
    out = root / "runs" / "demo-classify"
    for name in ("best.pth", "metrics.jsonl", "curves.png", "offsets.png"):
        assert (out / name).is_file(), name
    assert (root / "demo_data" / "classify" / "val" / "circle").is_dir()
    assert result["checkpoint"] == CLASSIFY_DEMO_CHECKPOINT and root / result["offsets"] == out / "offsets.png"
    epochs = [r for r in read_metrics(out) if r.get("kind") == "epoch"]
    assert len(epochs) == 2
    assert result["stats"]["images"] == 12
    assert result["stats"]["top1"] == pytest.approx(max(r["val_top1"] for r in epochs), abs=0.01)
    # The checkpoint is what the dense demos start from.
    found = classify_demo_backbone(out / "best.pth")
    assert found is not None and found[1]["embed_dims"] == tuple(TINY_CLASSIFIER["embed_dims"])


def test_classify_demo_summary_and_fresh_rerun(in_demo_dir, capsys, tmp_path):
    from litvit.classification.demo import run_demo
    from litvit.engine import read_metrics

    out = tmp_path / "run"
    kwargs = dict(epochs=1, data=dict(num_train_per_class=4, num_val_per_class=2, image_size=32),
                  overrides=dict(model_kwargs=TINY_CLASSIFIER, batch_size=8, workers=0))
    result = run_demo(tmp_path / "data", out, **kwargs)
    printed = capsys.readouterr().out
    assert [line[:5] for line in printed.splitlines() if line.startswith("[")] == ["[1/4]", "[2/4]", "[3/4]", "[4/4]"]
    assert _summary_value(printed, "held-out top-1:") == pytest.approx(result["stats"]["top1"], abs=0.01)
    assert f"checkpoint:  {out / 'best.pth'}" in printed and f"next: litvit predict --checkpoint {out / 'best.pth'}" in printed
    # A finished run is started afresh rather than "resumed" past its end.
    run_demo(tmp_path / "data", out, **kwargs)
    assert len([r for r in read_metrics(out) if r.get("kind") == "epoch"]) == 1


def test_detect_demo_end_to_end(in_demo_dir, capsys):
    from litvit.detection.demo import run_demo

    results = run_demo("demo_data", epochs=1, threads=1, num_predictions=2,
                       data=dict(num_train=4, num_val=2, image_size=64),
                       overrides=dict(batch_size=2, eval_batch_size=2, workers=0, warmup_iters=1))
    printed = capsys.readouterr().out
    assert "from the classification demo checkpoint runs/demo-classify/best.pth" in printed
    assert set(results) == {"retinanet", "mask_rcnn"}
    for name, result in results.items():
        run_dir = in_demo_dir / "runs" / "demo-detect" / name
        for file in ("best.pth", "checkpoint-epoch001.pth", "metrics.jsonl", "eval.json"):
            assert (run_dir / file).is_file(), (name, file)
        assert {"bbox"} <= set(result["metrics"]) and 0 <= result["metrics"]["bbox"]["AP50"] <= 1
        assert ("segm" in result["metrics"]) == (name == "mask_rcnn")
        drawings = sorted(p.name for p in (run_dir / "predictions").glob("*.png"))
        assert drawings == ["000000.png", "000001.png"]
        assert Image.open(run_dir / "predictions" / "000000.png").size == (64, 64)
        assert len(json.loads((run_dir / "predictions" / "predictions.json").read_text())) == 2
        line = next(l for l in printed.split("[3/3] summary")[1].splitlines() if l.startswith(f"  {name}"))
        assert f"box AP50 {result['metrics']['bbox']['AP50']:.3f}" in line and "drawings:" in line
    assert "[3/3] summary" in printed and re.search(r"^total time [0-9.]+ min$", printed, re.MULTILINE)


def test_segment_demo_end_to_end(in_demo_dir, capsys):
    import numpy as np

    from litvit.segmentation.demo import run_demo

    result = run_demo("demo_data", iterations=2, threads=1, num_predictions=2,
                      data=dict(num_train=4, num_val=2),
                      overrides=dict(batch_size=2, eval_batch_size=2, workers=0, warmup_iters=1, checkpoint_interval=2,
                                     log_interval=1))
    printed = capsys.readouterr().out
    out = in_demo_dir / "runs" / "demo-segment"
    assert "[2/4] backbone: lit_s from the classification demo checkpoint runs/demo-classify/best.pth" in printed
    for name in ("best.pth", "metrics.jsonl"):
        assert (out / name).is_file(), name
    masks = sorted((out / "predictions").glob("*_mask.png"))
    assert [p.name for p in masks] == ["000000_mask.png", "000001_mask.png"]
    assert len(list((out / "predictions").glob("*_overlay.png"))) == 2
    mask = Image.open(masks[0])
    assert mask.mode == "P" and mask.size == (96, 96) and np.asarray(mask).max() < 7
    assert _summary_value(printed, "held-out mIoU:") == pytest.approx(100 * result["metrics"]["mIoU"], abs=0.05)
    assert f"predictions: {Path('runs/demo-segment/predictions')}" in printed


def test_litvit_demo_hands_explicit_arguments_to_each_task_demo(monkeypatch, capsys):
    import importlib

    from litvit.cli import main

    calls = {}
    for task, module in (("classify", "classification"), ("detect", "detection"), ("segment", "segmentation")):
        demo = importlib.import_module(f"litvit.{module}.demo")
        monkeypatch.setattr(demo, "run_demo", lambda data_dir, task=task, **kw: calls.setdefault(task, dict(kw, data_dir=data_dir)))
    assert main(["demo", "--data-dir", "d", "--epochs", "3", "--seed", "1", "--no-optimize"]) == 0
    assert calls["classify"] == dict(data_dir="d", model=None, epochs=3, device=None, threads=None, seed=1, optimize=False)
    assert main(["demo", "--task", "detect", "--detector", "mask_rcnn", "--output-dir", "o", "--device", "cpu",
                 "--model", "litv2_s"]) == 0
    assert calls["detect"] == dict(data_dir="demo_data", output_dir="o", model="litv2_s", epochs=None, device="cpu",
                                   threads=None, seed=0, detectors="mask_rcnn", from_scratch=False)
    assert capsys.readouterr().err == ""
    # The old spelling of --output-dir still works, with one warning line.
    assert main(["demo", "--task", "segment", "--iterations", "5", "--from-scratch", "--output", "o2"]) == 0
    assert calls["segment"] == dict(data_dir="demo_data", output_dir="o2", model=None, iterations=5, device=None,
                                    threads=None, seed=0, from_scratch=True)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--output is deprecated" in err[0] and "--output-dir" in err[0]


def test_litvit_demo_reports_a_missing_task_module(monkeypatch, capsys):
    import sys

    from litvit.cli import main

    monkeypatch.setitem(sys.modules, "litvit.detection.demo", None)  # import fails like a missing module
    assert main(["demo", "--task", "detect"]) == 2
    assert "the detect demo is not available" in capsys.readouterr().err

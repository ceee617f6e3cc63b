"""Deployment: ONNX (checked in ONNX Runtime), torch.export programs, torch.hub, the missing extra."""
from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

import litvit  # noqa: F401
from litvit.cli import main
from litvit.errors import MissingExtraError
from litvit.export import DEFAULT_OPSET, ExportError, dynamic_size_supported, export_model, require_onnx

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

REPO = Path(__file__).resolve().parents[1]
TINY = dict(embed_dims=(16, 32, 40, 64), depths=(1, 1, 1, 1), num_heads=(1, 2, 5, 8), img_size=64)
TINY_MODEL = {k: v for k, v in TINY.items() if k != "img_size"}  # the benchmark passes img_size itself
STANDARD_DOMAINS = {"", "ai.onnx"}
needs_dynamic_onnx = pytest.mark.skipif(
    not dynamic_size_supported("onnx"), reason="a dynamic image size in ONNX needs a newer torch"
)
needs_dynamic_program = pytest.mark.skipif(
    not dynamic_size_supported("exported-program"), reason="a dynamic image size in torch.export needs torch >= 2.5"
)


def tiny_model(name: str, num_classes: int = 7) -> torch.nn.Module:
    """A tiny LIT whose DTMs really deform (random offsets) and whose BatchNorms are not identities."""
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=num_classes, **TINY)
    with torch.no_grad():
        for stage in model.stages:
            if stage.downsample is not None:
                stage.downsample.offset_conv.weight.normal_(0, 0.5)
                stage.downsample.offset_conv.bias.normal_(0, 1.0)
                stage.downsample.norm.running_mean.normal_(0, 0.1)
                stage.downsample.norm.running_var.uniform_(0.5, 2.0)
    return model.eval()


def run_onnx(path: Path, x: torch.Tensor) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]


@pytest.fixture(scope="module")
def exported():
    """One dynamic torch.export program per model, shared by the ONNX and program tests
    (exporting dominates this file's run time)."""
    from litvit.export import export_program

    cache = {}

    def get(name):
        if name not in cache:
            model = tiny_model(name)
            cache[name] = model, export_program(model, torch.randn(2, 3, 64, 64))
        return cache[name]

    return get


def check_standard_onnx(proto, opset):
    onnx.checker.check_model(proto, full_check=True)
    assert {o.version for o in proto.opset_import if o.domain in STANDARD_DOMAINS} == {opset}
    # DTM sampling is a standard GridSample; no custom operators or functions.
    assert "GridSample" in {n.op_type for n in proto.graph.node}
    assert {n.domain for n in proto.graph.node} <= STANDARD_DOMAINS and not proto.functions


@needs_dynamic_onnx
@pytest.mark.parametrize("name", ["lit_ti", "lit_s"])
def test_onnx_dynamic_batch_and_size_match_pytorch(name, exported, tmp_path):
    model, program = exported(name)
    out = tmp_path / f"{name}.onnx"
    result = export_model(model, out, img_size=64, batch_sizes=(1, 3), program=program)
    assert out.is_file() and result.dynamic_size
    assert sorted({c["shape"] for c in result.checks}) == sorted(
        {(b, 3, h, w) for b in (1, 3) for h, w in ((64, 64), (96, 128))}
    )
    assert result.max_abs_diff <= 1e-4
    check_standard_onnx(onnx.load(str(out)), DEFAULT_OPSET)
    # Independently of export_model's own check: another batch and size, in ONNX Runtime.
    x = torch.randn(2, 3, 128, 96)
    with torch.no_grad():
        want = model(x).numpy()
    np.testing.assert_allclose(run_onnx(out, x), want, atol=1e-4, rtol=0)


@needs_dynamic_onnx
def test_segmentation_onnx_dynamic_size(tmp_path):
    from litvit.segmentation import semantic_fpn_lit

    torch.manual_seed(0)
    model = semantic_fpn_lit("lit_s", num_classes=3, fpn_channels=16, head_channels=8, **TINY).eval()
    out = tmp_path / "seg.onnx"
    result = export_model(model, out, img_size=64, batch_sizes=(1, 2))
    assert result.dynamic_size and result.max_abs_diff <= 1e-4
    check_standard_onnx(onnx.load(str(out)), DEFAULT_OPSET)
    x = torch.randn(1, 3, 96, 160)
    got = run_onnx(out, x)
    assert got.shape == (1, 3, 96, 160)  # logits at the input resolution
    with torch.no_grad():
        np.testing.assert_allclose(got, model(x).numpy(), atol=1e-4, rtol=0)


def test_opset16_uses_fixed_image_size(tmp_path):
    model = tiny_model("lit_s")
    out = tmp_path / "m16.onnx"
    result = export_model(model, out, img_size=64, opset=16, batch_sizes=(1, 3))
    assert not result.dynamic_size and result.max_abs_diff <= 1e-4
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask  # as any new file, not mkstemp's 0600
    assert {c["shape"][0] for c in result.checks} == {1, 3}
    proto = onnx.load(str(out))
    check_standard_onnx(proto, 16)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["litvit.dynamic_image_size"] == "false" and meta["litvit.image_size"] == "64x64"


def test_older_torch_exports_a_fixed_size_and_says_so(tmp_path, monkeypatch, capsys):
    # Runs the fallback on any torch by pretending the floors are above the installed release.
    import litvit.export as export
    import litvit.graph as graph

    monkeypatch.setattr(graph, "DYNAMIC_SIZE_TORCH", {"onnx": (99, 0), "exported-program": (99, 0)})
    model = tiny_model("lit_ti")
    with pytest.raises(ExportError, match=r"needs torch >= 99\.0"):
        export.export_program(model, torch.randn(2, 3, 64, 64))
    result = export_model(model, tmp_path / "m.pt2", format="exported-program", img_size=64, batch_sizes=(1, 3))
    assert not result.dynamic_size and {c["shape"] for c in result.checks} == {(1, 3, 64, 64), (3, 3, 64, 64)}

    ckpt = tmp_path / "tiny.pth"
    torch.save(model.state_dict(), ckpt)
    code = main([
        "export", "--model", "lit_ti", "--checkpoint", str(ckpt), "--out", str(tmp_path / "m.onnx"),
        "--img-size", "64", "--verify-batch-sizes", "1,2", "--model-kwargs", "embed_dims=(16,32,40,64)",
        "depths=(1,1,1,1)", "img_size=64", "num_classes=7",
    ])
    printed = capsys.readouterr().out
    assert code == 0 and "dynamic batch (image size fixed)" in printed
    assert "note: a dynamic image size in onnx needs torch >= 99.0" in printed
    proto = onnx.load(str(tmp_path / "m.onnx"))
    check_standard_onnx(proto, DEFAULT_OPSET)  # the opset asked for, from the TorchScript exporter
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["litvit.dynamic_image_size"] == "false" and meta["litvit.image_size"] == "64x64"


def test_opset_below_gridsample_is_refused(tmp_path):
    with pytest.raises(ExportError, match="GridSample"):
        export_model(tiny_model("lit_s"), tmp_path / "m.onnx", img_size=64, opset=15)
    assert not list(tmp_path.iterdir())


def test_failed_verification_writes_nothing(tmp_path, monkeypatch):
    from litvit.export import verify

    monkeypatch.setattr(verify, "_max_abs_diff", lambda got, want: 0.5)
    with pytest.raises(ExportError, match="differs from PyTorch by 0.5"):
        export_model(tiny_model("lit_s"), tmp_path / "m.onnx", img_size=64, opset=16, batch_sizes=(1,))
    assert not list(tmp_path.iterdir())  # neither the file nor a temporary


@needs_dynamic_program
@pytest.mark.parametrize("name", ["lit_s"])  # LIT-Ti's program is the one checked through ONNX above
def test_exported_program_matches_pytorch(name, exported, tmp_path):
    model, program = exported(name)
    out = tmp_path / f"{name}.pt2"
    result = export_model(model, out, format="exported-program", img_size=64, batch_sizes=(1, 3), program=program)
    assert result.max_abs_diff <= 1e-5 and len(result.checks) == 4
    program = torch.export.load(str(out))
    x = torch.randn(5, 3, 96, 64)
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), model(x), atol=1e-5, rtol=0)


def test_cli_exports_checkpoint_and_reports_difference(tmp_path, capsys):
    model = tiny_model("lit_ti", num_classes=5)
    ckpt = tmp_path / "tiny.pth"
    torch.save({"model": model.state_dict()}, ckpt)
    out = tmp_path / "cli.onnx"
    code = main([
        "export", "--model", "lit_ti", "--checkpoint", str(ckpt), "--format", "onnx", "--out", str(out),
        "--opset", "16", "--img-size", "64", "--verify-batch-sizes", "1,2",
        "--model-kwargs", "embed_dims=(16,32,40,64)", "depths=(1,1,1,1)", "img_size=64",
    ])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "verified: max abs diff" in printed and "1x3x64x64" in printed and "2x3x64x64" in printed
    # The class count came from the checkpoint, the weights too.
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        np.testing.assert_allclose(run_onnx(out, x), model(x).numpy(), atol=1e-4, rtol=0)
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["litvit.model"] == "lit_ti" and meta["litvit.mean"] == "0.485,0.456,0.406"


def test_missing_extra_names_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` raise ImportError
    with pytest.raises(MissingExtraError, match=r"onnxruntime .*pip install 'litvit\[export\]'"):
        require_onnx()
    code = main(["export", "--model", "lit_ti", "--out", str(tmp_path / "m.onnx")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "litvit[export]" in err and "Traceback" not in err
    assert not (tmp_path / "m.onnx").exists()


def test_torch_hub_local_load(tmp_path):
    model = tiny_model("lit_ti", num_classes=5)
    ckpt = tmp_path / "lit_ti_tiny.pth"
    torch.save(model.state_dict(), ckpt)
    loaded = torch.hub.load(
        str(REPO), "lit_ti", source="local", checkpoint_path=str(ckpt), num_classes=5, **TINY
    ).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), atol=0, rtol=0)
    with pytest.raises(ValueError, match="checkpoint_path"):
        torch.hub.load(str(REPO), "lit_s", source="local", pretrained=True)


@pytest.mark.parametrize("arch", ["retinanet", "mask_rcnn"])
def test_detector_dense_outputs_export(arch, tmp_path):
    # Opset 16 (traced, fixed size) keeps this cheap; the dynamic path is the one tested above.
    from litvit.detection.models import build_detector
    from litvit.detection.export import DetectorDenseOutputs

    torch.manual_seed(0)
    small = dict(fpn_channels=16, backbone_kwargs=dict(TINY), min_size=64, max_size=96)
    small.update(head_convs=1) if arch == "retinanet" else small.update(box_head_dim=16, mask_head_channels=8)
    detector = build_detector(arch, "lit_ti", 3, **small).eval()
    model = DetectorDenseOutputs(detector)
    out = tmp_path / f"{arch}.onnx"
    result = export_model(model, out, img_size=64, opset=16, batch_sizes=(1, 2), output_names=model.output_names)
    assert result.max_abs_diff <= 1e-4
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == model.output_names
    x = torch.randn(3, 3, 64, 64)
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        features = list(detector.backbone(x).values())
        want = features
        if arch == "retinanet":
            head = detector.head(features)
            want = [head["cls_logits"], head["bbox_regression"]] + features
            assert model.output_names[:2] == ["cls_logits", "bbox_regression"] and got[0].shape[-1] == 3
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w.numpy(), atol=1e-4, rtol=0)


@needs_dynamic_program
def test_an_example_that_could_fix_a_size_is_refused_or_exported_dynamic():
    # At 64 px RetinaNet's P7 is 1x1, and some torch releases (2.5, and 2.15 here) then narrow
    # the width to the example's without an error; others keep it symbolic. litvit must refuse
    # the narrowed program and never hand it out.
    from litvit.detection.models import retinanet_lit
    from litvit.detection.export import DetectorDenseOutputs
    from litvit.export import export_program

    torch.manual_seed(0)
    detector = retinanet_lit("lit_ti", 3, fpn_channels=8, head_convs=1, backbone_kwargs=dict(TINY))
    model = DetectorDenseOutputs(detector.eval())
    try:
        program = export_program(model, torch.randn(2, 3, 64, 64))
    except ExportError as error:
        assert "larger example image" in str(error)
        return
    x = torch.randn(1, 3, 128, 96)
    with torch.no_grad():
        got, want = program.module()(x), model(x)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=0)


def test_benchmark_measures_onnxruntime_beside_eager(monkeypatch):
    import functools

    import litvit.graph as graph
    from litvit.benchmark import BenchmarkConfig, format_ratios, run_benchmark

    # Opset 16 (traced) keeps the test's export cheap; the benchmark's default is the opset-18 graph.
    monkeypatch.setattr(graph, "onnxruntime_runner", functools.partial(graph.onnxruntime_runner, opset=16))
    model = tiny_model("lit_s")
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        np.testing.assert_allclose(graph.onnxruntime_runner(model, x)(x)[0], model(x).numpy(), atol=1e-4, rtol=0)

    config = BenchmarkConfig(
        models=["lit_s"], modes=["inference", "train"], runtimes=["eager", "onnxruntime"], img_sizes=[64],
        batch_size=2, train_batch_size=2, repeats=2, memory=False, threads=1, num_classes=7, model_kwargs=TINY_MODEL,
    )
    report = run_benchmark(config, log=None)
    by_key = {(r["mode"], r["runtime"]): r for r in report["results"]}
    assert by_key[("inference", "onnxruntime")]["status"] == "ok" and by_key[("inference", "onnxruntime")]["img_per_s"] > 0
    assert by_key[("inference", "eager")]["status"] == "ok"
    assert by_key[("train", "onnxruntime")]["status"] == "skipped"  # an exported graph cannot train
    assert "lit_s onnxruntime / eager (inference, 64px)" in format_ratios(report, [])


def test_is_exporting_is_true_only_under_torch_export():
    # litvit keeps its own helper (timm has one only from 1.0.30 on); shape-specialised fast
    # paths rely on it to step aside while torch.export traces. torch < 2.6 has no export-only
    # flag, and there it is true under torch.compile as well.
    from litvit.ops.capture import is_exporting

    class ExportMarker(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + 1 if is_exporting() else x

    x = torch.zeros(2)
    assert torch.equal(ExportMarker()(x), x)
    assert torch.equal(torch.export.export(ExportMarker(), (x,)).module()(x), x + 1)

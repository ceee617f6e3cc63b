"""The released detection and segmentation checkpoints: random weights in each released layout,
at full size, saved as mmcv saves them, go through the command line's path (convert, eval,
predict, fine-tune) and land where they belong."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from litvit.cli import main
from released_dense_layouts import LAYOUTS, parameter_count, random_state_dict, released_shapes, save_like_mmcv

KEYS = Path(__file__).parent / "data" / "released_keys"
RELEASE_PARAMS_M = {"retina_lit_ti": 30, "retina_lit_s": 39, "mask_rcnn_lit_ti": 40, "mask_rcnn_lit_s": 48,
                    "sem_fpn_lit_ti": 24, "sem_fpn_lit_s": 32}


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """``name -> (path, state_dict)``: each released layout written once, on first use."""
    root = tmp_path_factory.mktemp("released")
    cache = {}

    def get(name):
        if name not in cache:
            state_dict = random_state_dict(released_shapes(KEYS, name), seed=len(cache))
            path = save_like_mmcv(state_dict, root / f"{name}.pth", with_amp=name.endswith("lit_s"))
            cache[name] = (path, state_dict)
        return cache[name]

    return get


def _summary(text: str) -> str:
    return [line for line in text.splitlines() if line.strip()][-1]


def _check_detector_tensors(name, sd, model):
    arch = LAYOUTS[name][1]
    state = model.state_dict()
    released_patch = "backbone.patch_embed1.proj.weight" if name.endswith("ti") else "backbone.patch_embed.proj.weight"
    assert torch.equal(state["backbone.body.patch_embed.proj.weight"], sd[released_patch])
    assert torch.equal(state["backbone.fpn.inner_blocks.0.0.weight"], sd["neck.lateral_convs.0.conv.weight"])
    if name.endswith("lit_s"):
        # LIT-S's output norms; tables at the 800-px training resolution, loaded unresized.
        assert torch.equal(state["backbone.body.feature_norms.2.weight"], sd["backbone.norm2.weight"])
        table = "layers.2.blocks.0.attn.relative_position_bias_table"
        assert torch.equal(state[f"backbone.body.stages.2.blocks.0.attn.{table.rsplit('.', 1)[1]}"], sd[f"backbone.{table}"])
    if arch == "retinanet":
        assert torch.equal(state["head.classification_head.cls_logits.weight"], sd["bbox_head.retina_cls.weight"])
        assert torch.equal(state["head.regression_head.conv.3.0.weight"], sd["bbox_head.reg_convs.3.conv.weight"])
        # P6 from C5 (add_extra_convs="on_input"): the 512 / 768-channel input of fpn_convs.3.
        assert torch.equal(state["backbone.fpn.extra_blocks.p6.weight"], sd["neck.fpn_convs.3.conv.weight"])
    else:
        cls = state["roi_heads.box_predictor.cls_score.weight"]
        released_cls = sd["roi_head.bbox_head.fc_cls.weight"]  # 80 classes, then the background
        assert torch.equal(cls[0], released_cls[80]) and torch.equal(cls[1:], released_cls[:80])
        reg = state["roi_heads.box_predictor.bbox_pred.weight"]
        assert torch.equal(reg[4:], sd["roi_head.bbox_head.fc_reg.weight"]) and not reg[:4].any()
        logits = state["roi_heads.mask_predictor.mask_fcn_logits.weight"]
        assert torch.equal(logits[1:], sd["roi_head.mask_head.conv_logits.weight"])
        assert torch.equal(state["roi_heads.mask_predictor.conv5_mask.weight"], sd["roi_head.mask_head.upsample.weight"])
        assert torch.equal(state["rpn.head.bbox_pred.weight"], sd["rpn_head.rpn_reg.weight"])


@pytest.mark.parametrize("name", ["retina_lit_ti", "retina_lit_s", "mask_rcnn_lit_ti", "mask_rcnn_lit_s"])
def test_released_detector_converts_completely(name, released, tmp_path, capsys):
    from litvit.detection.training import detector_from_checkpoint
    from litvit.detection.released import release_parameter_count, release_spec

    path, sd = released(name)
    out = tmp_path / "converted.pth"
    assert main(["detect", "convert", str(path), str(out)]) == 0
    summary = _summary(capsys.readouterr().out)
    assert summary.endswith("mapped, 0 unused, 0 missing"), summary
    converted = torch.load(out, weights_only=True)
    assert converted["model_spec"] == release_spec(name)
    assert converted["categories"]["ids"][:3] == [1, 2, 3] and converted["categories"]["names"][0] == "person"
    model, meta = detector_from_checkpoint(str(out))
    _check_detector_tensors(name, sd, model)
    # Counted as the release counts: the same as the layout's own count, and the published figure.
    count = release_parameter_count(model)
    assert count == parameter_count(released_shapes(KEYS, name))
    assert round(count / 1e6) == RELEASE_PARAMS_M[name]
    # The released file itself loads the same way (eval / predict read it directly).
    direct, _ = detector_from_checkpoint(str(path))
    assert all(torch.equal(a, b) for a, b in zip(direct.state_dict().values(), model.state_dict().values()))


def test_released_detectors_run_at_the_released_resolution(released):
    from litvit.detection.training import detector_from_checkpoint

    for name in ("mask_rcnn_lit_s",):  # the largest: masks, and LIT-S's tables at 800 px
        model, _ = detector_from_checkpoint(str(released(name)[0]))
        with torch.no_grad():
            out = model.eval()([torch.rand(3, 800, 1333)])[0]
        assert set(out) >= {"boxes", "scores", "labels"} and len(out["boxes"]) <= 100
        assert out["boxes"].shape[-1] == 4 and (out["labels"] < 80 + model.label_offset).all()
        if "masks" in out:
            assert out["masks"].shape[-2:] == (800, 1333)


def test_released_detector_evaluates_predicts_and_fine_tunes(released, tmp_path, capsys):
    from litvit.synthetic import generate_detection

    from litvit.detection.released import COCO_CATEGORIES

    path, sd = released("mask_rcnn_lit_ti")
    data = generate_detection(tmp_path / "shapes", num_train=2, num_val=2, image_size=64)
    # A COCO model is evaluated on COCO's categories: the shapes' ids 1..6 are COCO ids already.
    coco_val = tmp_path / "instances_val_coco.json"
    ann = json.loads((data / "annotations" / "instances_val.json").read_text())
    coco_val.write_text(json.dumps(dict(ann, categories=[{"id": i, "name": n} for i, n in COCO_CATEGORIES])))
    small = ["--min-size", "64", "--max-size", "64"]
    assert main(["detect", "eval", "--checkpoint", str(path), "--images", str(data / "images" / "val"),
                 "--ann", str(coco_val), "--json",
                 str(tmp_path / "eval.json"), "--workers", "0", "--device", "cpu", *small]) == 0
    assert set(json.loads((tmp_path / "eval.json").read_text())["metrics"]) == {"bbox", "segm"}
    assert main(["detect", "predict", "--checkpoint", str(path), str(data / "images" / "val"),
                 "--output-dir", str(tmp_path / "pred"), "--device", "cpu", *small]) == 0
    assert len(list((tmp_path / "pred").glob("*.png"))) == 2
    capsys.readouterr()
    # Fine-tuning on the shapes' categories: the file sets the architecture; the class layers start afresh.
    run = tmp_path / "run"
    assert main(["detect", "train", "--init-checkpoint", str(path), "--data-root", str(data), "--output", str(run),
                 "--epochs", "1", "--workers", "0", "--device", "cpu", "--warmup-iters", "1", "--batch-size", "2",
                 "--frozen-stages", "1", *small]) == 0
    log = capsys.readouterr().err
    saved = torch.load(run / "best.pth", weights_only=True)
    assert saved["model_spec"]["arch"] == "mask_rcnn" and saved["model_spec"]["model_name"] == "lit_ti"
    assert saved["model_spec"]["kwargs"]["mmdet_compat"] is True
    state = saved["model"]
    # Frozen stage 1 keeps the released weights; the shapes' 6 classes (+ background) are new.
    assert torch.equal(state["backbone.body.patch_embed.proj.weight"], sd["backbone.patch_embed1.proj.weight"])
    assert state["roi_heads.box_predictor.cls_score.weight"].shape[0] == saved["model_spec"]["num_classes"] + 1 < 81
    assert "mapped, 0 unused, 0 missing" in log and "class-specific re-initialised" in log


def test_a_released_file_that_does_not_fit_is_one_line_and_writes_nothing(released, tmp_path, capsys):
    path, sd = released("retina_lit_ti")
    broken = dict(sd)
    del broken["bbox_head.cls_convs.2.conv.weight"]
    broken["bbox_head.retina_cls.weight"] = broken["bbox_head.retina_cls.weight"][:, :128]
    src = save_like_mmcv(broken, tmp_path / "broken.pth", with_amp=False)
    out = tmp_path / "converted.pth"
    assert main(["detect", "convert", str(src), str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing" in err[0] and "mis-shaped" in err[0] and "classification_head.conv.2" in err[0]
    assert not out.exists() and not list(tmp_path.glob(".converted*"))


def _check_segmenter_tensors(name, sd, model):
    state = model.state_dict()
    assert torch.equal(state["fpn.layer_blocks.3.0.weight"], sd["neck.fpn_convs.3.conv.weight"])
    # mmseg's [ConvModule, Upsample] blocks -> litvit's [Conv, BN, ReLU, Upsample]: level 3's third conv.
    assert torch.equal(state["decode_head.scale_heads.3.8.weight"], sd["decode_head.scale_heads.3.4.conv.weight"])
    assert torch.equal(state["decode_head.scale_heads.3.9.running_var"], sd["decode_head.scale_heads.3.4.bn.running_var"])
    assert torch.equal(state["decode_head.scale_heads.0.1.bias"], sd["decode_head.scale_heads.0.0.bn.bias"])
    assert torch.equal(state["decode_head.classifier.weight"], sd["decode_head.conv_seg.weight"])
    if name.endswith("lit_s"):
        # All four output norms in the segmentation backbone (stage 1's too).
        assert torch.equal(state["backbone.feature_norms.0.weight"], sd["backbone.norm0.weight"])


@pytest.mark.parametrize("name", ["sem_fpn_lit_ti", "sem_fpn_lit_s"])
def test_released_segmenter_converts_completely_and_runs_at_512(name, released, tmp_path, capsys):
    from litvit.segmentation.training import load_trained_model
    from litvit.segmentation.released import release_model_config, release_parameter_count

    path, sd = released(name)
    out = tmp_path / "converted.pth"
    assert main(["segment", "convert", str(path), str(out)]) == 0
    summary = _summary(capsys.readouterr().out)
    assert summary.endswith("mapped, 0 unused, 0 missing"), summary
    model, meta = load_trained_model(str(out))
    assert meta["model_config"] == release_model_config(name)
    assert meta["dataset"]["num_classes"] == 150 and meta["dataset"]["reduce_zero_label"]
    _check_segmenter_tensors(name, sd, model)
    count = release_parameter_count(model)
    assert count == parameter_count(released_shapes(KEYS, name)) and round(count / 1e6) == RELEASE_PARAMS_M[name]
    with torch.no_grad():
        assert model(torch.rand(1, 3, 512, 512)).shape == (1, 150, 512, 512)


def test_released_segmenter_evaluates_predicts_and_fine_tunes(released, tmp_path, capsys):
    from litvit.synthetic import generate_segmentation

    path, sd = released("sem_fpn_lit_ti")
    data = generate_segmentation(tmp_path / "shapes", num_train=2, num_val=1, image_size=64)
    assert main(["segment", "eval", "--checkpoint", str(path), "--data-dir", str(data), "--test-scale", "64", "64",
                 "--workers", "0", "--device", "cpu", "--json", str(tmp_path / "m.json")]) == 0
    assert set(json.loads((tmp_path / "m.json").read_text())) >= {"mIoU", "per_class"}
    image = next((data / "images" / "validation").glob("*.png"))
    assert main(["segment", "predict", "--checkpoint", str(path), str(image), "--output-dir", str(tmp_path / "pred"),
                 "--device", "cpu", "--test-scale", "64", "64"]) == 0
    assert list((tmp_path / "pred").glob("*_mask.png"))
    run = tmp_path / "run"
    assert main(["segment", "train", "--init-checkpoint", str(path), "--data-dir", str(data), "--output-dir", str(run),
                 "--iterations", "2", "--batch-size", "2", "--crop-size", "64", "64", "--scale", "64", "64",
                 "--test-scale", "64", "64", "--workers", "0", "--device", "cpu", "--eval-interval", "2"]) == 0
    saved = torch.load(run / "best.pth", weights_only=True)
    assert saved["model_config"]["model_name"] == "lit_ti" and saved["model_config"]["num_classes"] < 150
    # The backbone and FPN start from the file; the classifier has the new class count.
    assert saved["model"]["decode_head.classifier.weight"].shape[0] == saved["model_config"]["num_classes"]

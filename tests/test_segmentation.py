"""Semantic FPN-LIT: model shapes, label conventions, the crop rule, metrics, training, checkpoints, bad data."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from torchvision import tv_tensors

from litvit.errors import CheckpointError, DataError
from litvit.segmentation import ConfusionMatrix, metrics_from_confusion, semantic_fpn_lit
from litvit.segmentation.data import SegmentationDataset, decode_label, find_pairs
from litvit.segmentation.config import SegTrainConfig
from litvit.segmentation.training import (
    build_param_groups,
    load_trained_model,
    segmentation_loss,
    train,
)
from litvit.segmentation.inference import predict_logits
from litvit.segmentation.transforms import (
    IGNORE_INDEX,
    PadToSize,
    PhotoMetricDistortion,
    RandomCropCatMax,
    RescaleToFit,
    build_train_transforms,
)

TINY = dict(embed_dims=(16, 32, 40, 64), depths=(1, 1, 1, 1), num_heads=(1, 2, 5, 8), img_size=64)
TINY_HEAD = dict(fpn_channels=16, head_channels=8)


def tiny_fpn(name: str = "lit_ti", num_classes: int = 5, **kw):
    torch.manual_seed(0)
    return semantic_fpn_lit(name, num_classes=num_classes, drop_path_rate=0.0, **TINY, **TINY_HEAD, **kw)


# --------------------------------------------------------------------------- data helpers
def write_pair(root: Path, split: str, name: str, image: np.ndarray, label: np.ndarray, label_mode: str = "L") -> None:
    (root / "images" / split).mkdir(parents=True, exist_ok=True)
    (root / "annotations" / split).mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(root / "images" / split / f"{name}.png")
    Image.fromarray(label).convert(label_mode).save(root / "annotations" / split / f"{name}.png")


def scene(rng: np.random.Generator, size: int = 64):
    """ADE-style pair: background value 1, a bright square value 2, a dark bar value 3, an ignore strip 0."""
    image = np.full((size, size, 3), 100, np.uint8) + rng.integers(0, 20, (size, size, 3), dtype=np.uint8)
    label = np.ones((size, size), np.uint8)
    y, x = rng.integers(0, size // 2, 2)
    image[y : y + size // 3, x : x + size // 3] = (240, 40, 40)
    label[y : y + size // 3, x : x + size // 3] = 2
    col = int(rng.integers(0, size - 8))
    image[:, col : col + 6] = (20, 20, 200)
    label[:, col : col + 6] = 3
    label[:2] = 0
    return image, label


@pytest.fixture
def ade_root(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    for split, count in (("training", 8), ("validation", 3)):
        for i in range(count):
            write_pair(tmp_path, split, f"{i:03d}", *scene(rng))
    (tmp_path / "classes.txt").write_text("background\nsquare\nbar\n")
    return tmp_path


# --------------------------------------------------------------------------- model
@pytest.mark.parametrize("name", ["lit_ti", "lit_s"])
def test_output_shapes_at_several_sizes(name):
    model = tiny_fpn(name).eval()
    with torch.no_grad():
        for height, width in [(64, 64), (96, 128), (160, 64)]:
            out = model(torch.randn(2, 3, height, width))
            assert out.shape == (2, 5, height, width)
    with pytest.raises(ValueError, match="divisible by 32"):
        model(torch.randn(1, 3, 64, 80))


def test_head_structure_matches_semantic_fpn():
    model = tiny_fpn()
    convs = [sum(isinstance(m, torch.nn.Conv2d) for m in head) for head in model.decode_head.scale_heads]
    ups = [sum(isinstance(m, torch.nn.Upsample) for m in head) for head in model.decode_head.scale_heads]
    assert convs == [1, 1, 2, 3] and ups == [0, 1, 2, 3]
    assert model.fpn.inner_blocks[0][0].out_channels == 16 and model.decode_head.classifier.in_channels == 8
    # Full-size builder uses the released widths (FPN 256, head 128).
    full = semantic_fpn_lit("lit_ti", num_classes=150)
    assert full.fpn.layer_blocks[0][0].out_channels == 256 and full.decode_head.classifier.in_channels == 128
    assert full.decode_head.classifier.out_channels == 150


def test_sync_batchnorm_conversion_covers_head_and_backbone():
    model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(tiny_fpn())
    assert not any(type(m) is torch.nn.BatchNorm2d for m in model.modules())
    assert sum(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules()) == 7 + 3  # head convs + 3 DTMs


def test_backbone_initialised_from_classification_checkpoint(tmp_path):
    torch.manual_seed(1)
    classifier = timm.create_model("lit_ti", num_classes=10, **TINY)
    torch.save({"model": classifier.state_dict()}, tmp_path / "cls.pth")
    model = tiny_fpn(backbone_checkpoint=tmp_path / "cls.pth")
    ref = classifier.state_dict()
    for key, value in model.backbone.state_dict().items():
        if key in ref and ref[key].shape == value.shape:
            assert torch.equal(value, ref[key]), key
    assert torch.equal(model.backbone.patch_embed.proj.weight, classifier.patch_embed.proj.weight)
    with pytest.raises(CheckpointError):
        semantic_fpn_lit("lit_ti", num_classes=5, backbone_checkpoint=tmp_path / "missing.pth", **TINY)


def test_offset_parameters_get_reduced_lr():
    model = tiny_fpn()
    groups = build_param_groups(model, lr=1e-4, weight_decay=1e-4, offset_lr_mult=0.01)
    by_name = {g["name"]: g for g in groups}
    assert by_name["offsets"]["lr"] == pytest.approx(1e-6)
    assert {id(p) for p in by_name["offsets"]["params"]} == {id(p) for p in model.offset_parameters()}
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


# --------------------------------------------------------------------------- labels
def test_ade20k_label_shift_and_ignore():
    raw = np.array([[0, 1, 2, 150], [151, 255, 1, 0]])
    labels, invalid, worst = decode_label(raw, num_classes=150, reduce_zero_label=True)
    assert labels.tolist() == [[255, 0, 1, 149], [255, 255, 0, 255]]
    assert (invalid, worst) == (2, 255)  # 151 and 255 are out of range after the shift


def test_folder_labels_with_custom_ignore_index():
    raw = np.array([[0, 1, 2, 9], [3, 9, 0, 4]])
    labels, invalid, worst = decode_label(raw, num_classes=3, reduce_zero_label=False, ignore_index=9)
    assert labels.tolist() == [[0, 1, 2, 255], [255, 255, 0, 255]]
    assert (invalid, worst) == (2, 4)


def test_dataset_applies_ade_convention(ade_root):
    samples = find_pairs(ade_root / "images" / "training", ade_root / "annotations" / "training")
    ds = SegmentationDataset(samples, num_classes=3, reduce_zero_label=True)
    _, mask = ds[0]
    raw = np.asarray(Image.open(samples[0].label))
    assert isinstance(mask, tv_tensors.Mask)
    assert torch.equal(mask[0].long(), torch.from_numpy(np.where(raw == 0, 255, raw.astype(np.int64) - 1)))


def test_train_pipeline_pads_with_ignore_and_keeps_pairs_aligned():
    image = tv_tensors.Image(torch.zeros(3, 40, 50, dtype=torch.uint8))
    image[0, :, 25:] = 255  # right half red
    mask = tv_tensors.Mask(torch.zeros(1, 40, 50, dtype=torch.uint8))
    mask[..., 25:] = 1
    tf = build_train_transforms(crop_size=(64, 64), scale=(50, 40), ratio_range=None, photometric=False)
    torch.manual_seed(0)
    for _ in range(5):
        img, lab = tf(image, mask)
        assert img.shape == (3, 64, 64) and lab.shape == (1, 64, 64)
        assert (lab[..., 40:, :] == IGNORE_INDEX).all() and (lab[..., :, 50:] == IGNORE_INDEX).all()
        red = img[0, :40, :50] > 0
        assert torch.equal(red, lab[0, :40, :50] == 1)  # flips move image and label together


def test_rescale_to_fit_keeps_ratio():
    image = tv_tensors.Image(torch.zeros(3, 300, 400, dtype=torch.uint8))
    out = RescaleToFit((2048, 512), None)(image)
    assert out.shape[-2:] == (512, 683)  # short side 300 -> 512 limits; long side 683 <= 2048
    out = PadToSize(None, 32)(out)
    assert out.shape[-2:] == (512, 704)


def test_photometric_distortion_shifts_brightness_and_leaves_masks():
    torch.manual_seed(0)
    image = tv_tensors.Image(torch.randint(40, 200, (3, 8, 8), dtype=torch.uint8))
    mask = tv_tensors.Mask(torch.randint(0, 3, (8, 8), dtype=torch.uint8))
    brightness_only = PhotoMetricDistortion(contrast=(1.0, 1.0), saturation=(1.0, 1.0), hue=(0.0, 0.0), p=1.0)
    shifts = set()
    for _ in range(5):
        out, out_mask = brightness_only(image, mask)
        assert out.dtype == torch.uint8 and torch.equal(out_mask, mask)
        delta = out.int() - image.int()
        assert delta.unique().numel() == 1 and abs(int(delta[0, 0, 0])) <= 32  # one additive shift (no clamping here)
        shifts.add(int(delta[0, 0, 0]))
    assert len(shifts) > 1
    assert torch.equal(PhotoMetricDistortion(p=0.0)(image), image)
    assert not torch.equal(PhotoMetricDistortion(p=1.0)(image), image)
    with pytest.raises(TypeError, match="uint8"):
        PhotoMetricDistortion(p=1.0)(tv_tensors.Image(image.float()))


# --------------------------------------------------------------------------- the 75 % crop rule
def test_cat_max_ratio_accepts():
    crop = RandomCropCatMax((4, 4), cat_max_ratio=0.75)
    one_class = torch.zeros(1, 4, 4, dtype=torch.uint8)
    assert not crop.accepts(one_class)
    eighty = one_class.clone()
    eighty[0, 0, :3] = 1  # 13 vs 3 pixels: 81 %
    assert not crop.accepts(eighty)
    half = one_class.clone()
    half[0, :2] = 1
    assert crop.accepts(half)
    ignore_heavy = torch.full((1, 4, 4), IGNORE_INDEX, dtype=torch.uint8)
    ignore_heavy[0, 0, :2] = 0
    ignore_heavy[0, 1, :2] = 1  # 2 vs 2 labelled pixels; ignore pixels do not count
    assert crop.accepts(ignore_heavy)


def _striped_mask() -> tv_tensors.Mask:
    # 96 x 32: a 32 x 32 crop can start at rows 0..64; only crops overlapping the class-1 band
    # (rows 40..55) by enough rows contain both classes with neither above 75 %.
    mask = torch.zeros(1, 96, 32, dtype=torch.uint8)
    mask[:, 40:56] = 1
    return tv_tensors.Mask(mask)


def test_cat_max_ratio_retries_until_a_crop_passes():
    mask = _striped_mask()
    image = tv_tensors.Image(torch.zeros(3, 96, 32, dtype=torch.uint8))

    def pass_rate(transform) -> float:
        torch.manual_seed(0)
        return sum(RandomCropCatMax().accepts(transform(image, mask)[1]) for _ in range(300)) / 300

    with_rule = pass_rate(RandomCropCatMax((32, 32), cat_max_ratio=0.75))
    without = pass_rate(RandomCropCatMax((32, 32), cat_max_ratio=1.0))
    assert without < 0.6 and with_rule > 0.95


def test_cat_max_ratio_gives_up_after_ten_retries(monkeypatch):
    crop = RandomCropCatMax((16, 16), cat_max_ratio=0.75)
    draws = []
    original = crop._draw
    monkeypatch.setattr(crop, "_draw", lambda h, w: draws.append(1) or original(h, w))
    image = tv_tensors.Image(torch.zeros(3, 32, 32, dtype=torch.uint8))
    out = crop(image, tv_tensors.Mask(torch.zeros(1, 32, 32, dtype=torch.uint8)))  # one class: never passes
    assert len(draws) == 11 and out[1].shape == (1, 16, 16)


# --------------------------------------------------------------------------- metrics
def test_miou_perfect_prediction():
    target = torch.tensor([[0, 1, 2], [2, 1, 255]])
    cm = ConfusionMatrix(3)
    cm.update(target.clamp(max=2), target)
    m = cm.compute()
    assert m["mIoU"] == 1.0 and m["mAcc"] == 1.0 and m["aAcc"] == 1.0 and m["pixels"] == 5


def test_miou_known_confusions():
    target = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2, 255])
    pred = torch.tensor([0, 0, 1, 1, 1, 1, 2, 0, 2])
    cm = ConfusionMatrix(4)  # class 3 appears nowhere: left out of the means
    cm.update(pred, target)
    m = cm.compute()
    # By hand: IoU0 = 2/(4+3-2), IoU1 = 2/(2+4-2), IoU2 = 1/(2+1-1); accuracies 2/4, 2/2, 1/2.
    assert m["IoU"][:3] == pytest.approx([2 / 5, 2 / 4, 1 / 2])
    assert np.isnan(m["IoU"][3]) and np.isnan(m["Acc"][3])
    assert m["mIoU"] == pytest.approx((2 / 5 + 1 / 2 + 1 / 2) / 3)
    assert m["mAcc"] == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)
    assert m["aAcc"] == pytest.approx(5 / 8)
    assert cm.matrix.sum() == 8


def test_predicted_but_absent_class_counts_as_zero_iou():
    m = metrics_from_confusion(torch.tensor([[3, 1], [0, 0]]))
    assert m["IoU"] == pytest.approx([3 / 4, 0.0]) and m["mIoU"] == pytest.approx(3 / 8)


# --------------------------------------------------------------------------- optimisation
def test_a_few_steps_lower_the_loss():
    model = tiny_fpn(num_classes=3).train()
    torch.manual_seed(0)
    images = torch.randn(4, 3, 64, 64) * 0.2
    labels = torch.zeros(4, 64, 64, dtype=torch.long)
    images[:, 0, :, 32:] += 2.0
    labels[:, :, 32:] = 1
    images[:, 2, 40:] += 2.0
    labels[:, 40:] = 2
    labels[:, :4] = IGNORE_INDEX
    opt = torch.optim.AdamW(build_param_groups(model, 2e-3, 1e-4, 0.01))
    losses = []
    for _ in range(12):
        loss = segmentation_loss(model(images), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.85 * losses[0] and max(losses[-3:]) < min(losses[:3])
    all_ignored = torch.full_like(labels, IGNORE_INDEX)
    assert segmentation_loss(model(images), all_ignored).item() == 0.0


def _tiny_config(root: Path, out: Path, **kw) -> SegTrainConfig:
    base = dict(
        data_dir=str(root), **{k: v for k, v in TINY.items()}, fpn_channels=16, head_channels=8,
        drop_path_rate=0.0, iterations=4, batch_size=2, lr=1e-3, crop_size=(64, 64), scale=(128, 64),
        ratio_range=(0.75, 1.25), test_scale=(64, 64), eval_interval=4, checkpoint_interval=2, workers=0,
        output_dir=str(out), log_interval=2, device="cpu",
    )
    base.update(kw)
    return SegTrainConfig(**base)


def test_train_checkpoint_eval_and_resume(ade_root, tmp_path, capsys):
    from litvit.cli import main

    out = tmp_path / "run"
    result = train(_tiny_config(ade_root, out, iterations=2, eval_interval=2))
    assert result["class_names"] == ["background", "square", "bar"]
    assert (out / "best.pth").exists() and (out / "checkpoint-iter0000002.pth").exists()
    model, meta = load_trained_model(str(out / "best.pth"))
    saved = torch.load(out / "best.pth", weights_only=True)
    assert meta["dataset"]["num_classes"] == 3 and meta["iteration"] == 2
    for key, value in model.state_dict().items():
        assert torch.equal(value, saved["model"][key]), key
    # The CLI evaluation of the checkpoint reproduces the training-time evaluation.
    json_path = tmp_path / "eval.json"
    assert main(["segment", "eval", "--checkpoint", str(out / "best.pth"), "--data-dir", str(ade_root), "--workers", "0",
                 "--json", str(json_path)]) == 0
    cli_metrics = json.loads(json_path.read_text())
    assert cli_metrics["mIoU"] == pytest.approx(result["metrics"]["mIoU"])
    assert cli_metrics["pixels"] == 3 * 62 * 64  # every labelled validation pixel, at original size
    # Resuming continues at the saved iteration.
    resumed = train(_tiny_config(ade_root, out, iterations=4, resume="auto"))
    records = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records if "loss" in r] == [2, 4]
    assert torch.load(out / "checkpoint-iter0000004.pth", weights_only=True)["iteration"] == 4
    assert resumed["metrics"] is not None
    # Predict writes a palette mask whose values are class indices, and an overlay.
    pred_dir = tmp_path / "pred"
    image = ade_root / "images" / "validation" / "000.png"
    assert main(["segment", "predict", "--checkpoint", str(out / "best.pth"), str(image), "--output-dir", str(pred_dir)]) == 0
    mask = Image.open(pred_dir / "000_mask.png")
    assert mask.mode == "P" and mask.size == (64, 64) and np.asarray(mask).max() < 3
    assert Image.open(pred_dir / "000_overlay.png").size == (64, 64)


def test_sliding_window_and_flip_match_whole_image_for_a_pointwise_model():
    # A 1x1 convolution sees no context, so every inference mode must give the same scores.
    conv = torch.nn.Conv2d(3, 4, 1)
    images = torch.randn(1, 3, 96, 160)
    whole = predict_logits(conv, images, 4, "whole")
    slide = predict_logits(conv, images, 4, "slide", crop_size=(64, 64), stride=(40, 40))
    assert torch.allclose(whole, slide, atol=1e-5)
    flipped = predict_logits(conv, images, 4, "whole", flip=True)
    assert torch.allclose(flipped, whole.softmax(1), atol=1e-5)


# --------------------------------------------------------------------------- bad data
def test_missing_pairs_error_or_skip(ade_root, caplog):
    images, labels = ade_root / "images" / "training", ade_root / "annotations" / "training"
    (labels / "003.png").unlink()
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(labels / "orphan.png")
    with pytest.raises(DataError, match=r"1 images without a label PNG \(e.g. 003.png\).*1 label PNGs without an image"):
        find_pairs(images, labels)
    samples = find_pairs(images, labels, bad_data="skip")
    assert len(samples) == 7 and all(s.image.stem != "003" for s in samples)


def test_label_size_mismatch(ade_root):
    labels = ade_root / "annotations" / "training"
    Image.fromarray(np.ones((32, 64), np.uint8)).save(labels / "002.png")
    with pytest.raises(DataError, match=r"size differs.*002.png 64x32 vs image 64x64"):
        find_pairs(ade_root / "images" / "training", labels)
    assert len(find_pairs(ade_root / "images" / "training", labels, bad_data="skip")) == 7


def test_rgb_label_is_rejected(ade_root):
    labels = ade_root / "annotations" / "training"
    Image.fromarray(np.ones((64, 64, 3), np.uint8)).save(labels / "001.png")
    with pytest.raises(DataError, match=r"not single-channel.*001.png \(mode RGB\)"):
        find_pairs(ade_root / "images" / "training", labels)
    # Palette labels are class indices and are accepted.
    Image.fromarray(np.ones((64, 64), np.uint8)).convert("P").save(labels / "001.png")
    assert len(find_pairs(ade_root / "images" / "training", labels)) == 8


def test_label_values_above_class_count(ade_root):
    samples = find_pairs(ade_root / "images" / "training", ade_root / "annotations" / "training")
    bad = np.asarray(Image.open(samples[0].label)).copy()
    bad[10:12, :5] = 9  # class 8 after the shift; only 3 classes exist
    Image.fromarray(bad).save(samples[0].label)
    with pytest.raises(DataError, match=r"000.png: 10 pixels have values \(up to 9\)"):
        SegmentationDataset(samples, num_classes=3, reduce_zero_label=True)[0]
    ds = SegmentationDataset(samples, num_classes=3, reduce_zero_label=True, bad_data="skip")
    _, mask = ds[0]
    assert (mask[0, 10:12, :5] == IGNORE_INDEX).all() and ds.invalid_pixels["000.png"] == 10


def test_cli_reports_bad_data_in_one_line(ade_root, tmp_path, capsys):
    from litvit.cli import main

    (ade_root / "annotations" / "training" / "004.png").unlink()
    code = main(["segment", "train", "--data-dir", str(ade_root), "--output-dir", str(tmp_path / "r"),
                 "--device", "cpu", "--workers", "0"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "004.png" in err and len(err.splitlines()) == 1 and "Traceback" not in err
    code = main(["segment", "train", "--data-dir", str(tmp_path / "nowhere"), "--device", "cpu"])
    assert code == 2 and "not found" in capsys.readouterr().err
    (ade_root / "classes.txt").unlink()
    code = main(["segment", "train", "--data-dir", str(ade_root), "--dataset", "folder"])
    assert code == 2 and "--num-classes" in capsys.readouterr().err


def test_cli_reports_bad_data_from_a_loader_worker_in_one_line(ade_root, tmp_path, capsys):
    """Label values are checked when a sample loads, which with --workers > 0 happens in a worker
    process: the DataLoader re-raises there with the worker's traceback in the message."""
    from litvit.cli import main

    for label in (ade_root / "annotations" / "training").glob("*.png"):
        bad = np.asarray(Image.open(label)).copy()
        bad[:2, :2] = 200
        Image.fromarray(bad).save(label)
    code = main(["segment", "train", "--data-dir", str(ade_root), "--output-dir", str(tmp_path / "r"),
                 "--device", "cpu", "--workers", "1", "--model", "lit_ti", "--batch-size", "2", "--iterations", "1"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "Traceback" not in err and "Caught" not in err, err
    # the run's log line comes first; the error is the last line, and one line
    assert err.splitlines()[-1].startswith("litvit segment: error: label ")
    assert "pixels have values (up to 200)" in err.splitlines()[-1]


def test_demo_settings_and_classification_backbone_reuse(tmp_path):
    from litvit.engine.config import build_config
    from litvit.classification.demo import classify_demo_backbone as _classify_demo_backbone
    from litvit.segmentation.demo import DEMO_SETTINGS

    cfg = build_config(SegTrainConfig, overrides=dict(DEMO_SETTINGS, data_dir=str(tmp_path)))
    assert cfg.crop_size == tuple(DEMO_SETTINGS["crop_size"]) and cfg.iterations == DEMO_SETTINGS["iterations"]
    arch = {"embed_dims": [16, 32, 40, 64], "depths": [1, 1, 1, 1], "num_heads": [1, 2, 5, 8]}
    torch.save({"model": {}, "config": {"model": "lit_s", "model_kwargs": arch}}, tmp_path / "cls.pth")
    torch.save({"model": {}, "config": {"model": "resnet18", "model_kwargs": {}}}, tmp_path / "other.pth")
    path, settings = _classify_demo_backbone(tmp_path / "cls.pth")
    assert path == tmp_path / "cls.pth" and settings["model"] == "lit_s"
    assert settings["depths"] == (1, 1, 1, 1) and settings["mlp_ratios"] is None  # left at lit_s's own
    assert _classify_demo_backbone(tmp_path / "other.pth") is None
    assert _classify_demo_backbone(tmp_path / "missing.pth") is None
    # The segmentation model built from those settings loads the classifier's backbone weights.
    torch.manual_seed(0)
    classifier = timm.create_model("lit_s", num_classes=6, **arch, img_size=32)
    torch.save({"model": classifier.state_dict(), "config": {"model": "lit_s", "model_kwargs": arch}}, path)
    merged = build_config(SegTrainConfig, overrides=dict(DEMO_SETTINGS, **settings, data_dir=str(tmp_path)))
    model = semantic_fpn_lit(merged.model, num_classes=7, backbone_checkpoint=path, embed_dims=merged.embed_dims,
                             depths=merged.depths, num_heads=merged.num_heads, img_size=merged.img_size)
    assert torch.equal(model.backbone.patch_embed.proj.weight, classifier.patch_embed.proj.weight)


def test_demo_trains_the_classification_demo_only_when_its_checkpoint_is_missing(monkeypatch, tmp_path):
    from litvit.classification import demo as top_demo
    from litvit.segmentation.demo import DEMO_DATA, DEMO_SETTINGS, _classifier

    # The demo's images and its model's input size agree (no resize on the way in).
    assert DEMO_SETTINGS["crop_size"] == DEMO_SETTINGS["test_scale"] == (DEMO_DATA["image_size"],) * 2
    found = (tmp_path / "best.pth", {"model": "lit_s"})
    calls = []
    state = {"checkpoint": None}
    monkeypatch.setattr(top_demo, "classify_demo_backbone", lambda: state["checkpoint"])

    def fake_classification_demo(data_dir, **kwargs):
        calls.append(dict(kwargs, data_dir=data_dir))
        state["checkpoint"] = found
        return {}

    monkeypatch.setattr(top_demo, "run_demo", fake_classification_demo)
    assert _classifier("lit_s", True, tmp_path, None, 1, 3) == (None, False) and not calls
    assert _classifier("lit_s", False, tmp_path, None, 1, 3) == (found, True)
    assert calls == [dict(data_dir=tmp_path, model="lit_s", device=None, threads=1, seed=3)]
    assert _classifier("lit_s", False, tmp_path, None, 1, 3) == (found, False) and len(calls) == 1  # now present: not trained again

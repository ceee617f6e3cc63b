"""RetinaNet-LIT and Mask R-CNN-LIT: builders, training signal, COCO data handling, evaluation, resume."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

import litvit  # noqa: F401
from litvit.detection import mask_rcnn_lit, retinanet_lit
from litvit.detection.data import CocoDetectionDataset, decode_segmentation
from litvit.detection.evaluate import STAT_NAMES, coco_evaluate, outputs_to_coco
from litvit.detection.models import retinanet_anchor_generator
from litvit.errors import CheckpointError, DataError

TINY = dict(embed_dims=(16, 32, 40, 64), depths=(1, 1, 1, 1), num_heads=(1, 2, 5, 8), img_size=64)
# Small heads and RoI budgets keep Mask R-CNN steps in the tens of milliseconds.
SMALL_MRCNN = dict(fpn_channels=32, box_head_dim=64, mask_head_channels=16, box_batch_size_per_image=64,
                   rpn_post_nms_top_n_train=200, rpn_post_nms_top_n_test=100, box_detections_per_img=20)


def build(arch: str, num_classes: int = 3, **kwargs):
    torch.manual_seed(0)
    common = dict(backbone_kwargs=dict(TINY), min_size=64, max_size=96)
    if arch == "retinanet":
        return retinanet_lit("lit_ti", num_classes, fpn_channels=32, **common, **kwargs)
    return mask_rcnn_lit("lit_s", num_classes, **SMALL_MRCNN, **common, **kwargs)


def toy_batch(with_masks: bool, label_offset: int):
    g = torch.Generator().manual_seed(1)
    images = [torch.rand(3, 64, 80, generator=g), torch.rand(3, 70, 64, generator=g)]
    targets = []
    for img, boxes, labels in zip(images, ([[4, 6, 40, 50], [44, 10, 76, 30]], [[10, 12, 50, 60]]), ([0, 2], [1])):
        boxes = torch.tensor(boxes, dtype=torch.float32)
        t = {"boxes": boxes, "labels": torch.tensor(labels) + label_offset}
        if with_masks:
            masks = torch.zeros(len(boxes), *img.shape[-2:], dtype=torch.uint8)
            for m, (x1, y1, x2, y2) in zip(masks, boxes.int().tolist()):
                m[y1:y2, x1:x2] = 1
                # paint the box region distinctively so the task is learnable
                img[:, y1:y2, x1:x2] = torch.tensor([0.9, 0.1, 0.1]).view(3, 1, 1)
            t["masks"] = masks
        targets.append(t)
    return images, targets


# ---------------------------------------------------------------------- models
@pytest.mark.parametrize("arch", ["retinanet", "mask_rcnn"])
def test_builder_outputs(arch):
    model = build(arch).eval()
    images, _ = toy_batch(False, 0)
    with torch.no_grad():
        feats = model.backbone(torch.rand(1, 3, 64, 96))
        out = model(images)
    # RetinaNet: P3-P7 (strides 8..128); Mask R-CNN: P2-P6 (strides 4..64).
    first = 8 if arch == "retinanet" else 4
    assert [tuple(f.shape[-2:]) for f in feats.values()] == [
        (-(-64 // (first * 2**i)), -(-96 // (first * 2**i))) for i in range(5)
    ]
    assert all(f.shape[1] == 32 for f in feats.values())
    assert len(out) == 2
    for o, img in zip(out, images):
        assert o["boxes"].shape[1] == 4 and o["boxes"].shape[0] == o["scores"].shape[0] == o["labels"].shape[0]
        if len(o["boxes"]):
            # boxes come back in the coordinates of the input image
            assert o["boxes"][:, 2].max() <= img.shape[-1] + 1e-3 and o["boxes"][:, 3].max() <= img.shape[-2] + 1e-3
        if arch == "mask_rcnn":
            assert o["masks"].shape[1:] == (1, *img.shape[-2:])
            assert (o["labels"] >= 1).all() and (o["labels"] <= 3).all()
        else:
            assert (o["labels"] >= 0).all() and (o["labels"] < 3).all()
    assert model.label_offset == (0 if arch == "retinanet" else 1)


def test_released_configuration():
    model = retinanet_lit("lit_ti", 80, backbone_kwargs=dict(TINY))
    sizes = model.anchor_generator.sizes
    assert len(sizes) == 5 and len(sizes[0]) == 3
    assert sizes[0][0] == pytest.approx(32) and sizes[0][2] == pytest.approx(32 * 2 ** (2 / 3))
    assert sizes[4][0] == pytest.approx(512)
    assert model.anchor_generator.aspect_ratios[0] == (0.5, 1.0, 2.0)
    assert model.head.regression_head._loss_type == "l1"
    assert (model.score_thresh, model.nms_thresh, model.detections_per_img) == (0.05, 0.5, 100)
    assert (model.transform.min_size, model.transform.max_size) == ((800,), 1333)
    # P6 is computed from the stride-32 backbone map (64 channels here), not from P5.
    assert model.backbone.fpn.extra_blocks.p6.in_channels == 64 and not model.backbone.fpn.extra_blocks.use_P5
    assert model.backbone.in_indices == [1, 2, 3]
    mrcnn = mask_rcnn_lit("lit_ti", 80, backbone_kwargs=dict(TINY))
    assert mrcnn.backbone.in_indices == [0, 1, 2, 3]
    assert mrcnn.roi_heads.box_predictor.cls_score.out_features == 81
    assert (mrcnn.roi_heads.score_thresh, mrcnn.roi_heads.nms_thresh, mrcnn.roi_heads.detections_per_img) == (0.05, 0.5, 100)
    gen = retinanet_anchor_generator(octave_base_scale=2)
    assert gen.sizes[0][0] == pytest.approx(16)


def test_padded_size_is_multiple_of_32():
    model = build("retinanet").eval()
    images, _ = model.transform([torch.rand(3, 50, 71)])
    assert images.tensors.shape[-2] % 32 == 0 and images.tensors.shape[-1] % 32 == 0
    with pytest.raises(ValueError, match="multiple of 32"):
        build("retinanet", size_divisible=16)


@pytest.mark.parametrize("arch", ["retinanet", "mask_rcnn"])
def test_losses_reach_backbone_and_dtm_offsets(arch):
    model = build(arch).train()
    images, targets = toy_batch(arch == "mask_rcnn", model.label_offset)
    losses = model(images, targets)
    expected = {"classification", "bbox_regression"} if arch == "retinanet" else {
        "loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"}
    assert set(losses) == expected
    sum(losses.values()).backward()
    body = model.backbone.body
    assert body.patch_embed.proj.weight.grad.abs().sum() > 0
    offsets = [s.downsample.offset_conv for s in body.stages[1:]]
    assert len(offsets) == 3
    for conv in offsets:
        # offsets start from zero weights; the gradient must still flow into them
        assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0
        assert conv.bias.grad.abs().sum() > 0


def test_frozen_stages_and_norm_eval():
    model = build("retinanet", frozen_stages=2, norm_eval=True).train()
    body = model.backbone.body
    assert not any(p.requires_grad for p in body.patch_embed.parameters())
    assert not any(p.requires_grad for s in body.stages[:2] for p in s.parameters())
    assert all(p.requires_grad for s in body.stages[2:] for p in s.parameters())
    assert not body.stages[1].training and body.stages[2].training
    bn = body.stages[3].downsample.norm if hasattr(body.stages[3].downsample, "norm") else [
        m for m in body.stages[3].downsample.modules() if isinstance(m, torch.nn.BatchNorm2d)][0]
    assert not bn.training  # norm_eval
    with pytest.raises(ValueError):
        build("retinanet", frozen_stages=7)


@pytest.mark.parametrize("arch", ["retinanet", "mask_rcnn"])
def test_few_steps_lower_the_loss(arch):
    model = build(arch).train()
    images, targets = toy_batch(True, model.label_offset)
    if arch == "retinanet":
        targets = [{k: v for k, v in t.items() if k != "masks"} for t in targets]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(8):
        torch.manual_seed(0)  # same RoI sampling every step: compare like with like
        loss = sum(model(images, targets).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses


def test_backbone_from_classification_checkpoint(tmp_path):
    torch.manual_seed(3)
    classifier = timm.create_model("lit_ti", num_classes=7, **TINY)
    path = tmp_path / "cls.pth"
    torch.save({"model": classifier.state_dict(), "epoch": 3}, path)
    model = retinanet_lit("lit_ti", 2, backbone_checkpoint=path, backbone_kwargs=dict(TINY))
    body = model.backbone.body
    ref = classifier.state_dict()
    for name in ("patch_embed.proj.weight", "stages.2.blocks.0.attn.qkv.weight", "stages.1.downsample.offset_conv.weight"):
        assert torch.equal(body.state_dict()[name], ref[name]), name
    # LIT-Ti's dense stage 4 drops the class-token slot of its position embedding.
    assert torch.equal(body.stages[3].pos_embed, ref["stages.3.pos_embed"][:, 1:])
    bad = tmp_path / "bad.pth"
    torch.save({"model": timm.create_model("lit_ti", **{**TINY, "embed_dims": (16, 32, 48, 64), "num_heads": (1, 2, 4, 8)}).state_dict()}, bad)
    with pytest.raises(CheckpointError):
        retinanet_lit("lit_ti", 2, backbone_checkpoint=bad, backbone_kwargs=dict(TINY))


# ---------------------------------------------------------------------- data
def _write_png(path: Path, size=(64, 48), mode="RGB") -> None:
    rng = np.random.default_rng(0)
    w, h = size
    arr = rng.integers(0, 255, (h, w, 3) if mode == "RGB" else (h, w), dtype=np.uint8)
    Image.fromarray(arr, mode).save(path)


def messy_coco(root: Path) -> Path:
    """A COCO split with every kind of bad or unusual data in it."""
    from pycocotools import mask as mask_utils

    images = root / "images"
    images.mkdir(parents=True)
    _write_png(images / "a.png")
    _write_png(images / "gray.png", mode="L")
    _write_png(images / "empty.png")
    _write_png(images / "crowd_only.png")
    rle_mask = np.zeros((48, 64), dtype=np.uint8, order="F")
    rle_mask[10:20, 30:50] = 1
    compressed = mask_utils.encode(rle_mask)
    compressed["counts"] = compressed["counts"].decode("ascii")
    uncompressed = {"size": [48, 64], "counts": [48 * 5 + 2, 6, 48 * 64 - 48 * 5 - 8]}  # 6 px in column 5
    anns = [
        dict(id=1, image_id=1, category_id=3, bbox=[2, 2, 10, 10], area=100, iscrowd=0,
             segmentation=[[2, 2, 12, 2, 12, 12, 2, 12]]),                              # polygon
        dict(id=2, image_id=1, category_id=7, bbox=[30, 10, 20, 10], area=200, iscrowd=0, segmentation=compressed),
        dict(id=3, image_id=1, category_id=3, bbox=[5, 5, 0, 8], area=0, iscrowd=0, segmentation=[]),   # zero width
        dict(id=4, image_id=1, category_id=3, bbox=[70, 60, 5, 5], area=25, iscrowd=0,
             segmentation=[[70, 60, 75, 60, 75, 65]]),                                   # outside the 64x48 image
        dict(id=5, image_id=1, category_id=7, bbox=[50, 40, 30, 20], area=600, iscrowd=0,
             segmentation=[[50, 40, 63, 40, 63, 47, 50, 47]]),                            # clipped to the image
        dict(id=6, image_id=2, category_id=7, bbox=[5, 2, 1, 6], area=6, iscrowd=0, segmentation=uncompressed),
        dict(id=7, image_id=2, category_id=3, bbox=[20, 20, 10, 10], area=100, iscrowd=0,
             segmentation=[[20, 20, 30, 20]]),                                            # degenerate polygon only
        dict(id=8, image_id=4, category_id=3, bbox=[0, 0, 30, 30], area=900, iscrowd=1, segmentation=compressed),
        dict(id=9, image_id=1, category_id=99, bbox=[1, 1, 5, 5], area=25, iscrowd=0),   # unknown category
        dict(id=10, image_id=1, category_id=3, bbox=[1, 1, "x", 5], iscrowd=0),          # malformed box
        dict(id=11, image_id=42, category_id=3, bbox=[1, 1, 5, 5], iscrowd=0),           # unknown image
        dict(image_id=2, category_id=3, bbox=[40, 20, 10, 10], segmentation=[[40, 20, 50, 20, 50, 30, 40, 30]]),
    ]
    data = {
        "images": [
            dict(id=1, file_name="a.png", width=64, height=48),
            dict(id=2, file_name="gray.png", width=64, height=48),
            dict(id=3, file_name="empty.png", width=64, height=48),
            dict(id=4, file_name="crowd_only.png", width=64, height=48),
        ],
        "annotations": anns,
        "categories": [dict(id=3, name="cat"), dict(id=7, name="dog")],
    }
    ann_file = root / "instances.json"
    ann_file.write_text(json.dumps(data))
    return ann_file


def test_bad_data_is_handled_and_counted(tmp_path, caplog):
    ann = messy_coco(tmp_path)
    with caplog.at_level("WARNING", logger="litvit.detection"):
        ds = CocoDetectionDataset(tmp_path / "images", ann, with_masks=True, label_offset=1, train=True)
    issues = ds.issues
    assert issues["zero_size"] == 1 and issues["outside"] == 1 and issues["clipped"] == 1
    assert issues["crowd"] == 1 and issues["unknown_category"] == 1 and issues["bad_annotation"] == 1
    assert issues["unknown_image"] == 1 and issues["bad_polygon"] == 1 and issues["no_mask"] == 1
    assert issues["filled_area"] == 1 and issues["filled_id"] == 1 and issues["filled_iscrowd"] == 1
    # empty.png (no annotations) and crowd_only.png (nothing trainable) are left out of training
    assert issues["empty_image"] == 2 and ds.image_ids == [1, 2]
    text = caplog.text
    assert "zero width or height" in text and "crowd" in text and "entirely outside" in text

    img, target = ds[0]
    assert img.shape == (3, 48, 64) and img.dtype == torch.uint8
    # polygon, compressed RLE, clipped box; labels are category index + 1 (background 0)
    assert target["labels"].tolist() == [1, 2, 2]
    assert target["boxes"][2].tolist() == [50, 40, 64, 48]
    assert target["masks"].shape == (3, 48, 64)
    assert int(target["masks"][1].sum()) == 200  # the RLE rectangle
    gray, gtarget = ds[1]
    assert gray.shape == (3, 48, 64)  # grayscale read as RGB
    assert torch.equal(gray[0], gray[1])
    # uncompressed RLE (6 px) and the annotation whose id/area were filled in
    assert gtarget["labels"].tolist() == [2, 1] and int(gtarget["masks"][0].sum()) == 6

    # Box-only training (RetinaNet) keeps instances without masks; evaluation keeps every image.
    boxes_only = CocoDetectionDataset(tmp_path / "images", ann, with_masks=False, label_offset=0, train=True, log=False)
    assert boxes_only.issues["no_mask"] == 0 and len(boxes_only[1][1]["labels"]) == 3
    evaluation = CocoDetectionDataset(tmp_path / "images", ann, train=False, log=False)
    assert evaluation.image_ids == [1, 2, 3, 4]
    gt = evaluation.coco()
    assert len(gt.getAnnIds()) == 9 and len(gt.getAnnIds(iscrowd=True)) == 1


def test_missing_image_file(tmp_path):
    ann = messy_coco(tmp_path)
    (tmp_path / "images" / "gray.png").unlink()
    with pytest.raises(DataError, match=r"1 image file\(s\).*gray.png.*--skip-missing-images"):
        CocoDetectionDataset(tmp_path / "images", ann, log=False)
    ds = CocoDetectionDataset(tmp_path / "images", ann, skip_missing_images=True, log=False)
    assert ds.issues["missing_image"] == 1 and 2 not in ds.image_ids


@pytest.mark.parametrize(
    "content, message",
    [
        ("this is not json", "is not JSON"),
        ("[1, 2, 3]", "top level is a list"),
        ('{"annotations": []}', "no 'images' list"),
        ('{"images": [], "annotations": [], "categories": []}', "has no categories"),
        ('{"images": [{"id": 1}], "categories": [{"id": 1}]}', "images\\[0\\] has no 'file_name'"),
        ('{"images": [{"id": 1, "file_name": "a", "width": 1, "height": 1}, {"id": 1, "file_name": "b", "width": 1, '
         '"height": 1}], "categories": [{"id": 1}]}', "image id 1 appears twice"),
    ],
)
def test_not_coco_json(tmp_path, content, message):
    (tmp_path / "images").mkdir()
    ann = tmp_path / "ann.json"
    ann.write_text(content)
    with pytest.raises(DataError, match=message):
        CocoDetectionDataset(tmp_path / "images", ann, log=False)


def test_decode_segmentation_rejects_unusable():
    assert decode_segmentation([[1, 1, 2, 2]], 10, 10) is None  # two points
    assert decode_segmentation({"size": [5, 5], "counts": [25]}, 10, 10) is None  # wrong size
    assert decode_segmentation(None, 10, 10) is None
    assert decode_segmentation([[0, 0, 4, 0, 4, 4, 0, 4]], 10, 10).sum() == 16


# ---------------------------------------------------------------------- evaluation
def _perfect_outputs(ds: CocoDetectionDataset, label_offset: int, with_masks: bool):
    gt = ds.coco()
    outputs = []
    for img_id in ds.image_ids:
        anns = [a for a in gt.loadAnns(gt.getAnnIds(imgIds=img_id)) if not a["iscrowd"]]
        boxes = torch.tensor([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                              for a in anns], dtype=torch.float32).reshape(-1, 4)
        out = {"boxes": boxes, "scores": torch.ones(len(anns)),
               "labels": torch.tensor([ds.cat_to_index[a["category_id"]] + label_offset for a in anns], dtype=torch.int64)}
        if with_masks:
            info = gt.imgs[img_id]
            out["masks"] = torch.stack([torch.from_numpy(gt.annToMask(a)).float() for a in anns])[:, None] if anns else \
                torch.zeros(0, 1, info["height"], info["width"])
        outputs.append(out)
    return outputs


@pytest.fixture(scope="module")
def shapes_data(tmp_path_factory):
    from litvit.synthetic import generate_detection

    return generate_detection(tmp_path_factory.mktemp("shapes"), num_train=4, num_val=3, image_size=64)


def test_perfect_predictions_score_ap_one(shapes_data):
    ds = CocoDetectionDataset(shapes_data / "images" / "val", shapes_data / "annotations" / "instances_val.json", log=False)
    results = outputs_to_coco(_perfect_outputs(ds, 1, True), ds.image_ids, ds.cat_ids, label_offset=1)
    metrics = coco_evaluate(ds.coco(), results, ("bbox", "segm"), img_ids=ds.image_ids, verbose=False)
    assert set(metrics["bbox"]) == set(STAT_NAMES)
    assert metrics["bbox"]["AP"] == pytest.approx(1.0) and metrics["bbox"]["AP50"] == pytest.approx(1.0)
    assert metrics["segm"]["AP"] == pytest.approx(1.0)
    # Shifted boxes must score lower: the evaluation is not a constant.
    shifted = [dict(r, bbox=[r["bbox"][0] + 0.4 * r["bbox"][2], *r["bbox"][1:]]) for r in results]
    worse = coco_evaluate(ds.coco(), shifted, ("bbox",), img_ids=ds.image_ids, verbose=False)
    assert worse["bbox"]["AP"] < 0.5
    # No detections at all: zeros, not a crash.
    assert coco_evaluate(ds.coco(), [], ("bbox",), verbose=False)["bbox"]["AP"] == 0.0


# ---------------------------------------------------------------------- training, resume, CLI
def _train_cfg(shapes_data, output, **overrides):
    from litvit.detection.config import resolve_detect_config

    values = dict(
        data_root=str(shapes_data), output=str(output), arch="retinanet", min_size=64, max_size=64,
        epochs=2, batch_size=2, lr=1e-3, warmup_iters=2, lr_steps=[1], workers=0, device="cpu",
        backbone_kwargs=dict(TINY), model_kwargs=dict(fpn_channels=16, head_convs=1), log_every=1,
    )
    values.update(overrides)
    return resolve_detect_config(**values)


def test_train_resume_matches_uninterrupted_run(shapes_data, tmp_path):
    from litvit.checkpoint import read_checkpoint
    from litvit.detection.training import train
    from litvit.engine import read_metrics

    straight = tmp_path / "straight"
    train(_train_cfg(shapes_data, straight))
    resumed = tmp_path / "resumed"
    train(_train_cfg(shapes_data, resumed, epochs=1))
    first = read_checkpoint(resumed / "checkpoint-epoch001.pth")
    assert first["epoch"] == 1 and first["global_step"] == 2
    metrics = train(_train_cfg(shapes_data, resumed, resume="auto"))
    assert set(metrics) == {"bbox"} and set(metrics["bbox"]) == set(STAT_NAMES)
    a = read_checkpoint(straight / "checkpoint-epoch002.pth")
    b = read_checkpoint(resumed / "checkpoint-epoch002.pth")
    assert b["epoch"] == 2 and b["scheduler"]["last_epoch"] == 4
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], msg=k)
    records = [r for r in read_metrics(resumed) if r.get("kind") == "epoch"]
    assert [r["epoch"] for r in records] == [1, 2] and "bbox_AP" in records[-1]
    assert (resumed / "best.pth").exists() and json.loads((resumed / "eval.json").read_text())["metrics"]["bbox"]


def test_param_groups_and_schedule():
    from litvit.detection.training import lr_factor, param_groups

    model = build("retinanet")
    groups = {g["name"]: g for g in param_groups(model, 1e-4, 1e-4, 0.01)}
    offset_ids = {id(p) for p in model.backbone.body.offset_parameters()}
    assert {id(p) for g in groups.values() if g["name"].startswith("offset") for p in g["params"]} == offset_ids
    assert all(g["lr"] == pytest.approx(1e-6) for n, g in groups.items() if n.startswith("offset"))
    no_decay = {id(p) for n, g in groups.items() if n.endswith("no_decay") for p in g["params"]}
    assert id(model.backbone.body.stages[0].pos_embed) in no_decay  # LIT-Ti position table
    assert id(model.backbone.body.stages[2].blocks[0].norm1.weight) in no_decay
    assert id(model.head.classification_head.cls_logits.weight) not in no_decay
    assert lr_factor(0, 100, 500, 0.001, (8, 11), 0.1) == pytest.approx(0.001)
    assert lr_factor(250, 100, 500, 0.001, (8, 11), 0.1) == pytest.approx(0.5005)
    assert lr_factor(799, 100, 500, 0.001, (8, 11), 0.1) == pytest.approx(1.0)
    assert lr_factor(800, 100, 500, 0.001, (8, 11), 0.1) == pytest.approx(0.1)
    assert lr_factor(1100, 100, 500, 0.001, (8, 11), 0.1) == pytest.approx(0.01)


def test_cli_train_eval_predict(shapes_data, tmp_path, capsys):
    from litvit.cli import main

    run = tmp_path / "run"
    args = ["detect", "train", "--data-root", str(shapes_data), "--output", str(run), "--arch", "mask_rcnn",
            "--model", "lit_s", "--min-size", "64", "--max-size", "64", "--epochs", "1", "--workers", "0",
            "--device", "cpu", "--warmup-iters", "1", "--backbone-kwargs", json.dumps(dict(TINY)),
            "--model-kwargs", json.dumps(SMALL_MRCNN)]
    assert main(args) == 0
    out_json = tmp_path / "eval.json"
    assert main(["detect", "eval", "--checkpoint", str(run / "best.pth"), "--data-root", str(shapes_data),
                 "--json", str(out_json), "--workers", "0", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "COCO bbox" in printed and "COCO segm" in printed and "Average Precision" in printed
    result = json.loads(out_json.read_text())
    assert set(result["metrics"]) == {"bbox", "segm"} and result["images"] == 3
    # Two processes (gloo) gather their detections to rank 0: the same numbers as one process.
    import os
    import subprocess
    import sys

    ddp_json = tmp_path / "eval_ddp.json"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
         "-m", "litvit.cli", "detect", "eval", "--checkpoint", str(run / "best.pth"), "--data-root", str(shapes_data),
         "--json", str(ddp_json), "--workers", "0", "--device", "cpu"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    ddp = json.loads(ddp_json.read_text())
    assert ddp["detections"] == result["detections"]
    for iou_type in ("bbox", "segm"):
        assert ddp["metrics"][iou_type] == pytest.approx(result["metrics"][iou_type])
    pred_dir = tmp_path / "pred"
    assert main(["detect", "predict", "--checkpoint", str(run / "best.pth"), str(shapes_data / "images" / "val"),
                 "--output-dir", str(pred_dir), "--score-thresh", "0.0", "--device", "cpu"]) == 0
    assert sorted(p.name for p in pred_dir.glob("*.png")) == ["000000.png", "000001.png", "000002.png"]
    assert Image.open(pred_dir / "000000.png").size == (64, 64)
    assert len(json.loads((pred_dir / "predictions.json").read_text())) == 3
    # A user mistake is one line and exit status 2.
    assert main(["detect", "eval", "--checkpoint", str(tmp_path / "nope.pth"), "--data-root", str(shapes_data)]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


def test_coco2017_layout(tmp_path):
    from litvit.detection.data import coco_split_paths

    (tmp_path / "annotations").mkdir()
    (tmp_path / "val2017").mkdir()
    (tmp_path / "annotations" / "instances_val2017.json").write_text("{}")
    assert coco_split_paths(tmp_path, "val") == (tmp_path / "val2017", tmp_path / "annotations" / "instances_val2017.json")
    assert coco_split_paths(tmp_path, "val2017")[0] == tmp_path / "val2017"
    with pytest.raises(DataError, match="instances_train2017.json"):
        coco_split_paths(tmp_path, "train")


def test_demo_settings_use_the_classification_demo_backbone(tmp_path, monkeypatch):
    from litvit.classification import demo as top_demo
    from litvit.detection import demo
    from litvit.detection.config import resolve_detect_config
    from litvit.detection.training import _model_spec, build_from_spec

    arch = {"embed_dims": [16, 32, 40, 64], "depths": [1, 1, 1, 1], "num_heads": [1, 2, 5, 8]}
    torch.manual_seed(0)
    classifier = timm.create_model("lit_s", num_classes=6, **arch, img_size=32)
    path = tmp_path / "cls.pth"
    torch.save({"model": classifier.state_dict(), "config": {"model": "lit_s", "model_kwargs": arch}}, path)
    found = top_demo.classify_demo_backbone(path)
    for name in demo.DEMO_DETECTORS:
        cfg = resolve_detect_config(**demo.demo_overrides(name, found), data_root=str(tmp_path))
        assert cfg.arch == name and cfg.model == "lit_s" and cfg.backbone_checkpoint == str(path)
        assert cfg.backbone_kwargs["embed_dims"] == arch["embed_dims"]
        assert "mlp_ratios" not in cfg.backbone_kwargs  # left at lit_s's own, as the classifier did
        assert cfg.backbone_kwargs["img_size"] == cfg.min_size
    # The detector built from those settings starts from the classifier's backbone weights.
    model = build_from_spec(_model_spec(cfg, 6), cfg.backbone_checkpoint)
    assert torch.equal(model.backbone.body.patch_embed.proj.weight, classifier.patch_embed.proj.weight)
    assert torch.equal(model.backbone.body.stages[3].blocks[0].mlp.fc1.weight, classifier.stages[3].blocks[0].mlp.fc1.weight)

    # From scratch: the classification demo's model and shape, no checkpoint.
    scratch = demo.demo_overrides("retinanet", None)
    assert scratch["backbone_checkpoint"] is None and scratch["model"] == top_demo.DEMO_SETTINGS["model"]
    assert scratch["backbone_kwargs"]["embed_dims"] == top_demo.DEMO_SETTINGS["model_kwargs"]["embed_dims"]

    # run_demo's choice: the checkpoint when present; trained first when missing; none with --from-scratch.
    trained = []
    available = {"found": None}
    monkeypatch.setattr(top_demo, "classify_demo_backbone", lambda: available["found"])

    def fake_classification_demo(data_dir, **kwargs):
        trained.append(dict(kwargs, data_dir=data_dir))
        available["found"] = found
        return {}

    monkeypatch.setattr(top_demo, "run_demo", fake_classification_demo)
    assert demo._classifier("lit_s", True, tmp_path, None, None, 0) is None and not trained
    assert demo._classifier("lit_s", False, tmp_path, None, 1, 3) == found
    assert trained == [dict(data_dir=tmp_path, model="lit_s", device=None, threads=1, seed=3)]
    assert demo._classifier("lit_s", False, tmp_path, None, None, 0) == found and len(trained) == 1

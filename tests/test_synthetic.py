"""The synthetic shapes generator: determinism, layouts, COCO and label-PNG consistency."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from litvit.synthetic import (
    SEG_BACKGROUND_VALUE,
    SHAPE_CLASSES,
    detection_scene,
    generate_classification,
    generate_detection,
    generate_segmentation,
    segmentation_scene,
)
from litvit.errors import DataError


def _tree_hashes(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_classification_layout_balance_and_determinism(tmp_path):
    a = generate_classification(tmp_path / "a", num_train_per_class=5, num_val_per_class=2, image_size=48, seed=3)
    b = generate_classification(tmp_path / "b", num_train_per_class=5, num_val_per_class=2, image_size=48, seed=3)
    c = generate_classification(tmp_path / "c", num_train_per_class=5, num_val_per_class=2, image_size=48, seed=4)
    assert _tree_hashes(a) == _tree_hashes(b)
    assert _tree_hashes(a) != _tree_hashes(c)
    for split, per_class in (("train", 5), ("val", 2)):
        assert sorted(p.name for p in (a / split).iterdir()) == sorted(SHAPE_CLASSES)
        for name in SHAPE_CLASSES:
            files = sorted((a / split / name).glob("*.png"))
            assert len(files) == per_class
            with Image.open(files[0]) as im:
                assert im.size == (48, 48) and im.mode == "RGB"
    # Train and val images are different scenes.
    train = {h for k, h in _tree_hashes(a).items() if k.startswith("train")}
    val = {h for k, h in _tree_hashes(a).items() if k.startswith("val")}
    assert not train & val


def test_idempotent_and_refuses_foreign_or_changed_dirs(tmp_path):
    root = generate_classification(tmp_path / "d", num_train_per_class=2, num_val_per_class=1, image_size=32)
    marker = root / "train" / SHAPE_CLASSES[0] / "marker.txt"
    marker.write_text("kept")
    # Same settings: nothing regenerated, so the marker survives.
    generate_classification(tmp_path / "d", num_train_per_class=2, num_val_per_class=1, image_size=32)
    assert marker.exists()
    with pytest.raises(DataError, match="other settings"):
        generate_classification(tmp_path / "d", num_train_per_class=3, num_val_per_class=1, image_size=32)
    generate_classification(tmp_path / "d", num_train_per_class=3, num_val_per_class=1, image_size=32, overwrite=True)
    assert not marker.exists()
    assert len(list((root / "train" / SHAPE_CLASSES[0]).glob("*.png"))) == 3
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "mine.txt").write_text("x")
    with pytest.raises(DataError, match="not empty"):
        generate_classification(foreign, num_train_per_class=1, num_val_per_class=1, overwrite=True)
    assert (foreign / "mine.txt").read_text() == "x"
    # No temporary directories are left beside the output.
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_interrupted_generation_leaves_nothing(tmp_path, monkeypatch):
    from litvit.synthetic import shapes as synthetic

    calls = {"n": 0}
    real_save = synthetic._save_png

    def failing_save(array, path):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        real_save(array, path)

    monkeypatch.setattr(synthetic, "_save_png", failing_save)
    with pytest.raises(KeyboardInterrupt):
        generate_detection(tmp_path / "det", num_train=5, num_val=2, image_size=64)
    assert list(tmp_path.iterdir()) == []


def test_coco_annotations_match_pycocotools(tmp_path):
    from pycocotools.coco import COCO

    root = generate_detection(tmp_path / "det", num_train=12, num_val=4, image_size=96, seed=1)
    assert _tree_hashes(root) == _tree_hashes(generate_detection(tmp_path / "det2", num_train=12, num_val=4,
                                                                 image_size=96, seed=1))
    for split, count in (("train", 12), ("val", 4)):
        coco = COCO(str(root / "annotations" / f"instances_{split}.json"))
        assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(SHAPE_CLASSES)
        assert coco.getCatIds() == list(range(1, len(SHAPE_CLASSES) + 1))
        assert len(coco.getImgIds()) == count
        assert len(coco.getAnnIds()) >= count  # at least one shape per image
        for image_id in coco.getImgIds():
            info = coco.loadImgs(image_id)[0]
            with Image.open(root / "images" / split / info["file_name"]) as im:
                assert im.size == (info["width"], info["height"]) == (96, 96)
            scene = detection_scene(1, split, image_id - 1, 96)
            anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
            assert len(anns) == len(scene.instances)
            for ann, inst in zip(anns, scene.instances):
                assert ann["iscrowd"] == 0 and ann["category_id"] == inst.label + 1
                assert ann["area"] == inst.area > 0
                mask = coco.annToMask(ann).astype(bool)
                # pycocotools rasterises the polygon to the drawn mask up to a few boundary pixels.
                assert abs(int(mask.sum()) - ann["area"]) <= max(3, 0.06 * ann["area"])
                iou = (mask & inst.mask).sum() / (mask | inst.mask).sum()
                assert iou > 0.9
                x, y, w, h = ann["bbox"]
                ys, xs = np.nonzero(inst.mask)
                assert (x, y, x + w, y + h) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
                assert 0 <= x and 0 <= y and x + w <= 96 and y + h <= 96
            # Shapes never overlap, so every instance is fully visible.
            total = np.zeros((96, 96), dtype=int)
            for inst in scene.instances:
                total += inst.mask
            assert total.max() <= 1


def test_detection_class_balance(tmp_path):
    from collections import Counter

    root = generate_detection(tmp_path / "det", num_train=150, num_val=1, image_size=64, seed=0)
    anns = json.loads((root / "annotations" / "instances_train.json").read_text())["annotations"]
    counts = Counter(a["category_id"] for a in anns)
    assert set(counts) == set(range(1, len(SHAPE_CLASSES) + 1))
    expected = len(anns) / len(SHAPE_CLASSES)
    assert all(abs(n - expected) < 0.35 * expected for n in counts.values()), counts


def test_segmentation_labels_match_instances(tmp_path):
    root = generate_segmentation(tmp_path / "seg", num_train=6, num_val=3, image_size=80, seed=2)
    names = (root / "classes.txt").read_text().split()
    assert names == ["background", *SHAPE_CLASSES]
    for split, count in (("training", 6), ("validation", 3)):
        images = sorted((root / "images" / split).glob("*.png"))
        labels = sorted((root / "annotations" / split).glob("*.png"))
        assert [p.name for p in images] == [p.name for p in labels] and len(images) == count
        for index, (img_path, lab_path) in enumerate(zip(images, labels)):
            with Image.open(img_path) as im, Image.open(lab_path) as lab:
                assert im.mode == "RGB" and lab.mode == "L" and im.size == lab.size == (80, 80)
                label = np.asarray(lab)
            # 0 (ignore) is never written; values are background (1) or 2..K+1.
            assert label.min() >= SEG_BACKGROUND_VALUE and label.max() <= len(SHAPE_CLASSES) + 1
            scene = segmentation_scene(2, split, index, 80)
            expected = np.full((80, 80), SEG_BACKGROUND_VALUE)
            for inst in scene.instances:
                expected[inst.mask] = SEG_BACKGROUND_VALUE + 1 + inst.label
            np.testing.assert_array_equal(label, expected)
            assert (label > SEG_BACKGROUND_VALUE).any()


def test_cli_writes_dataset(tmp_path, capsys):
    from litvit.cli import main

    out = tmp_path / "cls"
    assert main(["data", "synth", "--task", "classify", "--output-dir", str(out), "--num-train", "2",
                 "--num-val", "1", "--image-size", "32"]) == 0
    assert str(out) in capsys.readouterr().out
    assert len(list((out / "train").rglob("*.png"))) == 2 * len(SHAPE_CLASSES)
    assert main(["data", "synth", "--task", "segment", "--output-dir", str(out), "--num-train", "2"]) == 2
    err = capsys.readouterr().err
    assert "other settings" in err and "task classify -> segment" in err and len(err.strip().splitlines()) == 1

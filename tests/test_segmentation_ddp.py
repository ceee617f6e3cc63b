"""Distributed segmentation on 2 CPU processes (gloo): metric reduction, evaluation and a DDP step."""
from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from PIL import Image

from litvit.segmentation import ConfusionMatrix

TINY = dict(embed_dims=(16, 32, 40, 64), depths=(1, 1, 1, 1), num_heads=(1, 2, 5, 8), img_size=64,
            fpn_channels=16, head_channels=8, drop_path_rate=0.0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _random_maps(num_classes: int = 4):
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, num_classes, (6, 16, 16), generator=g)
    target[:, :2] = 255
    pred = torch.where(torch.rand(6, 16, 16, generator=g) < 0.6, target.clamp(max=num_classes - 1),
                       torch.randint(0, num_classes, (6, 16, 16), generator=g))
    return pred, target


def _build_model():
    from litvit.segmentation import semantic_fpn_lit

    torch.manual_seed(0)
    return semantic_fpn_lit("lit_ti", num_classes=3, **TINY)


def _dataset(root: Path):
    from litvit.segmentation.data import SegmentationDataset, find_pairs
    from litvit.segmentation.transforms import EvalPreset

    samples = find_pairs(root / "images", root / "labels")
    return SegmentationDataset(samples, 3, EvalPreset(None))


def _worker(rank: int, port: int, root: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from litvit.engine import all_gather_object, cleanup, init_distributed
    from litvit.segmentation.training import evaluate, segmentation_loss

    ctx = init_distributed("cpu")
    try:
        # 1. Confusion matrices of disjoint halves sum to the whole.
        pred, target = _random_maps()
        cm = ConfusionMatrix(4)
        cm.update(pred[rank::2], target[rank::2])
        cm.all_reduce()
        # 2. Distributed evaluation: each rank a share of the images, one reduced result.
        model = _build_model()
        metrics = evaluate(model, _dataset(Path(root)), torch.device("cpu"))
        # 3. One DDP step (SyncBatchNorm needs CUDA, so plain BN here): every parameter gets a
        # gradient (DDP would fail on unused ones), weights stay in sync.
        ddp = torch.nn.parallel.DistributedDataParallel(_build_model())
        opt = torch.optim.AdamW(ddp.parameters(), lr=1e-3)
        torch.manual_seed(rank)
        images = torch.randn(2, 3, 64, 64)
        labels = torch.randint(0, 3, (2, 64, 64))
        loss = segmentation_loss(ddp(images), labels)
        loss.backward()
        missing = [n for n, p in ddp.module.named_parameters() if p.grad is None]
        opt.step()
        weights = torch.cat([p.detach().reshape(-1) for p in ddp.module.parameters()])
        gathered = all_gather_object(weights)
        if ctx.rank == 0:
            torch.save({"matrix": cm.matrix, "metrics": metrics, "missing": missing,
                        "weights_equal": torch.equal(gathered[0], gathered[1])}, out)
    finally:
        cleanup()


@pytest.mark.slow
def test_ddp_metric_reduction_and_training_step(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    for i in range(5):  # odd count: the ranks get 3 and 2 images
        Image.fromarray(rng.integers(0, 255, (64, 96, 3), dtype=np.uint8)).save(tmp_path / "images" / f"{i}.png")
        Image.fromarray(rng.integers(0, 3, (64, 96), dtype=np.uint8)).save(tmp_path / "labels" / f"{i}.png")
    out = tmp_path / "result.pt"
    mp.spawn(_worker, args=(_free_port(), str(tmp_path), str(out)), nprocs=2, join=True)
    result = torch.load(out, weights_only=True)

    pred, target = _random_maps()
    single = ConfusionMatrix(4)
    single.update(pred, target)
    assert torch.equal(result["matrix"], single.matrix)

    from litvit.segmentation.training import evaluate

    expected = evaluate(_build_model(), _dataset(tmp_path), torch.device("cpu"))
    assert result["metrics"]["pixels"] == expected["pixels"] == 5 * 64 * 96
    assert result["metrics"]["mIoU"] == pytest.approx(expected["mIoU"], abs=1e-12)
    assert result["metrics"]["IoU"] == pytest.approx(expected["IoU"], abs=1e-12)
    assert result["missing"] == [] and result["weights_equal"]

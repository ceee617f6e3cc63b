"""COCO evaluation of detectors with pycocotools, in one or many processes.

Every process runs the model on its share of the images (``EvalDistributedSampler``: each
image exactly once), converts the outputs to COCO result dicts (boxes in the original image
coordinates, RLE masks) and rank 0 gathers them and runs ``COCOeval`` for ``bbox`` and,
for Mask R-CNN, ``segm``.
"""
from __future__ import annotations

import contextlib
import copy
import io
import logging
from typing import Any, Dict, Iterable, List, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from ..engine import EvalDistributedSampler, all_gather_object, is_main_process, progress, unwrap_model
from ..engine.amp import autocast
from .data import CocoDetectionDataset, collate_detection

__all__ = [
    "STAT_NAMES",
    "outputs_to_coco",
    "coco_evaluate",
    "run_inference",
    "evaluate_detector",
    "format_summary",
    "has_masks",
]

logger = logging.getLogger("litvit.detection")

#: The 12 numbers of ``COCOeval.summarize()``, in its order.
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def outputs_to_coco(
    outputs: Sequence[Dict[str, torch.Tensor]],
    image_ids: Sequence[Any],
    cat_ids: Sequence[int],
    label_offset: int,
    mask_threshold: float = 0.5,
) -> List[Dict[str, Any]]:
    """torchvision detection outputs (XYXY boxes in image pixels) -> COCO result dicts."""
    from pycocotools import mask as mask_utils

    results: List[Dict[str, Any]] = []
    for out, image_id in zip(outputs, image_ids):
        boxes = out["boxes"].detach().float().cpu()
        scores = out["scores"].detach().float().cpu().tolist()
        labels = (out["labels"].detach().cpu() - label_offset).tolist()
        xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()
        rles = None
        if "masks" in out:
            binary = (out["masks"].detach()[:, 0] > mask_threshold).cpu().numpy().astype(np.uint8)
            rles = mask_utils.encode(np.asfortranarray(binary.transpose(1, 2, 0))) if len(binary) else []
        for k, (box, score, label) in enumerate(zip(xywh, scores, labels)):
            if not 0 <= label < len(cat_ids):
                continue  # never produced by a model built for this class count
            result = {"image_id": image_id, "category_id": cat_ids[label], "bbox": [round(v, 2) for v in box], "score": round(score, 5)}
            if rles is not None:
                rle = rles[k]
                result["segmentation"] = {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}
            results.append(result)
    return results


def coco_evaluate(
    coco_gt,
    results: List[Dict[str, Any]],
    iou_types: Iterable[str] = ("bbox",),
    img_ids: Optional[Sequence[Any]] = None,
    verbose: bool = True,
) -> Dict[str, Dict[str, float]]:
    """Run ``COCOeval`` per IoU type; returns ``{iou_type: {AP, AP50, ..., ARl}}``.

    Mask results are scored without their boxes, so that COCOeval's small/medium/large split
    uses mask areas (with a box present pycocotools would take the box area).
    ``img_ids`` restricts evaluation to the images that were run.
    """
    from pycocotools.cocoeval import COCOeval

    metrics: Dict[str, Dict[str, float]] = {}
    for iou_type in iou_types:
        if iou_type == "segm":
            dets = [{k: v for k, v in r.items() if k != "bbox"} for r in results if "segmentation" in r]
        else:
            dets = [{k: v for k, v in r.items() if k != "segmentation"} for r in results]
        if not dets:
            logger.warning(f"no {iou_type} detections to evaluate: every {iou_type} metric is 0")
            metrics[iou_type] = {name: 0.0 for name in STAT_NAMES}
            continue
        quiet = io.StringIO()
        with contextlib.redirect_stdout(quiet):
            coco_dt = coco_gt.loadRes(copy.deepcopy(dets))
            evaluator = COCOeval(coco_gt, coco_dt, iou_type)
            if img_ids is not None:
                evaluator.params.imgIds = list(img_ids)
            evaluator.evaluate()
            evaluator.accumulate()
        summary = io.StringIO()
        with contextlib.redirect_stdout(summary):
            evaluator.summarize()
        if verbose:
            print(f"COCO {iou_type} ({len(dets)} detections):")
            print(summary.getvalue().rstrip())
        metrics[iou_type] = {name: float(v) for name, v in zip(STAT_NAMES, evaluator.stats)}
    return metrics


def has_masks(model: nn.Module) -> bool:
    """Whether the detector predicts instance masks (Mask R-CNN)."""
    roi_heads = getattr(unwrap_model(model), "roi_heads", None)
    return bool(roi_heads is not None and roi_heads.has_mask())


def format_summary(metrics: Dict[str, Dict[str, float]]) -> str:
    """One line per IoU type: ``bbox AP 41.6 AP50 ...`` (percent; ``n/a`` where COCOeval has no
    ground truth, e.g. no large objects)."""
    return "\n".join(
        f"{t}: " + " ".join(f"{k} {100 * v:.1f}" if v >= 0 else f"{k} n/a" for k, v in m.items())
        for t, m in metrics.items()
    )


@torch.no_grad()
def run_inference(
    model: nn.Module,
    dataset: CocoDetectionDataset,
    device: torch.device,
    batch_size: int = 2,
    workers: int = 2,
    amp_dtype: Optional[torch.dtype] = None,
    desc: str = "eval",
) -> List[Dict[str, Any]]:
    """This process's share of COCO results over ``dataset`` (see :class:`EvalDistributedSampler`)."""
    core = unwrap_model(model)
    was_training = core.training
    core.eval()
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=EvalDistributedSampler(len(dataset)),
        num_workers=workers,
        collate_fn=collate_detection,
        pin_memory=device.type == "cuda",
    )
    results: List[Dict[str, Any]] = []
    for images, targets in progress(loader, desc=desc):
        images = [img.to(device, non_blocking=True) for img in images]
        with autocast(device, amp_dtype):
            outputs = core(images)
        results.extend(
            outputs_to_coco(outputs, [t["image_id"] for t in targets], dataset.cat_ids, core.label_offset)
        )
    core.train(was_training)
    return results


def evaluate_detector(
    model: nn.Module,
    dataset: CocoDetectionDataset,
    device: torch.device,
    batch_size: int = 2,
    workers: int = 2,
    amp_dtype: Optional[torch.dtype] = None,
    verbose: bool = True,
) -> Optional[Dict[str, Dict[str, float]]]:
    """COCO metrics of ``model`` on ``dataset``: on rank 0 the metrics dict, elsewhere ``None``.

    All processes must call it (results are gathered collectively).
    """
    results = run_inference(model, dataset, device, batch_size, workers, amp_dtype)
    gathered = all_gather_object(results)
    if not is_main_process():
        return None
    merged = [r for part in gathered for r in part]
    iou_types = ["bbox"] + (["segm"] if has_masks(model) else [])
    return coco_evaluate(dataset.coco(), merged, iou_types, img_ids=dataset.image_ids, verbose=verbose)

"""Segmentation metrics from an accumulated confusion matrix (summed across processes)."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch

from ..engine.distributed import all_reduce_sum
from .transforms import IGNORE_INDEX

__all__ = ["ConfusionMatrix", "metrics_from_confusion", "format_metrics"]


class ConfusionMatrix:
    """``K x K`` counts, rows = ground truth, columns = prediction; ignore pixels are skipped."""

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX, device: Optional[torch.device] = None):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a prediction (class indices) and its label map, of equal shape."""
        if pred.shape != target.shape:
            raise ValueError(f"prediction {tuple(pred.shape)} and label {tuple(target.shape)} differ in shape")
        valid = target != self.ignore_index
        k = self.num_classes
        index = target[valid].long().to(self.matrix.device) * k + pred[valid].long().to(self.matrix.device)
        self.matrix += torch.bincount(index, minlength=k * k).reshape(k, k)

    def all_reduce(self) -> "ConfusionMatrix":
        """Sum the matrices of every process (a no-op in a single process)."""
        all_reduce_sum(self.matrix)
        return self

    def compute(self) -> Dict[str, object]:
        return metrics_from_confusion(self.matrix)


def metrics_from_confusion(matrix: torch.Tensor) -> Dict[str, object]:
    """mIoU, mean class accuracy, overall pixel accuracy and the per-class IoU/accuracy.

    A class with neither labelled nor predicted pixels has IoU NaN and is left out of the
    mean; one that is predicted but never labelled has IoU 0 (it counts). Accuracy of a
    class without labelled pixels is NaN and left out of ``mAcc``.
    """
    m = matrix.double().cpu()
    tp = m.diag()
    gt = m.sum(1)
    pred = m.sum(0)
    union = gt + pred - tp
    iou = tp / union  # 0/0 -> nan
    acc = tp / gt
    total = m.sum()
    return {
        "mIoU": float(torch.nanmean(iou)) if torch.isfinite(iou).any() else float("nan"),
        "mAcc": float(torch.nanmean(acc)) if torch.isfinite(acc).any() else float("nan"),
        "aAcc": float(tp.sum() / total) if total > 0 else float("nan"),
        "IoU": iou.tolist(),
        "Acc": acc.tolist(),
        "pixels": int(total),
    }


def format_metrics(metrics: Dict[str, object], class_names: Optional[Sequence[str]] = None) -> str:
    """A plain-text table: per class IoU and accuracy, then the summary line."""
    iou: List[float] = metrics["IoU"]  # type: ignore[assignment]
    acc: List[float] = metrics["Acc"]  # type: ignore[assignment]
    names = list(class_names) if class_names is not None else [str(i) for i in range(len(iou))]
    width = max([5] + [len(n) for n in names])
    lines = [f"{'class':<{width}}  {'IoU':>6}  {'Acc':>6}"]
    for name, a, b in zip(names, iou, acc):
        lines.append(f"{name:<{width}}  {100 * a:6.2f}  {100 * b:6.2f}")
    lines.append(
        f"mIoU {100 * metrics['mIoU']:.2f}  mAcc {100 * metrics['mAcc']:.2f}  aAcc {100 * metrics['aAcc']:.2f}"
    )
    return "\n".join(lines)

"""The model ``litvit export`` exports for each task: every task owns its adapter."""
from __future__ import annotations

import os
from typing import Any, Callable, Dict, Optional, Tuple, Union

from ..errors import ExportError

PathLike = Union[str, os.PathLike]

__all__ = ["TASKS", "build_export_model"]

TASKS = ("classify", "segment", "detect")


def _adapter(task: str) -> Callable[..., Tuple[Any, Dict[str, str]]]:
    # Imported on use, so exporting a classifier does not import torchvision's detection models.
    if task == "classify":
        from ..classification.export import classifier_for_export

        return classifier_for_export
    if task == "segment":
        from ..segmentation.export import segmenter_for_export

        return segmenter_for_export
    if task == "detect":
        from ..detection.export import detector_for_export

        return detector_for_export
    raise ExportError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")


def build_export_model(
    task: str,
    model_name: str,
    checkpoint_path: Optional[PathLike] = None,
    num_classes: Optional[int] = None,
    use_ema: bool = False,
    **model_kwargs: Any,
) -> Tuple[Any, Dict[str, str]]:
    """The model the CLI exports and the metadata stored beside it.

    ``classify``: a LIT (or timm) classifier; without ``num_classes`` the class count is
    read from the checkpoint (1000 without a checkpoint).
    ``segment``: Semantic FPN-LIT, from a ``litvit segment train`` checkpoint (which
    holds its own configuration) or untrained (``num_classes``, default 150).
    ``detect``: the dense part of a RetinaNet / Mask R-CNN
    (:class:`~litvit.detection.export.DetectorDenseOutputs`), from a ``litvit detect train``
    checkpoint or untrained (``arch`` in ``model_kwargs``, default ``retinanet``;
    ``num_classes`` default 80).
    """
    model, task_meta = _adapter(task)(model_name, checkpoint_path, num_classes, use_ema, **model_kwargs)
    meta: Dict[str, str] = {"litvit.task": task, "litvit.model": model_name, **task_meta}
    return model.eval(), meta

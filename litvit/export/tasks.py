"""The model ``litvit export`` exports for each task: every task owns its adapter."""
from __future__ import annotations

import importlib
import os
from typing import Any, Dict, Optional, Tuple, Union

from ..errors import ExportError

PathLike = Union[str, os.PathLike]

__all__ = ["TASKS", "build_export_model"]

# Task name -> "module:function" returning (model, metadata); imported on use, so exporting a
# classifier does not import torchvision's detection models.
TASK_ADAPTERS = {
    "classify": "litvit.classification.export:classifier_for_export",
    "segment": "litvit.segmentation.export:segmenter_for_export",
    "detect": "litvit.detection.export:detector_for_export",
}
TASKS = tuple(TASK_ADAPTERS)


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
    if task not in TASK_ADAPTERS:
        raise ExportError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
    module, function = TASK_ADAPTERS[task].split(":")
    adapter = getattr(importlib.import_module(module), function)
    model, task_meta = adapter(model_name, checkpoint_path, num_classes, use_ema, **model_kwargs)
    meta: Dict[str, str] = {"litvit.task": task, "litvit.model": model_name, **task_meta}
    return model.eval(), meta

"""Loading a trained classifier (litvit or released checkpoint), evaluating it on a folder,
and predicting the classes of image files."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from ..accel import optimize_for_device
from ..engine.amp import autocast, resolve_amp
from ..engine.distributed import cleanup, init_distributed
from ..engine.samplers import EvalDistributedSampler
from ..errors import DataError
from ..factory import display_class_names, imagenet_class_names
from .config import TrainConfig
from .data import ImageFolderDataset, build_transforms, collate_with_flags, load_image, scan_image_folder
from .loops import evaluate

__all__ = ["LoadedClassifier", "load_classifier", "evaluate_checkpoint", "predict_images", "imagenet_class_names"]


@dataclass
class LoadedClassifier:
    model: nn.Module
    cfg: TrainConfig
    class_names: Optional[List[str]]
    num_classes: int
    source: str
    extra: Dict[str, Any] = field(default_factory=dict)


def load_classifier(
    checkpoint: Union[str, os.PathLike],
    model: Optional[str] = None,
    img_size: Optional[int] = None,
    use_ema: bool = False,
    model_kwargs: Optional[Dict[str, Any]] = None,
) -> LoadedClassifier:
    """A model ready for evaluation from a litvit training checkpoint (architecture, image size and
    class names are recorded in it) or a released/timm state dict (``model`` must be named;
    the class count is read from the classifier weights); see
    :func:`litvit.factory.model_from_checkpoint`."""
    from ..factory import model_from_checkpoint

    net, info = model_from_checkpoint(checkpoint, model=model, img_size=img_size, use_ema=use_ema,
                                      model_kwargs=model_kwargs)
    fields = set(TrainConfig.__dataclass_fields__)
    cfg = TrainConfig(**{k: (tuple(v) if isinstance(v, list) and k not in ("model_kwargs",) else v)
                         for k, v in (info.config or {}).items() if k in fields})
    cfg.model = info.model_name
    if img_size is not None:
        cfg.img_size = img_size
    if model_kwargs:
        cfg.model_kwargs = {**cfg.model_kwargs, **model_kwargs}
    return LoadedClassifier(net, cfg, info.class_names, info.num_classes, str(checkpoint),
                            extra={"epoch": info.epoch})


def evaluate_checkpoint(
    checkpoint: Union[str, os.PathLike],
    data_dir: Union[str, os.PathLike],
    split: str = "val",
    model: Optional[str] = None,
    img_size: Optional[int] = None,
    batch_size: int = 100,
    workers: int = 4,
    device: Optional[str] = None,
    amp: str = "auto",
    use_ema: bool = False,
    strict: bool = False,
    progress_kwargs: Optional[Dict[str, Any]] = None,
    model_kwargs: Optional[Dict[str, Any]] = None,
    optimize: bool = True,
) -> Dict[str, Any]:
    """Top-1, top-5 and loss of ``checkpoint`` on ``data_dir/split`` with the released evaluation
    transform (resize ``img_size / crop_pct``, bicubic, centre crop). Runs distributed under
    ``torchrun`` (each image evaluated once, sums reduced over processes). On a CPU the model runs
    through :func:`litvit.optimize` unless ``optimize`` is off."""
    ctx = init_distributed(device)
    try:
        loaded = load_classifier(checkpoint, model=model, img_size=img_size, use_ema=use_ema, model_kwargs=model_kwargs)
        if loaded.class_names is not None:
            samples, class_names = scan_image_folder(data_dir, split, loaded.class_names)
        else:
            samples, class_names = scan_image_folder(data_dir, split)
            if len(class_names) != loaded.num_classes:
                raise DataError(
                    f"checkpoint {checkpoint} has {loaded.num_classes} classes but {Path(data_dir) / split} "
                    f"has {len(class_names)} class folders"
                )
        dataset = ImageFolderDataset(samples, class_names, transform=build_transforms(loaded.cfg, False),
                                     strict=strict, on_bad="mask")
        loader = DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=EvalDistributedSampler(len(dataset), ctx.world_size, ctx.rank),
            num_workers=workers,
            collate_fn=collate_with_flags,
            pin_memory=ctx.device.type == "cuda",
        )
        net = optimize_for_device(loaded.model.to(ctx.device), ctx.device, optimize)
        stats = evaluate(net, loader, ctx.device, resolve_amp(amp, ctx.device), progress_kwargs=progress_kwargs)
        stats.update(checkpoint=str(checkpoint), model=loaded.cfg.model, split=str(Path(data_dir) / split),
                     img_size=loaded.cfg.img_size, world_size=ctx.world_size)
        return stats
    finally:
        cleanup()


@torch.no_grad()
def predict_images(
    loaded: LoadedClassifier,
    images: Sequence[Union[str, os.PathLike]],
    topk: int = 5,
    device: Optional[str] = None,
    batch_size: int = 32,
    amp: str = "auto",
    optimize: bool = True,
) -> List[Dict[str, Any]]:
    """Top-``topk`` classes of each image: ``[{"image", "top": [{"index", "name", "prob"}, ...]}]``.

    Names come from the checkpoint's recorded class folders, else ImageNet's for 1000 classes,
    else the index. ``amp`` picks the autocast dtype (:func:`~litvit.engine.amp.resolve_amp`); on a
    CPU the model runs through :func:`litvit.optimize` unless ``optimize`` is off.
    """
    from ..engine.distributed import resolve_device

    dev = resolve_device(device)
    names = display_class_names(loaded.num_classes, loaded.class_names)
    transform = build_transforms(loaded.cfg, False)
    net = optimize_for_device(loaded.model.to(dev).eval(), dev, optimize)
    amp_dtype = resolve_amp(amp, dev)
    k = max(1, min(topk, loaded.num_classes))
    results: List[Dict[str, Any]] = []
    paths = [Path(p) for p in images]
    for p in paths:
        if not p.is_file():
            raise DataError(f"image not found: {p}")
    for start in range(0, len(paths), batch_size):
        chunk = paths[start : start + batch_size]
        batch = []
        for p in chunk:
            try:
                batch.append(transform(load_image(p)))
            except Exception as err:
                raise DataError(f"cannot read image {p}: {str(err).splitlines()[0] if str(err) else type(err).__name__}") from None
        x = torch.stack(batch).to(dev)
        with autocast(dev, amp_dtype):
            logits = net(x)
        probs = logits.float().softmax(dim=1)
        top = probs.topk(k, dim=1)
        for p, values, indices in zip(chunk, top.values.tolist(), top.indices.tolist()):
            results.append({
                "image": str(p),
                "top": [
                    {"index": i, "name": names[i] if names is not None else str(i), "prob": v}
                    for v, i in zip(values, indices)
                ],
            })
    return results

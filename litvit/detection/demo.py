"""``litvit demo --task detect``: RetinaNet-LIT and Mask R-CNN-LIT on the synthetic shapes data, on the CPU.

Generates the COCO-format shapes dataset (if absent), trains each detector with the same
trainer as ``litvit detect train`` (the classification demo's small LIT as the backbone,
initialised from its checkpoint as the paper's detectors start from ImageNet weights; 128 px
images, smaller heads), evaluates it on the held-out split with the same pycocotools path as
``litvit detect eval``, and draws predictions for a few held-out images.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

__all__ = ["run_demo", "demo_overrides", "DEMO_DATA", "DEMO_COMMON", "DEMO_DETECTORS", "DEMO_OUTPUT"]

PathLike = Union[str, Path]
DEMO_OUTPUT = Path("runs/demo-detect")

# 600 training / 100 held-out 128 px images with 1-5 shapes (6 classes) each.
DEMO_DATA: Dict[str, Any] = dict(num_train=600, num_val=100, image_size=128, seed=0)

# The backbone is the classification demo's model and shape, initialised from its checkpoint
# (see demo_overrides): from scratch, the same schedules stay far below the demo's targets.
DEMO_COMMON: Dict[str, Any] = dict(
    drop_path=0.0,
    # The images are already small: no resizing. The shapes (radius 10-28 px) are about twice
    # the size the classifier saw (8-14 px at its 32 px input); measured, 128 px detects them
    # well, so the backbone's stride-8..32 maps need no rescaling of the images.
    min_size=128,
    max_size=128,
    batch_size=8,
    warmup_iters=50,
    hflip=0.5,
    workers=1,
    device="cpu",
    keep_last=1,
    log_every=25,
    eval_batch_size=8,
    # Held-out evaluation costs a few seconds per pass: every 4 epochs and after the last.
    eval_every=4,
)

# Objects are 17-58 px: anchors start at 16 px instead of 32 px; heads are narrower. With the
# classifier's backbone both converge in a few epochs at lr 1e-3 (measured held-out box AP50
# after epochs 4 / 8 / 12: RetinaNet 0.59 / 0.87 / 0.93, Mask R-CNN 0.91 / 0.99; RetinaNet from
# scratch 0.33 after 12), so the schedules are short, with the x0.1 steps near their ends.
DEMO_DETECTORS: Dict[str, Dict[str, Any]] = {
    "retinanet": dict(
        arch="retinanet",
        epochs=12,
        lr=1e-3,
        lr_steps=[9, 11],
        model_kwargs=dict(fpn_channels=64, head_convs=2, head_norm=True, octave_base_scale=2.0),
    ),
    "mask_rcnn": dict(
        arch="mask_rcnn",
        epochs=8,
        lr=1e-3,
        lr_steps=[6, 7],
        model_kwargs=dict(
            fpn_channels=64,
            box_head_dim=256,
            # The mask head (four 3x3 convs on every positive RoI) and CPU RoIAlign dominate a
            # step, not the backbone: a 32-channel head and 32 sampled RoIs per image (at most
            # 5 objects) make a step 25-35 % cheaper than 64 and 64.
            mask_head_channels=32,
            box_batch_size_per_image=32,
            anchor_sizes=[16, 32, 64, 128, 256],
            rpn_pre_nms_top_n_train=600,
            rpn_post_nms_top_n_train=300,
            rpn_pre_nms_top_n_test=300,
            rpn_post_nms_top_n_test=100,
            box_detections_per_img=30,
        ),
    ),
}


def _scratch_backbone(model: Optional[str] = None) -> Dict[str, Any]:
    """The backbone of a --from-scratch run: the classification demo's model (or ``model``) and
    shape (LIT-S layout: relative position bias, MLP-only stages 1-2, DTMs; narrowed for a 2-core
    CPU), so that --from-scratch differs from the default only in the initialisation."""
    from ..classification.demo import DEMO_SETTINGS as CLASSIFY_SETTINGS

    return dict(model=model or CLASSIFY_SETTINGS["model"], **CLASSIFY_SETTINGS["model_kwargs"])


def _threads(requested: Optional[int]) -> int:
    if requested:
        return int(requested)
    return max(1, min(4, os.cpu_count() or 1))


def _selected(detectors: Union[str, Sequence[str]]) -> List[str]:
    from ..errors import LitvitError

    names = [detectors] if isinstance(detectors, str) else list(detectors)
    if names in (["both"], ["all"]):
        return list(DEMO_DETECTORS)
    unknown = [n for n in names if n not in DEMO_DETECTORS]
    if unknown or not names:
        raise LitvitError(f"unknown demo detector {unknown[0] if unknown else ''!r}; choose retinanet, mask_rcnn or both")
    return names


def demo_overrides(name: str, classifier: Optional[Tuple[Path, Dict[str, Any]]],
                   image_size: int = DEMO_COMMON["min_size"], model: Optional[str] = None) -> Dict[str, Any]:
    """The ``litvit detect train`` settings of demo detector ``name``: :data:`DEMO_COMMON`, its
    :data:`DEMO_DETECTORS` entry and the backbone, which is the classification demo's model,
    shape and checkpoint when ``classifier`` (from
    :func:`litvit.classification.demo.classify_demo_backbone`) is given, and the same model and
    shape from scratch otherwise (with ``model``, default the classification demo's).
    ``image_size`` is the side of the (square) demo images."""
    if classifier is None:
        scratch = _scratch_backbone(model)
        model = scratch.pop("model")
        shape, checkpoint = scratch, None
    else:
        path, settings = classifier
        model = settings["model"]
        # Settings the classifier left at its model's defaults (None) stay at them here too.
        shape = {k: list(v) for k, v in settings.items() if k != "model" and v is not None}
        checkpoint = str(path)
    overrides = dict(DEMO_COMMON, **DEMO_DETECTORS[name], model=model, backbone_checkpoint=checkpoint,
                     min_size=image_size, max_size=image_size)
    # The relative position tables are built for (and the checkpoint's resized to) the image grid.
    overrides["backbone_kwargs"] = dict(shape, img_size=image_size)
    return overrides


def _classifier(model: str, from_scratch: bool, data_dir: PathLike, device: Optional[str], threads: Optional[int],
                seed: int) -> Optional[Tuple[Path, Dict[str, Any]]]:
    """The classification demo's checkpoint and settings; trains it first when it is missing."""
    from ..classification import demo as classify_demo

    if from_scratch:
        return None
    found = classify_demo.classify_demo_backbone_for(model)
    if found is None:
        # From scratch the detectors stay far below the demo's targets (RetinaNet: held-out box
        # AP50 0.33 after the same 12 epochs, 0.93 from the classifier); the classifier takes
        # a few minutes.
        print(f"[0/3] no {model} classification demo checkpoint at {classify_demo.CLASSIFY_DEMO_CHECKPOINT}: training the "
              "classification demo first (its backbone initialises the detectors; --from-scratch skips this)", flush=True)
        classify_demo.run_demo(data_dir, model=model, device=device, threads=threads, seed=seed)
        found = classify_demo.classify_demo_backbone_for(model)
    return found


def run_demo(
    data_dir: PathLike = "demo_data",
    output_dir: PathLike = DEMO_OUTPUT,
    *,
    detectors: Union[str, Sequence[str]] = "both",
    model: Optional[str] = None,
    epochs: Optional[int] = None,
    device: Optional[str] = None,
    threads: Optional[int] = None,
    seed: int = 0,
    from_scratch: bool = False,
    data: Optional[Mapping[str, Any]] = None,
    overrides: Optional[Mapping[str, Any]] = None,
    num_predictions: int = 4,
) -> Dict[str, Dict[str, Any]]:
    """Run the detection demo; returns per detector its held-out COCO ``metrics``, ``run_dir``
    and ``predictions`` folder.

    The data goes to ``<data_dir>/detect`` and the runs to ``<output_dir>/<detector>``.
    ``detectors`` is ``retinanet``, ``mask_rcnn``, ``both`` or a list of names; ``model`` the
    backbone (any LIT or LITv2 name, default the classification demo's). ``from_scratch``
    neither starts from the classification demo's checkpoint nor trains it when it is missing.
    ``data`` replaces entries of :data:`DEMO_DATA` (e.g. fewer images), ``overrides`` any
    ``litvit detect train`` setting of every detector; ``num_predictions`` held-out images are drawn.
    """
    import torch

    from ..classification.demo import demo_model
    from ..synthetic import generate_detection
    from .config import resolve_detect_config
    from .training import detector_from_checkpoint, save_atomic_json, train
    from .evaluate import format_summary
    from .predict import predict_images

    model = demo_model(model)  # a wrong name fails before any work
    data_settings = {**DEMO_DATA, **(data or {})}
    root = Path(data_dir)
    data_dir = root / "detect"
    output = Path(output_dir)
    names = _selected(detectors)
    start = time.time()
    # The classification demo keeps its own thread count unless one is asked for.
    classifier = _classifier(model, from_scratch, root, device, threads, seed)
    threads = _threads(threads)
    torch.set_num_threads(threads)
    if classifier is not None:
        print(f"backbone: {classifier[1]['model']} from the classification demo checkpoint {classifier[0]}", flush=True)
    else:
        print(f"backbone: {model} from scratch", flush=True)
    print(f"[1/3] synthetic COCO-format shapes data: {data_dir}", flush=True)
    generate_detection(data_dir, **data_settings)
    results: Dict[str, Dict[str, Any]] = {}
    for name in names:
        settings = dict(demo_overrides(name, classifier, data_settings["image_size"], model), **(overrides or {}),
                        data_root=str(data_dir), output=str(output / name), seed=seed, threads=threads)
        if epochs:
            settings["epochs"] = int(epochs)
        if device:
            settings["device"] = device
        cfg = resolve_detect_config(**settings)
        run_dir = Path(cfg.output)
        # A finished demo run starts afresh; an interrupted one continues where it stopped.
        if (run_dir / "eval.json").exists():
            for old in list(run_dir.glob("checkpoint-*.pth")) + [run_dir / "best.pth", run_dir / "metrics.jsonl", run_dir / "eval.json"]:
                old.unlink(missing_ok=True)
        cfg.resume = "auto"
        print(f"[2/3] training {name}-LIT for {cfg.epochs} epochs on {cfg.device} ({threads} threads) -> {run_dir}", flush=True)
        t0, cpu0 = time.time(), time.process_time()
        metrics = train(cfg)
        minutes, cpu_minutes = (time.time() - t0) / 60, (time.process_time() - cpu0) / 60
        print(f"{name}: held-out {format_summary(metrics)}  (training + evaluation {minutes:.1f} min wall, "
              f"{cpu_minutes:.1f} min CPU)", flush=True)

        # The same calls as ``litvit detect predict``.
        model, meta = detector_from_checkpoint(str(run_dir / f"checkpoint-epoch{cfg.epochs:03d}.pth"))
        images = sorted((data_dir / "images" / "val").glob("*.png"))[:num_predictions]
        drawings = run_dir / "predictions"
        summaries = predict_images(model, images, drawings, meta["categories"]["names"], torch.device(cfg.device), 0.3)
        save_atomic_json(drawings / "predictions.json", summaries)
        results[name] = dict(metrics=metrics, run_dir=run_dir, predictions=drawings, minutes=minutes,
                             cpu_minutes=cpu_minutes)

    print(f"[3/3] summary (COCO metrics from pycocotools on the {data_settings['num_val']} held-out images)")
    for name, result in results.items():
        metrics = result["metrics"]
        parts = [f"box AP50 {metrics['bbox']['AP50']:.3f} AP {metrics['bbox']['AP']:.3f}"]
        if "segm" in metrics:
            parts.append(f"mask AP50 {metrics['segm']['AP50']:.3f} AP {metrics['segm']['AP']:.3f}")
        print(f"  {name:10s} {', '.join(parts)}  ({result['minutes']:.1f} min wall, {result['cpu_minutes']:.1f} min CPU)  "
              f"drawings: {result['predictions']}")
    print(f"total time {(time.time() - start) / 60:.1f} min")
    return results

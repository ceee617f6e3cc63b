"""The classification demo: the shapes data set, a reduced LIT trained on the CPU in a few minutes.

:func:`run_demo` generates the data (if absent), trains with the same trainer as ``litvit train``,
evaluates the best checkpoint on the held-out split as ``litvit eval`` does, draws its curves and
the DTM sampling points of the trained model on a held-out image, and prints where everything is.
Its checkpoint also initialises the detection and segmentation demos' backbones
(:func:`classify_demo_backbone`).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple, Union

__all__ = ["run_demo", "classify_demo_backbone", "classify_demo_backbone_for", "demo_model", "DEMO_SETTINGS", "DEMO_DATA", "CLASSIFY_DEMO_CHECKPOINT",
           "DEMO_OUTPUT"]

PathLike = Union[str, Path]

# A LIT-S-shaped model (relative position bias, mean-pooled head, MLP-only first stages,
# DTM between stages), narrowed and shortened for a 2-core CPU, trained at 32 px; one
# torch thread plus one loader worker keeps both cores busy without oversubscribing them.
DEMO_SETTINGS: Dict[str, Any] = dict(
    model="lit_s",
    model_kwargs=dict(embed_dims=[32, 64, 128, 160], depths=[1, 1, 2, 1], num_heads=[1, 2, 4, 5], mlp_ratios=[4, 4, 4, 4]),
    img_size=32,
    drop_path=0.0,
    epochs=24,
    batch_size=32,
    lr=1e-3,
    min_lr=1e-5,
    warmup_lr=1e-5,
    scale_min_lr=False,
    warmup_epochs=2,
    clip_grad=5.0,
    # The shapes must survive the crop, and orientation does not define a class.
    auto_augment="none",
    scale=(0.5, 1.0),
    hflip=0.5,
    vflip=0.5,
    reprob=0.0,
    mixup=0.0,
    cutmix=0.0,
    smoothing=0.1,
    crop_pct=1.0,
    workers=1,
    persistent_workers=True,
    threads=1,
    device="cpu",
    keep_last=1,
)
# The generated data set: 6 shape classes, 1000 training and 100 held-out images each, 64 px.
DEMO_DATA: Dict[str, Any] = dict(num_train_per_class=1000, num_val_per_class=100, image_size=64, seed=0)

DEMO_OUTPUT = Path("runs/demo-classify")
# As in the paper, where dense-prediction backbones start from ImageNet weights: when the
# classification demo has been run (``litvit demo``), its checkpoint initialises the detection
# and segmentation demos' backbones (whose model and shape are then those of the classifier).
CLASSIFY_DEMO_CHECKPOINT = DEMO_OUTPUT / "best.pth"
_BACKBONE_KEYS = ("embed_dims", "depths", "num_heads", "mlp_ratios")


def classify_demo_backbone(path: PathLike = CLASSIFY_DEMO_CHECKPOINT) -> Optional[Tuple[Path, Dict[str, Any]]]:
    """The classification demo's checkpoint and the backbone settings it was trained with
    (``model`` plus the ``_BACKBONE_KEYS`` it sets), when it exists and holds a LIT model."""
    from ..checkpoint import read_checkpoint
    from ..errors import CheckpointError
    from ..models import LITV2_CONFIGS, MODEL_CONFIGS

    path = Path(path)
    if not path.is_file():
        return None
    try:
        saved = read_checkpoint(path)
    except CheckpointError:
        return None
    config = saved.get("config", {}) if isinstance(saved, dict) else {}
    if config.get("model") not in MODEL_CONFIGS and config.get("model") not in LITV2_CONFIGS:
        return None
    kwargs = config.get("model_kwargs") or {}
    settings: Dict[str, Any] = {"model": config["model"]}
    for key in _BACKBONE_KEYS:
        # Keys the classifier left at the model's defaults must not keep the demo's reductions.
        settings[key] = tuple(kwargs[key]) if key in kwargs else None
    return path, settings


def classify_demo_backbone_for(model: str) -> Optional[Tuple[Path, Dict[str, Any]]]:
    """:func:`classify_demo_backbone` when the classification demo's checkpoint holds ``model``,
    else None (and the dense demos train the classification demo again, with ``model``)."""
    found = classify_demo_backbone()
    if found is not None and found[1]["model"] != model:
        print(f"      the classification demo checkpoint {found[0]} holds {found[1]['model']}, not {model}", flush=True)
        return None
    return found


def demo_model(name: Optional[str] = None) -> str:
    """The model the demos train: ``name`` (any LIT or LITv2 model, narrowed to the demo's widths
    and depths), by default the classification demo's (lit_s). A wrong name fails before any work."""
    from ..errors import LitvitError
    from ..models import LIT_MODELS, LITV2_MODELS

    name = name or DEMO_SETTINGS["model"]
    if name not in LIT_MODELS and name not in LITV2_MODELS:
        raise LitvitError(f"the demos train a LIT model: --model takes {', '.join(LIT_MODELS + LITV2_MODELS)}, not {name!r}")
    return name


def run_demo(
    data_dir: PathLike = "demo_data",
    output_dir: PathLike = DEMO_OUTPUT,
    *,
    model: Optional[str] = None,
    epochs: Optional[int] = None,
    device: Optional[str] = None,
    threads: Optional[int] = None,
    seed: int = 0,
    optimize: bool = True,
    data: Optional[Mapping[str, Any]] = None,
    overrides: Optional[Mapping[str, Any]] = None,
) -> Dict[str, Any]:
    """Run the classification demo; returns the held-out ``stats`` and the paths it wrote
    (``checkpoint``, ``metrics``, ``curves``, ``offsets``).

    The data goes to ``<data_dir>/classify``. ``data`` replaces entries of :data:`DEMO_DATA`
    (e.g. fewer images per class) and ``overrides`` entries of :data:`DEMO_SETTINGS` (any
    ``litvit train`` setting); ``model``, ``epochs``, ``device`` and ``threads`` are shorthands for
    four of them. ``optimize=False`` trains and evaluates the plain model (no :func:`litvit.optimize`).
    """
    from ..synthetic import generate_classification
    from .config import resolve_train_config
    from .inference import evaluate_checkpoint
    from .train import train

    model = demo_model(model)
    start = time.time()
    data_dir = Path(data_dir) / "classify"
    output = Path(output_dir)
    print(f"[1/4] synthetic data: {data_dir}", flush=True)
    generate_classification(data_dir, **{**DEMO_DATA, **(data or {})})
    data_time = time.time() - start

    settings = dict(DEMO_SETTINGS, model=model, optimize=optimize)
    settings.update(overrides or {}, data_dir=str(data_dir), output=str(output), seed=seed)
    for key, value in (("epochs", epochs), ("device", device), ("threads", threads)):
        if value is not None:
            settings[key] = value
    # A finished demo run is started afresh; an interrupted one continues where it stopped.
    settings["resume"] = "auto"
    cfg = resolve_train_config(**settings)
    if _finished(output, cfg.epochs):
        for old in output.glob("checkpoint-*.pth"):
            old.unlink()
        for name in ("best.pth", "metrics.jsonl"):
            (output / name).unlink(missing_ok=True)
    print(f"[2/4] training {cfg.model} ({_describe(cfg)}) for {cfg.epochs} epochs on {cfg.device} -> {output}", flush=True)
    t0 = time.time()
    summary = train(cfg)
    train_time = time.time() - t0

    print("[3/4] evaluating the best checkpoint on the held-out split", flush=True)
    best = Path(summary.get("best_checkpoint") or summary.get("checkpoint"))
    stats = evaluate_checkpoint(best, data_dir, split="val", device=cfg.device, workers=0, batch_size=128,
                                progress_kwargs={"enabled": False}, optimize=cfg.optimize)

    print("[4/4] drawing the learned token-merging sampling points", flush=True)
    image = sorted((data_dir / "val").glob("*/*.png"))[0]
    offsets_png = _draw_offsets(best, image, output / "offsets.png", cfg)

    total = time.time() - start
    print()
    print(f"held-out top-1: {stats['top1']:.2f}%  top-5: {stats['top5']:.2f}%  loss: {stats['loss']:.4f}  "
          f"({stats['images']} images)")
    print(f"time: {total:.0f} s in all (data {data_time:.0f} s, training {train_time:.0f} s)")
    print(f"data:        {data_dir}")
    print(f"checkpoint:  {best}")
    print(f"metrics:     {output / 'metrics.jsonl'}")
    if summary.get("curves"):
        print(f"curves:      {summary['curves']}")
    if offsets_png:
        print(f"offsets:     {offsets_png}")
    print(f"next: litvit predict --checkpoint {best} {image}")
    return dict(stats=stats, checkpoint=best, metrics=output / "metrics.jsonl", curves=summary.get("curves"),
                offsets=offsets_png, data_dir=data_dir)


def _draw_offsets(checkpoint: Path, image: Path, target: Path, cfg: Any) -> Optional[Path]:
    """The trained model's DTM sampling points on ``image`` (``None`` when the picture fails)."""
    import torch

    from .inference import load_classifier

    try:
        from ..viz import render_offsets
    except ImportError:
        return None
    loaded = load_classifier(checkpoint)
    try:
        with torch.no_grad():
            return render_offsets(loaded.model, image, target, img_size=cfg.img_size, mean=cfg.mean, std=cfg.std,
                                  class_names=loaded.class_names)
    except Exception as err:  # the picture is a bonus; the demo result stands without it
        print(f"      (offset picture skipped: {err})")
        return None


def _describe(cfg: Any) -> str:
    kw = cfg.model_kwargs or {}
    dims = kw.get("embed_dims")
    depths = kw.get("depths")
    parts = [f"{cfg.img_size} px"]
    if dims:
        parts.append("widths " + "/".join(map(str, dims)))
    if depths:
        parts.append("depths " + "/".join(map(str, depths)))
    return ", ".join(parts)


def _finished(output: Path, epochs: int) -> bool:
    path = output / "metrics.jsonl"
    if not path.is_file():
        return False
    try:
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            if rec.get("kind") == "epoch" and rec.get("epoch", 0) >= epochs:
                return True
    except (OSError, ValueError):
        return True
    return False

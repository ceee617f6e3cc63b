"""``litvit detect train | eval | predict | convert``.

Heavy imports (torch, torchvision) happen inside the command functions so that
``litvit --help`` stays quick.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Dict

__all__ = ["add_parser"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from ..cli_options import deprecated_option
    from ..engine.amp import AMP_CHOICES
    from ..engine.config import add_config_arguments
    from .config import DetectTrainConfig

    detect = subparsers.add_parser(
        "detect",
        help="object detection / instance segmentation on COCO-format data (RetinaNet, Mask R-CNN)",
        description="RetinaNet-LIT and Mask R-CNN-LIT: train, evaluate with pycocotools, draw predictions.",
    )
    detect.set_defaults(func=lambda args: (detect.print_help(), 2)[1])
    sub = detect.add_subparsers(dest="detect_command", metavar="ACTION")

    train = sub.add_parser(
        "train",
        help="train a detector (released 1x recipe by default); run under torchrun for several GPUs",
        description="Train RetinaNet-LIT or Mask R-CNN-LIT on COCO-format data. Defaults are the released "
        "1x recipe: AdamW (lr 1e-4 RetinaNet / 2e-4 Mask R-CNN for 16 images per step, weight decay 1e-4), "
        "500-step linear warm-up, x0.1 after epochs 8 and 11, 12 epochs, resize to 1333x800, flip 0.5, "
        "2 images per process.",
    )
    add_config_arguments(train, DetectTrainConfig)
    train.add_argument("--output-dir", dest="output", default=argparse.SUPPRESS, metavar="DIR",
                       help="the same as --output: the run directory")
    train.set_defaults(func=_train)

    ev = sub.add_parser("eval", help="COCO box (and mask) AP of a trained detector with pycocotools",
                        description="Evaluate a 'litvit detect train' checkpoint on a COCO-format split; "
                        "prints the 12-number COCO summary per IoU type and writes a JSON. Works under torchrun.")
    ev.add_argument("--checkpoint", required=True, metavar="PATH",
                    help="checkpoint written by 'litvit detect train' (e.g. best.pth) or a released mmdetection file")
    _add_split_args(ev)
    ev.add_argument("--json", default=None, metavar="PATH",
                    help="where to write the metrics JSON (default: <checkpoint dir>/eval_<split>.json)")
    deprecated_option(ev, "--output", "--json", dest="json")
    ev.add_argument("--save-detections", default=None, metavar="JSON", help="also write the COCO-format detections")
    ev.add_argument("--batch-size", type=int, default=2, help="images per process")
    ev.add_argument("--workers", type=int, default=2)
    ev.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: GPU if available)")
    ev.add_argument("--amp", default="auto", choices=AMP_CHOICES,
                    help="autocast dtype: auto (fp16 on CUDA, as the released runs; none on CPU), bf16, fp16, none")
    ev.add_argument("--min-size", type=int, default=None, help="override the training resize (shorter side)")
    ev.add_argument("--max-size", type=int, default=None, help="override the training resize (longer side limit)")
    ev.add_argument("--skip-missing-images", action="store_true", help="leave out (and count) missing image files")
    ev.set_defaults(func=_eval)

    pr = sub.add_parser("predict", help="draw boxes, labels, scores and masks on images and save PNGs",
                        description="Run a 'litvit detect train' checkpoint on images and write, per image, "
                        "<stem>.png with the detections drawn, plus predictions.json with every detection kept.")
    pr.add_argument("--checkpoint", required=True, metavar="PATH",
                    help="checkpoint written by 'litvit detect train' or a released mmdetection file")
    pr.add_argument("inputs", nargs="+", metavar="images", help="image files or folders")
    pr.add_argument("--output-dir", default="predictions", help="where the PNGs (and predictions.json) go")
    pr.add_argument("--score-thresh", type=float, default=0.3, help="draw detections scoring at least this")
    pr.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: GPU if available)")
    pr.add_argument("--amp", default="auto", choices=AMP_CHOICES,
                    help="autocast dtype: auto (fp16 on CUDA, as the released runs; none on CPU), bf16, fp16, none")
    pr.add_argument("--min-size", type=int, default=None, help="override the training resize (shorter side)")
    pr.add_argument("--max-size", type=int, default=None, help="override the training resize (longer side limit)")
    pr.set_defaults(func=_predict)

    cv = sub.add_parser(
        "convert", help="write a litvit checkpoint from a released mmdetection RetinaNet / Mask R-CNN file",
        description="Map a released RetinaNet-LIT or Mask R-CNN-LIT checkpoint (mmdetection 2.x, e.g. "
        "retina_lit_ti.pth of the LIT release) onto litvit's model and save it with its architecture and COCO "
        "categories, so that 'detect eval' and 'predict' need nothing else. Every released tensor is used once or "
        "reported; nothing is written unless all fit. (eval, predict and train --init-checkpoint also read the "
        "released file directly.)",
    )
    cv.add_argument("src", help="released mmdetection checkpoint (.pth)")
    cv.add_argument("dst", help="litvit detection checkpoint to write")
    cv.set_defaults(func=_convert)


def _add_split_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-root", default=None, help="COCO 2017 layout root")
    parser.add_argument("--split", default="val", help="split under --data-root (val -> val2017)")
    parser.add_argument("--images", default=None, help="images folder (instead of --data-root)")
    parser.add_argument("--ann", default=None, help="instances JSON (instead of --data-root)")


def _overrides(args: argparse.Namespace) -> Dict[str, Any]:
    return {k: getattr(args, k) for k in ("min_size", "max_size") if getattr(args, k, None) is not None}


def _train(args: argparse.Namespace) -> int:
    from ..engine.config import dump_config
    from .config import resolve_detect_config
    from .training import train

    cfg = resolve_detect_config(args)
    if args.print_config:
        print(dump_config(cfg), end="")
        return 0
    train(cfg)
    return 0


def _eval(args: argparse.Namespace) -> int:
    import torch

    from ..engine import cleanup, get_logger, init_distributed, is_main_process, all_gather_object
    from ..engine.amp import resolve_amp
    from ..errors import DataError
    from .data import CocoDetectionDataset, coco_split_paths, eval_transforms
    from .training import detector_from_checkpoint, save_atomic_json
    from .evaluate import coco_evaluate, has_masks, run_inference

    if args.images or args.ann:
        if not (args.images and args.ann):
            raise DataError("give both --images and --ann")
        images, ann = Path(args.images), Path(args.ann)
    elif args.data_root:
        images, ann = coco_split_paths(args.data_root, args.split)
    else:
        raise DataError("no data: give --data-root (COCO layout) or --images and --ann")
    ctx = init_distributed(args.device)
    try:
        model, meta = detector_from_checkpoint(args.checkpoint, **_overrides(args))
        model.to(ctx.device)
        dataset = CocoDetectionDataset(
            images, ann, with_masks=False, label_offset=model.label_offset, train=False,
            transforms=eval_transforms(), skip_missing_images=args.skip_missing_images, log=ctx.is_main,
        )
        categories = (meta.get("categories") or {}).get("ids")
        if categories is not None and list(categories) != dataset.cat_ids:
            raise DataError(f"the categories of {ann} differ from those the checkpoint was trained on")
        get_logger("litvit.detection").info(f"evaluating {args.checkpoint} on {len(dataset)} images of {ann}")
        results = run_inference(model, dataset, ctx.device, args.batch_size, args.workers, resolve_amp(args.amp, ctx.device, auto_cuda=torch.float16))
        gathered = all_gather_object(results)
        if is_main_process():
            merged = [r for part in gathered for r in part]
            iou_types = ["bbox"] + (["segm"] if has_masks(model) else [])
            metrics = coco_evaluate(dataset.coco(), merged, iou_types, img_ids=dataset.image_ids)
            out = Path(args.json) if args.json else Path(args.checkpoint).parent / f"eval_{ann.stem}.json"
            out.parent.mkdir(parents=True, exist_ok=True)
            save_atomic_json(out, {"checkpoint": str(args.checkpoint), "annotations": str(ann),
                                   "images": len(dataset), "detections": len(merged), "metrics": metrics})
            print(f"metrics written to {out}")
            if args.save_detections:
                save_atomic_json(Path(args.save_detections), merged)
    finally:
        cleanup()
    return 0


def _predict(args: argparse.Namespace) -> int:
    import torch

    from ..engine.amp import resolve_amp
    from ..engine.distributed import resolve_device
    from .training import detector_from_checkpoint, save_atomic_json
    from .predict import list_images, predict_images

    files = list_images(args.inputs)
    model, meta = detector_from_checkpoint(args.checkpoint, **_overrides(args))
    names = (meta.get("categories") or {}).get("names") or [str(i) for i in range(model.num_object_classes)]
    device = resolve_device(args.device)
    amp_dtype = resolve_amp(args.amp, device, auto_cuda=torch.float16)
    summaries = predict_images(model, files, args.output_dir, names, device, args.score_thresh, amp_dtype=amp_dtype)
    save_atomic_json(Path(args.output_dir) / "predictions.json", summaries)
    total = sum(len(s["detections"]) for s in summaries)
    print(f"{len(files)} image(s), {total} detection(s) >= {args.score_thresh}: drawings in {args.output_dir}")
    return 0


def _convert(args: argparse.Namespace) -> int:
    from .released import write_converted

    report = write_converted(args.src, args.dst)
    print("\n".join(report.lines()))
    return 0

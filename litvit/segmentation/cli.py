"""``litvit segment train|eval|predict``: Semantic FPN-LIT on ADE20K or any folder of images + label PNGs."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Optional

__all__ = ["add_parser", "run_train", "run_eval", "run_predict"]

_EPILOG_TRAIN = """\
examples:
  # LIT-Ti, released ADE20K recipe (8 GPUs x 2 images, 80k iterations)
  torchrun --nproc_per_node 8 -m litvit.cli segment train --data-dir data/ADEChallengeData2016 \\
      --model lit_ti --backbone-checkpoint lit_ti.pth --output-dir runs/sem_fpn_lit_ti
  # any folder with images/{training,validation} and annotations/{training,validation}
  litvit segment train --data-dir my_data --dataset folder --num-classes 5 --iterations 2000 --batch-size 4
"""


def add_parser(subparsers: "argparse._SubParsersAction") -> None:
    from ..engine.config import add_config_arguments
    from .config import SegTrainConfig

    seg = subparsers.add_parser(
        "segment", help="semantic segmentation (Semantic FPN with LIT backbones)",
        description="Semantic segmentation with Semantic FPN on LIT backbones.",
    )
    sub = seg.add_subparsers(dest="segment_command", metavar="SUBCOMMAND")
    seg.set_defaults(func=lambda args: (seg.print_help(), 2)[1])

    p = sub.add_parser(
        "train", help="train Semantic FPN-LIT (released ADE20K recipe by default)",
        description="Train Semantic FPN-LIT. Defaults are the released ADE20K recipe; every setting "
        "can also come from a YAML file (--config). Run under torchrun for several GPUs.",
        epilog=_EPILOG_TRAIN, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_arguments(p, SegTrainConfig)
    p.set_defaults(func=run_train)

    p = sub.add_parser(
        "convert", help="write a litvit checkpoint from a released mmsegmentation Semantic FPN file",
        description="Map a released Semantic FPN-LIT checkpoint (mmsegmentation 0.x, e.g. sem_fpn_lit_ti.pth of the "
        "LIT release) onto litvit's model and save it with its ADE20K label convention and test scale, so that "
        "'segment eval' and 'predict' need nothing else. Every released tensor is used once or reported; nothing is "
        "written unless all fit. (eval, predict and train --init-checkpoint also read the released file directly.)",
    )
    p.add_argument("src", help="released mmsegmentation checkpoint (.pth)")
    p.add_argument("dst", help="litvit segmentation checkpoint to write")
    p.set_defaults(func=run_convert)

    p = sub.add_parser(
        "eval", help="mIoU / per-class IoU / accuracies of a trained checkpoint",
        description="Evaluate a 'litvit segment train' checkpoint: mIoU, per-class IoU, mean class "
        "accuracy and overall pixel accuracy from one confusion matrix (summed over processes "
        "under torchrun). Images are resized to fit --test-scale; predictions are compared with "
        "the labels at their original size.",
    )
    p.add_argument("--checkpoint", default=None, metavar="PATH",
                   help="checkpoint written by 'litvit segment train' (e.g. RUN/best.pth) or a released mmsegmentation file")
    p.add_argument("checkpoint_positional", nargs="?", default=None, help=argparse.SUPPRESS)
    p.add_argument("--data-dir", required=True, help="dataset root (images/<split>, annotations/<split>)")
    p.add_argument("--split", default="validation", help="sub-folder to evaluate (default: validation)")
    p.add_argument("--image-dirname", default="images")
    p.add_argument("--label-dirname", default="annotations")
    _add_inference_args(p)
    p.add_argument("--batch-size", type=int, default=1, help="images per process (default 1)")
    p.add_argument("--workers", type=int, default=2, help="data-loading processes (default 2)")
    p.add_argument("--bad-data", choices=("error", "skip"), default="error",
                   help="bad pairs or label values: error (default) or skip them / set them to ignore")
    p.add_argument("--json", metavar="PATH", default=None, help="also write the metrics as JSON ('-' for stdout)")
    p.set_defaults(func=run_eval)

    p = sub.add_parser(
        "predict", help="colour-coded masks and overlays for image files",
        description="Segment images and write, per image, <stem>_mask.png (palette PNG: pixel values "
        "are class indices, colours from a fixed palette) and <stem>_overlay.png (mask blended "
        "over the image).",
    )
    p.add_argument("--checkpoint", default=None, metavar="PATH", help="checkpoint written by 'litvit segment train' or a released mmsegmentation file")
    p.add_argument("images", nargs="+", help="image files or folders of images")
    p.add_argument("--output-dir", default="predictions", help="where to write the PNGs (default: predictions)")
    p.add_argument("--alpha", type=float, default=0.5, help="mask opacity in the overlay (default 0.5)")
    _add_inference_args(p)
    p.set_defaults(func=run_predict)


def _add_inference_args(p: argparse.ArgumentParser) -> None:
    from ..engine.amp import AMP_CHOICES

    p.add_argument("--mode", choices=("whole", "slide"), default="whole",
                   help="whole-image (default) or sliding-window inference")
    p.add_argument("--flip", action="store_true", help="average with the mirrored image")
    p.add_argument("--test-scale", type=int, nargs=2, default=None, metavar=("LONG", "SHORT"),
                   help="resize to fit this (default: the checkpoint's, 2048 512 for ADE20K); 0 0 keeps the size")
    p.add_argument("--slide-crop", type=int, nargs=2, default=(512, 512), metavar=("H", "W"))
    p.add_argument("--slide-stride", type=int, nargs=2, default=(341, 341), metavar=("H", "W"))
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: GPU if available)")
    p.add_argument("--amp", default="auto", choices=AMP_CHOICES,
                   help="autocast dtype: auto (fp16 on CUDA, as the released runs; none on CPU), bf16, fp16, none")


def run_train(args: argparse.Namespace) -> int:
    from ..engine.config import build_config, dump_config
    from .config import SegTrainConfig
    from .training import train

    cfg = build_config(SegTrainConfig, args)
    if args.print_config:
        print(dump_config(cfg), end="")
        return 0
    try:
        train(cfg)
    finally:
        from ..engine import cleanup

        cleanup()
    return 0


def run_eval(args: argparse.Namespace) -> int:
    import torch

    from ..engine import cleanup, get_logger, init_distributed
    from ..engine.amp import resolve_amp
    from ..fileio import write_text_atomic
    from ..cli_options import checkpoint_option
    from .training import DatasetInfo, build_dataset, evaluate, load_trained_model
    from .metrics import format_metrics
    from .predict import checkpoint_test_scale
    from .transforms import EvalPreset

    checkpoint_option(args)
    ctx = init_distributed(args.device)
    try:
        model, meta = load_trained_model(args.checkpoint, ctx.device)
        ds = meta["dataset"]
        info = DatasetInfo(ds["num_classes"], ds["reduce_zero_label"], ds["ignore_index"], list(ds["class_names"]))
        dataset = build_dataset(args.data_dir, args.split, info, EvalPreset(checkpoint_test_scale(meta, args.test_scale)), args.bad_data,
                                args.image_dirname, args.label_dirname)
        amp = resolve_amp(args.amp, ctx.device, auto_cuda=torch.float16)
        result = evaluate(model, dataset, ctx.device, args.mode, args.flip, args.slide_crop, args.slide_stride,
                          args.batch_size, args.workers, amp)
        if ctx.is_main:
            get_logger().info("%s on %s/%s (%d images):\n%s", args.checkpoint, args.data_dir, args.split, len(dataset),
                              format_metrics(result, info.class_names))
            if args.json:
                payload = {k: result[k] for k in ("mIoU", "mAcc", "aAcc", "pixels")}
                payload["per_class"] = {
                    n: {"IoU": _num(i), "Acc": _num(a)} for n, i, a in zip(info.class_names, result["IoU"], result["Acc"])
                }
                text = json.dumps(payload, indent=2)
                if args.json == "-":
                    print(text)
                else:
                    write_text_atomic(args.json, text + "\n")
    finally:
        cleanup()
    return 0


def _num(x: float) -> Optional[float]:
    return None if x != x else x  # NaN (class absent) -> null in JSON


def run_predict(args: argparse.Namespace) -> int:
    import torch

    from ..cli_options import checkpoint_and_inputs
    from ..engine import get_logger
    from ..engine.amp import resolve_amp
    from ..engine.distributed import resolve_device
    from .training import load_trained_model
    from .predict import predict_images

    checkpoint_and_inputs(args)
    device = resolve_device(args.device)
    amp_dtype = resolve_amp(args.amp, device, auto_cuda=torch.float16)
    model, meta = load_trained_model(args.checkpoint, device)
    results = predict_images(model, meta, args.images, args.output_dir, device=device, amp_dtype=amp_dtype,
                             test_scale=args.test_scale, mode=args.mode, flip=args.flip, slide_crop=args.slide_crop,
                             slide_stride=args.slide_stride, alpha=args.alpha)
    log = get_logger()
    for result in results:
        top = list(result["classes"].items())[:5]
        log.info("%s: %s", Path(result["image"]).name, ", ".join(f"{n} {100 * s:.1f}%" for n, s in top))
    log.info("wrote masks and overlays to %s", args.output_dir)
    return 0


def run_convert(args: argparse.Namespace) -> int:
    from .released import write_converted

    report = write_converted(args.src, args.dst)
    print("\n".join(report.lines()))
    return 0

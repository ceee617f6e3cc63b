"""``litvit data synth``: write the built-in synthetic shapes datasets."""
from __future__ import annotations

import argparse

_DEFAULTS = {
    # task: (num_train, num_val, image_size); classify counts are per class.
    "classify": (400, 100, 64),
    "detect": (600, 100, 128),
    "segment": (600, 100, 128),
}


def add_parser(subparsers: "argparse._SubParsersAction") -> None:
    from ..cli_options import deprecated_option

    data = subparsers.add_parser("data", help="dataset utilities (synthetic demo data)",
                                 description="Dataset utilities.")
    data_sub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    data.set_defaults(func=lambda args: (data.print_help(), 2)[1])

    p = data_sub.add_parser(
        "synth", help="write a deterministic synthetic shapes dataset",
        description="Write coloured geometric shapes on varied backgrounds: an image-folder "
        "classification set (root/{train,val}/<class>/), a COCO-format detection set "
        "(root/images/{train,val}/, root/annotations/instances_{train,val}.json) or an "
        "ADE20K-layout segmentation set (root/images/{training,validation}/, label PNGs in "
        "root/annotations/{training,validation}/ with 0 = ignore (unused), 1 = background, "
        "2.. = shapes, plus classes.txt). Nothing is regenerated when DIR already holds the "
        "same dataset.")
    p.add_argument("--task", choices=sorted(_DEFAULTS), required=True, help="which layout to write")
    p.add_argument("--output-dir", default=None, metavar="DIR", help="output directory (required)")
    deprecated_option(p, "--out", "--output-dir", dest="output_dir")
    p.add_argument("--num-train", type=int, default=None, metavar="N",
                   help="training images (per class for classify; defaults: classify 400, detect/segment 600)")
    p.add_argument("--num-val", type=int, default=None, metavar="N",
                   help="held-out images (per class for classify; default 100)")
    p.add_argument("--image-size", type=int, default=None, metavar="PX",
                   help="square image side (defaults: classify 64, detect/segment 128)")
    p.add_argument("--max-shapes", type=int, default=5, metavar="N",
                   help="most shapes per image for detect/segment (default 5)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a synthetic dataset made with other settings in DIR")
    p.set_defaults(func=run_synth)


def run_synth(args: argparse.Namespace) -> int:
    import time

    from ..cli_options import UsageError
    from .shapes import generate_classification, generate_detection, generate_segmentation

    if not args.output_dir:
        raise UsageError("give the output directory with --output-dir DIR")
    num_train, num_val, image_size = _DEFAULTS[args.task]
    num_train = num_train if args.num_train is None else args.num_train
    num_val = num_val if args.num_val is None else args.num_val
    image_size = image_size if args.image_size is None else args.image_size
    start = time.perf_counter()
    if args.task == "classify":
        root = generate_classification(args.output_dir, num_train_per_class=num_train, num_val_per_class=num_val,
                                       image_size=image_size, seed=args.seed, overwrite=args.overwrite)
    else:
        writer = generate_detection if args.task == "detect" else generate_segmentation
        root = writer(args.output_dir, num_train=num_train, num_val=num_val, image_size=image_size, seed=args.seed,
                      max_shapes=args.max_shapes, overwrite=args.overwrite)
    print(f"synthetic {args.task} dataset in {root} ({time.perf_counter() - start:.1f} s)")
    return 0

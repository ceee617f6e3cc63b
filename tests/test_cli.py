"""One command-line style across tasks: ``--checkpoint PATH``, images as positional arguments,
``--output-dir``, ``--device`` and ``--amp``; the old spellings still parse to the same
arguments for one release, each with one deprecation line on stderr."""
from __future__ import annotations

import argparse

import pytest

from litvit.cli import build_parser, main
from litvit.cli_options import UsageError, checkpoint_and_inputs, checkpoint_option


def _parse(argv):
    args = build_parser().parse_args(argv)
    if args.command in ("predict",) or getattr(args, "segment_command", None) == "predict":
        checkpoint_and_inputs(args)
    elif args.command == "eval" or getattr(args, "segment_command", None) == "eval":
        checkpoint_option(args)
    return vars(args)


def _same(old, new, capsys, warned):
    old_args = _parse(old)
    err = capsys.readouterr().err.strip().splitlines()
    new_args = _parse(new)
    assert capsys.readouterr().err == ""  # the new spelling warns about nothing
    old_args.pop("checkpoint_positional", None), new_args.pop("checkpoint_positional", None)
    for key in ("func", "old_images"):
        old_args.pop(key, None), new_args.pop(key, None)
    return old_args, new_args, err


@pytest.mark.parametrize("old, new, warned", [
    (["predict", "c.pth", "a.png", "b.png"], ["predict", "--checkpoint", "c.pth", "a.png", "b.png"], "first positional"),
    (["eval", "c.pth", "--data-dir", "d"], ["eval", "--checkpoint", "c.pth", "--data-dir", "d"], "positional"),
    (["segment", "predict", "c.pth", "a.png"], ["segment", "predict", "--checkpoint", "c.pth", "a.png"], "first positional"),
    (["segment", "eval", "c.pth", "--data-dir", "d"], ["segment", "eval", "--checkpoint", "c.pth", "--data-dir", "d"],
     "positional"),
    (["detect", "eval", "--checkpoint", "c.pth", "--data-root", "d", "--output", "m.json"],
     ["detect", "eval", "--checkpoint", "c.pth", "--data-root", "d", "--json", "m.json"], "--output"),
    (["demo", "--output", "o"], ["demo", "--output-dir", "o"], "--output"),
    (["export", "--model", "lit_ti", "--out", "m.onnx", "--use-ema"], ["export", "--model", "lit_ti", "--out", "m.onnx", "--ema"],
     "--use-ema"),
    (["data", "synth", "--task", "detect", "--out", "o"], ["data", "synth", "--task", "detect", "--output-dir", "o"],
     "--out"),
])
def test_old_spellings_parse_alike_and_warn_once(old, new, warned, capsys):
    old_args, new_args, err = _same(old, new, capsys, warned)
    assert old_args == new_args
    assert len(err) == 1 and "is deprecated" in err[0] and warned in err[0], err


def test_viz_old_spellings(capsys):
    old = _parse(["viz", "attention", "--image", "a.png", "b.png", "--out", "o", "--use-ema", "--checkpoint", "c"])
    assert len(capsys.readouterr().err.strip().splitlines()) == 3
    new = _parse(["viz", "attention", "a.png", "b.png", "--output-dir", "o", "--ema", "--checkpoint", "c"])
    assert old["old_images"] == new["images"] == ["a.png", "b.png"]
    assert (old["output_dir"], old["ema"]) == (new["output_dir"], new["ema"]) == ("o", True)


def test_train_accepts_output_dir_everywhere():
    parser = build_parser()
    assert parser.parse_args(["train", "--output-dir", "r"]).output == "r"
    assert parser.parse_args(["detect", "train", "--output-dir", "r"]).output == "r"
    assert parser.parse_args(["segment", "train", "--output-dir", "r"]).output_dir == "r"


def test_model_reading_verbs_share_flags():
    """Every verb that reads a model takes --checkpoint, --device (default: GPU if available) and,
    where inference runs under autocast, --amp."""
    parser = build_parser()
    verbs = {
        ("eval",): ["--data-dir", "d"], ("predict",): ["a.png"], ("segment", "eval"): ["--data-dir", "d"],
        ("segment", "predict"): ["a.png"], ("detect", "eval"): [], ("detect", "predict"): ["a.png"],
        ("viz", "offsets"): ["a.png"], ("viz", "attention"): ["a.png"],
    }
    for verb, rest in verbs.items():
        args = parser.parse_args([*verb, "--checkpoint", "c.pth", *rest])
        assert args.checkpoint == "c.pth" and args.device is None, verb
        if verb[0] != "viz":
            assert args.amp == "auto", verb
        if verb[-1] == "predict" or verb[0] == "viz":
            assert (args.images if hasattr(args, "images") else args.inputs) == ["a.png"], verb


def test_missing_or_doubled_checkpoint_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(UsageError, match="--checkpoint PATH"):
        checkpoint_and_inputs(argparse.Namespace(checkpoint=None, images=["a.png"]))
    with pytest.raises(UsageError, match="once"):
        checkpoint_option(argparse.Namespace(checkpoint="a.pth", checkpoint_positional="b.pth"))
    assert main(["segment", "eval", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["litvit segment: error: give the model with --checkpoint PATH"]

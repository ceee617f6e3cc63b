"""Checkpoint layouts, formats and the errors for checkpoints that do not fit."""
from __future__ import annotations

import pytest
import timm
import torch
from torch.testing import assert_close

import litvit
from conftest import TINY_KWARGS
from litvit.checkpoint import read_checkpoint, save_atomic
from litvit.errors import CheckpointError


class NotATensor:
    """A pickled object that is no tensor: weights_only loading must refuse it."""

    def __init__(self):
        self.payload = "code could run here"


@pytest.fixture
def source(tiny_lit):
    """A tiny LIT-S with non-default weights everywhere (offset predictors and BN statistics too)."""
    model = tiny_lit("lit_s")
    with torch.no_grad():
        for p in model.offset_parameters():
            p.normal_(0, 0.05)
        for stage in model.stages[1:]:
            stage.downsample.norm.running_mean.normal_(0, 0.1)
    return model


@pytest.fixture
def image():
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def load(path, name="lit_s", **kwargs):
    return litvit.create_model(name, checkpoint_path=path, **{**TINY_KWARGS, "num_classes": 10, **kwargs}).eval()


def same_outputs(a, b, x):
    with torch.no_grad():
        return torch.equal(a(x), b(x))


def perturbed_state(model):
    return {k: (v + 1.0 if v.is_floating_point() else v) for k, v in model.state_dict().items()}


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: sd,
        lambda sd: {"model": sd},
        lambda sd: {"state_dict": sd},
        lambda sd: {"model": {f"module.{k}": v for k, v in sd.items()}, "epoch": 4},
        lambda sd: {f"module.{k}": v for k, v in sd.items()},
    ],
    ids=["bare", "model", "state_dict", "ddp-in-model", "ddp-bare"],
)
def test_layouts(tmp_path, source, image, wrap):
    path = save_atomic(wrap(source.state_dict()), tmp_path / "ckpt.pth")
    assert same_outputs(load(path), source, image)


def test_training_checkpoint_with_ema(tmp_path, source, image):
    ema = load(None)
    ema.load_state_dict(perturbed_state(source))
    checkpoint = {
        "model": source.state_dict(),
        "model_ema": ema.state_dict(),
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.1}]},
        "epoch": 7,
        "config": {"model": "lit_s"},
    }
    path = save_atomic(checkpoint, tmp_path / "last.pth")
    assert same_outputs(load(path), source, image)
    assert same_outputs(load(path, use_ema=True), ema, image)
    assert not same_outputs(source, ema, image)
    # Asking for EMA weights where there are none is an error, not a silent fallback.
    plain = save_atomic({"model": source.state_dict()}, tmp_path / "plain.pth")
    with pytest.raises(CheckpointError, match="EMA"):
        load(plain, use_ema=True)


def test_safetensors(tmp_path, source, image):
    path = save_atomic(source.state_dict(), tmp_path / "weights.safetensors")
    assert path.read_bytes()[8:9] == b"{"  # a safetensors header, not a pickle
    assert same_outputs(load(path), source, image)


def test_timm_pretrained_file(tmp_path, source, image):
    path = save_atomic({"model": source.state_dict()}, tmp_path / "ckpt.pth")
    # timm keeps the classifier only when the pretrained config declares the same class count.
    overlay = dict(file=str(path), num_classes=10)
    model = timm.create_model("lit_s", pretrained=True, pretrained_cfg_overlay=overlay, num_classes=10, **TINY_KWARGS)
    assert same_outputs(model.eval(), source, image)
    # With the default config (1000 classes) timm drops the classifier as for fine-tuning.
    model = timm.create_model(
        "lit_s", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), num_classes=10, **TINY_KWARGS
    ).eval()
    assert not torch.equal(model.head.weight, source.head.weight)
    assert torch.equal(model.stages[2].downsample.offset_conv.weight, source.stages[2].downsample.offset_conv.weight)


def test_timm_pretrained_released_layout(parity_dir):
    # The released LIT-Ti layout goes through the same filter when timm loads the file.
    from test_models import parity_case

    model_name, kwargs, expected = parity_case(parity_dir, "lit_ti_tiny")
    path = parity_dir / "lit_ti_tiny.state_dict.pt"
    overlay = dict(file=str(path), num_classes=kwargs["num_classes"])
    model = timm.create_model(model_name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
    with torch.no_grad():
        logits = model.eval()(expected["input"].float())
    assert_close(logits, expected["logits"].float(), atol=1e-4, rtol=1e-4)


def test_other_architecture_lists_every_problem(tmp_path, tiny_lit):
    # LIT-Ti weights in a LIT-S model of the same widths: class token and absolute position
    # embeddings are unexpected, relative position tables missing, MLP widths differ.
    path = save_atomic(tiny_lit("lit_ti").state_dict(), tmp_path / "ti.pth")
    with pytest.raises(CheckpointError) as info:
        load(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    assert "missing keys: " in message and "relative_position_bias_table" in message
    assert "unexpected keys: " in message and "cls_token" in message
    assert "mis-shaped keys: " in message and "mlp.fc1.weight" in message


def test_other_class_count(tmp_path, source, image):
    path = save_atomic(source.state_dict(), tmp_path / "ckpt.pth")
    with pytest.raises(CheckpointError, match=r"head\.weight.*class count"):
        load(path, num_classes=5)
    model = load(path, num_classes=5, drop_mismatched_classifier=True)
    assert model.head.out_features == 5
    state, reference = model.state_dict(), source.state_dict()
    for key, value in state.items():
        if key.startswith("head."):
            assert value.shape != reference[key].shape
        else:
            assert torch.equal(value, reference[key]), key
    with torch.no_grad():
        assert_close(model.forward_head(model.forward_features(image), pre_logits=True),
                     source.forward_head(source.forward_features(image), pre_logits=True))


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_truncated_file(tmp_path, source, suffix):
    path = save_atomic(source.state_dict(), tmp_path / f"ckpt{suffix}")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="ckpt"):
        load(path)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load(tmp_path / "nope.pth")


def test_pickled_objects_are_refused(tmp_path, source):
    path = tmp_path / "evil.pth"
    torch.save({"model": source.state_dict(), "extra": NotATensor()}, path)
    with pytest.raises(CheckpointError, match="evil.pth"):
        read_checkpoint(path)
    with pytest.raises(CheckpointError):
        load(path)


def test_save_atomic_leaves_no_partial_file(tmp_path, source):
    path = save_atomic({"model": source.state_dict()}, tmp_path / "ckpt.pth")
    before = path.read_bytes()
    with pytest.raises(Exception):
        save_atomic({"bad": lambda: None}, path)  # cannot be pickled: the old file must survive
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pth"]


@pytest.mark.parametrize("name", ["lit_ti", "lit_s"])
def test_load_at_another_img_size(tmp_path, tiny_lit, image, name):
    source = tiny_lit(name)
    path = save_atomic(source.state_dict(), tmp_path / "ckpt.pth")
    # Same size: nothing is resized, outputs are bit-for-bit those of the source.
    assert same_outputs(load(path, name), source, image)

    model = load(path, name, img_size=(96, 128))
    assert model.stages[-1].grid == (3, 4)
    if name == "lit_ti":
        assert [tuple(s.pos_embed.shape) for s in model.stages] == [
            (1, 24 * 32, 16), (1, 12 * 16, 32), (1, 6 * 8, 40), (1, 1 + 3 * 4, 64)
        ]
    else:
        tables = [b.attn.relative_position_bias_table.shape for s in model.stages[2:] for b in s.blocks]
        assert tables == [(11 * 15, 5), (5 * 7, 8)]
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        out = model(x)
        # Resizing once at load time or on the fly at run time is the same interpolation.
        assert_close(out, source(x), atol=1e-5, rtol=1e-5)
    assert torch.isfinite(out).all()


def _count_torch_loads(monkeypatch):
    loads = []
    real = torch.load

    def counting(*args, **kwargs):
        loads.append(args[0] if args else kwargs.get("f"))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", counting)
    return loads


def test_model_from_checkpoint_needs_only_a_training_checkpoint(tmp_path, source, image, monkeypatch):
    model_kwargs = {k: v for k, v in TINY_KWARGS.items() if k != "img_size"}
    config = {"model": "lit_s", "img_size": 64, "model_kwargs": model_kwargs}
    path = save_atomic({"model": source.state_dict(), "config": config, "class_names": list("abcdefghij"),
                        "epoch": 3}, tmp_path / "run.pth")
    loads = _count_torch_loads(monkeypatch)
    model, info = litvit.model_from_checkpoint(path)
    assert len(loads) == 1  # the file is read once
    assert not model.training and same_outputs(model, source, image)
    assert (info.model_name, info.num_classes, info.epoch) == ("lit_s", 10, 3)
    assert info.class_names == list("abcdefghij") and info.config == config
    assert info.model_kwargs == {**model_kwargs, "img_size": 64}
    with pytest.raises(CheckpointError, match="holds a lit_s model, not lit_m"):
        litvit.model_from_checkpoint(path, model="lit_m")


def test_model_from_checkpoint_of_a_bare_state_dict(tmp_path, source, image):
    path = tmp_path / "released.pth"
    torch.save(source.state_dict(), path)
    with pytest.raises(CheckpointError, match="does not record its architecture"):
        litvit.model_from_checkpoint(path)
    # The class count comes from the classifier weights.
    model, info = litvit.model_from_checkpoint(path, model="lit_s", model_kwargs=TINY_KWARGS)
    assert info.num_classes == 10 and info.class_names is None and info.config is None
    assert same_outputs(model, source, image)
    with pytest.raises(CheckpointError, match="mis-shaped"):
        litvit.model_from_checkpoint(path, model="lit_s", num_classes=3, model_kwargs=TINY_KWARGS)


def test_export_reads_the_checkpoint_once(tmp_path, source, monkeypatch):
    from litvit.export import build_export_model

    path = tmp_path / "tiny.pth"
    torch.save({"model": source.state_dict()}, path)
    loads = _count_torch_loads(monkeypatch)
    model, meta = build_export_model("classify", "lit_s", path, **TINY_KWARGS)
    assert len(loads) == 1 and model.head.out_features == 10 and meta["litvit.model"] == "lit_s"

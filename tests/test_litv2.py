"""The LITv2 models: parity with the released implementation, exact sizes, the released key
layout, HiLo's alpha / window variants and padding, dense features and timm's model API
(TorchScript and torch.fx included)."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Dict

import pytest
import timm
import torch
import torch.nn.functional as F
from torch.testing import assert_close

import litvit
from litvit.checkpoint import load_model_weights
from litvit.models import LITV2_MODELS, LITv2, litv2_checkpoint_filter_fn
from litvit.models.litv2 import HiLoAttention, set_reference_path

EXACT_PARAMS = {"litv2_s": 27_844_000, "litv2_m": 48_830_368, "litv2_b": 86_520_704, "litv2_b_384": 86_520_704}
# A tiny LITv2: every structural feature (two FFN stages, three DTMs, HiLo with both groups).
TINY = dict(embed_dims=(16, 32, 64, 128), depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8), img_size=64, num_classes=10)


def tiny_litv2(**overrides: Any) -> LITv2:
    torch.manual_seed(0)
    return timm.create_model("litv2_s", **{**TINY, **overrides}).eval()


# ----------------------------------------------------------------------------- parity
def case_kwargs(case: Dict[str, Any]) -> Dict[str, Any]:
    """``timm.create_model`` arguments for one architecture of ``parity_litv2/cases.json``."""
    depths = case["depths"]
    return dict(
        img_size=case["img_size"],
        patch_size=case["patch_size"],
        embed_dims=tuple(case["embed_dim"] * 2**i for i in range(len(depths))),  # the width doubles per stage
        depths=tuple(depths),
        num_heads=tuple(case["num_heads"]),
        mlp_ratios=(case["mlp_ratio"],) * len(depths),
        qkv_bias=case["qkv_bias"],
        alpha=case["alpha"],
        local_ws=tuple(case["local_ws"]),
        norm_eps=case["layer_norm_eps"],
        num_classes=case["num_classes"],
    )


PARITY_CASES = ["litv2_tiny", "litv2_tiny_alpha0", "litv2_tiny_ws4"]


@pytest.mark.parametrize("reference", [False, True], ids=["fast", "reference"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("case", PARITY_CASES)
def test_parity_with_released_implementation(parity_v2_dir, tmp_path, case, dtype, reference):
    kwargs = case_kwargs(json.loads((parity_v2_dir / "cases.json").read_text())[case])
    expected = torch.load(parity_v2_dir / f"{case}.expected.pt", weights_only=True)
    # The released files wrap the weights: {"model": state_dict, ...}.
    checkpoint = tmp_path / "released.pth"
    torch.save({"model": torch.load(parity_v2_dir / f"{case}.state_dict.pt", weights_only=True), "epoch": 3}, checkpoint)
    model = litvit.create_model("litv2_s", checkpoint_path=checkpoint, **kwargs).eval().to(dtype)
    set_reference_path(model, reference)

    x = expected["input"].to(dtype)
    with torch.no_grad():
        features = model.forward_head(model.forward_features(x), pre_logits=True)
        logits, offsets = model.forward_with_offsets(x)
    tol = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float64 else dict(atol=1e-4, rtol=1e-4)
    assert_close(logits, expected["logits"].to(dtype), **tol)
    assert_close(features, expected["features"].to(dtype), **tol)
    assert len(offsets) == len(expected["offsets"]) == 3
    for got, want in zip(offsets, expected["offsets"]):
        assert_close(got, want.to(dtype), **tol)
    # The weights are not trivial: a model left at its initial values gives other logits.
    fresh = timm.create_model("litv2_s", **kwargs).eval().to(dtype)
    with torch.no_grad():
        assert not torch.allclose(fresh(x), expected["logits"].to(dtype), atol=1e-3)


# ----------------------------------------------------------------------------- full-size models
def meta_model(name: str, **kwargs: Any) -> LITv2:
    with torch.device("meta"):  # shapes only: building LITv2-B with its weights takes seconds
        return timm.create_model(name, **kwargs)


def test_registered_with_timm():
    assert set(LITV2_MODELS) == set(EXACT_PARAMS)
    assert set(timm.list_models("litv2_*")) >= set(LITV2_MODELS)
    cfg = timm.get_pretrained_cfg("litv2_b_384")
    assert cfg.url.endswith("/releases/download/v1.0/litv2_b_384.pth") and cfg.input_size == (3, 384, 384)
    assert cfg.crop_pct == 1.0 and timm.get_pretrained_cfg("litv2_s").crop_pct == 0.875


@pytest.mark.parametrize("name", list(EXACT_PARAMS))
def test_exact_parameter_count(name):
    assert sum(p.numel() for p in meta_model(name).parameters()) == EXACT_PARAMS[name]


def released_state_dict(path: Path) -> Dict[str, torch.Tensor]:
    """Meta tensors with the names, shapes and dtypes of a released checkpoint listing."""
    dtypes = {"float32": torch.float32, "int64": torch.int64}
    state_dict = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, shape, dtype = line.split("\t")
            dims = tuple(int(d) for d in re.findall(r"\d+", shape))
            state_dict[name] = torch.empty(dims, dtype=dtypes[dtype], device="meta")
    return state_dict


@pytest.mark.parametrize("local_ws", [2, 4], ids=["window2", "window4"])
@pytest.mark.parametrize("name", ["litv2_s", "litv2_m", "litv2_b"])
def test_released_key_layout_maps_one_to_one(released_keys_dir, name, local_ws):
    released = released_state_dict(released_keys_dir / f"official_state_dict_{name}.txt")
    assert sum(v.numel() for k, v in released.items() if v.is_floating_point() and "running_" not in k) == EXACT_PARAMS[name]
    model = meta_model(name, local_ws=local_ws)  # the window changes no shape: the ws-4 backbones load the same file
    mapped = litv2_checkpoint_filter_fn({"model": released}, model)
    expected = model.state_dict()
    assert len(mapped) == len(released) and set(mapped) == set(expected)
    assert all(mapped[k].shape == expected[k].shape for k in expected)


@pytest.mark.parametrize("alpha", [0.0, 0.2, 0.4, 0.5, 0.7, 0.9, 1.0])
def test_alpha_sweep_head_split(alpha):
    # The released alpha-sweep LITv2-S files: int(12 * alpha) Lo-Fi heads of 32 channels in stage 3.
    attn = meta_model("litv2_s", alpha=alpha).stages[2].blocks[0].attn
    lofi = int(12 * alpha)
    assert (attn.lofi_heads, attn.hifi_heads) == (lofi, 12 - lofi)
    assert (attn.lofi_q is None) == (lofi == 0) and (attn.hifi_qkv is None) == (lofi == 12)
    if lofi:
        assert attn.lofi_kv.weight.shape == (2 * 32 * lofi, 384)
    # Window 1 in stage 4: plain multi-head attention over all 24 heads, whatever alpha.
    stage4 = meta_model("litv2_s", alpha=alpha).stages[3].blocks[0].attn
    assert (stage4.lofi_heads, stage4.hifi_heads) == (24, 0)


# ----------------------------------------------------------------------------- HiLo
@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("window, grid", [(2, (4, 6)), (4, (6, 6)), (4, (5, 7)), (1, (3, 5))])
def test_hilo_fast_path_equals_reference(alpha, window, grid):
    torch.manual_seed(0)
    attn = HiLoAttention(32, 4, window=window, alpha=alpha).eval()
    x = torch.randn(2, grid[0] * grid[1], 32)
    with torch.no_grad():
        fast = attn(x, grid)
        attn.fused_attn = False
        reference = attn(x, grid)
    assert fast.shape == x.shape
    assert_close(fast, reference, atol=1e-5, rtol=1e-5)


def test_hilo_pads_like_the_released_dense_backbone():
    # A map that does not divide by the window is zero-padded at the bottom and right, both
    # branches run on the padded map, and the padding is cropped away.
    torch.manual_seed(0)
    attn = HiLoAttention(32, 4, window=4, alpha=0.5).eval()
    x = torch.randn(1, 6, 6, 32)
    padded = F.pad(x, (0, 0, 0, 2, 0, 2))
    with torch.no_grad():
        out = attn(x.reshape(1, 36, 32), (6, 6)).reshape(1, 6, 6, 32)
        want = torch.cat([attn.hifi(padded), attn.lofi(padded)], dim=-1)[:, :6, :6]
        assert_close(out, want)
        # A window clear of the padding is the Hi-Fi attention of those 16 tokens alone.
        assert_close(out[:, :4, :4, :16], attn.hifi(x[:, :4, :4].contiguous()))


@pytest.mark.parametrize("size", [(64, 64), (96, 64), (128, 96)])
def test_other_input_sizes(size):
    model = tiny_litv2(local_ws=4)  # stage 3 of a 96 px side is 6 tokens: padded to 8
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        assert model(x).shape == (1, 10)
        assert model.forward_features(x).shape == (1, 128, size[0] // 32, size[1] // 32)


def test_wrong_input_size_is_a_clear_error():
    with pytest.raises(ValueError, match="divisible by 32"):
        tiny_litv2()(torch.randn(1, 3, 48, 64))


# ----------------------------------------------------------------------------- dense features
def test_forward_intermediates_agree_with_forward_features():
    model = tiny_litv2()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        final, maps = model.forward_intermediates(x)
        assert_close(final, model.forward_features(x))
        assert [tuple(m.shape) for m in maps] == [(2, 16, 16, 16), (2, 32, 8, 8), (2, 64, 4, 4), (2, 128, 2, 2)]
        assert_close(model.forward_intermediates(x, indices=1, norm=True, intermediates_only=True)[0], final)
        assert len(model.forward_intermediates(x, indices=[1], stop_early=True, intermediates_only=True)) == 1


def test_features_only():
    torch.manual_seed(0)
    model = timm.create_model("litv2_s", features_only=True, **{k: v for k, v in TINY.items() if k != "num_classes"})
    assert model.feature_info.channels() == [16, 32, 64, 128]
    assert model.feature_info.reduction() == [4, 8, 16, 32]
    assert model.model.feature_norms is not None  # the released dense backbones normalise stages 2-4
    x = torch.randn(1, 3, 64, 96)
    maps = model(x)
    assert [tuple(m.shape[-2:]) for m in maps] == [(16, 24), (8, 12), (4, 6), (2, 3)]
    out = timm.create_model("litv2_s", features_only=True, out_indices=(2, 3), **{k: v for k, v in TINY.items() if k != "num_classes"})
    assert out.feature_info.channels() == [64, 128]


def test_create_backbone_from_released_checkpoint(parity_v2_dir, tmp_path):
    kwargs = case_kwargs(json.loads((parity_v2_dir / "cases.json").read_text())["litv2_tiny"])
    kwargs.pop("num_classes")
    checkpoint = tmp_path / "released.pth"
    torch.save({"model": torch.load(parity_v2_dir / "litv2_tiny.state_dict.pt", weights_only=True)}, checkpoint)
    backbone = litvit.create_backbone("litv2_s", checkpoint_path=checkpoint, **kwargs).eval()
    classifier = litvit.create_model("litv2_s", checkpoint_path=checkpoint, num_classes=10, **kwargs).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        maps = backbone.forward_intermediates(x, intermediates_only=True)
        plain = classifier.forward_intermediates(x, intermediates_only=True)
    assert backbone.feature_norms is not None
    assert_close(maps[0], plain[0])  # stage 1 leaves without a norm; the weights are the released ones


# ----------------------------------------------------------------------------- timm model API
def test_timm_model_api():
    model = tiny_litv2()
    from timm.models import group_parameters
    from timm.optim import create_optimizer_v2

    groups = create_optimizer_v2(model, "adamw", weight_decay=0.05).param_groups
    decayed = [p for g in groups if g["weight_decay"] > 0 for p in g["params"]]
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    assert decayed and all(p.ndim > 1 for p in decayed)  # biases and norms are not decayed
    assert model.no_weight_decay() == set()
    grouped = group_parameters(model, model.group_matcher())
    assert sum(len(v) for v in grouped.values()) == len(list(model.parameters()))
    assert model.get_classifier() is model.head
    model.reset_classifier(5)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 5)
    model.reset_classifier(0, "")
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 128, 2, 2)
    assert len(model.offset_parameters()) == 6  # three DTMs, weight and bias each


def test_grad_checkpointing_gives_the_same_gradients():
    model = tiny_litv2(drop_path_rate=0.0)
    x = torch.randn(2, 3, 64, 64)
    model.forward(x).sum().backward()
    plain = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.set_grad_checkpointing(True)
    model.forward(x).sum().backward()
    for want, p in zip(plain, model.parameters()):
        assert_close(p.grad, want)


def test_prune_intermediate_layers():
    model = tiny_litv2()
    assert model.prune_intermediate_layers([1, 2]) == [1, 2]
    assert len(model.stages) == 3 and isinstance(model.head, torch.nn.Identity)
    maps = model.forward_intermediates(torch.randn(1, 3, 64, 64), indices=[1, 2], intermediates_only=True)
    assert [m.shape[1] for m in maps] == [32, 64]


# ----------------------------------------------------------------------------- TorchScript and fx
def with_offsets(model: LITv2) -> LITv2:
    """Non-zero DTM offsets, so that deformable sampling leaves the regular grid."""
    torch.manual_seed(2)
    with torch.no_grad():
        for stage in model.stages:
            if stage.downsample is not None:
                stage.downsample.offset_conv.weight.normal_(0, 0.5)
                stage.downsample.offset_conv.bias.normal_(0, 0.5)
    return model


# With window 4, a 96 px side gives stage 3 six tokens: padded to eight.
SIZES = ((64, 64), (96, 64))


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
@pytest.mark.parametrize("local_ws", [2, 4], ids=["window2", "window4"])
def test_torchscript_matches_eager(local_ws):
    model = with_offsets(tiny_litv2(local_ws=local_ws))
    scripted = torch.jit.script(model)
    for size in SIZES:
        x = torch.randn(2, 3, *size)
        with torch.no_grad():
            # The scripted DTM runs torchvision's deform_conv2d, the eager one grid_sample.
            assert_close(scripted(x), model(x), atol=1e-5, rtol=1e-5)
            assert_close(scripted.forward_features(x), model.forward_features(x), atol=1e-5, rtol=1e-5)


def test_fx_trace_matches_eager_at_any_size():
    model = with_offsets(tiny_litv2(local_ws=4))
    traced = torch.fx.symbolic_trace(model)
    with torch.no_grad():
        for size in SIZES:
            x = torch.randn(2, 3, *size)
            assert torch.equal(traced(x), model(x))


@pytest.mark.filterwarnings("ignore:NOTE. The nodes obtained by tracing")
def test_fx_feature_extractor_trains():
    from timm.models import create_feature_extractor

    model = tiny_litv2(drop_path_rate=0.1).train()
    extractor = create_feature_extractor(model, return_nodes={"stages.2": "stage3", "head": "logits"})
    out = extractor(torch.randn(2, 3, 64, 96))
    assert out["logits"].shape == (2, 10) and out["stage3"][0].shape[-1] == 64
    (out["logits"].sum() + out["stage3"][0].sum()).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_torch_export_matches_eager():
    model = tiny_litv2()
    x = torch.randn(1, 3, 64, 64)
    exported = torch.export.export(model, (x,))
    with torch.no_grad():
        assert_close(exported.module()(x), model(x))


# ----------------------------------------------------------------------------- litvit info
def test_info_counts_match_the_paper():
    from litvit.info import count_model

    row = count_model("litv2_s")
    assert row["params"] == EXACT_PARAMS["litv2_s"]
    # Table 1 of the LITv2 paper: 28M parameters, 3.7 GFLOPs (multiply-accumulates) at 224 px.
    assert row["paper_params_m"] == 28 and row["gmacs"] == pytest.approx(3.7, rel=0.01)
    # HiLo's two branches run through SDPA, which the counter must see (0.045 GMACs in LITv2-S).
    assert row["gmacs_by_op"]["_scaled_dot_product_flash_attention_for_cpu"] == pytest.approx(0.045, abs=0.002)


# ----------------------------------------------------------------------------- classification
def test_released_recipe_defaults():
    from litvit.classification.build import param_groups
    from litvit.classification.config import resolve_train_config

    rates = [resolve_train_config(model=m).drop_path for m in ("litv2_s", "litv2_m", "litv2_b")]
    assert rates == [0.2, 0.3, 0.5]
    cfg = resolve_train_config(model="litv2_s")
    assert (cfg.clip_grad, cfg.warmup_epochs, cfg.offset_lr_scale, cfg.weight_decay) == (5.0, 20, 0.01, 0.05)
    fine = resolve_train_config(model="litv2_b_384")
    assert (fine.img_size, fine.crop_pct, fine.epochs, fine.base_lr) == (384, 1.0, 30, 2e-5)
    groups = {g["name"]: g for g in param_groups(tiny_litv2(), 0.05, 0.01)}
    assert groups["offset_decay"]["lr_scale"] == 0.01 and len(groups["offset_decay"]["params"]) == 3


def test_train_and_reload_a_tiny_litv2(tmp_path):
    from litvit.classification.config import resolve_train_config
    from litvit.classification.inference import load_classifier
    from litvit.classification.train import train
    from litvit.synthetic import generate_classification

    data = generate_classification(tmp_path / "shapes", num_train_per_class=2, num_val_per_class=1, image_size=32, seed=0)
    tiny = {k: list(v) for k, v in TINY.items() if k not in ("img_size", "num_classes")}
    cfg = resolve_train_config(
        model="litv2_s", model_kwargs=tiny, data_dir=str(data), output=str(tmp_path / "run"), img_size=32,
        batch_size=4, epochs=1, warmup_epochs=0, mixup=0.0, cutmix=0.0, workers=0, device="cpu", progress="none",
        threads=1,
    )
    train(cfg)
    loaded = load_classifier(tmp_path / "run" / "best.pth")
    assert isinstance(loaded.model, LITv2) and loaded.model.local_ws == [0, 0, 2, 1]


# ----------------------------------------------------------------------------- dense tasks
BACKBONE = {k: v for k, v in TINY.items() if k != "num_classes"}


@pytest.mark.parametrize("arch", ["retinanet", "mask_rcnn"])
def test_detectors_with_a_window4_litv2_backbone(arch):
    from litvit.detection.models import build_detector

    torch.manual_seed(0)
    small = dict(fpn_channels=32) if arch == "retinanet" else dict(fpn_channels=32, box_head_dim=32, mask_head_channels=16)
    model = build_detector(arch, "litv2_s", 3, backbone_kwargs=dict(BACKBONE, local_ws=4), min_size=64, max_size=96, **small)
    assert model.backbone.body.local_ws == [0, 0, 4, 1] and model.backbone.body.feature_norms is not None
    images = [torch.rand(3, 64, 96)]  # stage 3 is 4 x 6 tokens: HiLo pads it to 4 x 8
    targets = [{"boxes": torch.tensor([[8.0, 8.0, 40.0, 50.0]]), "labels": torch.tensor([1])}]
    if arch == "mask_rcnn":
        targets[0]["masks"] = torch.zeros(1, 64, 96, dtype=torch.uint8)
        targets[0]["masks"][0, 8:50, 8:40] = 1
    losses = model.train()(images, targets)
    sum(losses.values()).backward()
    offset_conv = model.backbone.body.stages[1].downsample.offset_conv
    assert offset_conv.weight.grad is not None and offset_conv.weight.grad.abs().sum() > 0
    with torch.no_grad():
        (out,) = model.eval()(images)
    assert out["boxes"].shape[1] == 4


def test_semantic_fpn_with_a_litv2_backbone():
    from litvit.segmentation.models import semantic_fpn_lit

    torch.manual_seed(0)
    model = semantic_fpn_lit("litv2_s", num_classes=5, fpn_channels=16, head_channels=16, drop_path_rate=0.0, **BACKBONE).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 64, 96)).shape == (1, 5, 64, 96)


# ----------------------------------------------------------------------------- visualisation
def test_hilo_attention_probs_reproduce_the_output():
    torch.manual_seed(0)
    attn = HiLoAttention(32, 4, window=2, alpha=0.5).eval()
    x = torch.randn(1, 16, 32)
    with torch.no_grad():
        out, probs = attn(x, (4, 4)), attn.attention_probs(x, (4, 4))
        assert probs.shape == (1, 4, 16, 16)
        assert_close(probs.sum(-1), torch.ones(1, 4, 16))
        # Hi-Fi heads (first) see only the query's window: token 0's window is tokens 0, 1, 4, 5.
        assert probs[0, :2, 0].nonzero()[:, 1].unique().tolist() == [0, 1, 4, 5]
        # Lo-Fi heads spread a pooled key's weight evenly over the four tokens it averages.
        assert_close(probs[0, 2:, :, 0], probs[0, 2:, :, 5])
        # The Lo-Fi weights applied to the pooled values give the Lo-Fi branch's output.
        grid_x = x.view(1, 4, 4, 32)
        _, _, v = attn._lofi_qkv(grid_x)  # 1 x heads x 4 pooled keys x head_dim
        pooled_key = torch.tensor([0, 0, 1, 1, 0, 0, 1, 1, 2, 2, 3, 3, 2, 2, 3, 3])
        lofi = (probs[:, 2:] @ v[:, :, pooled_key]).transpose(1, 2).reshape(1, 4, 4, 16)
        assert_close(out.view(1, 4, 4, 32)[..., 16:], attn.lofi_proj(lofi), atol=1e-5, rtol=1e-5)


def test_viz_cli_with_litv2(tmp_path, capsys):
    from PIL import Image

    from litvit.checkpoint import save_atomic
    from litvit.cli import main
    from litvit.viz.attention import attention_maps

    model = tiny_litv2()
    maps = attention_maps(model, torch.randn(3, 64, 64), query=(10, 20))
    assert [(b["stage"], b["block"]) for b in maps["blocks"]] == [(3, 0), (3, 1), (4, 0)]
    checkpoint = tmp_path / "tiny.pth"
    kwargs = {k: list(v) for k, v in TINY.items() if k not in ("img_size", "num_classes")}
    save_atomic({"model": model.state_dict(), "config": {"model": "litv2_s", "img_size": 64, "model_kwargs": kwargs}}, checkpoint)
    image = tmp_path / "img.png"
    Image.fromarray((torch.rand(50, 70, 3) * 255).byte().numpy()).save(image)
    assert main(["viz", "offsets", "--checkpoint", str(checkpoint), "--image", str(image), "--out", str(tmp_path)]) == 0
    assert main(["viz", "attention", "--model", "litv2_s", "--checkpoint", str(checkpoint), "--image", str(image),
                 "--out", str(tmp_path)]) == 0
    assert (tmp_path / "img_offsets.png").stat().st_size > 0 and (tmp_path / "img_attention.png").stat().st_size > 0

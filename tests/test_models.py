"""The four LIT models: parity with the released implementation, exact sizes, released key
layouts, any input size, dense features and DTM offsets."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Dict

import pytest
import timm
import torch
from torch.testing import assert_close

import litvit
from conftest import TINY_KWARGS
from litvit.checkpoint import load_model_weights
from litvit.models import LIT_MODELS, checkpoint_filter_fn
from litvit.models import pos_embed as pos_embed_module

EXACT_PARAMS = {"lit_ti": 19_886_272, "lit_s": 27_973_720, "lit_m": 49_372_264, "lit_b": 87_292_384}


# ----------------------------------------------------------------------------- parity
def case_kwargs(case: Dict[str, Any]) -> Dict[str, Any]:
    """``timm.create_model`` arguments for one architecture of ``parity/cases.json``."""
    depths = case["depths"]
    if "embed_dims" in case:
        embed_dims = case["embed_dims"]
    else:  # LIT-S/M/B double the width at every stage
        embed_dims = [case["embed_dim"] * 2**i for i in range(len(depths))]
    mlp_ratios = case.get("mlp_ratios") or [case["mlp_ratio"]] * len(depths)
    return dict(
        img_size=case["img_size"],
        patch_size=case["patch_size"],
        embed_dims=tuple(embed_dims),
        depths=tuple(depths),
        num_heads=tuple(case["num_heads"]),
        mlp_ratios=tuple(mlp_ratios),
        attn_stages=tuple(bool(m) for m in case["has_msa"]),
        qkv_bias=case["qkv_bias"],
        norm_eps=case["layer_norm_eps"],
        num_classes=case["num_classes"],
    )


def parity_case(parity_dir: Path, name: str):
    cases = json.loads((parity_dir / "cases.json").read_text())
    case = cases[name]
    model_name = "lit_ti" if case["family"] == "lit_ti" else "lit_s"
    expected = torch.load(parity_dir / f"{name}.expected.pt", weights_only=True)
    return model_name, case_kwargs(case), expected


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("case", ["lit_ti_tiny", "lit_s_tiny"])
def test_parity_with_released_implementation(parity_dir, tmp_path, case, dtype):
    model_name, kwargs, expected = parity_case(parity_dir, case)
    checkpoint = parity_dir / f"{case}.state_dict.pt"
    if case == "lit_s_tiny":
        # The released LIT-S/M/B files wrap the weights: {"model": state_dict, "epoch": ..., ...}.
        state_dict = torch.load(checkpoint, weights_only=True)
        checkpoint = tmp_path / "wrapped.pth"
        torch.save({"model": state_dict, "epoch": 3}, checkpoint)
    model = litvit.create_model(model_name, checkpoint_path=checkpoint, **kwargs).eval().to(dtype)

    x = expected["input"].to(dtype)
    with torch.no_grad():
        logits, offsets = model.forward_with_offsets(x)
        features = model.forward_head(model.forward_features(x), pre_logits=True)
    tol = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float64 else dict(atol=1e-4, rtol=1e-4)
    assert_close(logits, expected["logits"].to(dtype), **tol)
    assert_close(features, expected["features"].to(dtype), **tol)
    assert len(offsets) == len(expected["offsets"]) == 3
    for got, want in zip(offsets, expected["offsets"]):
        assert_close(got, want.to(dtype), **tol)
    # The weights are not trivial: a model left at its initial values gives other logits.
    fresh = timm.create_model(model_name, **kwargs).eval().to(dtype)
    with torch.no_grad():
        assert not torch.allclose(fresh(x), expected["logits"].to(dtype), atol=1e-3)


# ----------------------------------------------------------------------------- full-size models
@pytest.fixture(scope="module")
def full_models() -> Dict[str, torch.nn.Module]:
    """The four models at 1000 classes, built once for this module (building LIT-B takes seconds)."""
    torch.manual_seed(0)
    return {name: timm.create_model(name).eval() for name in LIT_MODELS}


def test_registered_with_timm():
    assert set(LIT_MODELS) == set(EXACT_PARAMS)
    assert set(timm.list_models("lit_*")) >= set(LIT_MODELS)


@pytest.mark.parametrize("name", list(EXACT_PARAMS))
def test_exact_parameter_count(full_models, name):
    assert sum(p.numel() for p in full_models[name].parameters()) == EXACT_PARAMS[name]


def test_create_with_timm_options():
    model = timm.create_model("lit_s", num_classes=10, drop_path_rate=0.2)
    assert model.head.out_features == 10
    rates = [
        block.drop_path.drop_prob if hasattr(block.drop_path, "drop_prob") else 0.0
        for stage in model.stages
        for block in stage.blocks
    ]
    # Stochastic depth rises linearly from 0 to the given rate over all blocks.
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.2)
    assert rates == sorted(rates)
    # litvit.create_model passes the same options through.
    assert litvit.create_model("lit_ti", num_classes=7, **TINY_KWARGS).head.out_features == 7


def _released_state_dict(path: Path) -> Dict[str, torch.Tensor]:
    """Zeros with the names, shapes and dtypes of a released checkpoint listing."""
    dtypes = {"float32": torch.float32, "int64": torch.int64}
    state_dict = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, shape, dtype = line.split("\t")
        dims = tuple(int(d) for d in re.findall(r"\d+", shape))
        state_dict[name] = torch.zeros(dims, dtype=dtypes[dtype])
    return state_dict


@pytest.mark.parametrize("name", list(EXACT_PARAMS))
def test_released_key_layout_maps_one_to_one(full_models, released_keys_dir, name):
    model = full_models[name]
    released = _released_state_dict(released_keys_dir / f"official_state_dict_{name}.txt")
    released_params = sum(v.numel() for k, v in released.items() if v.is_floating_point() and "running_" not in k
                          and not k.endswith(("relative_position_index", "attn_mask")))
    assert released_params == EXACT_PARAMS[name]
    mapped = checkpoint_filter_fn(released, model)
    # Every model entry is filled, and each from a different released key.
    assert set(mapped) == set(model.state_dict())
    load_model_weights(copy_of(model), mapped, strict=True)


def copy_of(model: torch.nn.Module) -> torch.nn.Module:
    import copy

    return copy.deepcopy(model)


# ----------------------------------------------------------------------------- input sizes
@pytest.fixture
def resize_calls(monkeypatch):
    """Counts calls of the position-table resizers the model uses for other grids."""
    calls = []

    def spy(fn):
        def wrapped(*args, **kwargs):
            calls.append(fn.__name__)
            return fn(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(pos_embed_module, "resize_rel_pos_table", spy(pos_embed_module.resize_rel_pos_table))
    monkeypatch.setattr(pos_embed_module, "resize_abs_pos_embed", spy(pos_embed_module.resize_abs_pos_embed))
    return calls


@pytest.mark.parametrize("prefix", [0, 1])
def test_abs_pos_embed_resize_equals_timms(prefix):
    from timm.layers import resample_abs_pos_embed

    torch.manual_seed(0)
    pos_embed = torch.randn(1, prefix + 7 * 7, 16)
    ours = pos_embed_module.resize_abs_pos_embed(pos_embed, (7, 7), (5, 9), prefix)
    theirs = resample_abs_pos_embed(
        pos_embed, new_size=[5, 9], old_size=[7, 7], num_prefix_tokens=prefix, interpolation="bilinear",
        antialias=False,
    )
    assert ours.shape == (1, prefix + 45, 16)
    torch.testing.assert_close(ours, theirs)


@pytest.mark.parametrize("name", list(EXACT_PARAMS))
def test_any_input_size(full_models, resize_calls, name):
    model = full_models[name]
    torch.manual_seed(0)
    with torch.no_grad():
        logits = model(torch.randn(1, 3, 224, 224))
        assert logits.shape == (1, 1000) and torch.isfinite(logits).all()
        assert resize_calls == [], "at the training size the position tables must be used as stored"

        x = torch.randn(1, 3, 160, 256)
        logits, offsets = model.forward_with_offsets(x)
        assert logits.shape == (1, 1000) and torch.isfinite(logits).all()
        assert resize_calls, "another input size must resize the position tables"
        assert [tuple(o.shape) for o in offsets] == [(1, 8, 160 // s, 256 // s) for s in (8, 16, 32)]


def test_training_size_output_is_unchanged_by_other_sizes(tiny_lit):
    # Running at another size must not alter what the model computes at its own size
    # (no cached resized tables leaking back).
    for name in ("lit_ti", "lit_s"):
        model = tiny_lit(name)
        x = torch.randn(2, 3, 64, 64)
        with torch.no_grad():
            before = model(x)
            model(torch.randn(1, 3, 96, 128))
            assert torch.equal(model(x), before)


@pytest.mark.parametrize("size", [(100, 100), (224, 200), (16, 16)])
def test_wrong_input_size_is_a_clear_error(tiny_lit, size):
    model = tiny_lit("lit_s")
    with pytest.raises(ValueError, match=rf"divisible by 32.*{size[0]}x{size[1]}"):
        model(torch.randn(1, 3, *size))


def test_wrong_input_rank_is_a_clear_error(tiny_lit):
    with pytest.raises(ValueError, match="B x C x H x W"):
        tiny_lit("lit_ti")(torch.randn(3, 64, 64))


# ----------------------------------------------------------------------------- dense features
@pytest.mark.parametrize("name,has_norms", [("lit_ti", False), ("lit_s", True)])
def test_features_only(name, has_norms):
    model = timm.create_model(name, features_only=True, **TINY_KWARGS).eval()
    assert model.feature_info.reduction() == [4, 8, 16, 32]
    assert model.feature_info.channels() == list(TINY_KWARGS["embed_dims"])
    with torch.no_grad():
        maps = model(torch.randn(2, 3, 96, 128))
    assert [tuple(m.shape) for m in maps] == [
        (2, c, 96 // s, 128 // s) for c, s in zip(TINY_KWARGS["embed_dims"], (4, 8, 16, 32))
    ]
    assert (model.model.feature_norms is not None) == has_norms  # FeatureGetterNet wraps the LIT


@pytest.mark.parametrize("name,has_norms", [("lit_ti", False), ("lit_s", True)])
def test_create_backbone(tiny_lit, tmp_path, name, has_norms):
    classifier = tiny_lit(name)
    path = tmp_path / "cls.pth"
    torch.save({"model": classifier.state_dict()}, path)
    backbone = litvit.create_backbone(name, checkpoint_path=path, **TINY_KWARGS).eval()
    assert (backbone.feature_norms is not None) == has_norms
    assert backbone.cls_token is None and isinstance(backbone.head, torch.nn.Identity)
    assert [f["reduction"] for f in backbone.feature_info] == [4, 8, 16, 32]
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        maps = backbone.forward_intermediates(x, intermediates_only=True)
        reference = classifier.forward_intermediates(x, intermediates_only=True)
    assert [tuple(m.shape) for m in maps] == [
        (1, c, 64 // s, 96 // s) for c, s in zip(backbone.embed_dims, (4, 8, 16, 32))
    ]
    # Stage 1 is never normalised, so it equals the classifier's own stage-1 map: the weights loaded.
    assert_close(maps[0], reference[0])
    if not has_norms:
        # Stages 1-3 are the classifier's; in stage 4 the classifier's class token joins the
        # attention, the backbone's dense pass has none (as the released dense backbone).
        for got, want in zip(maps[:3], reference[:3]):
            assert_close(got, want)
        assert not torch.allclose(maps[3], reference[3])
    else:
        # Stage 2-4 maps pass a LayerNorm: zero mean over channels at every position.
        for m in maps[1:]:
            assert_close(m.mean(dim=1), torch.zeros_like(m[:, 0]), atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------- offsets
def test_forward_with_offsets_matches_forward(tiny_lit):
    model = tiny_lit("lit_s")
    with torch.no_grad():
        # Non-zero offset predictors, so the three maps differ from zero and from each other.
        for p in model.offset_parameters():
            p.normal_(0, 0.05)
        x = torch.randn(2, 3, 64, 64)
        logits, offsets = model.forward_with_offsets(x)
        assert_close(logits, model(x))
    assert [tuple(o.shape) for o in offsets] == [(2, 8, 8, 8), (2, 8, 4, 4), (2, 8, 2, 2)]
    assert all(o.abs().sum() > 0 for o in offsets)
    # Each DTM's offsets are what its own offset convolution predicts from its input.
    dtm = model.stages[1].downsample
    tokens, grid = model.patch_embed(x)
    tokens, grid, _ = model.stages[0](tokens, grid)
    with torch.no_grad():
        _, _, offset = dtm(tokens, grid)
    assert_close(offsets[0], offset)
    assert len(model.offset_parameters()) == 6  # weight and bias of three offset convolutions

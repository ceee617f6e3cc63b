"""The released ImageNet weights by name: the pretrained configs, and timm's own pretrained
path (``pretrained=True``) loading a checkpoint in the released layout, offline."""
from __future__ import annotations

import pytest
import timm
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, resolve_data_config
from torch.testing import assert_close

from litvit.models import LIT_MODELS
from test_models import parity_case


@pytest.mark.parametrize("name", LIT_MODELS)
def test_pretrained_cfg_names_the_release(name):
    assert f"{name}.in1k" in timm.list_pretrained("lit_*")
    cfg = timm.models.get_pretrained_cfg(name).to_dict()
    assert cfg["url"] == f"https://github.com/ziplab/LIT/releases/download/v1.0/{name}.pth"
    assert cfg["num_classes"] == 1000 and cfg["license"] == "apache-2.0"
    assert cfg["first_conv"] == "patch_embed.proj" and cfg["classifier"] == "head"
    # The released evaluation transform: shorter side 256 (crop 0.875), bicubic, centre crop 224.
    data = resolve_data_config({}, pretrained_cfg=cfg)
    assert data["input_size"] == (3, 224, 224) and data["crop_pct"] == 0.875
    assert data["interpolation"] == "bicubic" and data["crop_mode"] == "center"
    assert data["mean"] == IMAGENET_DEFAULT_MEAN and data["std"] == IMAGENET_DEFAULT_STD


def released_file(parity_dir, tmp_path, case: str):
    """The parity weights saved as the release ships them: LIT-Ti as a bare state dict, LIT-S/M/B
    under ``model`` beside training state."""
    state_dict = torch.load(parity_dir / f"{case}.state_dict.pt", weights_only=True)
    path = tmp_path / f"{case}.pth"
    torch.save(state_dict if case == "lit_ti_tiny" else {"model": state_dict, "epoch": 299, "max_accuracy": 81.5}, path)
    return path


@pytest.mark.parametrize("case", ["lit_ti_tiny", "lit_s_tiny"])
def test_timm_pretrained_path_loads_a_released_checkpoint(parity_dir, tmp_path, case):
    model_name, kwargs, expected = parity_case(parity_dir, case)
    path = released_file(parity_dir, tmp_path, case)
    num_classes = kwargs["num_classes"]
    model = timm.create_model(
        model_name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path), num_classes=num_classes), **kwargs
    ).eval()
    x = expected["input"].float()
    with torch.no_grad():
        assert_close(model(x), expected["logits"].float(), atol=1e-4, rtol=1e-4)

    # Another class count: timm drops the released head and keeps the rest.
    kwargs["num_classes"] = 3
    model = timm.create_model(
        model_name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path), num_classes=num_classes), **kwargs
    ).eval()
    with torch.no_grad():
        features = model.forward_head(model.forward_features(x), pre_logits=True)
    assert model(x).shape == (3, 3)
    assert_close(features, expected["features"].float(), atol=1e-4, rtol=1e-4)


def test_timm_pretrained_path_resizes_position_tables(parity_dir, tmp_path):
    model_name, kwargs, expected = parity_case(parity_dir, "lit_s_tiny")
    path = released_file(parity_dir, tmp_path, "lit_s_tiny")
    kwargs["img_size"] = 96  # trained at 64: stage 3's 4x4 table becomes 6x6
    model = timm.create_model(
        model_name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path), num_classes=10), **kwargs
    ).eval()
    table = model.stages[2].blocks[0].attn.relative_position_bias_table
    assert table.shape[0] == (2 * 6 - 1) ** 2
    with torch.no_grad():
        assert torch.isfinite(model(torch.randn(1, 3, 96, 96))).all()


def test_timm_pretrained_backbone(parity_dir, tmp_path):
    model_name, kwargs, expected = parity_case(parity_dir, "lit_s_tiny")
    overlay = dict(file=str(released_file(parity_dir, tmp_path, "lit_s_tiny")), num_classes=10)
    classifier = timm.create_model(model_name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs).eval()
    kwargs.pop("num_classes")
    backbone = timm.create_model(
        model_name, pretrained=True, features_only=True, pretrained_cfg_overlay=overlay, **kwargs
    ).eval()
    x = expected["input"].float()
    with torch.no_grad():
        maps = backbone(x)
        reference = classifier.forward_intermediates(x, intermediates_only=True)
    # Stage 1 leaves without a norm; stages 2-4 pass the dense backbone's own (fresh) LayerNorms.
    assert_close(maps[0], reference[0])
    assert [m.shape for m in maps] == [r.shape for r in reference]

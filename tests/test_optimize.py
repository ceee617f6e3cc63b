"""``litvit.optimize`` gives the plain model's outputs and gradients, with the same state dict."""
from __future__ import annotations

import copy

import pytest
import timm
import torch
import torch.nn as nn
from timm.layers import Mlp

import litvit
from litvit.accel import FastDTM, FusedMlp, OneDNNLinear, applied_plan, choose_plan, replaced_counts
from litvit.models import DeformableTokenMerging
from litvit.ops.onednn import onednn_linear_available

needs_onednn = pytest.mark.skipif(not onednn_linear_available(), reason="torch built without oneDNN")


def _realistic(model: nn.Module) -> nn.Module:
    """Untrained DTMs sample the regular grid and BatchNorm holds identity statistics: give both
    values a trained model would have, so folding and sampling are really exercised."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, DeformableTokenMerging):
                weight = module.offset_conv.weight
                weight.copy_(torch.randn(weight.shape, generator=generator) * 0.5 / weight[0].numel() ** 0.5)
                module.offset_conv.bias.copy_(torch.randn(8, generator=generator) * 0.5)
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.copy_(torch.randn(module.num_features, generator=generator))
                module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
    return model


def _pair(model: nn.Module, **choices):
    plain = copy.deepcopy(model)
    return plain, litvit.optimize(model, **choices)


def _tiny_pvt_v2() -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model("pvt_v2_b0", num_classes=10, embed_dims=(16, 32, 40, 64), depths=(1, 1, 1, 1),
                             num_heads=(1, 2, 5, 8))


def _sequential() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(12, 32), nn.LayerNorm(32), Mlp(32, 64), nn.GELU(), nn.Linear(32, 5))


MODELS = {
    "lit_ti": lambda tiny_lit: _realistic(tiny_lit("lit_ti")),
    "lit_s": lambda tiny_lit: _realistic(tiny_lit("lit_s")),
    "pvt_v2": lambda tiny_lit: _tiny_pvt_v2(),
    "sequential": lambda tiny_lit: _sequential(),
}
INPUTS = {"sequential": (3, 7, 12)}


def _input(name: str) -> torch.Tensor:
    return torch.randn(*INPUTS.get(name, (2, 3, 64, 64)), generator=torch.Generator().manual_seed(2))


@pytest.mark.parametrize("onednn", [pytest.param(True, marks=needs_onednn), False], ids=["onednn", "aten"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_inference_outputs_and_state_dict_match_the_plain_model(tiny_lit, name, onednn):
    plain, fast = _pair(MODELS[name](tiny_lit).eval(), onednn=onednn, onednn_weight_grad=False)
    assert fast.state_dict().keys() == plain.state_dict().keys()
    for key, value in plain.state_dict().items():
        assert torch.equal(fast.state_dict()[key], value), key
    counts = replaced_counts(fast)
    assert counts.get("OneDNNLinear", 0) == (sum(type(m) is nn.Linear for m in plain.modules()) if onednn else 0)
    # pvt_v2's MLP holds a depthwise convolution: not timm's Mlp, so only its Linear layers change.
    assert counts.get("FusedMlp", 0) == sum(type(m) is Mlp for m in plain.modules()) == (0 if name == "pvt_v2" else 1 if name == "sequential" else 4)
    if name.startswith("lit"):
        assert counts["FastDTM"] == 3
    x = _input(name)
    with torch.inference_mode():
        expected, got = plain(x), fast(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("weight_grad", [pytest.param(True, marks=needs_onednn), pytest.param(False, marks=needs_onednn)],
                         ids=["onednn-weight-grad", "mm-weight-grad"])
@pytest.mark.parametrize("name", ["lit_ti", "lit_s", "pvt_v2", "sequential"])
def test_training_outputs_and_gradients_match_the_plain_model(tiny_lit, name, weight_grad):
    plain, fast = _pair(MODELS[name](tiny_lit).train(), onednn=True, onednn_weight_grad=weight_grad)
    x = _input(name)
    outputs = []
    for model in (plain, fast):
        model.zero_grad()
        out = model(x.clone().requires_grad_())
        out.square().mean().backward()
        outputs.append(out)
    torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-4, atol=1e-5)
    grads = {n: p.grad for n, p in plain.named_parameters() if p.grad is not None}
    fast_grads = {n: p.grad for n, p in fast.named_parameters() if p.grad is not None}
    assert fast_grads.keys() == grads.keys() and grads
    for key, grad in grads.items():
        torch.testing.assert_close(fast_grads[key], grad, rtol=1e-3, atol=1e-6, msg=key)


def test_eval_mode_gradients_flow_through_the_folded_norm(tiny_lit):
    plain, fast = _pair(_realistic(tiny_lit("lit_s")).eval(), onednn=False)
    x = _input("lit_s")
    grads = []
    for model in (plain, fast):
        image = x.clone().requires_grad_()
        model(image).sum().backward()
        grads.append(image.grad)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-5)


def test_the_layer_shares_parameters_so_an_existing_optimizer_still_trains_it(tiny_lit):
    model = tiny_lit("lit_s")
    params = list(model.parameters())
    fast = litvit.optimize(model, onednn=onednn_linear_available(), onednn_weight_grad=False)
    assert fast is model
    assert all(a is b for a, b in zip(params, fast.parameters()))


def test_modules_with_hooks_and_subclasses_are_left_alone():
    class MyLinear(nn.Linear):
        pass

    model = nn.Sequential(nn.Linear(4, 4), MyLinear(4, 4), Mlp(4, 8))
    model[0].register_forward_hook(lambda *args: None)
    model[2].act.register_forward_hook(lambda *args: None)
    litvit.optimize(model, onednn=onednn_linear_available(), onednn_weight_grad=False)
    assert type(model[0]) is nn.Linear and type(model[1]) is MyLinear and type(model[2]) is Mlp


@needs_onednn
@pytest.mark.parametrize("name", ["lit_ti", "lit_s"])
def test_bfloat16_autocast_matches_the_plain_model(tiny_lit, name):
    plain, fast = _pair(_realistic(tiny_lit(name)), onednn=True, onednn_weight_grad=False)
    x = _input(name)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected, got = plain(x), fast(x)
    assert got.dtype == expected.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), expected.float(), rtol=0.05, atol=0.05)
    # Training under autocast: the gradients reach the float32 parameters as autocast's do.
    for model in (plain.train(), fast.train()):
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x)
        out.float().square().mean().backward()
    for (key, p), q in zip(plain.named_parameters(), fast.parameters()):
        assert (p.grad is None) == (q.grad is None), key
        if p.grad is not None:
            assert q.grad.dtype == torch.float32
            torch.testing.assert_close(q.grad, p.grad, rtol=0.1, atol=2e-3, msg=key)


@needs_onednn
def test_bfloat16_inference_runs_one_onednn_product_with_the_bias(tiny_lit):
    torch.manual_seed(0)
    layer = nn.Linear(64, 96)
    fast = litvit.optimize(copy.deepcopy(layer), onednn=True, onednn_weight_grad=False)
    x = torch.randn(50, 64)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected, got = layer(x), fast(x)
    with torch.inference_mode():
        direct = torch.ops.mkldnn._linear_pointwise(
            x.bfloat16(), layer.weight.bfloat16(), layer.bias.bfloat16(), "none", [], "")
        on_bf16 = fast.bfloat16()(x.bfloat16())  # a bfloat16 model, no autocast
    assert got.dtype == torch.bfloat16 and torch.equal(got, direct) and torch.equal(on_bf16, direct)
    torch.testing.assert_close(got.float(), expected.float(), rtol=0.02, atol=0.02)


def test_the_plan_is_chosen_once_and_each_choice_can_be_fixed():
    plan = choose_plan("cpu", onednn=False)
    assert not plan.onednn and not plan.onednn_weight_grad and "ATen Linear" in plan.describe()
    gpu = choose_plan("cuda")
    assert not gpu.onednn and "not a CPU" in gpu.describe()
    model = litvit.optimize(_sequential(), onednn=False, fuse_mlp=False, fast_dtm=False)
    assert not any(isinstance(m, (OneDNNLinear, FusedMlp, FastDTM)) for m in model.modules())
    assert applied_plan(model) == choose_plan("cpu", onednn=False, fuse_mlp=False, fast_dtm=False)
    with pytest.raises(ValueError):
        choose_plan("cuda", onednn=True)


@pytest.mark.parametrize("name", ["lit_ti", "lit_s"])
def test_an_empty_batch_gives_an_empty_output(tiny_lit, name):
    fast = litvit.optimize(tiny_lit(name), onednn=onednn_linear_available(), onednn_weight_grad=False)
    with torch.inference_mode():
        assert fast(torch.zeros(0, 3, 64, 64)).shape == (0, 10)
    sequential = litvit.optimize(_sequential(), onednn=onednn_linear_available(), onednn_weight_grad=False)
    assert sequential(torch.zeros(0, 12)).shape == (0, 5)


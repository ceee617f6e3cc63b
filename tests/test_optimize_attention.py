"""The speed layer's explicit low-precision attention: the module's own explicit branch, chosen per call."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
from timm.models.pvt_v2 import Attention as PvtAttention
from timm.models.swin_transformer import WindowAttention
from timm.models.vision_transformer import Attention as VitAttention

import litvit
from litvit.accel import replaced_counts
from litvit.accel.modules import EXPLICIT_ATTENTION_MAX_SCORES, explicit_attention_applies
from litvit.models.hilo import HiLoAttention
from litvit.models.lit import Attention as LitAttention

GRID = (8, 8)


def _with_random_bias(module: nn.Module) -> nn.Module:
    table = getattr(module, "relative_position_bias_table", None)
    if table is not None:  # zero at init: give the bias something to do
        with torch.no_grad():
            table.normal_(generator=torch.Generator().manual_seed(3))
    return module


def _fused(module: nn.Module) -> nn.Module:
    module.fused_attn = True  # timm ships Swin's on the explicit branch already; test the switch
    return module


CASES = {
    "lit-rel-pos": (lambda: LitAttention(32, 2, rel_pos_grid=GRID), (2, 64, 32), (GRID,)),
    "lit": (lambda: LitAttention(32, 2), (2, 64, 32), (GRID,)),
    "hilo": (lambda: HiLoAttention(32, 4, window=2, alpha=0.5), (2, 64, 32), (GRID,)),
    "pvt_v2": (lambda: PvtAttention(32, num_heads=2, sr_ratio=2), (2, 64, 32), ([8, 8],)),
    "swin": (lambda: _fused(WindowAttention(32, num_heads=2, window_size=7)), (8, 49, 32), ()),
    "vit": (lambda: VitAttention(32, num_heads=2), (2, 50, 32), ()),
}


def _run(module: nn.Module, x: torch.Tensor, args, dtype: torch.dtype):
    x = x.clone().requires_grad_()
    module.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        out = module(x, *args)
    out.float().square().sum().backward()
    grads = {name: p.grad.clone() for name, p in module.named_parameters()}
    return out, x.grad, grads


@pytest.mark.parametrize("name", sorted(CASES))
def test_bfloat16_takes_the_explicit_branch_and_float32_keeps_sdpa(name):
    make, shape, args = CASES[name]
    torch.manual_seed(0)
    plain = _with_random_bias(make()).train()
    assert plain.fused_attn, "the test needs timm's fused attention on"
    explicit = copy.deepcopy(plain)
    explicit.fused_attn = False
    fast = litvit.optimize(copy.deepcopy(plain), onednn=False)
    assert sum("LowPrecisionCPU" in key for key in replaced_counts(fast)) == 1
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(2))

    # bfloat16 autocast: exactly the module's explicit branch, values and gradients.
    got, expected = _run(fast, x, args, torch.bfloat16), _run(explicit, x, args, torch.bfloat16)
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
    for key, grad in expected[2].items():
        assert torch.equal(got[2][key], grad), key
    assert fast.fused_attn  # the flag is the module's again after the call

    # float32: exactly the fused (SDPA) branch.
    got, expected = _run(fast, x, args, torch.float32), _run(plain, x, args, torch.float32)
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])


def test_a_user_choice_of_the_explicit_branch_stands():
    fast = litvit.optimize(LitAttention(32, 2, rel_pos_grid=GRID), onednn=False)
    fast.fused_attn = False  # e.g. to read the attention matrix
    x = torch.randn(2, 64, 32)
    with torch.no_grad():
        fast(x, GRID)
    assert fast.fused_attn is False


def test_only_small_low_precision_cpu_score_tensors_go_explicit():
    lit = LitAttention(32, 2)
    bf16 = torch.zeros(2, 196, 32, dtype=torch.bfloat16)
    assert explicit_attention_applies(lit, bf16)
    assert not explicit_attention_applies(lit, bf16.float())  # float32 keeps SDPA
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert explicit_attention_applies(lit, bf16.float())
    # Detection resolution: 4200 global tokens hold 2 x 4200^2 > the bound of scores per image.
    big = torch.zeros(1, 4200, 32, dtype=torch.bfloat16)
    assert 2 * 4200 * 4200 > EXPLICIT_ATTENTION_MAX_SCORES and not explicit_attention_applies(lit, big)
    # PVTv2 counts its reduced keys: 3136 queries on 49 keys at batch 32 stay explicit.
    pvt = PvtAttention(64, num_heads=1, sr_ratio=8)
    assert explicit_attention_applies(pvt, torch.zeros(32, 3136, 64, dtype=torch.bfloat16))
    assert not explicit_attention_applies(LitAttention(64, 1), torch.zeros(32, 3136, 64, dtype=torch.bfloat16))


def test_the_choice_can_be_turned_off():
    fast = litvit.optimize(LitAttention(32, 2), onednn=False, explicit_attention=False)
    assert type(fast) is LitAttention
    assert "SDPA attention" in litvit.accel.applied_plan(fast).describe()


@pytest.mark.parametrize("inference", [True, False])
def test_the_inference_choice_decides_only_calls_that_autograd_does_not_record(inference):
    make, shape, args = CASES["lit-rel-pos"]
    torch.manual_seed(0)
    plain = _with_random_bias(make()).eval()
    explicit = copy.deepcopy(plain)
    explicit.fused_attn = False
    fast = litvit.optimize(copy.deepcopy(plain), onednn=False, explicit_attention_inference=inference)
    assert ("in training" in litvit.accel.applied_plan(fast).describe()) is not inference
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(2))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        got = fast(x, *args)
        expected = (explicit if inference else plain)(x, *args)
        other = (plain if inference else explicit)(x, *args)
    assert torch.equal(got, expected) and not torch.equal(got, other)  # the two branches round apart
    # Training takes the explicit branch either way.
    got, expected = _run(fast, x, args, torch.bfloat16), _run(explicit, x, args, torch.bfloat16)
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])


def test_the_default_inference_choice_follows_amx():
    from litvit.ops.onednn import cpu_has_amx

    plan = litvit.accel.choose_plan("cpu", onednn=False)
    assert plan.explicit_attention_inference is not cpu_has_amx()
    assert "attention in inference" in plan.reasons
    assert not litvit.accel.choose_plan("cpu", onednn=False, explicit_attention=False).explicit_attention_inference

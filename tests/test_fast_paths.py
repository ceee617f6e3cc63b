"""The fast paths (SDPA attention, token-layout DTM) equal the reference paths (explicit softmax
attention, torchvision's deformable convolution), and the models trace with no graph break."""
from __future__ import annotations

import copy

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from litvit.benchmark import live_tensor_peak_bytes
from litvit.models import set_reference_path
from litvit.models import lit
from litvit.models.lit import Attention, DeformableTokenMerging
from litvit.ops import onednn


def _randomise_offsets(model: torch.nn.Module, scale: float = 0.5) -> torch.nn.Module:
    """Untrained DTMs sample the regular grid; give them real, fractional offsets."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, DeformableTokenMerging):
                weight = module.offset_conv.weight
                weight.copy_(torch.randn(weight.shape, generator=generator) * scale / weight[0].numel() ** 0.5)
                module.offset_conv.bias.copy_(torch.randn(8, generator=generator) * scale)
    return model


def _pair(tiny_lit, name: str, **kwargs):
    fast = _randomise_offsets(tiny_lit(name, **kwargs))
    reference = set_reference_path(copy.deepcopy(fast))
    return fast, reference


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def test_reference_switch_changes_the_implementation(tiny_lit):
    fast, reference = _pair(tiny_lit, "lit_s")
    attn = [m for m in fast.modules() if isinstance(m, Attention)]
    ref_attn = [m for m in reference.modules() if isinstance(m, Attention)]
    assert attn and all(m.fused_attn for m in attn)
    assert all(not m.fused_attn for m in ref_attn)
    assert all(m.use_reference for m in reference.modules() if isinstance(m, DeformableTokenMerging))
    set_reference_path(reference, False)
    assert all(m.fused_attn for m in ref_attn)
    assert not any(m.use_reference for m in reference.modules() if isinstance(m, DeformableTokenMerging))


@pytest.mark.parametrize("rel_pos", [True, False], ids=["rel-bias", "no-bias"])
@pytest.mark.parametrize("grid", [(4, 4), (3, 5)], ids=["train-grid", "other-grid"])
def test_attention_fast_equals_reference_float32(rel_pos, grid):
    torch.manual_seed(0)
    attn = Attention(40, 5, rel_pos_grid=(4, 4) if rel_pos else None)
    x = torch.randn(3, grid[0] * grid[1], 40)
    attn.fused_attn = True
    fast = attn(x, grid)
    attn.fused_attn = False
    reference = attn(x, grid)
    torch.testing.assert_close(fast, reference, rtol=1e-5, atol=1e-5)


def test_blocked_attention_equals_the_one_call_form(monkeypatch):
    # 2500 bias elements / (5 heads x 35 tokens) = 14 queries: two 7-token grid rows per block,
    # so the 5-row grid ends with a short block.
    monkeypatch.setattr(lit, "BIAS_BLOCK_ELEMENTS", 2500)
    torch.manual_seed(0)
    attn = Attention(40, 5, rel_pos_grid=(4, 4)).eval()
    x = torch.randn(2, 35, 40)
    calls = []
    blocked_sdpa = attn.blocked_sdpa
    monkeypatch.setattr(attn, "blocked_sdpa", lambda *a: calls.append(a[-1]) or blocked_sdpa(*a))
    masks = []
    sdpa = torch.nn.functional.scaled_dot_product_attention
    record = lambda *a, **kw: masks.append(kw["attn_mask"]) or sdpa(*a, **kw)  # noqa: E731
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", record)
    with torch.inference_mode():
        fast = attn(x, (5, 7))
        attn.fused_attn = False
        reference = attn(x, (5, 7))
    assert calls == [14]
    torch.testing.assert_close(fast, reference, rtol=1e-5, atol=1e-5)
    # Each block's bias is a view into one buffer whose rows are padded from 35 to 48 elements,
    # the alignment CUDA's memory-efficient kernel would otherwise copy the mask into.
    assert [m.shape[2] for m in masks] == [14, 14, 7]
    assert all(m.shape[-1] == 35 and m.stride(2) == 48 and m.stride(1) % 16 == 0 for m in masks)
    assert len({m.untyped_storage().data_ptr() for m in masks}) == 1


def test_attention_blocks_queries_only_when_no_gradient_is_needed(monkeypatch):
    monkeypatch.setattr(lit, "BIAS_BLOCK_ELEMENTS", 400)
    attn = Attention(40, 5, rel_pos_grid=(4, 4))
    q = torch.randn(1, 5, 35, 8)
    with torch.no_grad():
        assert attn.query_block_rows(q, 35) == 2
        assert Attention(40, 1, rel_pos_grid=(4, 4)).query_block_rows(q, 10) == 10  # one block
    # Under autograd the bias table needs a gradient: one call, whose bias autograd keeps anyway.
    assert attn.query_block_rows(q, 35) is None
    assert Attention(40, 5).query_block_rows(q, 35) is None  # no bias: SDPA needs no blocking


def test_inference_bias_is_built_once_in_the_compute_dtype(monkeypatch):
    # A bias that fits one block still goes through the padded buffer in inference: built from the
    # table cast to the compute dtype, never as a float32 N x N tensor followed by its cast.
    torch.manual_seed(0)
    attn = Attention(32, 4, rel_pos_grid=(16, 16)).eval()
    x = torch.randn(1, 256, 32)
    masks = []
    sdpa = torch.nn.functional.scaled_dot_product_attention
    record = lambda *a, **kw: masks.append(kw["attn_mask"]) or sdpa(*a, **kw)  # noqa: E731
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", record)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        fast = attn(x, (16, 16))
        peak = live_tensor_peak_bytes(lambda: attn(x, (16, 16)))
    assert len(masks) == 2 and masks[0].dtype == torch.bfloat16 and masks[0].shape == (1, 4, 256, 256)
    assert masks[0].stride(2) == 256 and masks[0].stride(1) % 16 == 0
    bf16_bias = 4 * 256 * 256 * 2
    # Building the bias in float32 (2 bf16_bias) and then casting it would hold both at once.
    assert bf16_bias <= peak < 2 * bf16_bias
    attn.fused_attn = False
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        reference = attn(x, (16, 16))
    assert _rel_err(fast.float(), reference.float()) < 2e-2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_attention_blocks_are_larger_on_cuda(monkeypatch):
    monkeypatch.setattr(lit, "BIAS_BLOCK_ELEMENTS", 400)
    monkeypatch.setattr(lit, "BIAS_BLOCK_ELEMENTS_CUDA", 800)
    attn = Attention(40, 5, rel_pos_grid=(4, 4))
    with torch.no_grad():
        assert attn.query_block_rows(torch.randn(1, 5, 35, 8), 35) == 2
        assert attn.query_block_rows(torch.randn(1, 5, 35, 8, device="cuda"), 35) == 4


def test_attention_gradients_fast_equal_reference():
    torch.manual_seed(0)
    attn = Attention(40, 5, rel_pos_grid=(4, 4))
    x = torch.randn(2, 16, 40, requires_grad=True)
    grads = []
    for fused in (True, False):
        attn.fused_attn = fused
        attn.zero_grad(set_to_none=True)
        x.grad = None
        attn(x, (4, 4)).square().sum().backward()
        grads.append((x.grad.clone(), attn.relative_position_bias_table.grad.clone(), attn.qkv.weight.grad.clone()))
    for fast, reference in zip(*grads):
        torch.testing.assert_close(fast, reference, rtol=1e-4, atol=1e-5)


def test_attention_bfloat16_within_tolerance():
    torch.manual_seed(0)
    attn = Attention(64, 4, rel_pos_grid=(6, 6))
    x = torch.randn(2, 36, 64)
    attn.fused_attn = False
    reference = attn(x, (6, 6))
    attn.fused_attn = True
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fast = attn(x, (6, 6))
    assert fast.dtype == torch.bfloat16
    assert _rel_err(fast, reference) < 2e-2


def test_dtm_fast_equals_reference_float32_and_bfloat16():
    torch.manual_seed(0)
    dtm = _randomise_offsets(DeformableTokenMerging(16, 24)).eval()
    x = torch.randn(2, 10 * 12, 16, requires_grad=True)
    out, grid, offset = dtm(x, (10, 12))
    dtm.use_reference = True
    ref_out, ref_grid, ref_offset = dtm(x, (10, 12))
    assert grid == ref_grid == (5, 6)
    assert offset.abs().max() > 0.1  # offsets really move the samples
    torch.testing.assert_close(offset, ref_offset)
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-5)
    (grad_fast,) = torch.autograd.grad(out.square().sum(), x)
    (grad_ref,) = torch.autograd.grad(ref_out.square().sum(), x)
    torch.testing.assert_close(grad_fast, grad_ref, rtol=1e-4, atol=1e-5)
    dtm.use_reference = False
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16_out, _, _ = dtm(x, (10, 12))
    assert _rel_err(bf16_out, ref_out) < 2e-2


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_dtm_hands_back_its_input_gradient_in_token_layout(compiled, monkeypatch):
    # grid_sample's backward returns an NCHW buffer, which seen as B x N x C tokens has N
    # fastest; DTM must not pass that layout on to the previous stage's residual stream.
    torch.manual_seed(0)
    dtm = _randomise_offsets(DeformableTokenMerging(16, 24)).train()
    forward = torch.compile(dtm, fullgraph=True, backend="eager") if compiled else dtm
    leaf = torch.randn(2, 10 * 12, 16, requires_grad=True)
    grads = {}
    for flag in (False, True):
        monkeypatch.setattr(lit, "DTM_TOKEN_LAYOUT_GRAD", flag)
        torch._dynamo.reset()
        tokens = leaf * 1.0  # not a leaf: its gradient is seen as the stage before would see it
        tokens.register_hook(lambda grad, flag=flag: grads.__setitem__(flag, grad))
        out, _, _ = forward(tokens, (10, 12))
        out.backward(torch.randn(out.shape, generator=torch.Generator().manual_seed(2)))
    assert not grads[False].is_contiguous()  # what grid_sample leaves
    assert grads[True].is_contiguous()
    torch.testing.assert_close(grads[True], grads[False], rtol=0, atol=0)


def test_dtm_folds_its_batchnorm_in_eval_mode_only(monkeypatch):
    generator = torch.Generator().manual_seed(6)
    dtm = _randomise_offsets(DeformableTokenMerging(16, 24)).eval()
    with torch.no_grad():  # statistics far from the identity, so a missing fold would show
        dtm.norm.running_mean.copy_(torch.randn(24, generator=generator))
        dtm.norm.running_var.copy_(torch.rand(24, generator=generator) * 3 + 0.2)
        dtm.norm.weight.copy_(torch.randn(24, generator=generator))
        dtm.norm.bias.copy_(torch.randn(24, generator=generator))
        dtm.proj.bias.copy_(torch.randn(24, generator=generator))
    x = torch.randn(2, 10 * 12, 16, generator=generator, requires_grad=True)
    assert dtm.folds_norm()
    folded, _, _ = dtm(x, (10, 12))
    monkeypatch.setattr(lit, "FOLD_DTM_NORM", False)
    assert not dtm.folds_norm()
    unfolded, _, _ = dtm(x, (10, 12))
    dtm.use_reference = True
    reference, _, _ = dtm(x, (10, 12))
    torch.testing.assert_close(folded, unfolded, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(folded, reference, rtol=1e-5, atol=1e-5)
    grads = [torch.autograd.grad(out.square().sum(), (x, dtm.norm.weight)) for out in (folded, reference)]
    for fast, ref in zip(*grads):
        torch.testing.assert_close(fast, ref, rtol=1e-4, atol=1e-5)
    dtm.use_reference = False
    monkeypatch.setattr(lit, "FOLD_DTM_NORM", True)
    with torch.inference_mode():
        torch.testing.assert_close(dtm(x, (10, 12))[0], reference, rtol=1e-5, atol=1e-5)
    # Training normalises with the batch's statistics; a hook on the norm must still fire.
    assert not dtm.train().folds_norm()
    dtm.eval()
    handle = dtm.norm.register_forward_hook(lambda *a: None)
    assert not dtm.folds_norm()
    handle.remove()
    assert dtm.folds_norm()


def _spy_fused_mlp(monkeypatch) -> list:
    """Record the number of blocks of each fused_mlp_inference call."""
    calls = []
    fused = lit.fused_mlp_inference
    monkeypatch.setattr(
        lit, "fused_mlp_inference", lambda blocks, *a, **kw: calls.append(len(blocks)) or fused(blocks, *a, **kw)
    )
    return calls


@pytest.fixture
def cpu_mlp_kernel():
    """Set the CPU MLP kernel for one test and restore the previous choice afterwards."""
    previous = onednn.get_cpu_mlp_kernel()
    yield onednn.set_cpu_mlp_kernel
    onednn.set_cpu_mlp_kernel(previous)


needs_onednn = pytest.mark.skipif(not onednn.onednn_linear_available(), reason="torch built without oneDNN")


@pytest.mark.parametrize("kernel", ["aten", pytest.param("onednn", marks=needs_onednn)])
@pytest.mark.parametrize("name", ["lit_ti", "lit_s"])
def test_fused_mlp_equals_the_blocks_module_by_module(tiny_lit, name, kernel, cpu_mlp_kernel, monkeypatch):
    # 16-wide tokens with a 128-wide hidden layer: 700 // 128 = 5-row slabs, so the 2 x 256
    # stage-1 rows end with a short slab; stage 2 (256-wide hidden) gets 2-row slabs.
    monkeypatch.setattr(lit, "MLP_SLAB_ELEMENTS", 700)
    monkeypatch.setattr(lit, "MLP_SLAB_ELEMENTS_ONEDNN", 700)
    cpu_mlp_kernel(kernel)
    onednn_calls, qkv_calls = [], []
    monkeypatch.setattr(lit, "linear_gelu", lambda *a: onednn_calls.append(1) or onednn.linear_gelu(*a))
    monkeypatch.setattr(
        lit, "onednn_linear_inference", lambda *a: qkv_calls.append(1) or onednn.linear_inference(*a)
    )
    fast = _randomise_offsets(tiny_lit(name, depths=(2, 3, 2, 1)))
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():  # initial biases are 0 and norms 1: make every term of the MLP count
        for param in fast.parameters():
            if param.ndim == 1:
                param.add_(torch.randn(param.shape, generator=generator) * 0.2)
    reference = set_reference_path(copy.deepcopy(fast))
    calls = _spy_fused_mlp(monkeypatch)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        out = fast(x)
        # MLP-only stages fuse whole, attention blocks one by one; lit_ti's last block computes
        # its class token alone (LIT.class_token_tail_applies), a single row with nothing to fuse.
        assert calls == ([2, 3, 1, 1] if name == "lit_ti" else [2, 3, 1, 1, 1])
        # oneDNN runs each block of the MLP-only stages once per slab (2 images: 2 x 256 stage-1
        # tokens, 2 x 64 in stage 2; lit_ti's 128-wide stage-1 hidden layer gives 5-row slabs).
        slabs = 0
        for stage, tokens in zip(fast.stages[:2], (2 * 256, 2 * 64)):
            rows = 700 // stage.blocks[0].mlp.fc1.out_features
            slabs += -(-tokens // rows) * len(stage.blocks)
        # The attention blocks take oneDNN too: one fc1 + GELU product and one qkv product each.
        attention_blocks = 2 if name == "lit_ti" else 3
        assert len(onednn_calls) == (slabs + attention_blocks if kernel == "onednn" else 0)
        assert len(qkv_calls) == (attention_blocks if kernel == "onednn" else 0)
        assert slabs == (103 * 2 + 64 * 3 if name == "lit_ti" else 52 * 2 + 26 * 3)
        calls.clear()
        expected = reference(x)
    assert calls == []
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    with torch.inference_mode():
        torch.testing.assert_close(fast(x), expected, rtol=1e-5, atol=1e-5)


@needs_onednn
@pytest.mark.parametrize("name", ["lit_ti", "lit_s"])
def test_onednn_attention_stages_step_aside_where_they_could_be_noticed(tiny_lit, name, cpu_mlp_kernel, monkeypatch):
    """oneDNN's qkv and projection-with-residual products stand in for the modules only where
    nothing can tell; wherever they run, the output equals the ATen form's."""
    cpu_mlp_kernel("onednn")
    qkv_calls = []
    monkeypatch.setattr(
        lit, "onednn_linear_inference", lambda *a: qkv_calls.append(1) or onednn.linear_inference(*a)
    )
    model = _randomise_offsets(tiny_lit(name, depths=(1, 1, 2, 1))).eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(8))
    blocks = 2 if name == "lit_ti" else 3  # lit_ti's last block computes its class token alone
    with torch.no_grad():
        out = model(x)
        assert len(qkv_calls) == blocks
        monkeypatch.setattr(lit, "ONEDNN_IN_ATTENTION_STAGES", False)
        torch.testing.assert_close(out, model(x), rtol=1e-5, atol=1e-5)
        assert len(qkv_calls) == blocks
        monkeypatch.setattr(lit, "ONEDNN_IN_ATTENTION_STAGES", True)
        # A hook on the attention module sees its output without the residual: that block steps aside.
        seen = []
        handle = model.stages[2].blocks[0].attn.register_forward_hook(lambda m, a, o: seen.append(o))
        torch.testing.assert_close(model(x), out, rtol=1e-5, atol=1e-5)
        handle.remove()
        assert len(qkv_calls) == 2 * blocks - 1 and len(seen) == 1
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model(x)
        set_reference_path(model)
        torch.testing.assert_close(model(x), out, rtol=1e-5, atol=1e-5)
        set_reference_path(model, False)
        model.train()
        model(x)  # dropout and drop path act in training mode
    model.eval()
    model(x)  # autograd on
    assert len(qkv_calls) == 2 * blocks - 1


def test_cpu_mlp_kernel_choice(cpu_mlp_kernel, monkeypatch):
    x32 = torch.zeros(2, 4)
    monkeypatch.setattr(onednn, "onednn_linear_available", lambda: True)
    cpu_mlp_kernel("auto")
    for has_avx512, expected in ((True, "onednn"), (False, "aten")):
        monkeypatch.setattr(onednn, "_cpu_has_avx512", lambda: has_avx512)
        assert onednn.get_cpu_mlp_kernel(x32) == expected
    cpu_mlp_kernel("onednn")  # forced: also without AVX-512, but never for other dtypes
    assert onednn.get_cpu_mlp_kernel(x32) == "onednn"
    assert onednn.get_cpu_mlp_kernel(x32.double()) == "aten"
    assert onednn.get_cpu_mlp_kernel(x32.bfloat16()) == "aten"
    cpu_mlp_kernel("aten")
    monkeypatch.setattr(onednn, "_cpu_has_avx512", lambda: True)
    assert onednn.get_cpu_mlp_kernel(x32) == "aten"
    assert onednn.get_cpu_mlp_kernel() == "aten"
    with pytest.raises(ValueError, match="unknown CPU MLP kernel"):
        cpu_mlp_kernel("mkl")
    monkeypatch.setattr(onednn, "onednn_linear_available", lambda: False)
    with pytest.raises(RuntimeError, match="oneDNN"):
        cpu_mlp_kernel("onednn")
    cpu_mlp_kernel("auto")
    assert onednn.get_cpu_mlp_kernel(x32) == "aten"


def test_cpu_mlp_kernel_from_the_environment(monkeypatch):
    monkeypatch.setenv("LITVIT_CPU_MLP_KERNEL", " ATEN ")
    assert onednn._kernel_from_environment() == "aten"
    monkeypatch.setenv("LITVIT_CPU_MLP_KERNEL", "fast")
    with pytest.warns(UserWarning, match="LITVIT_CPU_MLP_KERNEL"):
        assert onednn._kernel_from_environment() == "auto"


@needs_onednn
@pytest.mark.parametrize("bias", [True, False])
def test_onednn_products_equal_their_aten_forms(bias):
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(37, 24, generator=generator)
    residual = torch.randn(37, 40, generator=generator)
    w_gelu, w_add = torch.randn(40, 24, generator=generator), torch.randn(40, 40, generator=generator)
    b_gelu, b_add = (torch.randn(40, generator=generator), torch.randn(40, generator=generator)) if bias else (None, None)
    hidden = onednn.linear_gelu(x, w_gelu, b_gelu)
    torch.testing.assert_close(hidden, torch.nn.functional.gelu(torch.nn.functional.linear(x, w_gelu, b_gelu)))
    torch.testing.assert_close(
        onednn.linear_add(hidden, residual, w_add, b_add), residual + torch.nn.functional.linear(hidden, w_add, b_add)
    )


@needs_onednn
@pytest.mark.parametrize("bias", [True, False])
def test_onednn_linear_gradients_equal_aten(bias):
    generator = torch.Generator().manual_seed(6)
    x = torch.randn(3, 29, 24, generator=generator, requires_grad=True)
    weight = torch.randn(40, 24, generator=generator, requires_grad=True)
    b = torch.randn(40, generator=generator, requires_grad=True) if bias else None
    upstream = torch.randn(3, 29, 40, generator=generator)
    leaves = [x, weight] + ([b] if bias else [])
    out = onednn.linear(x, weight, b)
    grads = torch.autograd.grad(out, leaves, upstream)
    expected_out = torch.nn.functional.linear(x, weight, b)
    expected = torch.autograd.grad(expected_out, leaves, upstream)
    torch.testing.assert_close(out, expected_out)
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want)
    # Frozen weights (a fine-tuned detector's backbone): only the input gradient is asked for.
    (grad_x,) = torch.autograd.grad(onednn.linear(x, weight.detach(), None), x, upstream)
    torch.testing.assert_close(grad_x, upstream @ weight.detach())


@needs_onednn
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("features", [(24, 40), (40, 24)])
def test_onednn_weight_gradient_equals_mm(bias, features):
    """Both of the weight gradient's oneDNN forms (fewer input or fewer output features)."""
    in_features, out_features = features
    generator = torch.Generator().manual_seed(8)
    x = torch.randn(3, 29, in_features, generator=generator, requires_grad=True)
    weight = torch.randn(out_features, in_features, generator=generator, requires_grad=True)
    b = torch.randn(out_features, generator=generator, requires_grad=True) if bias else None
    upstream = torch.randn(3, 29, out_features, generator=generator)
    leaves = [x, weight] + ([b] if bias else [])
    got = torch.autograd.grad(onednn.linear(x, weight, b, onednn_weight_grad=True), leaves, upstream)
    want = torch.autograd.grad(torch.nn.functional.linear(x, weight, b), leaves, upstream)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)
    empty = torch.zeros(0, in_features, requires_grad=True)  # an empty batch: zero gradients
    (grad_weight,) = torch.autograd.grad(onednn.linear(empty, weight, b, True).sum(), [weight])
    assert torch.equal(grad_weight, torch.zeros_like(weight))


@needs_onednn
def test_training_linear_scope_follows_the_kernel_and_the_probe(cpu_mlp_kernel, monkeypatch):
    x = torch.zeros(2, 3)
    monkeypatch.setattr(onednn, "_cpu_has_avx512", lambda: True)
    cpu_mlp_kernel("auto")
    for speedup, expected in ((1.0, "mlp"), (onednn.ONEDNN_TRAINING_SPEEDUP, "all"), (2.3, "all")):
        monkeypatch.setattr(onednn, "onednn_matmul_speedup", lambda: speedup)
        assert onednn.training_linear_scope(x) == expected
    monkeypatch.setattr(onednn, "onednn_matmul_speedup", lambda: 1.0)
    cpu_mlp_kernel("onednn")  # forced: every layer, whatever the probe says
    assert onednn.training_linear_scope(x) == "all"
    assert onednn.training_linear_scope(x.double()) == "none"
    cpu_mlp_kernel("aten")
    assert onednn.training_linear_scope(x) == "none"


@needs_onednn
def test_square_products_by_library():
    a, b = torch.randn(16, 16), torch.randn(16, 16)
    products = onednn.square_products(a, b)
    assert list(products) == ["mm", "onednn"]
    torch.testing.assert_close(products["mm"](), a @ b)
    torch.testing.assert_close(products["onednn"](), a @ b.T)  # the same work, b read as the weight
    assert list(onednn.square_products(a.double(), b.double())) == ["mm"]  # oneDNN's op: float32 only


@needs_onednn
def test_onednn_matmul_speedup_leaves_the_global_random_state_alone():
    onednn.onednn_matmul_speedup.cache_clear()
    state = torch.get_rng_state()
    assert onednn.onednn_matmul_speedup(size=64, rounds=1) > 0
    assert torch.equal(torch.get_rng_state(), state)


@needs_onednn
@pytest.mark.parametrize("name", ["lit_ti", "lit_s"])
@pytest.mark.parametrize("scope", ["mlp", "all"])
def test_onednn_training_step_equals_aten(tiny_lit, name, scope, cpu_mlp_kernel, monkeypatch):
    """In training the MLP-only stages' Linear layers (scope "mlp") or every block's (scope "all",
    weight gradients included) go through oneDNN; loss and every gradient match ATen's."""
    calls = []
    monkeypatch.setattr(lit, "onednn_linear", lambda *a: calls.append(a[3]) or onednn.linear(*a))
    monkeypatch.setattr(onednn, "_cpu_has_avx512", lambda: True)
    monkeypatch.setattr(onednn, "onednn_matmul_speedup", lambda: 2.0 if scope == "all" else 1.0)
    model = _randomise_offsets(tiny_lit(name, depths=(2, 3, 2, 1), drop_path_rate=0.0)).train()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(7))
    target = torch.tensor([1, 4])
    results = {}
    for kernel in ("aten", "auto"):
        cpu_mlp_kernel(kernel)
        model.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x), target)
        loss.backward()
        results[kernel] = (loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()})
    # fc1 and fc2 of the five MLP-only blocks; with "all", also qkv, proj, fc1, fc2 of the three
    # attention blocks (LIT-Ti's last computes only its class token, as modules), each asking for
    # its weight gradient from oneDNN. Only in the oneDNN step.
    attention_blocks = 2 if name == "lit_ti" else 3
    assert calls == ([False] * 2 * (2 + 3) if scope == "mlp" else [True] * (2 * (2 + 3) + 4 * attention_blocks))
    torch.testing.assert_close(results["auto"][0], results["aten"][0])
    assert results["auto"][1].keys() == results["aten"][1].keys()
    for param_name, grad in results["aten"][1].items():
        torch.testing.assert_close(results["auto"][1][param_name], grad, rtol=1e-4, atol=1e-6, msg=param_name)
    calls.clear()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(x)  # bfloat16 products are autocast's, not float32 oneDNN ones
    assert not calls
    handles = [
        model.stages[0].blocks[0].mlp.fc2.register_forward_hook(lambda *a: None),
        model.stages[2].blocks[0].attn.qkv.register_forward_hook(lambda *a: None),
    ]
    model(x)  # those blocks run their modules; the others still take oneDNN
    for handle in handles:
        handle.remove()
    assert len(calls) == (2 * 4 if scope == "mlp" else 2 * 4 + 4 * (attention_blocks - 1))


def test_fused_mlp_steps_aside_where_it_could_be_noticed(tiny_lit, monkeypatch):
    model = tiny_lit("lit_s")
    calls = _spy_fused_mlp(monkeypatch)
    x = torch.randn(1, 3, 64, 64)
    model(x)  # autograd on: activations must be kept for the backward pass
    with torch.no_grad():
        model.train()
        model(x)  # dropout and drop path act in training mode
        model.eval()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model(x)
    assert calls == []
    # A hook on a skipped module must still fire, once per forward: that stage runs module by module.
    fired = []
    handle = model.stages[0].blocks[0].mlp.fc1.register_forward_hook(lambda *a: fired.append(1))
    with torch.no_grad():
        model(x)
    handle.remove()
    assert fired == [1]
    assert calls == [1, 1, 1]  # stage 2 and the two attention blocks still fuse
    calls.clear()
    with torch.no_grad(), FlopCounterMode(display=False):
        model(x)  # its module tracker hooks every module globally
    assert calls == []


@pytest.mark.parametrize("name", ["lit_ti", "lit_s"])
def test_whole_model_fast_equals_reference(tiny_lit, name, monkeypatch):
    fast, reference = _pair(tiny_lit, name)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        out_fast, offsets_fast = fast.forward_with_offsets(x)
        out_ref, offsets_ref = reference.forward_with_offsets(x)
        # A size other than the training size exercises the resized position tables too.
        big = torch.randn(1, 3, 96, 64)
        torch.testing.assert_close(fast(big), reference(big), rtol=1e-4, atol=1e-4)
        # ... and, with small bias blocks, the query-blocked attention of large inputs.
        monkeypatch.setattr(lit, "BIAS_BLOCK_ELEMENTS", 64)
        torch.testing.assert_close(fast(big), reference(big), rtol=1e-4, atol=1e-4)
    assert max(o.abs().max().item() for o in offsets_ref) > 0.1
    torch.testing.assert_close(out_fast, out_ref, rtol=1e-4, atol=1e-4)
    for a, b in zip(offsets_fast, offsets_ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out_bf16 = fast(x)
    assert _rel_err(out_bf16, out_ref) < 5e-2


def test_whole_model_training_gradients_fast_equal_reference(tiny_lit):
    fast, reference = _pair(tiny_lit, "lit_s")
    fast.train()
    reference.train()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    for model in (fast, reference):
        model(x).square().mean().backward()
    fast_grads = dict(fast.named_parameters())
    for name, param in reference.named_parameters():
        torch.testing.assert_close(fast_grads[name].grad, param.grad, rtol=1e-3, atol=1e-5, msg=name)


@pytest.mark.parametrize("name", ["lit_ti", "lit_s"], ids=["abs-pos+cls (lit_ti)", "rel-bias (lit_s/m/b)"])
def test_compiles_without_graph_breaks(tiny_lit, name):
    # lit_m and lit_b are lit_s's code path with other widths and depths. fullgraph=True makes
    # any graph break an error. Dynamo's tracing is what finds graph breaks; the eager backend
    # skips Inductor's code generation, which takes minutes on a 2-core machine.
    torch._dynamo.reset()
    model = tiny_lit(name)
    x = torch.randn(2, 3, 64, 64)
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x))


@pytest.mark.parametrize("name", ["lit_ti", "lit_s"])
def test_an_empty_batch_gives_empty_outputs_on_both_paths(tiny_lit, name):
    # A rank's share of an evaluation set can be empty; token reshapes must not infer sizes from 0 elements.
    fast, reference = _pair(tiny_lit, name)
    x = torch.randn(0, 3, 64, 64)
    for model in (fast, reference):
        with torch.no_grad():
            logits, offsets = model.forward_with_offsets(x)
        assert logits.shape == (0, 10)
        assert [tuple(o.shape) for o in offsets] == [(0, 8, 8, 8), (0, 8, 4, 4), (0, 8, 2, 2)]
        model.train()
        model(x).sum().backward()


def _full_last_block(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model.forward_head(model.forward_features(x))


@pytest.mark.parametrize("checkpointing", [False, True])
def test_class_token_tail_equals_the_full_last_block(tiny_lit, checkpointing):
    model = _randomise_offsets(tiny_lit("lit_ti", depths=(1, 1, 2, 2), drop_path_rate=0.5))
    generator = torch.Generator().manual_seed(6)
    with torch.no_grad():
        for param in model.parameters():
            if param.ndim == 1:
                param.add_(torch.randn(param.shape, generator=generator) * 0.2)
    model.set_grad_checkpointing(checkpointing)
    assert model.class_token_tail_applies()
    x = torch.randn(2, 3, 64, 64, generator=generator)
    with torch.no_grad():
        torch.testing.assert_close(model(x), _full_last_block(model, x), rtol=1e-5, atol=1e-5)
        logits, offsets = model.forward_with_offsets(x)
        torch.testing.assert_close(logits, _full_last_block(model, x), rtol=1e-5, atol=1e-5)
        assert len(offsets) == 3
    # Training, stochastic depth included: the same draws give the same logits and gradients.
    model.train()
    grads = []
    for forward in (model, lambda images: _full_last_block(model, images)):
        model.zero_grad()
        torch.manual_seed(3)
        out = forward(x)
        out.square().mean().backward()
        grads.append((out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (tail_out, tail_grads), (full_out, full_grads) = grads
    torch.testing.assert_close(tail_out, full_out, rtol=1e-5, atol=1e-5)
    for name, grad in full_grads.items():
        torch.testing.assert_close(tail_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_class_token_tail_computes_less(tiny_lit):
    model = tiny_lit("lit_ti")
    for module in model.modules():
        if isinstance(module, Attention):
            module.fused_attn = False  # FlopCounterMode counts the explicit products, not CPU SDPA
    assert model.class_token_tail_applies()
    x = torch.randn(1, 3, 64, 64)
    counts = []
    for forward in (model, lambda images: _full_last_block(model, images)):
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            forward(x)
        counts.append(counter.get_total_flops())
    last = model.stages[-1].blocks[-1]
    dim, tokens = last.attn.proj.in_features, 1 + 2 * 2  # a 64 px image leaves a 2 x 2 stage-4 grid
    hidden = last.mlp.fc1.out_features
    # The other 4 tokens' queries, attention rows (scores and weighted values), projection and MLP.
    saved = 2 * (tokens - 1) * (dim * dim + 2 * tokens * dim + dim * dim + 2 * dim * hidden)
    assert counts[1] - counts[0] == saved


def test_class_token_tail_steps_aside_where_it_could_be_noticed(tiny_lit):
    model = tiny_lit("lit_ti")
    seen = []
    handle = model.stages[-1].blocks[-1].mlp.register_forward_hook(lambda m, i, o: seen.append(o.shape[1]))
    assert not model.class_token_tail_applies()
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))
    handle.remove()
    assert seen == [5], "a hook on the last block sees every token"
    assert model.class_token_tail_applies()
    assert not set_reference_path(copy.deepcopy(model)).class_token_tail_applies()
    assert not tiny_lit("lit_s").class_token_tail_applies()  # mean pooling reads every token
    model.reset_classifier(10, global_pool="avg")
    assert not model.class_token_tail_applies()


def _spy_inplace_mlp(monkeypatch) -> list:
    """Record every verdict of inplace_mlp_applies."""
    verdicts = []
    applies = lit.inplace_mlp_applies
    monkeypatch.setattr(lit, "inplace_mlp_applies", lambda *a: verdicts.append(applies(*a)) or verdicts[-1])
    return verdicts


@pytest.mark.parametrize("name", ["lit_ti", "lit_s"])
def test_inplace_mlp_equals_the_module_form_under_autocast(tiny_lit, name, monkeypatch):
    # CPU autocast takes the path of GPU inference: the fused CPU path needs plain float32.
    model = _randomise_offsets(tiny_lit(name))
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    verdicts = _spy_inplace_mlp(monkeypatch)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        fast = model(x)
        assert verdicts and all(verdicts)  # every block took it
        monkeypatch.setattr(lit, "inplace_mlp_applies", lambda *a: False)
        modules = model(x)
    # The same ops on the same values, only the GELU writes over its input: bit for bit equal.
    assert torch.equal(fast, modules)


def test_inplace_mlp_steps_aside_where_it_could_be_noticed(tiny_lit, monkeypatch):
    model = tiny_lit("lit_s")
    x = torch.randn(1, 3, 64, 64)
    verdicts = _spy_inplace_mlp(monkeypatch)
    model(x)  # autograd on: fc1's output is saved for GELU's backward
    model.train()
    with torch.no_grad():
        model(x)  # dropout and drop path act in training mode
    assert verdicts and not any(verdicts)
    verdicts.clear()
    model.eval()
    fc1 = model.stages[2].blocks[0].mlp.fc1
    seen = []
    handle = fc1.register_forward_hook(lambda module, args, out: seen.append((args[0].clone(), out)))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        model(x)
        handle.remove()
        # The hooked fc1 keeps its output: what the hook holds is still fc1's product, not its GELU.
        ((hooked_in, hooked_out),) = seen
        assert torch.equal(hooked_out, fc1(hooked_in))
    assert verdicts.count(False) == 1 and verdicts.count(True) == len(verdicts) - 1


def test_inplace_mlp_lowers_the_inference_peak(monkeypatch):
    block = lit.Block(dim=32, num_heads=1, mlp_ratio=4, use_attn=False).eval()
    x = torch.randn(2, 4096, 32)

    def live_peak() -> int:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            return live_tensor_peak_bytes(lambda: block(x, (64, 64)))

    monkeypatch.setattr(lit, "fused_mlp_applies", lambda *a, **kw: False)  # as on a GPU
    verdicts = _spy_inplace_mlp(monkeypatch)
    inplace = live_peak()
    assert verdicts == [True]
    monkeypatch.setattr(lit, "inplace_mlp_applies", lambda *a: False)
    modules = live_peak()
    hidden_bytes = x.shape[0] * x.shape[1] * 128 * 2  # one bfloat16 hidden activation
    # GELU's output is gone; the new peak is while fc1 runs, when the bfloat16 copy of its input
    # (a quarter of a hidden activation here) is alive too.
    assert modules - inplace >= 0.7 * hidden_bytes


def test_inplace_mlp_frees_the_hidden_activation_before_the_residual_sum(monkeypatch):
    block = lit.Block(dim=32, num_heads=1, mlp_ratio=4, use_attn=False).eval()
    x = torch.randn(2, 4096, 32)
    monkeypatch.setattr(lit, "fused_mlp_applies", lambda *a, **kw: False)  # as on a GPU
    verdicts = _spy_inplace_mlp(monkeypatch)
    with torch.no_grad():
        peak = live_tensor_peak_bytes(lambda: block(x, (64, 64)))
        expected = x + block.mlp(block.norm2(x))
        torch.testing.assert_close(block(x, (64, 64)), expected, rtol=0, atol=0)
    assert verdicts[0] is True
    hidden_bytes = x.numel() * 4 * 4  # fc1's float32 output
    # fc1's output and its input (a quarter of it), then fc1's output and fc2's: 1.25 hidden. Were
    # the hidden activation still alive at the residual sum, the peak would be 1.5.
    assert peak == 1.25 * hidden_bytes

"""oneDNN's fused products (litvit.ops.onednn) equal their ATen forms, values and gradients."""
from __future__ import annotations

import pytest
import torch

from litvit.ops import onednn

needs_onednn = pytest.mark.skipif(not onednn.onednn_linear_available(), reason="torch built without oneDNN")

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


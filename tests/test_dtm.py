"""The pure-PyTorch 2x2 deformable convolution against torchvision's kernel, and the DTM module."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close
from torchvision.ops import deform_conv2d

from litvit.models import DeformableTokenMerging
from litvit.ops.deform import deform_conv2x2, deform_sample2x2, sampling_locations2x2

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def make_inputs(batch=2, in_chans=3, height=7, width=9, out_chans=5, offset_kind="mixed", dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, in_chans, height, width, generator=gen, dtype=dtype)
    out_h, out_w = height // 2, width // 2
    offset = torch.randn(batch, 8, out_h, out_w, generator=gen, dtype=dtype) * 1.5
    if offset_kind == "mixed":
        # Shifts of up to a few pixels send samples partly past the border at the edges...
        offset[:, :, 0] -= 1.3
        offset[:, :, -1] += 1.3
        # ... and a large shift moves some cells' taps wholly outside the map.
        offset[:, 0::2, :, 0] += 40.0
        offset[:, 1::2, 0, :] -= 40.0
    elif offset_kind == "zero":
        offset.zero_()
    weight = torch.randn(out_chans, in_chans, 2, 2, generator=gen, dtype=dtype)
    bias = torch.randn(out_chans, generator=gen, dtype=dtype)
    return x, offset, weight, bias


@pytest.mark.parametrize("height,width", [(7, 9), (8, 8), (5, 12), (9, 5)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_matches_torchvision_values_and_gradients(height, width, with_bias):
    x, offset, weight, bias = make_inputs(height=height, width=width)
    bias = bias if with_bias else None
    inputs = [t.requires_grad_() for t in (x, offset, weight) + ((bias,) if with_bias else ())]
    ours = deform_conv2x2(x, offset, weight, bias)
    theirs = deform_conv2d(x, offset, weight, bias, stride=2)
    assert ours.shape == theirs.shape == (2, 5, height // 2, width // 2)
    assert_close(ours, theirs, atol=1e-10, rtol=1e-10)

    cotangent = torch.randn_like(ours)
    grads_ours = torch.autograd.grad(ours, inputs, cotangent)
    grads_theirs = torch.autograd.grad(theirs, inputs, cotangent)
    for name, got, want in zip(("input", "offset", "weight", "bias"), grads_ours, grads_theirs):
        assert_close(got, want, atol=1e-9, rtol=1e-9, msg=lambda m: f"gradient wrt {name}: {m}")
    # The test inputs really exercise the border: some taps read only zeros, others
    # straddle it (one or two of their four corners outside), others lie inside.
    rows, cols = sampling_locations2x2(offset.detach()).unbind(-1)
    outside = (rows <= -1) | (rows >= height) | (cols <= -1) | (cols >= width)
    straddling = ~outside & ((rows < 0) | (rows > height - 1) | (cols < 0) | (cols > width - 1))
    assert outside.any() and straddling.any() and (~outside & ~straddling).any()


def test_samples_outside_the_map_read_zero():
    x, offset, weight, _ = make_inputs(offset_kind="zero")
    offset[:] = 100.0
    assert torch.equal(deform_sample2x2(x, offset), torch.zeros(2, 3 * 4, 3 * 4, dtype=x.dtype))
    # Half a pixel past the last row: bilinear weight 0.5 on the row, 0.5 on zero padding.
    offset.zero_()
    offset[:, 0] = 0.5  # row shift of tap (0, 0)
    samples = deform_sample2x2(x, offset).view(2, 3, 4, 3, 4)
    assert_close(samples[:, :, 0, 0, 0], 0.5 * x[:, :, 0, 0] + 0.5 * x[:, :, 1, 0])


def test_zero_offsets_equal_a_strided_convolution():
    x, offset, weight, bias = make_inputs(offset_kind="zero", height=8, width=10)
    assert_close(deform_conv2x2(x, offset, weight, bias), F.conv2d(x, weight, bias, stride=2), atol=1e-12, rtol=0)


def test_offset_shape_is_checked():
    x, offset, weight, _ = make_inputs(height=8, width=8)
    with pytest.raises(ValueError, match="does not fit"):
        deform_conv2x2(x, offset[..., :3, :], weight)
    with pytest.raises(ValueError, match="8 offset channels"):
        deform_conv2x2(x, offset[:, :6], weight)


def dtm_and_tokens(in_chans=6, out_chans=10, grid=(6, 8), batch=2, dtype=torch.float64, offset_std=0.5):
    torch.manual_seed(0)
    dtm = DeformableTokenMerging(in_chans, out_chans).to(dtype).eval()
    with torch.no_grad():
        dtm.norm.running_mean.normal_()
        dtm.norm.running_var.uniform_(0.5, 2.0)
        if offset_std:
            dtm.offset_conv.weight.normal_(0, offset_std)
            dtm.offset_conv.bias.normal_(0, offset_std)
    tokens = torch.randn(batch, grid[0] * grid[1], in_chans, dtype=dtype)
    return dtm, tokens


def test_dtm_module_returns_its_offsets_and_matches_torchvision():
    dtm, tokens = dtm_and_tokens()
    out, grid, offset = dtm(tokens, (6, 8))
    assert grid == (3, 4) and out.shape == (2, 12, 10)
    image = tokens.transpose(1, 2).reshape(2, 6, 6, 8)
    assert_close(offset, dtm.offset_conv(image))
    assert offset.abs().max() > 0.5
    expected = deform_conv2d(image, offset, dtm.proj.weight, dtm.proj.bias, stride=2)
    expected = dtm.act(dtm.norm(expected)).flatten(2).transpose(1, 2)
    assert_close(out, expected, atol=1e-10, rtol=1e-10)


def test_dtm_gradients_match_torchvision():
    dtm, tokens = dtm_and_tokens()
    tokens.requires_grad_()
    params = [tokens, dtm.offset_conv.weight, dtm.proj.weight, dtm.proj.bias]
    out, _, _ = dtm(tokens, (6, 8))
    grads = torch.autograd.grad(out.sum(), params)

    image = tokens.transpose(1, 2).reshape(2, 6, 6, 8)
    ref = deform_conv2d(image, dtm.offset_conv(image), dtm.proj.weight, dtm.proj.bias, stride=2)
    ref = dtm.act(dtm.norm(ref))
    ref_grads = torch.autograd.grad(ref.sum(), params)
    for got, want in zip(grads, ref_grads):
        assert_close(got, want, atol=1e-9, rtol=1e-9)


def test_a_channels_last_input_gets_its_gradient_in_token_layout():
    # DTM reads its tokens as a channels-last map; grid_sample's backward alone would hand back an
    # NCHW gradient, a transposed view in token layout that slows the whole backward pass.
    torch.manual_seed(0)
    leaf = torch.randn(2, 8 * 6, 4, requires_grad=True)
    offset = torch.randn(2, 8, 4, 3)
    weight = torch.randn(5, 4, 2, 2)
    tokens = leaf * 1.0  # not a leaf: a leaf's .grad is copied to its own layout, hiding the flow's
    seen = []
    tokens.register_hook(seen.append)
    as_map = tokens.reshape(2, 8, 6, 4).permute(0, 3, 1, 2)
    deform_sample2x2(as_map, offset).square().sum().backward()
    assert seen[0].is_contiguous()
    plain = leaf.detach().reshape(2, 8, 6, 4).permute(0, 3, 1, 2).contiguous().requires_grad_()
    deform_sample2x2(plain, offset).square().sum().backward()
    assert_close(seen[0], plain.grad.permute(0, 2, 3, 1).reshape(2, 48, 4))
    out = deform_conv2x2(as_map, offset, weight)
    assert out.is_contiguous(memory_format=torch.channels_last)


def test_untrained_dtm_is_a_plain_strided_convolution():
    dtm, tokens = dtm_and_tokens(offset_std=0)
    out, _, offset = dtm(tokens, (6, 8))
    assert torch.equal(offset, torch.zeros_like(offset))
    image = tokens.transpose(1, 2).reshape(2, 6, 6, 8)
    expected = dtm.act(dtm.norm(F.conv2d(image, dtm.proj.weight, dtm.proj.bias, stride=2)))
    assert_close(out, expected.flatten(2).transpose(1, 2), atol=1e-12, rtol=0)


def test_bfloat16_autocast_on_cpu():
    # Offsets of about half a pixel, as trained DTMs predict; bfloat16 keeps ~3 significant
    # digits, so the merged tokens agree with float32 to a few hundredths.
    dtm, tokens = dtm_and_tokens(in_chans=32, out_chans=64, grid=(14, 14), dtype=torch.float32, offset_std=0.05)
    dtm.train()  # batch statistics: the path used while training
    reference, _, reference_offset = dtm(tokens, (14, 14))
    assert reference_offset.abs().mean() > 0.2
    tokens.requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _, offset = dtm(tokens, (14, 14))
    assert torch.isfinite(out).all()
    assert_close(offset.float(), reference_offset, atol=5e-2, rtol=5e-2)
    assert_close(out.float(), reference, atol=5e-2, rtol=5e-2)
    out.float().sum().backward()
    assert tokens.grad is not None and torch.isfinite(tokens.grad).all()
    assert dtm.proj.weight.grad is not None and torch.isfinite(dtm.offset_conv.weight.grad).all()


def test_bfloat16_autocast_tiny_model(tiny_lit):
    model = tiny_lit("lit_s")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        reference = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(x)
    assert_close(logits.float(), reference, atol=0.1, rtol=0.1)


@needs_cuda
@pytest.mark.parametrize("height,width", [(7, 9), (56, 56)])
def test_cuda_matches_torchvision(height, width):
    x, offset, weight, bias = (t.cuda().float().requires_grad_() for t in make_inputs(height=height, width=width))
    ours = deform_conv2x2(x, offset, weight, bias)
    theirs = deform_conv2d(x, offset, weight, bias, stride=2)
    assert_close(ours, theirs, atol=1e-4, rtol=1e-4)
    cotangent = torch.randn_like(ours)
    for got, want in zip(torch.autograd.grad(ours, (x, offset, weight, bias), cotangent),
                         torch.autograd.grad(theirs, (x, offset, weight, bias), cotangent)):
        assert_close(got, want, atol=1e-3, rtol=1e-3)


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_half_precision(dtype):
    dtm, tokens = dtm_and_tokens(in_chans=64, out_chans=128, grid=(56, 56), dtype=torch.float32, offset_std=0.05)
    dtm, tokens = dtm.cuda(), tokens.cuda()
    reference, _, _ = dtm(tokens, (56, 56))
    tokens.requires_grad_()
    with torch.autocast("cuda", dtype=dtype):
        out, _, _ = dtm(tokens, (56, 56))
    assert_close(out.float(), reference, atol=5e-2, rtol=5e-2)
    out.float().sum().backward()
    assert torch.isfinite(tokens.grad).all()
    # Direct half-precision tensors (no autocast) work too.
    x, offset, weight, bias = (t.cuda().to(dtype) for t in make_inputs(height=56, width=56, dtype=torch.float32))
    out = deform_conv2x2(x, offset, weight, bias)
    assert out.dtype == dtype
    assert_close(out.float(), deform_conv2d(x.float(), offset.float(), weight.float(), bias.float(), stride=2),
                 atol=0.1, rtol=0.05)

"""The Triton DTM sampling kernels against the grid_sample path, run in Triton's interpreter.

``TRITON_INTERPRET=1`` executes the same kernel code on CPU tensors, but only if it is set
before triton is imported, so ``tests/test_dtm_triton.py`` runs this file in a child pytest
with the variable set (the name keeps the normal collection from picking it up).
"""
from __future__ import annotations

import os

import pytest
import torch
from torch.testing import assert_close

import litvit.ops.deform as deform
from litvit.models import DeformableTokenMerging
from litvit.ops.deform import deform_sample2x2, sampling_locations2x2



@pytest.fixture(scope="module")
def interpreted():
    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.fail("run through tests/test_dtm_triton.py, which sets TRITON_INTERPRET=1 before triton is imported")
    import litvit.ops.deform_triton as module

    return module


def make_case(batch=2, channels=70, height=9, width=8, channels_last=True, seed=0):
    """Float64 input and offsets; some taps wholly outside the map, some across its border."""
    gen = torch.Generator().manual_seed(seed)
    if channels_last:  # how the DTM holds tokens: a NHWC buffer viewed as NCHW
        x = torch.randn(batch, height, width, channels, generator=gen, dtype=torch.float64).permute(0, 3, 1, 2)
    else:
        x = torch.randn(batch, channels, height, width, generator=gen, dtype=torch.float64)
    offset = torch.randn(batch, 8, height // 2, width // 2, generator=gen, dtype=torch.float64) * 1.5
    offset[:, :, 0] -= 1.3
    offset[:, 0::2, :, -1] += 30.0
    return x, offset


def reference(x, offset, cotangent):
    x, offset = x.clone().requires_grad_(), offset.clone().requires_grad_()
    out = deform_sample2x2(x, offset)
    return (out, *torch.autograd.grad(out, (x, offset), cotangent))


def run_kernel(fn, x, offset, cotangent, dtype):
    x = x.to(dtype).detach().requires_grad_()
    offset = offset.float().detach().requires_grad_()
    out = fn(x, offset)
    grad_x, grad_offset = torch.autograd.grad(out, (x, offset), cotangent.to(dtype))
    return out, grad_x, grad_offset


@pytest.mark.parametrize("channels,channels_last", [(70, True), (70, False), (5, True)])
def test_interpreted_kernels_match_grid_sample(interpreted, channels, channels_last):
    x, offset = make_case(channels=channels, channels_last=channels_last)
    cotangent = torch.randn(2, channels * 4, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    want = reference(x, offset, cotangent)
    got = run_kernel(interpreted.deform_sample2x2_triton, x, offset, cotangent, torch.float32)
    assert got[0].shape == want[0].shape and got[0].dtype == torch.float32
    # The matrix product after it reads the samples as a contiguous B x N x (C*4) buffer.
    assert got[0].transpose(1, 2).is_contiguous()
    for name, a, b in zip(("samples", "input gradient", "offset gradient"), got, want):
        assert_close(a.double(), b, atol=1e-5, rtol=1e-5, msg=lambda m: f"{name}: {m}")
    assert got[1].shape == x.shape
    # The case really has taps reading only zeros and taps straddling the border.
    rows, cols = sampling_locations2x2(offset).unbind(-1)
    outside = (rows <= -1) | (rows >= 9) | (cols <= -1) | (cols >= 8)
    assert outside.any() and (~outside & ((rows < 0) | (cols > 7))).any()


def test_interpreted_kernels_bfloat16(interpreted):
    x, offset = make_case(channels=24)
    cotangent = torch.randn(2, 24 * 4, 16, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    want = reference(x.to(torch.bfloat16).double(), offset, cotangent.to(torch.bfloat16).double())
    got = run_kernel(interpreted.deform_sample2x2_triton, x, offset, cotangent, torch.bfloat16)
    assert got[0].dtype == got[1].dtype == torch.bfloat16
    for name, a, b in zip(("samples", "input gradient", "offset gradient"), got, want):
        scale = b.abs().max()
        assert_close(a.double() / scale, b / scale, atol=1e-2, rtol=0, msg=lambda m: f"{name}: {m}")


def test_kernel_rejects_mismatched_offsets(interpreted):
    x, offset = make_case()
    with pytest.raises(ValueError, match="does not fit"):
        interpreted.deform_sample2x2_triton(x.float(), offset[:, :6].float())


def test_dtm_module_dispatches_to_the_kernel(interpreted, monkeypatch):
    """With the kernel chosen, a whole DTM (forward and backward) runs through it and agrees."""
    torch.manual_seed(0)
    dtm = DeformableTokenMerging(12, 20).train()
    with torch.no_grad():
        dtm.offset_conv.weight.normal_(0, 0.3)
    tokens = torch.randn(2, 8 * 10, 12)

    def run():
        leaf = tokens.clone().requires_grad_()
        dtm.zero_grad(set_to_none=True)
        out, _, offset = dtm(leaf, (8, 10))
        out.square().sum().backward()
        return out, leaf.grad, dtm.offset_conv.weight.grad, dtm.proj.weight.grad

    want = run()
    calls = []
    kernel = interpreted.deform_sample2x2_triton

    def counting(x, offset):
        calls.append(x.shape)
        return kernel(x, offset)

    # The dispatch picks the kernel only for CUDA tensors; the interpreter stands in for one.
    monkeypatch.setattr(deform, "_use_triton", lambda x: True)
    monkeypatch.setattr(interpreted, "deform_sample2x2_triton", counting)
    got = run()
    assert calls == [torch.Size([2, 12, 8, 10])]
    for name, a, b in zip(("output", "input grad", "offset conv grad", "proj grad"), got, want):
        assert_close(a, b, atol=1e-4, rtol=1e-4, msg=lambda m: f"{name}: {m}")

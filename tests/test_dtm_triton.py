"""The optional Triton DTM kernel: its selection, and its values and gradients.

On CPU the kernels are checked in Triton's interpreter (``tests/triton_interpreted_cases.py``,
run in a child pytest because ``TRITON_INTERPRET`` must be set before triton is imported);
on CUDA the compiled kernels are checked directly.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.testing import assert_close

import litvit.ops.deform as deform
from litvit.models import DeformableTokenMerging
from litvit.ops.deform import set_dtm_kernel

pytest.importorskip("triton")
from triton_interpreted_cases import make_case, reference, run_kernel  # noqa: E402

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _interpreter_broken_by_numpy() -> bool:
    """Triton's interpreter up to 3.6 converts loop bounds with ``int()`` of a one-element
    array, which NumPy 2.4 refuses ("only 0-dimensional arrays can be converted"); checked
    here: Triton 3.6.0 fails with NumPy 2.4.6 and passes with 2.2.6, Triton 3.7.0 passes."""
    import numpy
    import triton

    def version(text: str) -> tuple:
        return tuple(int(part) for part in text.split(".")[:2] if part.isdigit())

    return version(triton.__version__) < (3, 7) and version(numpy.__version__) >= (2, 4)


@pytest.mark.skipif(_interpreter_broken_by_numpy(), reason="Triton < 3.7's interpreter does not run with NumPy >= 2.4")
@pytest.mark.skipif(
    deform._triton_version() < deform.TRITON_TESTED_FROM,
    reason="Triton < 3.2's interpreter gives wrong values here (checked 3.0.0 and 3.1.0); "
    "'auto' keeps grid_sample on those releases",
)
def test_kernels_in_triton_interpreter():
    cases = Path(__file__).with_name("triton_interpreted_cases.py")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(cases)],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "skipped" not in result.stdout, result.stdout[-2000:]


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_kernels_compile_for_a_hopper_gpu(dtype, tmp_path, monkeypatch):
    """Compile both kernels ahead of time for sm_90 through Triton's real pipeline (PTX and
    ptxas; no GPU needed). This catches what the interpreter does not: typing and lowering."""
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("TRITON_DEFAULT_FP_FUSION", "1")
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    import litvit.ops.deform_triton as kernels

    pointers = {"x_ptr": dtype, "out_ptr": dtype, "grad_ptr": dtype, "off_ptr": "fp32", "grad_x_ptr": "fp32",
                "grad_off_ptr": "fp32"}
    for kernel, cells, warps in (
        (kernels._sample_fwd_kernel, kernels._FWD_CELLS, kernels._FWD_WARPS),
        (kernels._sample_bwd_kernel, kernels._BWD_CELLS, kernels._BWD_WARPS),
    ):
        signature = {
            name: "constexpr" if name.startswith("BLOCK_") else (f"*{pointers[name]}" if name in pointers else "i32")
            for name in kernel.arg_names
        }
        try:
            source = ASTSource(kernel, signature, constexprs={"BLOCK_N": cells, "BLOCK_C": 64})
        except TypeError:
            pytest.skip(f"Triton {triton.__version__} has another ahead-of-time compile API")
        ptx = triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": warps}).asm["ptx"]
        assert ".target sm_90" in ptx
        if kernel is kernels._sample_bwd_kernel:
            # The input-gradient scatter: a float32 global atomic add (``red`` or ``atom``, with
            # or without scope and ordering qualifiers, depending on the Triton release).
            atomics = re.findall(r"\b(?:red|atom)\.global\.[\w.]*add\.f32\b", ptx)
            assert atomics, re.findall(r"\b(?:red|atom)\.\S+", ptx)


def test_set_dtm_kernel():
    assert deform.get_dtm_kernel() == "auto"  # Triton on CUDA when installed, else grid_sample
    # this module runs only where triton imports; "auto" takes it from the first tested release
    tested = deform._triton_version() >= deform.TRITON_TESTED_FROM
    assert deform.get_dtm_kernel("cuda") == ("triton" if tested else "torch")
    assert deform.get_dtm_kernel("cpu") == "torch"
    with pytest.raises(ValueError, match="unknown DTM kernel"):
        set_dtm_kernel("cuda")
    try:
        set_dtm_kernel("torch")
        assert deform.get_dtm_kernel("cuda") == "torch"
        set_dtm_kernel("triton")
        assert deform.get_dtm_kernel() == "triton"
        # CPU tensors keep the grid_sample path whatever the choice.
        assert not deform._use_triton(torch.zeros(1, 1, 2, 2))
    finally:
        set_dtm_kernel("auto")


def test_auto_without_triton_falls_back_to_grid_sample(monkeypatch):
    monkeypatch.setattr(deform, "_triton_version", lambda: None)
    assert deform.get_dtm_kernel("cuda") == "torch"
    with pytest.raises(RuntimeError, match="needs the triton package"):
        set_dtm_kernel("triton")


def test_auto_keeps_grid_sample_on_untested_triton_releases(monkeypatch):
    monkeypatch.setattr(deform, "_triton_version", lambda: (3, 1))
    assert deform.get_dtm_kernel("cuda") == "torch"
    try:
        set_dtm_kernel("triton")  # asked for explicitly: the user's choice stands
        assert deform.get_dtm_kernel("cuda") == "triton"
    finally:
        set_dtm_kernel("auto")
    monkeypatch.setattr(deform, "_triton_version", lambda: deform.TRITON_TESTED_FROM)
    assert deform.get_dtm_kernel("cuda") == "triton"


def test_dtm_kernel_from_environment(monkeypatch):
    monkeypatch.setenv("LITVIT_DTM_KERNEL", "Triton")
    assert deform._kernel_from_environment() == "triton"
    monkeypatch.delenv("LITVIT_DTM_KERNEL")
    assert deform._kernel_from_environment() == "auto"
    monkeypatch.setenv("LITVIT_DTM_KERNEL", "cuda")
    with pytest.warns(UserWarning, match="LITVIT_DTM_KERNEL='cuda' is not one of auto, torch, triton"):
        assert deform._kernel_from_environment() == "auto"


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_kernels_match_grid_sample(dtype):
    from litvit.ops.deform_triton import deform_sample2x2_triton

    x, offset = make_case(batch=4, channels=96, height=28, width=30)
    cotangent = torch.randn(4, 96 * 4, 14 * 15, dtype=torch.float64)
    want = reference(x, offset, cotangent)
    got = run_kernel(deform_sample2x2_triton, x.cuda(), offset.cuda(), cotangent.cuda(), dtype)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    for name, a, b in zip(("samples", "input gradient", "offset gradient"), got, want):
        scale = b.abs().max()
        assert_close(a.double().cpu() / scale, b / scale, atol=tol, rtol=0, msg=lambda m: f"{name}: {m}")


@needs_cuda
def test_cuda_model_with_triton_kernel_matches(tiny_lit):
    model = tiny_lit("lit_s").cuda()
    for dtm in model.modules():
        if isinstance(dtm, DeformableTokenMerging):  # trained DTMs shift their samples
            torch.nn.init.normal_(dtm.offset_conv.weight, std=0.3)
    x = torch.randn(2, 3, 64, 64, device="cuda")
    with torch.no_grad():
        try:
            set_dtm_kernel("torch")
            want = model(x)
            set_dtm_kernel("triton")
            got = model(x)
        finally:
            set_dtm_kernel("auto")
    assert_close(got, want, atol=1e-4, rtol=1e-4)

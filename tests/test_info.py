"""``litvit info``: parameter and operation counts."""
from __future__ import annotations

import json

import pytest

from litvit.cli import main
from litvit.models import MODEL_CONFIGS

LIT_TI_PARAMS = 19_886_272


def dtm_shapes(name, size=224):
    """(input channels, output channels, output cells) of the three DTMs at ``size``."""
    dims = MODEL_CONFIGS[name]["embed_dims"]
    return [(dims[i - 1], dims[i], (size // (4 * 2**i)) ** 2) for i in (1, 2, 3)]


@pytest.fixture(scope="module")
def lit_ti_info():
    import io
    from contextlib import redirect_stdout

    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["info", "--model", "lit_ti", "--json"]) == 0
    rows = json.loads(out.getvalue())
    assert isinstance(rows, list) and len(rows) == 1
    return rows[0]


def test_parameters(lit_ti_info):
    assert lit_ti_info["model"] == "lit_ti" and lit_ti_info["img_size"] == [224, 224]
    assert lit_ti_info["params"] == LIT_TI_PARAMS
    # The classifier is a 512 -> 1000 Linear.
    assert lit_ti_info["params_no_head"] == LIT_TI_PARAMS - (512 * 1000 + 1000)
    assert lit_ti_info["paper_params_m"] == 19 and lit_ti_info["paper_gmacs_224"] == 3.6


def test_gmacs_match_the_paper(lit_ti_info):
    assert lit_ti_info["gmacs"] == pytest.approx(3.6, rel=0.01)
    # The paper convention leaves the bilinear sampling out: the GMACs are the other ops' sum.
    by_op = lit_ti_info["gmacs_by_op"]
    assert by_op["grid_sampler_2d"] == pytest.approx(lit_ti_info["sampling_gmacs"])
    assert sum(by_op.values()) - by_op["grid_sampler_2d"] == pytest.approx(lit_ti_info["gmacs"])


def test_dtm_counted_as_its_two_convolutions(lit_ti_info):
    # Offset conv (C_in*4 -> 8) plus deformable conv (C_in*4 -> C_out), per output cell.
    expected = sum(c_in * 4 * (8 + c_out) * cells for c_in, c_out, cells in dtm_shapes("lit_ti")) / 1e9
    assert lit_ti_info["dtm_gmacs"] == pytest.approx(expected, rel=1e-9)
    # Bilinear sampling: four corners per sampled value, C_in x 4 taps per output cell.
    sampled = sum(c_in * 4 * cells for c_in, _, cells in dtm_shapes("lit_ti"))
    assert lit_ti_info["sampling_gmacs"] == pytest.approx(4 * sampled / 1e9, rel=1e-9)


def test_table_and_errors(capsys):
    assert main(["info", "--model", "lit_ti", "--img-size", "160", "256"]) == 0
    out = capsys.readouterr().out
    header, _, row = out.splitlines()[:3]
    assert "GMACs" in header and "sampling" in header
    assert row.split()[:3] == ["lit_ti", "160x256", "19.89"]

    assert main(["info", "--model", "lit_ti", "--img-size", "100"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "multiples of 32" in err and "100x100" in err

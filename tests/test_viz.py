"""DTM sampling-point tracing and attention maps (litvit.viz)."""
from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from PIL import Image

import litvit  # noqa: F401  (registers the models)
from litvit.errors import DataError
from litvit.viz import attention_maps, render_attention, render_offsets, trace_from_offsets, trace_sampling_points
from litvit.viz.offsets import default_cells

TINY = dict(embed_dims=(16, 32, 40, 64), depths=(1, 1, 1, 1), num_heads=(1, 2, 5, 8), img_size=64, num_classes=6)


def tiny_model(name: str = "lit_ti", **overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    kwargs = dict(TINY, **overrides)
    if name != "lit_ti":
        kwargs["num_heads"] = (1, 2, 4, 8)
    return timm.create_model(name, **kwargs).eval()


def expected_regular_pixels(r: int, c: int) -> np.ndarray:
    """The 64 stage-1 patch centres (row, col) of last-stage cell (r, c) with zero offsets."""
    rows = 32 * r + 4 * np.arange(8) + 1.5
    cols = 32 * c + 4 * np.arange(8) + 1.5
    return np.array([(y, x) for y in rows for x in cols])


def _sorted_rows(a: np.ndarray) -> np.ndarray:
    return a[np.lexsort((a[:, 1], a[:, 0]))]


def test_zero_offsets_give_the_regular_grid():
    model = tiny_model()  # offset convolutions start at zero
    x = torch.randn(1, 3, 96, 128)
    trace = trace_sampling_points(model, x, cells=[(1, 2), (0, 0)])
    assert trace["grids"] == [(24, 32), (12, 16), (6, 8), (3, 4)]
    for level, expected in zip(trace["offsets"], (8, 8, 8)):
        assert level.shape[0] == expected and np.all(level == 0)
    # Root (1, 2): DTM 3 samples stage-3 tokens (2..3, 4..5) exactly, in tap order.
    np.testing.assert_array_equal(trace["points"][0][0], [[2, 4], [2, 5], [3, 4], [3, 5]])
    # Their children: tap k of parent p sits at 2 * parent + (ki, kj).
    np.testing.assert_array_equal(trace["points"][1][0][:4], [[4, 8], [4, 9], [5, 8], [5, 9]])
    np.testing.assert_array_equal(trace["points"][1][0][4:8], [[4, 10], [4, 11], [5, 10], [5, 11]])
    # Pixel coordinates of every level are exact.
    np.testing.assert_array_equal(_sorted_rows(trace["pixels"][0][0]),
                                  [[39.5, 71.5], [39.5, 87.5], [55.5, 71.5], [55.5, 87.5]])
    for n, (r, c) in enumerate([(1, 2), (0, 0)]):
        np.testing.assert_array_equal(_sorted_rows(trace["pixels"][2][n]), expected_regular_pixels(r, c))
        np.testing.assert_array_equal(trace["root_pixels"][n], [32 * r + 15.5, 32 * c + 15.5])
        assert all(m[n].all() for m in trace["inside"])
    # The 64 points of all cells tile the stage-1 grid exactly once.
    full = trace_sampling_points(model, x)
    assert len(full["cells"]) == 12
    assert len({tuple(p) for p in full["points"][2].reshape(-1, 2).tolist()}) == 24 * 32


def test_constant_offsets_through_three_levels():
    dr, dc = 0.25, -0.5
    shapes = [(12, 16), (6, 8), (3, 4)]
    offsets = [np.tile(np.array([dr, dc] * 4)[:, None, None], (1, *s)) for s in shapes]
    trace = trace_from_offsets(offsets, cells=[(1, 1)])
    base3 = np.array([[2, 2], [2, 3], [3, 2], [3, 3]], dtype=float)
    np.testing.assert_allclose(trace["points"][0][0], base3 + [dr, dc])
    # (2.25, 1.5) lies in stage-3 cell round -> (2, 2) (ties go up: 1.5 -> 2); its DTM 2 cell is (2, 2).
    cells3 = np.floor(trace["points"][0][0] + 0.5)
    np.testing.assert_array_equal(cells3, [[2, 2], [2, 3], [3, 2], [3, 3]])
    taps = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=float)
    level2 = (2 * cells3[:, None, :] + taps[None] + [dr, dc]).reshape(-1, 2)
    np.testing.assert_allclose(trace["points"][1][0], level2)
    cells2 = np.floor(level2 + 0.5)
    level1 = (2 * cells2[:, None, :] + taps[None] + [dr, dc]).reshape(-1, 2)
    np.testing.assert_allclose(trace["points"][2][0], level1)
    np.testing.assert_allclose(trace["pixels"][2][0], (level1 + 0.5) * 4 - 0.5)


def test_cell_rule_follows_nearest_token_and_flags_outside():
    # Only DTM 3 moves: tap 0 of cell (0, 0) jumps to stage-3 point (1.6, -0.7) (outside, column < -0.5)
    # and tap 3 to (2.4, 2.4) (inside, nearest token (2, 2)). DTM 2 marks each cell by its own offset.
    off3 = np.zeros((8, 2, 2))
    off3[0:2, 0, 0] = [1.6, -0.7]
    off3[6:8, 0, 0] = [2.4 - 1, 2.4 - 1]
    off2 = np.zeros((8, 4, 4))
    rows, cols = np.mgrid[0:4, 0:4]
    off2[0] = rows * 0.01 + cols * 0.001  # tap 0 row offset encodes the cell it came from
    off1 = np.zeros((8, 8, 8))
    trace = trace_from_offsets([off1, off2, off3], cells=[(0, 0)])
    np.testing.assert_allclose(trace["points"][0][0][[0, 3]], [[1.6, -0.7], [2.4, 2.4]])
    np.testing.assert_array_equal(trace["inside"][0][0], [False, True, True, True])
    level2 = trace["points"][1][0]
    # Tap 0 child of parent 0 comes from clamped cell (2, 0); of parent 3 from cell (2, 2).
    np.testing.assert_allclose(level2[0], [4 + 0.02, 0])
    np.testing.assert_allclose(level2[12], [4 + 0.022, 4])
    assert trace["inside"][1][0].all() and trace["inside"][2][0].all()
    # Far outside on both sides and exactly on the border of the covered area.
    off3[:] = 0
    off3[0:2, 0, 0] = [-0.5, 3.5]  # on the edge: still inside
    off3[2:4, 0, 0] = [-0.51, 0]
    trace = trace_from_offsets([off1, off2, off3], cells=[(0, 0)])
    np.testing.assert_array_equal(trace["inside"][0][0], [True, False, True, True])
    with pytest.raises(ValueError, match="outside the last-stage grid"):
        trace_from_offsets([off1, off2, off3], cells=[(2, 0)])


def test_model_offsets_injected_through_bias_move_points():
    model = tiny_model()
    dtms = [s.downsample for s in model.stages if s.downsample is not None]
    shifts = [(0.5, -1.0), (-1.0, 0.25), (0.75, -0.5)]  # DTM 1, 2, 3: (row, col) for every tap
    with torch.no_grad():
        for dtm, (dr, dc) in zip(dtms, shifts):
            dtm.offset_conv.bias.copy_(torch.tensor([dr, dc] * 4))
    trace = trace_sampling_points(model, torch.randn(1, 3, 64, 64), cells=[(1, 0)])
    taps = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=float)
    p3 = 2 * np.array([1, 0]) + taps + shifts[2]
    np.testing.assert_allclose(trace["points"][0][0], p3, atol=1e-6)
    c3 = np.clip(np.floor(p3 + 0.5), 0, 3)
    p2 = (2 * c3[:, None] + taps[None] + shifts[1]).reshape(-1, 2)
    np.testing.assert_allclose(trace["points"][1][0], p2, atol=1e-6)
    c2 = np.clip(np.floor(p2 + 0.5), 0, 7)
    p1 = (2 * c2[:, None] + taps[None] + shifts[0]).reshape(-1, 2)
    np.testing.assert_allclose(trace["points"][2][0], p1, atol=1e-6)
    inside = ((p1 >= -0.5) & (p1 <= 15.5)).all(1)
    np.testing.assert_array_equal(trace["inside"][2][0], inside)
    assert 0 < inside.sum() < 64  # DTM 1's column shift of -1 pushes the left column off the map


def test_default_cells_spread():
    np.testing.assert_array_equal(default_cells((2, 2), 4), [[0, 0], [0, 1], [1, 0], [1, 1]])
    cells = default_cells((7, 7), 9)
    assert len(cells) == 9 and cells.min() >= 0 and cells.max() <= 6
    np.testing.assert_array_equal(default_cells((7, 7), 1), [[3, 3]])


@pytest.mark.parametrize("name", ["lit_ti", "lit_s"])
def test_attention_sums_to_one_and_matches_a_direct_computation(name):
    model = tiny_model(name)
    x = torch.randn(1, 3, 64, 96)
    result = attention_maps(model, x, query=(40.0, 70.0), blocks="all")
    assert [(b["stage"], b["block"]) for b in result["blocks"]] == [(3, 0), (4, 0)]
    prefix = 1 if name == "lit_ti" else 0
    for blk in result["blocks"]:
        np.testing.assert_allclose(blk["probs"].sum(-1), 1.0, atol=1e-5)
        assert (blk["probs"] >= 0).all()
        np.testing.assert_allclose(blk["maps"].sum((1, 2)) + blk["prefix"], 1.0, atol=1e-5)
        stride = 16 if blk["stage"] == 3 else 32
        row, col = 40 // stride, 70 // stride
        assert blk["query_index"] == (prefix if blk["stage"] == 4 else 0) + row * blk["grid"][1] + col
    # Recompute stage 4's attention for that query by hand from the block input.
    captured = {}
    attn = model.stages[3].blocks[0].attn
    hook = model.stages[3].blocks[0].norm1.register_forward_hook(lambda m, a, o: captured.update(x=o))
    model.forward_features(x)
    hook.remove()
    tokens = captured["x"]
    qkv = attn.qkv(tokens).reshape(1, tokens.shape[1], 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    logits = (qkv[0] * attn.scale) @ qkv[1].transpose(-2, -1)
    bias = attn.position_bias((2, 3), tokens.shape[1])
    if bias is not None:
        logits = logits + bias
    q = result["blocks"][1]["query_index"]
    expected = logits.softmax(-1)[0, :, q].detach().numpy()
    np.testing.assert_allclose(result["blocks"][1]["probs"], expected, rtol=1e-4, atol=1e-6)


def test_class_token_query():
    model = tiny_model("lit_ti")
    result = attention_maps(model, torch.randn(1, 3, 64, 64), query="cls")
    assert [(b["stage"], b["block"]) for b in result["blocks"]] == [(4, 0)]
    blk = result["blocks"][0]
    assert blk["query_index"] == 0 and blk["probs"].shape == (8, 5)
    np.testing.assert_allclose(blk["probs"].sum(-1), 1.0, atol=1e-5)
    with pytest.raises(DataError, match="no class token"):
        attention_maps(tiny_model("lit_s"), torch.randn(1, 3, 64, 64), query="cls")


@pytest.fixture
def odd_images(tmp_path):
    rng = np.random.default_rng(0)
    rgb = tmp_path / "odd.png"
    Image.fromarray(rng.integers(0, 255, (45, 77, 3), dtype=np.uint8)).save(rgb)
    gray = tmp_path / "gray.jpg"
    Image.fromarray(rng.integers(0, 255, (101, 53), dtype=np.uint8), mode="L").save(gray)
    return rgb, gray


def _png_size(path):
    with Image.open(path) as im:
        im.load()
        return im.format, im.size


def test_render_api(tmp_path, odd_images):
    model = tiny_model()
    rgb, gray = odd_images
    out = render_offsets(model, gray, tmp_path / "o.png", img_size="64x32", cells=[(1, 0)])
    fmt, size = _png_size(out)
    assert fmt == "PNG" and size[0] > 100 and size[1] > 100
    out = render_attention(model, rgb, tmp_path / "a.png", query=(44, 76))
    assert _png_size(out)[0] == "PNG"
    # Offsets that push points off their maps are drawn too (as crosses), not dropped.
    with torch.no_grad():
        model.stages[3].downsample.offset_conv.bias.fill_(-3.0)
    trace = trace_sampling_points(model, torch.randn(1, 3, 64, 64), cells=[(0, 0)])
    assert not trace["inside"][0].any()
    out = render_offsets(model, rgb, tmp_path / "outside.png", img_size=64, cells=[(0, 0)])
    assert _png_size(out)[0] == "PNG"
    with pytest.raises(DataError, match="outside"):
        render_offsets(model, rgb, tmp_path / "x.png", cells=[(5, 5)])
    with pytest.raises(DataError, match="multiples of 32"):
        render_offsets(model, rgb, tmp_path / "x.png", img_size="50x64")
    assert not (tmp_path / "x.png").exists()


def test_cli_writes_pngs(tmp_path, odd_images, capsys):
    from litvit.checkpoint import save_atomic
    from litvit.cli import main

    model = tiny_model()
    ckpt = tmp_path / "tiny.pth"
    save_atomic({"model": model.state_dict(), "model_ema": model.state_dict(),
                 "config": {"model": "lit_ti", "img_size": 64,
                            "model_kwargs": {k: v for k, v in TINY.items() if k not in ("img_size", "num_classes")}}},
                ckpt)
    rgb, gray = odd_images
    out = tmp_path / "figs"
    assert main(["viz", "offsets", str(rgb), str(gray), "--checkpoint", str(ckpt),
                 "--output-dir", str(out), "--points", "0,0", "1,0"]) == 0
    captured = capsys.readouterr()
    printed = captured.out.split()
    assert printed == [str(out / "odd_offsets.png"), str(out / "gray_offsets.png")]
    assert captured.err == ""
    for p in printed:
        assert _png_size(p)[0] == "PNG"
    assert main(["viz", "attention", str(gray), "--model", "lit_ti", "--checkpoint", str(ckpt),
                 "--query", "cls", "--img-size", "96"]) == 0
    assert _png_size(gray.parent / "gray_attention.png")[0] == "PNG"
    # Bad input: one line on stderr, exit status 2.
    assert main(["viz", "offsets", str(tmp_path / "missing.png"), "--checkpoint", str(ckpt)]) == 2
    err = capsys.readouterr().err.strip()
    assert "image not found" in err and len(err.splitlines()) == 1
    assert main(["viz", "attention", str(rgb), "--checkpoint", str(ckpt), "--query", "500,1"]) == 2
    assert "outside" in capsys.readouterr().err
    assert main(["viz", "offsets", "--checkpoint", str(ckpt)]) == 2
    assert "give the images" in capsys.readouterr().err
    # The old spellings (--image, --out, --use-ema) still work, each with one warning line.
    old = tmp_path / "old"
    assert main(["viz", "offsets", "--checkpoint", str(ckpt), "--use-ema", "--image", str(gray), "--out", str(old),
                 "--points", "0,0"]) == 0
    captured = capsys.readouterr()
    assert captured.out.split() == [str(old / "gray_offsets.png")] and _png_size(old / "gray_offsets.png")[0] == "PNG"
    warnings = captured.err.strip().splitlines()
    assert len(warnings) == 3 and all("is deprecated" in w for w in warnings)
    assert {w.split()[2] for w in warnings} == {"--use-ema", "--image", "--out"}


def test_figures_name_imagenet_classes_for_a_1000_class_head(tmp_path):
    from timm.data import ImageNetInfo

    from litvit.checkpoint import save_atomic
    from litvit.viz._common import load_model_and_classes
    from litvit.viz.offsets import prediction_label

    config = {"model": "lit_ti", "img_size": 64,
              "model_kwargs": {k: v for k, v in TINY.items() if k not in ("img_size", "num_classes")}}

    def checkpoint(name, num_classes, **extra):
        path = tmp_path / name
        save_atomic({"model": tiny_model(num_classes=num_classes).state_dict(), "config": config, **extra}, path)
        return path

    _, names = load_model_and_classes(None, checkpoint("imagenet.pth", 1000))
    info = ImageNetInfo()
    assert len(names) == 1000 and names[1] == info.index_to_description(1)
    logits = np.zeros(1000)
    logits[1] = 1.0
    assert prediction_label(logits, names) == f" - predicted: {info.index_to_description(1)}"
    # Recorded names win; a head of another size without them shows the index.
    assert load_model_and_classes(None, checkpoint("named.pth", 6, class_names=list("abcdef")))[1] == list("abcdef")
    _, names = load_model_and_classes(None, checkpoint("six.pth", 6))
    assert names is None and prediction_label(np.eye(6)[4], names) == " - predicted: 4"

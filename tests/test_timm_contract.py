"""timm's model contract on tiny LIT models: output formats, intermediates and pruning,
TorchScript, torch.fx, gradient checkpointing, classifier reset, parameter groups, device /
dtype arguments and ``features_only``. LIT-Ti is the class-token model, LIT-S stands for LIT-S/M/B."""
from __future__ import annotations

import warnings

import pytest
import timm
import torch
from timm.models import group_parameters
from timm.optim import param_groups_weight_decay
from torch.testing import assert_close

from conftest import TINY_KWARGS

NAMES = ("lit_ti", "lit_s")
# Not a multiple of the training size (64) and not square: position tables are resized.
OTHER_SIZE = (96, 64)


def image(batch: int = 2, size=(64, 64)) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(batch, 3, *size)


def with_offsets(model: torch.nn.Module) -> torch.nn.Module:
    """Give the DTMs non-zero offsets, so that deformable sampling leaves the regular grid."""
    torch.manual_seed(2)
    with torch.no_grad():
        for stage in model.stages:
            if stage.downsample is not None:
                stage.downsample.offset_conv.weight.normal_(0, 0.5)
                stage.downsample.offset_conv.bias.normal_(0, 0.5)
    return model


# ----------------------------------------------------------------------------- output formats
def test_forward_features_formats(tiny_lit):
    x = image()
    dense = tiny_lit("lit_s")
    features = dense.forward_features(x)
    assert features.shape == (2, dense.num_features, 2, 2)  # B x C x H/32 x W/32
    assert_close(dense.forward_head(features, pre_logits=True), features.mean(dim=(2, 3)))

    token = tiny_lit("lit_ti")
    features = token.forward_features(x)
    assert features.shape == (2, 1 + 2 * 2, token.num_features)  # class token first
    assert_close(token.forward_head(features, pre_logits=True), features[:, 0])
    for model in (dense, token):
        assert_close(model(x), model.forward_head(model.forward_features(x)))


@pytest.mark.parametrize("name", NAMES)
def test_forward_intermediates_agree_with_forward_features(tiny_lit, name):
    model = tiny_lit(name)
    x = image(size=OTHER_SIZE)
    final, maps = model.forward_intermediates(x)
    assert_close(final, model.forward_features(x))
    info = model.feature_info
    assert [m.shape for m in maps] == [
        (2, f["num_chs"], OTHER_SIZE[0] // f["reduction"], OTHER_SIZE[1] // f["reduction"]) for f in info
    ]
    # The last map is the final tokens (without the class token) before the final norm.
    last = final[:, model.num_prefix_tokens :] if final.dim() == 3 else final.flatten(2).transpose(1, 2)
    normed = model.norm(maps[-1].flatten(2).transpose(1, 2))
    assert_close(normed, last)
    only = model.forward_intermediates(x, indices=[1, 3], intermediates_only=True)
    assert len(only) == 2 and all(torch.equal(a, b) for a, b in zip(only, (maps[1], maps[3])))
    early = model.forward_intermediates(x, indices=2, stop_early=True, intermediates_only=True)
    assert [m.shape[1] for m in early] == [40, 64]  # the last two of four stages


@pytest.mark.parametrize("name", NAMES)
def test_prune_intermediate_layers_keeps_the_taken_maps(tiny_lit, name):
    model = tiny_lit(name)
    x = image()
    maps = model.forward_intermediates(x, intermediates_only=True)
    taken = model.prune_intermediate_layers(indices=[0, 2])
    assert taken == [0, 2] and len(model.stages) == 3
    assert model.cls_token is None and isinstance(model.head, torch.nn.Identity)
    pruned = model.forward_intermediates(x, indices=[0, 2], intermediates_only=True)
    assert_close(pruned, [maps[0], maps[2]])


@pytest.mark.parametrize("prune_head", [False, True])
def test_prune_without_dropping_stages_keeps_the_class_token_map(tiny_lit, prune_head):
    # The class token joins the last stage's attention: it stays while that stage does.
    model = tiny_lit("lit_ti")
    x = image()
    maps = model.forward_intermediates(x, intermediates_only=True)
    model.prune_intermediate_layers(indices=4, prune_head=prune_head)
    assert model.cls_token is not None and len(model.stages) == 4
    assert isinstance(model.head, torch.nn.Identity) == prune_head
    assert_close(model.forward_intermediates(x, intermediates_only=True), maps)


# ----------------------------------------------------------------------------- TorchScript and fx
@pytest.mark.parametrize("name", NAMES)
def test_torchscript_matches_eager(tiny_lit, name):
    model = with_offsets(tiny_lit(name))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script is deprecated in favour of export
        scripted = torch.jit.script(model)
    for size in ((64, 64), OTHER_SIZE):
        x = image(size=size)
        with torch.no_grad():
            # The scripted DTM runs torchvision's deform_conv2d, the eager one grid_sample.
            assert_close(scripted(x), model(x), atol=1e-5, rtol=1e-5)
            assert_close(scripted.forward_features(x), model.forward_features(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_fx_trace_matches_eager_at_any_size(tiny_lit, name):
    model = with_offsets(tiny_lit(name))
    traced = torch.fx.symbolic_trace(model)
    with torch.no_grad():
        for size in ((64, 64), OTHER_SIZE):
            x = image(size=size)
            assert torch.equal(traced(x), model(x))


@pytest.mark.parametrize("name", NAMES)
def test_torch_compile_captures_one_graph(tiny_lit, name):
    # fullgraph=True fails on any graph break; the eager backend checks the capture without Inductor.
    torch._dynamo.reset()
    model = with_offsets(tiny_lit(name))
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    with torch.no_grad():
        x = image(size=OTHER_SIZE)
        assert_close(compiled(x), model(x))
    model.train()
    compiled(image()).sum().backward()  # and the training graph, backward included
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.filterwarnings("ignore:NOTE. The nodes obtained by tracing")
def test_fx_feature_extractor_trains(tiny_lit):
    from timm.models import create_feature_extractor

    model = tiny_lit("lit_s", drop_path_rate=0.1).train()
    extractor = create_feature_extractor(model, return_nodes={"stages.3": "stage4", "head": "logits"})
    out = extractor(image())
    assert out["logits"].shape == (2, 10)
    (out["logits"].sum() + out["stage4"][0].sum()).backward()
    assert all(p.grad is not None for p in model.parameters())


# ----------------------------------------------------------------------------- training API
@pytest.mark.parametrize("name", NAMES)
def test_grad_checkpointing_gives_the_same_outputs_and_gradients(tiny_lit, name):
    model = tiny_lit(name).train()
    x = image()

    def step():
        model.zero_grad()
        out = model(x)
        out.square().sum().backward()
        return out.detach(), [p.grad.clone() for p in model.parameters()]

    torch.manual_seed(3)
    plain, plain_grads = step()
    model.set_grad_checkpointing(True)
    assert all(stage.grad_checkpointing for stage in model.stages)
    torch.manual_seed(3)
    checkpointed, grads = step()
    assert_close(checkpointed, plain)
    assert_close(grads, plain_grads)


def test_reset_classifier(tiny_lit):
    x = image()
    model = tiny_lit("lit_s")
    features = model.forward_features(x)
    model.reset_classifier(5)
    assert model.num_classes == 5 and model(x).shape == (2, 5)
    model.reset_classifier(0)
    assert_close(model(x), model.forward_head(features, pre_logits=True))
    model.reset_classifier(0, "")
    assert_close(model(x), features)
    with pytest.raises(ValueError, match="class token"):
        model.reset_classifier(0, "token")
    token = tiny_lit("lit_ti")
    token.reset_classifier(7)
    assert token.get_classifier().out_features == 7 and token(x).shape == (2, 7)


@pytest.mark.parametrize("name", NAMES)
def test_group_matcher_orders_every_parameter(tiny_lit, name):
    model = tiny_lit(name)
    for coarse in (False, True):
        groups = group_parameters(model, model.group_matcher(coarse=coarse))
        names = [n for group in groups.values() for n in group]
        assert sorted(names) == sorted(n for n, _ in model.named_parameters())  # each exactly once
        order = {n: i for i, group in enumerate(groups.values()) for n in group}
        assert order["patch_embed.proj.weight"] == 0
        assert order["stages.0.blocks.0.mlp.fc1.weight"] < order["stages.3.blocks.0.mlp.fc1.weight"]
        assert order["head.weight"] == max(order.values())
    fine = group_parameters(model, model.group_matcher())
    # Each DTM (and a stage's position embedding) shares the group of its stage's first block,
    # as timm groups the downsampling of its hierarchical models.
    order = {n: i for i, group in enumerate(fine.values()) for n in group}
    assert order["stages.1.downsample.proj.weight"] == order["stages.1.blocks.0.mlp.fc1.weight"]
    assert order["stages.1.downsample.proj.weight"] > order["stages.0.blocks.0.mlp.fc1.weight"]


@pytest.mark.parametrize("name", NAMES)
def test_no_weight_decay_reaches_timms_optimizer_groups(tiny_lit, name):
    model = tiny_lit(name)
    skip = model.no_weight_decay()
    position = {n for n, _ in model.named_parameters() if n.endswith(("pos_embed", "relative_position_bias_table"))}
    assert position and position <= skip
    if name == "lit_ti":
        assert "cls_token" in skip
    no_decay, decay = param_groups_weight_decay(model, 0.05, no_weight_decay_list=skip)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    no_decay_ids = {id(p) for p in no_decay["params"]}
    for n, p in model.named_parameters():
        if n in position:
            assert id(p) in no_decay_ids, n


# ----------------------------------------------------------------------------- device and dtype
LITV2_TINY = dict(embed_dims=(16, 32, 64, 128), depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8), img_size=64)


@pytest.mark.parametrize("name", NAMES + ("litv2_s",))
def test_built_on_the_device_and_dtype_asked_for(name):
    # timm's factory convention: every parameter and buffer is made where asked (on the meta
    # device nothing is allocated), and a new head follows the model's device and dtype.
    arch = LITV2_TINY if name.startswith("litv2") else TINY_KWARGS
    model = timm.create_model(name, num_classes=10, device="meta", dtype=torch.float64, **arch)
    tensors = [*model.parameters(), *model.buffers()]
    assert all(t.device.type == "meta" for t in tensors)
    assert all(t.dtype == torch.float64 for t in tensors if t.is_floating_point())
    assert model.in_chans == 3
    model.eval().reset_classifier(4)
    assert (model.head.weight.device.type, model.head.weight.dtype) == ("meta", torch.float64)
    assert not model.head.training
    out = model(torch.empty(2, 3, 64, 96, device="meta", dtype=torch.float64))
    assert out.shape == (2, 4) and out.dtype == torch.float64


# ----------------------------------------------------------------------------- features_only
@pytest.mark.parametrize("name", NAMES)
def test_features_only(name):
    kwargs = {k: v for k, v in TINY_KWARGS.items()}
    torch.manual_seed(0)
    backbone = timm.create_model(name, features_only=True, **kwargs).eval()
    assert backbone.feature_info.channels() == list(TINY_KWARGS["embed_dims"])
    assert backbone.feature_info.reduction() == [4, 8, 16, 32]
    x = image(size=OTHER_SIZE)
    maps = backbone(x)
    assert [m.shape for m in maps] == [
        (2, c, OTHER_SIZE[0] // r, OTHER_SIZE[1] // r)
        for c, r in zip(backbone.feature_info.channels(), backbone.feature_info.reduction())
    ]
    picked = timm.create_model(name, features_only=True, out_indices=(1, 3), **kwargs).eval()
    picked.load_state_dict(backbone.state_dict())
    assert_close(picked(x), [maps[1], maps[3]])

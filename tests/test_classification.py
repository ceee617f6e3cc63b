"""Classification training, evaluation, prediction and the shared engine.

Everything runs a tiny LIT on a tiny synthetic shapes folder (32 px) on the CPU.
"""
from __future__ import annotations

import hashlib
import math
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict

import numpy as np
import pytest
import timm
import torch
import yaml
from PIL import Image

import litvit  # noqa: F401
from litvit.checkpoint import read_checkpoint
from litvit.classification.build import build_optimizer, build_scheduler, param_groups, resolve_lr
from litvit.classification.config import TrainConfig, recipe_defaults, resolve_train_config
from litvit.classification.data import ImageFolderDataset, scan_image_folder, to_rgb
from litvit.classification.inference import evaluate_checkpoint, load_classifier, predict_images
from litvit.classification.train import train
from litvit.engine import CheckpointManager, read_metrics
from litvit.engine.amp import resolve_amp
from litvit.errors import DataError, LitvitError, TrainingError

REPO = Path(__file__).resolve().parents[1]

TINY_MODEL = dict(embed_dims=[16, 32, 40, 64], depths=[1, 1, 1, 1], num_heads=[1, 2, 5, 8], mlp_ratios=[2, 2, 2, 2])

# Deterministic, cheap settings: no Mixup/stochastic depth (their randomness is per process),
# but the per-image augmentation stays on (it is seeded per image and epoch).
TINY: Dict[str, Any] = dict(
    model="lit_ti",
    model_kwargs=TINY_MODEL,
    img_size=32,
    batch_size=4,
    epochs=2,
    lr=2e-3,
    warmup_epochs=0,
    drop_path=0.0,
    mixup=0.0,
    cutmix=0.0,
    auto_augment="rand-m9-mstd0.5-inc1",
    reprob=0.25,
    crop_pct=1.0,
    workers=0,
    device="cpu",
    progress="none",
    threads=1,
    keep_last=3,
)


@pytest.fixture(autouse=True)
def _restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def shapes(tmp_path_factory) -> Path:
    """6 classes x 4 training / 2 validation images, plus one truncated training file."""
    from litvit.synthetic import generate_classification

    root = generate_classification(tmp_path_factory.mktemp("data") / "shapes", num_train_per_class=4,
                                   num_val_per_class=2, image_size=32, seed=0)
    good = next((root / "train" / "circle").glob("*.png")).read_bytes()
    (root / "train" / "circle" / "zz_truncated.png").write_bytes(good[: len(good) // 2])
    return root


def _cfg(shapes: Path, out: Path, **kw: Any) -> TrainConfig:
    return resolve_train_config(**{**TINY, "data_dir": str(shapes), "output": str(out), **kw})


def _yaml(tmp_path: Path, **kw: Any) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({**TINY, **kw}))
    return path


def _weights(path: Path) -> Dict[str, torch.Tensor]:
    return read_checkpoint(path)["model"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> Dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    return env


@pytest.fixture(scope="session")
def trained(shapes, tmp_path_factory) -> Dict[str, Any]:
    """One real 3-epoch run shared by several tests."""
    out = tmp_path_factory.mktemp("run") / "run"
    cfg = resolve_train_config(**{**TINY, "data_dir": str(shapes), "output": str(out), "epochs": 3,
                                  "model_ema": True, "model_ema_decay": 0.9})
    summary = train(cfg)
    return {"out": out, "summary": summary, "cfg": cfg}


# ---------------------------------------------------------------------------- recipe wiring
def test_recipe_defaults_per_model():
    ti, s = recipe_defaults("lit_ti"), recipe_defaults("lit_s")
    assert ti["clip_grad"] is None and s["clip_grad"] == 5.0
    assert (ti["drop_path"], recipe_defaults("lit_m")["drop_path"], recipe_defaults("lit_b")["drop_path"]) == (0.1, 0.3, 0.5)
    assert ti["warmup_epochs"] == 5 and s["warmup_epochs"] == 20
    cfg = resolve_train_config(model="lit_s", batch_size=128)
    # 8 processes x 128 = 1024 images: lr 5e-4 x 2, LIT-S/M/B scale min and warm-up lr too.
    lrs = resolve_lr(cfg, 1024)
    assert lrs.lr == pytest.approx(1e-3) and lrs.min_lr == pytest.approx(1e-5) and lrs.warmup_lr == pytest.approx(1e-6)
    lrs = resolve_lr(resolve_train_config(model="lit_ti"), 1024)
    assert lrs.lr == pytest.approx(1e-3) and lrs.min_lr == pytest.approx(1e-5) and lrs.warmup_lr == pytest.approx(1e-6)
    ft = resolve_train_config(model="lit_ti", preset="finetune")
    assert ft.mixup == 0 and ft.cutmix == 0 and ft.warmup_epochs == 1 and ft.base_lr < 5e-4
    # The user's explicit choice wins over the recipe and the preset.
    assert resolve_train_config(model="lit_s", clip_grad=1.0).clip_grad == 1.0


@pytest.mark.parametrize("name", ["lit_ti", "lit_s"])
def test_param_groups_lr_and_weight_decay(name):
    model = timm.create_model(name, num_classes=5, img_size=64, **{**TINY_MODEL, "mlp_ratios": [4, 4, 4, 4]})
    cfg = resolve_train_config(model=name, weight_decay=0.05)
    groups = {g["name"]: g for g in param_groups(model, 0.05, 0.01)}
    names = {g: set(v["param_names"]) for g, v in groups.items()}
    all_names = [n for v in names.values() for n in v]
    assert sorted(all_names) == sorted(n for n, _ in model.named_parameters())  # each exactly once
    offset_names = {n for n, p in model.named_parameters() if any(p is q for q in model.offset_parameters())}
    assert len(offset_names) == 6  # weight + bias of 3 DTM offset convolutions
    assert names["offset_decay"] | names["offset_no_decay"] == offset_names
    assert groups["offset_decay"]["lr_scale"] == 0.01 and "lr_scale" not in groups["main_decay"]
    no_decay = names["main_no_decay"]
    assert "head.bias" in no_decay and "norm.weight" in no_decay and "head.weight" in names["main_decay"]
    if name == "lit_ti":
        assert {"cls_token", "stages.0.pos_embed", "stages.3.pos_embed"} <= no_decay
    else:
        tables = {n for n in all_names if n.endswith("relative_position_bias_table")}
        assert tables and tables <= no_decay
    assert all(p.ndim > 1 for n, p in model.named_parameters() if n in names["main_decay"])
    assert groups["main_no_decay"]["weight_decay"] == 0 and groups["main_decay"]["weight_decay"] == 0.05

    opt = build_optimizer(model, cfg, lr=1e-3)
    assert type(opt).__name__ == "AdamW" and opt.defaults["betas"] == (0.9, 0.999) and opt.defaults["eps"] == 1e-8
    by_name = {g["name"]: g for g in opt.param_groups}
    assert by_name["offset_decay"]["weight_decay"] == 0.05 and by_name["offset_no_decay"]["weight_decay"] == 0


def test_adamw_takes_the_fused_kernel_on_the_cpu_with_the_same_steps():
    torch.manual_seed(0)
    models = [torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 3)) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    fused = build_optimizer(models[0], resolve_train_config(model="lit_ti"), lr=1e-2)
    plain = build_optimizer(models[1], resolve_train_config(model="lit_ti", fused_optimizer=False), lr=1e-2)
    assert fused.defaults["fused"] and not plain.defaults.get("fused")
    x = torch.randn(5, 6)
    for _ in range(3):
        for model, opt in zip(models, (fused, plain)):
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()
    for a, b in zip(*(m.parameters() for m in models)):
        torch.testing.assert_close(a, b)


def test_schedule_values_per_step():
    model = timm.create_model("lit_s", num_classes=5, img_size=64, **TINY_MODEL)
    cfg = resolve_train_config(model="lit_s", epochs=10, lr=1e-3, min_lr=1e-5, warmup_lr=1e-6, scale_min_lr=False,
                               warmup_epochs=2)
    lrs = resolve_lr(cfg, 512)
    opt = build_optimizer(model, cfg, lrs.lr)
    steps_per_epoch = 10
    sched = build_scheduler(opt, cfg, lrs, steps_per_epoch)

    def lr_at(t):
        sched.step_update(t)
        return {g["name"]: g["lr"] for g in opt.param_groups}

    assert lr_at(0)["main_decay"] == pytest.approx(1e-6)
    assert lr_at(10)["main_decay"] == pytest.approx(1e-6 + 10 * (1e-3 - 1e-6) / 20)  # mid warm-up
    for t in (20, 50, 99):  # cosine over all 100 steps (warm-up overlaps it, as released)
        expected = 1e-5 + 0.5 * (1e-3 - 1e-5) * (1 + math.cos(math.pi * t / 100))
        got = lr_at(t)
        assert got["main_decay"] == pytest.approx(expected)
        assert got["main_no_decay"] == pytest.approx(expected)
        assert got["offset_decay"] == pytest.approx(0.01 * expected)
    # Per-epoch updates (the released behaviour) ignore step_update and follow step(epoch).
    cfg_epoch = resolve_train_config(model="lit_s", epochs=10, lr=1e-3, min_lr=1e-5, warmup_lr=1e-6,
                                     scale_min_lr=False, warmup_epochs=2, sched_per_step=False)
    sched = build_scheduler(opt, cfg_epoch, lrs, steps_per_epoch)
    sched.step(5)
    sched.step_update(999)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-5 + 0.5 * (1e-3 - 1e-5) * (1 + math.cos(math.pi * 5 / 10)))


def test_config_layers_yaml_cli_and_print(tmp_path):
    from litvit.cli import main

    path = tmp_path / "c.yaml"
    path.write_text("model: lit_s\nepochs: 7\nlr: 0.1\nmodel_kwargs: {depths: [1, 1, 1, 1]}\n")
    out = tmp_path / "printed.yaml"
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["train", "--config", str(path), "--epochs", "9", "--print-config"]) == 0
    printed = yaml.safe_load(buf.getvalue())
    assert printed["model"] == "lit_s" and printed["lr"] == 0.1  # from YAML
    assert printed["epochs"] == 9  # command line beats YAML
    assert printed["clip_grad"] == 5.0 and printed["drop_path"] == 0.2  # LIT-S recipe
    assert printed["model_kwargs"] == {"depths": [1, 1, 1, 1]}
    # The printed configuration is a valid config file that resolves to the same settings.
    out.write_text(buf.getvalue())
    assert resolve_train_config(yaml_path=str(out)) == resolve_train_config(yaml_path=str(path), epochs=9)
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochz: 3\n")
    with pytest.raises(Exception, match="unknown setting.*epochz"):
        resolve_train_config(yaml_path=str(bad))


# ---------------------------------------------------------------------------- training and eval
def test_training_lowers_loss_and_writes_a_complete_run(trained):
    out = trained["out"]
    records = read_metrics(out)
    epochs = [r for r in records if r.get("kind") == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2, 3]
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"]
    # The truncated training image is skipped and counted, every epoch.
    assert all(r["skipped_images"] >= 1 for r in epochs)
    for name in ("config.yaml", "metrics.jsonl", "best.pth", "curves.png", "checkpoint-epoch0003.pth"):
        assert (out / name).is_file(), name
    state = read_checkpoint(out / "checkpoint-epoch0003.pth")
    for key in ("model", "optimizer", "scheduler", "rng", "config", "class_names", "epoch", "step"):
        assert key in state
    assert state["epoch"] == 3 and state["step"] == 3 * (24 // 4)
    # EMA weights are kept, evaluated and saved beside the model's.
    assert all("ema_top1" in r for r in epochs)
    assert state["model_ema"].keys() == state["model"].keys()
    assert not torch.equal(state["model_ema"]["head.weight"], state["model"]["head.weight"])
    assert state["class_names"] == sorted(p.name for p in (Path(trained["cfg"].data_dir) / "train").iterdir() if p.is_dir())
    with Image.open(out / "curves.png") as im:
        assert im.size[0] > 500


def test_eval_numbers_match_an_independent_computation(trained, shapes):
    ckpt = trained["out"] / "checkpoint-epoch0003.pth"
    stats = evaluate_checkpoint(ckpt, shapes, split="val", device="cpu", workers=0, batch_size=5,
                                progress_kwargs={"enabled": False})
    # Independently: the recorded architecture, the weights, and the released eval transform.
    state = read_checkpoint(ckpt)
    model = timm.create_model("lit_ti", num_classes=6, img_size=32, **TINY_MODEL)
    model.load_state_dict(state["model"])
    model.eval()
    from timm.data import create_transform

    tf = create_transform(32, is_training=False, interpolation="bicubic", crop_pct=1.0)
    classes = state["class_names"]
    files = sorted((shapes / "val").glob("*/*.png"))
    x = torch.stack([tf(Image.open(f).convert("RGB")) for f in files])
    y = torch.tensor([classes.index(f.parent.name) for f in files])
    with torch.no_grad():
        logits = model(x)
    loss = torch.nn.functional.cross_entropy(logits, y).item()
    top1 = 100 * (logits.argmax(1) == y).float().mean().item()
    top5 = 100 * (logits.topk(5, 1).indices == y[:, None]).any(1).float().mean().item()
    assert stats["images"] == len(files) == 12
    assert stats["top1"] == pytest.approx(top1) and stats["top5"] == pytest.approx(top5)
    assert stats["loss"] == pytest.approx(loss, rel=1e-5)


def test_predict_uses_recorded_class_names(trained, shapes):
    loaded = load_classifier(trained["out"] / "best.pth")
    image = sorted((shapes / "val" / "star").glob("*.png"))[0]
    (result,) = predict_images(loaded, [image], topk=3, device="cpu")
    assert len(result["top"]) == 3
    assert {t["name"] for t in result["top"]} <= set(loaded.class_names)
    probs = [t["prob"] for t in result["top"]]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6


def test_predict_imagenet_names_for_a_released_style_checkpoint(tmp_path, shapes):
    model = timm.create_model("lit_ti", num_classes=1000, img_size=32, **TINY_MODEL)
    torch.save(model.state_dict(), tmp_path / "bare.pth")  # a bare state dict, as released
    loaded = load_classifier(tmp_path / "bare.pth", model="lit_ti", img_size=32, model_kwargs=TINY_MODEL)
    (result,) = predict_images(loaded, [next((shapes / "val" / "star").glob("*.png"))], topk=2, device="cpu")
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    assert [t["name"] for t in result["top"]] == [info.index_to_description(t["index"]) for t in result["top"]]


# ---------------------------------------------------------------------------- scale and resume
def test_ddp_two_processes_equal_one_process_same_global_batch(shapes, tmp_path):
    """2 gloo processes x batch 4 == 1 process x batch 4 x 2 accumulation steps (global batch 8).

    Accumulation, not batch 8, is the single-process reference because LIT's DTM has
    BatchNorm: under DDP each process normalises its own 4 images, exactly like each
    accumulation micro-batch does (the sampler gives both the same images in the same split).
    """
    cfg_path = _yaml(tmp_path, epochs=1, data_dir=str(shapes))
    ddp_out, single_out = tmp_path / "ddp", tmp_path / "single"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", "-m", "litvit.cli", "train", "--config", str(cfg_path),
           "--output", str(ddp_out)]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    train(_cfg(shapes, single_out, epochs=1, accum_steps=2))
    ddp_state = read_checkpoint(ddp_out / "checkpoint-epoch0001.pth")
    single_state = read_checkpoint(single_out / "checkpoint-epoch0001.pth")
    assert ddp_state["step"] == single_state["step"] == 24 // 8
    assert ddp_state["resolved"]["world_size"] == 2 and ddp_state["resolved"]["global_batch"] == 8
    initial = timm.create_model("lit_ti", num_classes=6, img_size=32, **TINY_MODEL).state_dict()
    moved = 0
    for name, param in single_state["model"].items():
        if "running" in name or "num_batches" in name:
            continue  # BatchNorm statistics are per process under DDP (rank 0's are saved)
        if name.endswith("downsample.proj.bias"):
            # DTM's convolution bias feeds a BatchNorm, so its true gradient is zero and what it
            # gets is rounding noise, which AdamW scales up to lr-sized steps of random sign.
            continue
        # AdamW divides each gradient element by its own scale, so an element whose gradient is
        # near zero moves by a share of lr (2e-3) that rounding decides: atol is 5 % of lr.
        torch.testing.assert_close(ddp_state["model"][name], param, rtol=1e-4, atol=1e-4, msg=lambda m: f"{name}: {m}")
        moved += int(not torch.equal(param, initial[name]))
    assert moved > 0.8 * len(initial) // 2  # the runs really trained
    # Metrics are reduced over both processes: the same evaluation on all 12 validation images.
    ddp_rec = [r for r in read_metrics(ddp_out) if r.get("kind") == "epoch"][-1]
    single_rec = [r for r in read_metrics(single_out) if r.get("kind") == "epoch"][-1]
    assert ddp_rec["val_images"] == single_rec["val_images"] == 12
    assert ddp_rec["val_top1"] == pytest.approx(single_rec["val_top1"])


_KILL_AFTER_FIRST_SAVE = """
import os, signal, sys
from litvit.engine import run_checkpoints as checkpointing
_save = checkpointing.CheckpointManager.save
def save(self, *args, **kwargs):
    path = _save(self, *args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)  # as hard as a power cut: no clean-up runs
checkpointing.CheckpointManager.save = save
from litvit.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("save_every_steps, first", [(0, "checkpoint-epoch0001.pth"), (4, "checkpoint-step00000004.pth")])
def test_kill_after_first_checkpoint_and_resume_gives_identical_weights(shapes, tmp_path, save_every_steps, first):
    """Killed right after its first checkpoint (end of epoch 1, or step 4 of 6 inside epoch 1)."""
    cfg_path = _yaml(tmp_path, epochs=3, data_dir=str(shapes), workers=1, save_every_steps=save_every_steps)
    killed, straight = tmp_path / "killed", tmp_path / "straight"
    script = tmp_path / "kill.py"
    script.write_text(_KILL_AFTER_FIRST_SAVE)
    proc = subprocess.run([sys.executable, str(script), "train", "--config", str(cfg_path), "--output", str(killed)],
                          env=_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert sorted(p.name for p in killed.glob("checkpoint-*")) == [first]

    base = [sys.executable, "-m", "litvit.cli", "train", "--config", str(cfg_path)]
    logs = []
    for args in (["--output", str(killed), "--resume", "auto"], ["--output", str(straight)]):
        proc = subprocess.run(base + args, env=_env(), capture_output=True, text=True, timeout=240)
        assert proc.returncode == 0, proc.stderr[-2000:]
        logs.append(proc.stderr)
    assert "resumed from" in logs[0] and first in logs[0]
    resumed, reference = _weights(killed / "checkpoint-epoch0003.pth"), _weights(straight / "checkpoint-epoch0003.pth")
    assert resumed.keys() == reference.keys()
    for name in reference:
        assert torch.equal(resumed[name], reference[name]), name
    # The resumed run's log has each epoch once.
    assert [r["epoch"] for r in read_metrics(killed) if r.get("kind") == "epoch"] == [1, 2, 3]


def test_fp16_trains_with_a_loss_scaler_that_is_checkpointed_and_resumed(shapes, tmp_path):
    """The float16 path (the released detection/segmentation runs used it on GPUs) on the CPU."""
    out = tmp_path / "fp16"
    train(_cfg(shapes, out, epochs=1, amp="fp16"))
    first = out / "checkpoint-epoch0001.pth"
    state = read_checkpoint(first)
    scaler = state["scaler"]
    assert 0 < scaler["scale"] <= 2.0**16 and math.log2(scaler["scale"]).is_integer()
    assert 0 < scaler["_growth_tracker"] <= 6  # steps since the last overflow, of 6
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())

    # A scaler one good step from growing: if resume restores it, it doubles once (to 2048) and
    # can only shrink from there; a fresh scaler would start at 65536.
    state["scaler"].update(scale=1024.0, _growth_tracker=1999)
    torch.save(state, first)
    train(_cfg(shapes, out, epochs=2, amp="fp16", resume="auto"))
    assert read_checkpoint(out / "checkpoint-epoch0002.pth")["scaler"]["scale"] <= 2048.0

    with pytest.raises(LitvitError, match="unknown --amp 'fp8'"):
        resolve_amp("fp8", torch.device("cpu"))


def test_resume_auto_skips_a_corrupt_newest_checkpoint(tmp_path):
    manager = CheckpointManager(tmp_path, keep_last=3, is_main=True)
    for epoch in (1, 2):
        manager.save({"model": {"w": torch.full((2,), float(epoch))}, "epoch": epoch}, f"epoch{epoch:04d}")
    newest = manager.checkpoints()[-1]
    newest.write_bytes(newest.read_bytes()[:100])  # truncated by a full disk or a cut copy
    with pytest.warns(UserWarning, match="checkpoint-epoch0002"):
        state = manager.find_resume("auto")
    assert state["epoch"] == 1 and manager.resumed_from.name == "checkpoint-epoch0001.pth"


def test_checkpoint_manager_keeps_last_and_best(tmp_path):
    manager = CheckpointManager(tmp_path, keep_last=2, is_main=True)
    for epoch in range(1, 6):
        manager.save({"model": {}, "epoch": epoch}, f"epoch{epoch:04d}", is_best=epoch == 2)
    assert [p.name for p in manager.checkpoints()] == ["checkpoint-epoch0004.pth", "checkpoint-epoch0005.pth"]
    assert read_checkpoint(tmp_path / "best.pth")["epoch"] == 2
    assert not list(tmp_path.glob("*.tmp"))
    assert CheckpointManager(tmp_path, is_main=False).save({"model": {}}, "x") is None


def test_nan_loss_stops_and_keeps_the_good_checkpoint(shapes, tmp_path):
    out = tmp_path / "run"
    train(_cfg(shapes, out, epochs=1))
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in out.glob("*.pth")}
    assert "checkpoint-epoch0001.pth" in before and "best.pth" in before
    # Resume with an absurd learning rate: the first update overflows the weights, the next loss is NaN.
    with pytest.raises(TrainingError, match=r"loss is (nan|inf).*epoch 2.*last good checkpoint was kept"):
        train(_cfg(shapes, out, epochs=2, lr=1e38, resume="auto"))
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in out.glob("*.pth")}
    assert after == before


# ---------------------------------------------------------------------------- bad data
def test_image_modes_are_converted_to_rgb():
    gray = Image.fromarray(np.full((4, 4), 200, np.uint8), "L")
    assert np.asarray(to_rgb(gray)).tolist()[0][0] == [200, 200, 200]
    rgba = Image.fromarray(np.dstack([np.full((4, 4, 3), 10, np.uint8), np.zeros((4, 4), np.uint8)]), "RGBA")
    assert np.asarray(to_rgb(rgba))[0, 0].tolist() == [255, 255, 255]  # fully transparent -> background
    pal = gray.convert("P")
    assert to_rgb(pal).mode == "RGB"
    cmyk = Image.new("CMYK", (4, 4), (0, 255, 255, 0))  # pure red in CMYK
    assert np.asarray(to_rgb(cmyk))[0, 0].tolist() == [255, 0, 0]
    deep = Image.new("I;16", (4, 4), 65535)
    assert np.asarray(to_rgb(deep))[0, 0].tolist() == [255, 255, 255]  # scaled, not clipped at 8 bits
    half = Image.new("I;16", (4, 4), 32768)
    assert np.asarray(to_rgb(half))[0, 0].tolist() == [128, 128, 128]
    flt = Image.fromarray(np.full((4, 4), 0.5, np.float32), "F")
    assert np.asarray(to_rgb(flt))[0, 0].tolist() == [128, 128, 128]


def test_bad_images_are_skipped_and_counted_or_fatal_with_strict(tmp_path):
    for cls in ("a", "b"):
        (tmp_path / "train" / cls).mkdir(parents=True)
    Image.new("RGB", (8, 8), (255, 0, 0)).save(tmp_path / "train" / "a" / "good.png")
    Image.new("L", (8, 8), 9).save(tmp_path / "train" / "a" / "gray.png")
    Image.new("CMYK", (8, 8)).save(tmp_path / "train" / "b" / "cmyk.jpg")
    (tmp_path / "train" / "b" / "garbage.jpg").write_bytes(b"not an image at all")
    good = (tmp_path / "train" / "a" / "good.png").read_bytes()
    (tmp_path / "train" / "a" / "truncated.png").write_bytes(good[:40])
    import torchvision.transforms.v2 as T

    tf = T.Compose([T.PILToTensor()])
    ds = ImageFolderDataset.from_folder(tmp_path, "train", transform=tf)
    names = [Path(p).name for p, _ in ds.samples]
    flags = {}
    for i, name in enumerate(names):
        image, target, bad = ds[i]
        assert image.shape == (3, 8, 8)
        flags[name] = bad
    assert flags["truncated.png"] == 1 and flags["garbage.jpg"] == 1
    assert flags["good.png"] == flags["gray.png"] == flags["cmyk.jpg"] == 0
    masked = ImageFolderDataset.from_folder(tmp_path, "train", transform=tf, on_bad="mask")
    assert masked[names.index("garbage.jpg")][1] == -1  # left out of evaluation metrics
    strict = ImageFolderDataset.from_folder(tmp_path, "train", transform=tf, strict=True)
    with pytest.raises(DataError, match="unreadable image .*truncated.png"):
        strict[names.index("truncated.png")]


def test_folder_mistakes_get_one_line_errors(tmp_path, shapes):
    with pytest.raises(DataError, match="data folder not found"):
        scan_image_folder(tmp_path / "nope", "train")
    with pytest.raises(DataError, match="missing split folder .*test"):
        scan_image_folder(shapes, "test")
    (tmp_path / "train").mkdir()
    with pytest.raises(DataError, match="split folder .*train is empty"):
        scan_image_folder(tmp_path, "train")
    (tmp_path / "train" / "cat").mkdir()
    (tmp_path / "train" / "cat" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="class folder .*cat holds no images"):
        scan_image_folder(tmp_path, "train")
    with pytest.raises(DataError, match="6 class folders but 2 classes are expected"):
        scan_image_folder(shapes, "val", class_names=["circle", "dog"])


def test_batch_larger_than_data_and_class_count_mismatch(shapes, tmp_path, trained):
    with pytest.raises(DataError, match="global batch 32 .* larger than the 25 training images"):
        train(_cfg(shapes, tmp_path / "big", batch_size=32))
    with pytest.raises(DataError, match="--num-classes 10 disagrees with the 6 class folders"):
        train(_cfg(shapes, tmp_path / "nc", num_classes=10))
    # A checkpoint trained on 6 classes against a folder with 2.
    other = tmp_path / "two"
    for cls in ("x", "y"):
        (other / "val" / cls).mkdir(parents=True)
        Image.new("RGB", (32, 32)).save(other / "val" / cls / "0.png")
    with pytest.raises(DataError, match="6 classes are expected"):
        evaluate_checkpoint(trained["out"] / "best.pth", other, device="cpu", workers=0)
    bare = tmp_path / "bare.pth"
    torch.save(read_checkpoint(trained["out"] / "best.pth")["model"], bare)
    # A released-style bare state dict records no classes: the count is read from the classifier.
    with pytest.raises(DataError, match="checkpoint .* has 6 classes but .* has 2 class folders"):
        evaluate_checkpoint(bare, other, model="lit_ti", img_size=32, model_kwargs=TINY_MODEL, device="cpu", workers=0)


def test_cli_errors_are_one_line(tmp_path):
    cases = [
        ["train", "--data-dir", str(tmp_path / "missing"), "--device", "cpu"],
        ["eval", "--checkpoint", str(tmp_path / "none.pth"), "--data-dir", str(tmp_path)],
        ["plot", str(tmp_path)],
    ]
    for args in cases:
        proc = subprocess.run([sys.executable, "-m", "litvit.cli", *args], env=_env(), capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 2, (args, proc.stderr)
        lines = [l for l in proc.stderr.splitlines() if l.strip()]
        assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert lines[0].startswith(f"litvit {args[0]}: error:")


def test_package_exports_the_train_function_even_after_its_module_is_imported():
    import litvit.classification.train  # noqa: F401  (the submodule must not shadow the function)
    from litvit.classification import train as train_fn

    assert callable(train_fn) and train_fn.__name__ == "train"

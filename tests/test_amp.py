"""One --amp vocabulary for every task: the dtype each value gives, per device and task default."""
from __future__ import annotations

import pytest
import torch

from litvit.engine.amp import AMP_CHOICES, autocast, cpu_has_native_bf16, grad_scaler, resolve_amp
from litvit.engine.amp import _warn_slow_cpu_bf16
from litvit.errors import LitvitError

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def test_explicit_choices_hold_on_any_device():
    for device in (CPU, CUDA):
        assert resolve_amp("bf16", device) is torch.bfloat16
        assert resolve_amp("fp16", device) is torch.float16
        assert resolve_amp("none", device) is None
        assert resolve_amp("off", device) is None  # the segmentation configs' old spelling
        assert resolve_amp("False", device) is None  # YAML's `amp: off`, as the config loader passes it on
    with pytest.raises(LitvitError, match="choose from auto, bf16, fp16, none"):
        resolve_amp("half", CPU)
    assert AMP_CHOICES == ("auto", "bf16", "fp16", "none")


def test_bf16_on_a_cpu_without_native_bf16_warns_once(capsys):
    # AVX2-only CPUs multiply bfloat16 matrices about 100x slower than float32 ones.
    _warn_slow_cpu_bf16.cache_clear()
    for _ in range(2):
        resolve_amp("bf16", CPU)
    resolve_amp("bf16", CUDA)
    err = capsys.readouterr().err
    assert err.count("no native bfloat16") == (0 if cpu_has_native_bf16() else 1)  # and never for CUDA


def test_auto_is_float32_on_cpu_and_the_task_default_on_cuda(monkeypatch):
    assert resolve_amp("auto", CPU) is None and resolve_amp("auto", CPU, auto_cuda=torch.float16) is None
    assert resolve_amp("auto", CUDA, auto_cuda=torch.float16) is torch.float16  # detection, segmentation
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_amp("auto", CUDA) is torch.bfloat16  # classification
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_amp("auto", CUDA) is torch.float16  # a GPU without bf16 (V100, T4)


def test_scaler_only_for_float16_and_autocast_off_for_none():
    assert grad_scaler(torch.float16, CPU).is_enabled()
    assert not grad_scaler(torch.bfloat16, CPU).is_enabled() and not grad_scaler(None, CPU).is_enabled()
    layer = torch.nn.Linear(4, 4)
    x = torch.randn(2, 4)
    with autocast(CPU, None):
        assert layer(x).dtype == torch.float32
    with autocast(CPU, torch.bfloat16):
        assert layer(x).dtype == torch.bfloat16


def test_yaml_amp_off_means_float32(tmp_path):
    import argparse

    from litvit.engine.config import add_config_arguments, build_config
    from litvit.segmentation.config import SegTrainConfig

    (tmp_path / "run.yaml").write_text("amp: off\n")  # YAML 1.1 reads this as the boolean false
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, SegTrainConfig)
    cfg = build_config(SegTrainConfig, parser.parse_args(["--config", str(tmp_path / "run.yaml")]))
    assert resolve_amp(cfg.amp, CUDA, auto_cuda=torch.float16) is None

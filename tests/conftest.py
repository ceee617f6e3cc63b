"""Shared fixtures: tiny LIT models and the parity fixtures in ``tests/data``."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest
import timm
import torch

import litvit  # noqa: F401  (registers the LIT models with timm)

# Small enough to run in milliseconds on CPU, yet every structural feature is present:
# four stages, MLP-only stages 1-2, attention in 3-4, three DTMs, several heads.
TINY_KWARGS = dict(embed_dims=(16, 32, 40, 64), depths=(1, 1, 1, 1), num_heads=(1, 2, 5, 8), img_size=64)

# Facts about the released checkpoints, made by running the released code: random weights in
# the released key layout with the outputs they give (parity*/), and every released key with its
# shape (released_keys/).
DATA_DIR = Path(__file__).resolve().parent / "data"
PARITY_DIR = DATA_DIR / "parity"
PARITY_V2_DIR = DATA_DIR / "parity_litv2"
RELEASED_KEYS_DIR = DATA_DIR / "released_keys"


@pytest.fixture
def tiny_lit() -> Callable[..., torch.nn.Module]:
    """``tiny_lit(name="lit_s", **overrides)``: a freshly initialised tiny LIT in eval mode."""

    def make(name: str = "lit_s", **overrides: Any) -> torch.nn.Module:
        torch.manual_seed(0)
        kwargs = {**TINY_KWARGS, "num_classes": 10, **overrides}
        return timm.create_model(name, **kwargs).eval()

    return make


@pytest.fixture(scope="session")
def parity_dir() -> Path:
    return PARITY_DIR


@pytest.fixture(scope="session")
def parity_v2_dir() -> Path:
    return PARITY_V2_DIR


@pytest.fixture(scope="session")
def released_keys_dir() -> Path:
    return RELEASED_KEYS_DIR

"""Shared fixtures: tiny LIT models and the parity fixtures of the shared reference."""
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

# The shared reference lives beside the clone (CI checks it out next to the repository).
PARITY_DIR = Path(__file__).resolve().parents[2] / "shared" / "reference" / "parity"
REFERENCE_DIR = PARITY_DIR.parent


@pytest.fixture
def tiny_lit() -> Callable[..., torch.nn.Module]:
    """``tiny_lit(name="lit_s", **overrides)``: a freshly initialised tiny LIT in eval mode."""

    def make(name: str = "lit_s", **overrides: Any) -> torch.nn.Module:
        torch.manual_seed(0)
        kwargs = {**TINY_KWARGS, "num_classes": 10, **overrides}
        return timm.create_model(name, **kwargs).eval()

    return make


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.fail(
            f"shared reference not found at {path}: the tests expect ../shared/reference beside the repository"
        )
    return path


@pytest.fixture(scope="session")
def parity_dir() -> Path:
    return _require(PARITY_DIR)


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    return _require(REFERENCE_DIR)

"""Kernel choices read from the environment at import time (``LITVIT_*_KERNEL``)."""
from __future__ import annotations

import os
import warnings
from typing import Sequence

__all__ = ["choice_from_environment"]


def choice_from_environment(variable: str, choices: Sequence[str], default: str = "auto") -> str:
    """The value of ``variable``, trimmed and lower-cased; ``default`` when it is unset, empty or
    not one of ``choices`` (then with a warning, so a typo does not pass unnoticed)."""
    name = os.environ.get(variable, default).strip().lower() or default
    if name not in choices:
        warnings.warn(f"{variable}={name!r} is not one of {', '.join(choices)}; using {default!r}")
        return default
    return name

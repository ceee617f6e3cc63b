"""Reading and writing checkpoints safely.

Reading never unpickles code (``weights_only=True``); writing goes to a temporary file
in the same directory and is renamed into place, so a killed process never leaves a
half-written checkpoint behind.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Tuple, Union

import torch
import torch.nn as nn

from .errors import CheckpointError
from .fileio import atomic_path

PathLike = Union[str, os.PathLike]

__all__ = [
    "read_checkpoint",
    "extract_state_dict",
    "load_model_weights",
    "save_atomic",
    "describe_mismatch",
]


def read_checkpoint(path: PathLike, map_location: Union[str, torch.device] = "cpu") -> Any:
    """Load a ``.pth``/``.pt`` (``weights_only=True``) or ``.safetensors`` file.

    Raises :class:`CheckpointError` with the path and the reason when the file is missing,
    truncated, corrupt, or would need arbitrary code to unpickle.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device=str(map_location))
        except (SafetensorError, OSError, ValueError) as err:
            raise CheckpointError(f"cannot read safetensors checkpoint {path}: {err}") from None
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises RuntimeError, UnpicklingError, EOFError, ...
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"cannot read checkpoint {path} (truncated, corrupt or not a checkpoint): {reason}") from None


def extract_state_dict(checkpoint: Any, use_ema: bool = False) -> Dict[str, torch.Tensor]:
    """The model weights inside a checkpoint: a bare state dict, ``{'model': ...}``,
    ``{'state_dict': ...}``, or litvit's training checkpoint (``model`` / ``model_ema``)."""
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(f"checkpoint holds a {type(checkpoint).__name__}, not a state dict")
    # Asking for EMA weights must never silently hand back the raw weights instead.
    keys = ("model_ema", "state_dict_ema") if use_ema else ("model", "state_dict")
    for key in keys:
        if isinstance(checkpoint.get(key), Mapping):
            state_dict = checkpoint[key]
            break
    else:
        if use_ema:
            raise CheckpointError("checkpoint has no EMA weights ('model_ema')")
        state_dict = checkpoint
    state_dict = {k: v for k, v in state_dict.items() if torch.is_tensor(v)}
    if not state_dict:
        raise CheckpointError("checkpoint contains no tensors")
    # DDP and torch.compile wrap the model; their prefixes are not part of its names.
    for prefix in ("module.", "_orig_mod."):
        if all(k.startswith(prefix) for k in state_dict):
            state_dict = {k[len(prefix):]: v for k, v in state_dict.items()}
    return state_dict


def _abbrev(names: List[str], limit: int = 6) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... (+{len(names) - limit} more)" if len(names) > limit else "")


def describe_mismatch(
    model_state: Mapping[str, torch.Tensor], state_dict: Mapping[str, torch.Tensor]
) -> Tuple[List[str], List[str], List[str]]:
    """Missing, unexpected and mis-shaped keys of ``state_dict`` against ``model_state``."""
    missing = [k for k in model_state if k not in state_dict]
    unexpected = [k for k in state_dict if k not in model_state]
    shaped = [
        f"{k} {tuple(state_dict[k].shape)} vs {tuple(model_state[k].shape)}"
        for k in state_dict
        if k in model_state and tuple(state_dict[k].shape) != tuple(model_state[k].shape)
    ]
    return missing, unexpected, shaped


def load_model_weights(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    source: str = "checkpoint",
    drop_mismatched_classifier: bool = False,
    classifier_names: Iterable[str] = ("head",),
    strict: bool = True,
) -> List[str]:
    """Copy ``state_dict`` into ``model``, failing with one message listing every problem.

    With ``drop_mismatched_classifier``, classifier weights whose shape differs (another
    class count) are skipped and left freshly initialised, as for fine-tuning.
    Returns the names of the parameters that were left at their initial values.
    """
    model_state = model.state_dict()
    state_dict = dict(state_dict)
    skipped: List[str] = []
    if drop_mismatched_classifier:
        prefixes = tuple(f"{c}." for c in classifier_names)
        for key in list(state_dict):
            if key.startswith(prefixes) and (
                key not in model_state or state_dict[key].shape != model_state[key].shape
            ):
                del state_dict[key]
                skipped.append(key)
        skipped += [k for k in model_state if k.startswith(prefixes) and k not in state_dict and k not in skipped]
    missing, unexpected, shaped = describe_mismatch(model_state, state_dict)
    missing = [k for k in missing if k not in skipped]
    if shaped or (strict and (missing or unexpected)):
        problems = []
        if missing:
            problems.append(f"missing keys: {_abbrev(missing)}")
        if unexpected:
            problems.append(f"unexpected keys: {_abbrev(unexpected)}")
        if shaped:
            problems.append(f"mis-shaped keys: {_abbrev(shaped)}")
        hint = ""
        if shaped and not (missing or unexpected) and all(
            s.startswith(tuple(f"{c}." for c in classifier_names)) for s in shaped
        ):
            hint = " (another class count? drop the classifier to fine-tune)"
        raise CheckpointError(f"{source} does not fit the model: " + "; ".join(problems) + hint)
    model.load_state_dict(state_dict, strict=False)
    return skipped + missing


def save_atomic(obj: Any, path: PathLike) -> Path:
    """``torch.save`` (or safetensors, by suffix) to a temporary file beside ``path``, fsync,
    then rename over ``path`` (:func:`litvit.fileio.atomic_path`)."""
    path = Path(path)
    with atomic_path(path, fsync=True) as tmp:
        with open(tmp, "wb") as f:
            if path.suffix == ".safetensors":
                from safetensors.torch import save

                f.write(save({k: v.contiguous() for k, v in obj.items()}))
            else:
                torch.save(obj, f)
    return path

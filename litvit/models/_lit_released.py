"""The key layouts of the released LIT checkpoints, mapped onto :mod:`litvit.models.lit`'s names.

The released LIT-Ti file is a bare state dict in a PVT-like layout (``pos_embed{i}``,
``patch_embed{i}``, ``block{i}``); the LIT-S/M/B files hold a Swin-like one (``layers.{i}``, the
DTM after stage ``i`` as ``layers.{i}.downsample``) under ``model``.
"""

import re
from typing import Any, Dict, Mapping, Optional

import torch

__all__ = ["released_to_model_keys"]

_DTM_NAMES = {
    "dconv.conv_offset.": "downsample.offset_conv.",
    "dconv.": "downsample.proj.",
    "norm_layer.": "downsample.norm.",
}


def _rename_dtm(key: str, rest: str) -> str:
    for old, new in _DTM_NAMES.items():
        if rest.startswith(old):
            return new + rest[len(old) :]
    raise KeyError(key)


def _map_key(key: str) -> Optional[str]:
    """The model's name for a released key (None: a derived buffer the model rebuilds)."""
    if key.endswith("relative_position_index") or key.endswith("attn_mask"):
        return None
    m = re.match(r"^pos_embed(\d)$", key)
    if m:
        return f"stages.{int(m.group(1)) - 1}.pos_embed"
    m = re.match(r"^patch_embed(\d)\.(.*)$", key)
    if m:
        stage, rest = int(m.group(1)) - 1, m.group(2)
        return f"patch_embed.{rest}" if stage == 0 else f"stages.{stage}.{_rename_dtm(key, rest)}"
    m = re.match(r"^block(\d)\.(.*)$", key)
    if m:
        return f"stages.{int(m.group(1)) - 1}.blocks.{m.group(2)}"
    m = re.match(r"^layers\.(\d+)\.blocks\.(.*)$", key)
    if m:
        return f"stages.{m.group(1)}.blocks.{m.group(2)}"
    m = re.match(r"^layers\.(\d+)\.downsample\.(.*)$", key)
    if m:
        return f"stages.{int(m.group(1)) + 1}.{_rename_dtm(key, m.group(2))}"
    return key


def _is_released_layout(state_dict: Mapping[str, Any]) -> bool:
    return any(k.startswith(("layers.", "block1.", "patch_embed1.", "pos_embed1")) for k in state_dict)


def released_to_model_keys(state_dict: Mapping[str, Any]) -> Dict[str, torch.Tensor]:
    """The tensors of a released or litvit state dict under the model's names.

    Unwraps ``{'model': ...}`` / ``{'state_dict': ...}`` and DDP's ``module.`` prefix, drops
    non-tensor entries, and renames the released layouts' keys; litvit's own pass unchanged.
    """
    for wrapper in ("model", "state_dict"):
        if isinstance(state_dict.get(wrapper), Mapping):
            state_dict = state_dict[wrapper]
            break
    state_dict = {(k[7:] if k.startswith("module.") else k): v for k, v in state_dict.items()}
    released = _is_released_layout(state_dict)
    out = {}
    for key, value in state_dict.items():
        name = _map_key(key) if released else key
        if name is not None and torch.is_tensor(value):
            out[name] = value
    return out

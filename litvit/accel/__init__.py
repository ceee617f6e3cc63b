"""CPU speed-ups as an explicit layer: ``litvit.optimize(model)`` swaps modules for faster twins.

The model file stays plain; this layer replaces modules of any timm-style model in place:

* ``nn.Linear`` -> :class:`~litvit.accel.modules.OneDNNLinear` (oneDNN's inner product for
  float32 CPU work, in inference and training);
* timm's ``Mlp`` -> :class:`~litvit.accel.modules.FusedMlp` (GELU fused into fc1's product, or
  applied in place, where autograd does not record);
* LIT's DTM -> :class:`~litvit.accel.modules.FastDTM` (BatchNorm folded into the
  deformable kernel in eval mode);
* attention modules (LIT's, HiLo, and timm's ViT / PVTv2 / Swin attention) -> a twin from
  :func:`~litvit.accel.modules.explicit_attention_twin` that takes the module's own explicit
  softmax branch instead of ``scaled_dot_product_attention`` for bfloat16 / float16 CPU work,
  where SDPA's CPU kernels are slower at classification sequence lengths (on CPUs with AMX, in
  training only: there SDPA's inference kernel runs on AMX tiles and wins).

Parameters, buffers and their names do not change, so checkpoints stay interchangeable and an
optimizer built before the call keeps working. Outputs and gradients equal the plain model's up to
float32 rounding (bfloat16 rounding for the attention twins, which compute the module's explicit
form). The machine-dependent choices (whether oneDNN's products beat MKL's here, whether the CPU
has AMX) are made once, by :func:`choose_plan`, and every one of them can be fixed by an argument.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Dict, Optional, Union

import torch
import torch.nn as nn

from timm.layers import Mlp

from ..models.dtm import DeformableTokenMerging
from ..ops import onednn as onednn_ops
from .modules import (
    FastDTM, FusedMlp, OneDNNLinear, attention_switches, dtm_folds, explicit_attention_twin, mlp_fuses, rebind,
)

__all__ = [
    "AccelPlan", "choose_plan", "optimize", "optimize_for_device", "applied_plan", "replaced_counts",
    "FusedMlp", "FastDTM", "OneDNNLinear",
]


@dataclass(frozen=True)
class AccelPlan:
    """What :func:`optimize` replaces. ``reasons`` says why each machine-dependent choice was made."""

    device: str = "cpu"
    onednn: bool = False
    onednn_weight_grad: bool = False
    fuse_mlp: bool = True
    fast_dtm: bool = True
    explicit_attention: bool = True
    explicit_attention_inference: bool = True
    reasons: Dict[str, str] = dataclasses.field(default_factory=dict, compare=False)

    def describe(self) -> str:
        """One line for logs and the benchmark's footer."""
        parts = []
        if self.onednn:
            grad = "weight gradients too" if self.onednn_weight_grad else "weight gradients on ATen"
            parts.append(f"oneDNN Linear ({grad})")
        else:
            parts.append("ATen Linear")
        parts.append("fused MLP" if self.fuse_mlp else "plain MLP")
        parts.append("DTM norm folded in eval" if self.fast_dtm else "DTM as written")
        if not self.explicit_attention:
            parts.append("SDPA attention")
        else:
            parts.append("explicit bf16/fp16 attention" + ("" if self.explicit_attention_inference else " in training"))
        why = "; ".join(f"{key}: {value}" for key, value in self.reasons.items())
        return ", ".join(parts) + (f" ({why})" if why else "")


def choose_plan(
    device: str = "cpu",
    *,
    onednn: Optional[bool] = None,
    onednn_weight_grad: Optional[bool] = None,
    fuse_mlp: bool = True,
    fast_dtm: bool = True,
    explicit_attention: bool = True,
    explicit_attention_inference: Optional[bool] = None,
) -> AccelPlan:
    """The replacements that pay on ``device``, decided once.

    ``onednn=None`` takes oneDNN's products on CPUs with AVX-512 (where they beat MKL's; on an AVX2
    CPU the fused GELU product was slower). ``onednn_weight_grad=None`` times both libraries once
    (:func:`~litvit.ops.onednn.onednn_matmul_speedup`, about 0.1 s) and takes oneDNN for the weight
    gradients where it is at least ``ONEDNN_TRAINING_SPEEDUP`` times faster. Pass booleans to fix
    either choice (a run that must repeat another's arithmetic exactly, for one).
    ``explicit_attention`` sends bfloat16 / float16 CPU attention to the module's explicit form;
    ``explicit_attention_inference=None`` keeps SDPA for inference on CPUs with AMX, where its
    fused kernel computes on AMX tiles and wins.
    """
    reasons: Dict[str, str] = {}
    on_cpu = torch.device(device).type == "cpu"
    if onednn is None:
        if not on_cpu:
            onednn, reasons["onednn"] = False, f"not a CPU ({device})"
        elif not _onednn_available():
            onednn, reasons["onednn"] = False, "this torch build has no oneDNN Linear op"
        elif not onednn_ops.cpu_has_avx512():
            onednn, reasons["onednn"] = False, "no AVX-512 on this CPU"
        else:
            onednn, reasons["onednn"] = True, "AVX-512 CPU"
    elif onednn and not (on_cpu and _onednn_available()):
        raise ValueError("onednn=True needs a CPU device and a torch build with oneDNN (mkldnn)")
    if not onednn:
        onednn_weight_grad = False
    elif onednn_weight_grad is None:
        speedup = onednn_ops.onednn_matmul_speedup()
        onednn_weight_grad = speedup >= onednn_ops.ONEDNN_TRAINING_SPEEDUP
        reasons["weight gradients"] = f"oneDNN/MKL product rate {speedup:.2f}x"
    if not (explicit_attention and on_cpu):
        explicit_attention_inference = False
    elif explicit_attention_inference is None:
        amx = onednn_ops.cpu_has_amx()
        explicit_attention_inference = not amx
        reasons["attention in inference"] = "AMX CPU: SDPA" if amx else "no AMX: explicit"
    return AccelPlan(device=str(device), onednn=bool(onednn), onednn_weight_grad=bool(onednn_weight_grad),
                     fuse_mlp=fuse_mlp, fast_dtm=fast_dtm, explicit_attention=explicit_attention,
                     explicit_attention_inference=bool(explicit_attention_inference), reasons=reasons)


def _onednn_available() -> bool:
    return onednn_ops.onednn_linear_available()


def _replacement(module: nn.Module, plan: AccelPlan) -> nn.Module:
    if plan.onednn and type(module) is nn.Linear and not (module._forward_hooks or module._forward_pre_hooks):
        return OneDNNLinear.from_linear(module, plan.onednn_weight_grad)
    if plan.fuse_mlp and type(module) is Mlp and mlp_fuses(module):
        return rebind(module, FusedMlp)
    if plan.fast_dtm and type(module) is DeformableTokenMerging and dtm_folds(module):
        return FastDTM.from_dtm(module, onednn=plan.onednn)
    if plan.explicit_attention and _on_cpu(plan) and attention_switches(module):
        return rebind(module, explicit_attention_twin(type(module), plan.explicit_attention_inference))
    return module


def _on_cpu(plan: AccelPlan) -> bool:
    return torch.device(plan.device).type == "cpu"


def _replace_children(module: nn.Module, plan: AccelPlan, counts: Dict[str, int]) -> nn.Module:
    for name, child in list(module.named_children()):
        _replace_children(child, plan, counts)
        new = _replacement(module._modules[name], plan)
        if new is not module._modules[name]:
            counts[type(new).__name__] = counts.get(type(new).__name__, 0) + 1
            module._modules[name] = new
    return module


def optimize(model: nn.Module, device: str = "cpu", plan: Optional[AccelPlan] = None, **choices) -> nn.Module:
    """Swap ``model``'s modules for the faster twins ``plan`` names (default: :func:`choose_plan`
    for ``device`` with ``choices``); in place, like ``model.to``, and returns the model.

    Only modules of exactly the plain types are swapped (subclasses may compute something else),
    and none whose skipped submodules carry hooks. :func:`applied_plan` tells afterwards what was
    done.
    """
    if plan is None:
        plan = choose_plan(device, **choices)
    elif choices:
        raise TypeError("give either a plan or choices, not both")
    counts: Dict[str, int] = {}
    root = _replacement(_replace_children(model, plan, counts), plan)
    if root is not model:
        counts[type(root).__name__] = counts.get(type(root).__name__, 0) + 1
    # A plain attribute, not a buffer: the state dict stays as it was.
    root.__dict__["litvit_accel"] = (plan, dict(counts))
    return root


def applied_plan(model: nn.Module) -> Optional[AccelPlan]:
    """The plan :func:`optimize` applied to ``model``, or None."""
    entry = model.__dict__.get("litvit_accel")
    return entry[0] if entry else None


def replaced_counts(model: nn.Module) -> Dict[str, int]:
    """How many modules of each replacement type :func:`optimize` put into ``model``."""
    entry = model.__dict__.get("litvit_accel")
    return dict(entry[1]) if entry else {}


def optimize_for_device(
    model: nn.Module,
    device: Union[torch.device, str],
    enabled: bool = True,
    log: Optional[logging.Logger] = None,
    **choices: Optional[bool],
) -> nn.Module:
    """What the litvit commands run: ``model`` through :func:`optimize` on a CPU unless ``enabled`` is
    off (``--no-optimize``), with one log line saying what the layer chose; elsewhere ``model``.
    ``choices`` go to :func:`choose_plan` (None: its default)."""
    device = torch.device(device)
    if not enabled or device.type != "cpu":
        return model
    model = optimize(model, device="cpu", **{key: value for key, value in choices.items() if value is not None})
    (log or logging.getLogger("litvit.accel")).info("CPU speed layer: %s; --no-optimize runs the plain model", applied_plan(model).describe())
    return model

"""``plot_run(run_dir)``: loss, accuracy and learning-rate curves of a run, as one PNG."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

from ..engine.logging import read_metrics
from ..errors import DataError
from ..fileio import atomic_path

__all__ = ["plot_run"]


def _num(value) -> Optional[float]:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def plot_run(run_dir: Union[str, os.PathLike], out: Optional[Union[str, os.PathLike]] = None, dpi: int = 120) -> Path:
    """Draw ``<run_dir>/metrics.jsonl`` to ``out`` (default ``<run_dir>/curves.png``); returns the path.

    Three panels: training loss (per logged step and per epoch) with validation loss,
    validation top-1/top-5 (and EMA top-1 when present), and the learning rate per step.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    metrics_path = run_dir / "metrics.jsonl" if run_dir.is_dir() else run_dir
    if not metrics_path.is_file():
        raise DataError(f"no metrics.jsonl in {run_dir} (is it a litvit run directory?)")
    records = read_metrics(metrics_path)
    steps = [r for r in records if r.get("kind") == "step"]
    epochs = [r for r in records if r.get("kind") == "epoch"]
    if not steps and not epochs:
        raise DataError(f"{metrics_path} holds no training records yet")
    out = Path(out) if out is not None else metrics_path.parent / "curves.png"

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ax = axes[0]
    if steps:
        ax.plot([r["epoch"] for r in steps], [_num(r.get("loss")) for r in steps], lw=0.8, alpha=0.5, label="train (step)")
    ep = [r["epoch"] for r in epochs]
    if epochs:
        ax.plot(ep, [_num(r.get("train_loss")) for r in epochs], "o-", label="train (epoch mean)")
        val = [(r["epoch"], _num(r.get("val_loss"))) for r in epochs if _num(r.get("val_loss")) is not None]
        if val:
            ax.plot(*zip(*val), "s-", label="validation")
    ax.set(title="loss", xlabel="epoch")
    ax.legend()
    ax.grid(alpha=0.3)

    ax = axes[1]
    for key, style, label in (("val_top1", "o-", "top-1"), ("val_top5", "s--", "top-5"), ("ema_top1", "^-", "EMA top-1")):
        pts = [(r["epoch"], _num(r.get(key))) for r in epochs if _num(r.get(key)) is not None]
        if pts:
            ax.plot(*zip(*pts), style, label=label)
    ax.set(title="validation accuracy (%)", xlabel="epoch")
    if ax.lines:
        ax.legend()
    ax.grid(alpha=0.3)

    ax = axes[2]
    lr_pts = [(r["epoch"], _num(r.get("lr"))) for r in (steps or epochs) if _num(r.get("lr")) is not None]
    if lr_pts:
        ax.plot(*zip(*lr_pts))
    ax.set(title="learning rate", xlabel="epoch")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    ax.grid(alpha=0.3)

    fig.suptitle(str(metrics_path.parent))
    fig.tight_layout()
    try:
        with atomic_path(out, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=dpi)
    finally:
        plt.close(fig)
    return out

"""Training checkpoints that survive a killed process.

Every file is written atomically (:func:`litvit.checkpoint.save_atomic`: temporary file,
fsync, rename), so a checkpoint on disk is either complete or absent; a file damaged in
some other way (a full disk, a copy cut short) is reported by :meth:`CheckpointManager.find_resume`,
which then falls back to the previous one. Checkpoints hold only tensors, numbers, strings,
lists, tuples and dicts, so they load with ``weights_only=True``.
"""
from __future__ import annotations

import os
import random
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import torch

from ..checkpoint import read_checkpoint, save_atomic
from ..errors import CheckpointError
from ..fileio import atomic_path
from .distributed import is_main_process

__all__ = ["CheckpointManager", "capture_rng_state", "restore_rng_state"]

PathLike = Union[str, os.PathLike]


class CheckpointManager:
    """Writes ``<run_dir>/<prefix>-<name>.pth``, keeps the newest ``keep_last`` of them plus
    ``best.pth``, and finds the newest readable one to resume from.

    Only the main process (rank 0) writes; on other ranks :meth:`save` does nothing.
    """

    def __init__(
        self,
        run_dir: PathLike,
        keep_last: int = 2,
        prefix: str = "checkpoint",
        best_name: str = "best.pth",
        is_main: Optional[bool] = None,
    ):
        if keep_last < 1:
            raise ValueError("keep_last must be at least 1")
        self.run_dir = Path(run_dir)
        self.keep_last = keep_last
        self.prefix = prefix
        self.best_name = best_name
        self.is_main = is_main_process() if is_main is None else is_main
        self.resumed_from: Optional[Path] = None

    # ------------------------------------------------------------------ writing
    def path_for(self, name: str) -> Path:
        name = name if name.endswith((".pth", ".pt")) else f"{name}.pth"
        if not name.startswith(f"{self.prefix}-"):
            name = f"{self.prefix}-{name}"
        return self.run_dir / name

    @property
    def best_path(self) -> Path:
        return self.run_dir / self.best_name

    def save(self, state: Dict[str, Any], name: str, is_best: bool = False) -> Optional[Path]:
        """Write ``state`` as checkpoint ``name`` (and as ``best.pth`` when ``is_best``).

        Returns the path written, or ``None`` on a non-main rank.
        """
        if not self.is_main:
            return None
        path = save_atomic(state, self.path_for(name))
        if is_best:
            self._link_best(path)
        self._prune(keep=path)
        return path

    def _link_best(self, path: Path) -> None:
        # A hard link shares the bytes already written (no second copy of a large model);
        # it is created under a temporary name and renamed, so best.pth is never partial.
        try:
            with atomic_path(self.best_path) as tmp:
                tmp.unlink()  # os.link needs a free name
                os.link(path, tmp)
        except OSError:
            save_atomic(read_checkpoint(path), self.best_path)

    def checkpoints(self) -> List[Path]:
        """This run's periodic checkpoints, oldest first."""
        if not self.run_dir.is_dir():
            return []
        files = [
            p
            for p in self.run_dir.glob(f"{self.prefix}-*")
            if p.is_file() and p.suffix in (".pth", ".pt") and p.name != self.best_name
        ]
        return sorted(files, key=lambda p: (p.stat().st_mtime_ns, p.name))

    def _prune(self, keep: Path) -> None:
        files = self.checkpoints()
        excess = len(files) - self.keep_last
        for path in files:
            if excess <= 0:
                break
            if path != keep:
                path.unlink(missing_ok=True)
                excess -= 1

    # ------------------------------------------------------------------ reading
    def find_resume(self, spec: Optional[PathLike], required: Sequence[str] = ("model",)) -> Optional[Dict[str, Any]]:
        """The checkpoint to resume from.

        ``spec`` is ``None``/``''`` (no resume), ``'auto'`` (newest readable checkpoint in
        ``run_dir``, or ``None`` when there is none; unreadable ones are reported with a
        warning and skipped) or a path (which must be readable). ``required`` keys must be
        present. Sets :attr:`resumed_from`.
        """
        self.resumed_from = None
        if spec is None or str(spec) == "":
            return None
        if str(spec) != "auto":
            path = Path(spec)
            state = read_checkpoint(path)
            self._check_complete(state, path, required)
            self.resumed_from = path
            return state
        for path in reversed(self.checkpoints()):
            try:
                state = read_checkpoint(path)
                self._check_complete(state, path, required)
            except CheckpointError as err:
                warnings.warn(f"skipping unusable checkpoint: {err}", stacklevel=2)
                continue
            self.resumed_from = path
            return state
        return None

    @staticmethod
    def _check_complete(state: Any, path: Path, required: Sequence[str]) -> None:
        if not isinstance(state, dict):
            raise CheckpointError(f"{path} is not a training checkpoint (holds a {type(state).__name__})")
        missing = [k for k in required if k not in state]
        if missing:
            raise CheckpointError(f"{path} is not a complete training checkpoint (no {', '.join(missing)})")


# ---------------------------------------------------------------------- RNG state
def capture_rng_state() -> Dict[str, Any]:
    """Python, NumPy, torch (and CUDA) generator states, as plain lists and tensors."""
    version, py_state, gauss = random.getstate()
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: Dict[str, Any] = {
        "python": {"version": version, "state": list(py_state), "gauss": gauss},
        "numpy": {
            "kind": str(np_kind),
            "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Dict[str, Any]) -> None:
    """Undo :func:`capture_rng_state`; CUDA states are restored when the device count matches."""
    if "python" in state:
        py = state["python"]
        random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    if "numpy" in state:
        npst = state["numpy"]
        keys = npst["keys"].numpy() if torch.is_tensor(npst["keys"]) else np.asarray(npst["keys"])
        np.random.set_state((npst["kind"], keys.astype(np.uint32), npst["pos"], npst["has_gauss"], npst["gauss"]))
    if "torch" in state:
        torch.set_rng_state(state["torch"].cpu())
    cuda_states = state.get("cuda")
    if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda_states])

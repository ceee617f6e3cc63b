"""What a user sees during training: a logger, progress bars and a JSON-lines metrics file.

On a terminal :func:`progress` draws a tqdm bar; otherwise (a log file, a cluster job) it
prints a plain line every few percent or seconds, so logs stay readable.
"""
from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Union

from ..fileio import write_text_atomic
from .distributed import is_main_process

__all__ = ["get_logger", "MetricsLogger", "read_metrics", "progress", "Progress"]

_LOGGER_NAME = "litvit"


class _CurrentStderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the record, not at set-up.

    Notebooks, pytest's capture and ``contextlib.redirect_stderr`` replace ``sys.stderr``; a
    handler bound to the stream of its creation would write into a closed one afterwards.
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def get_logger(name: str = _LOGGER_NAME) -> logging.Logger:
    """The ``litvit`` logger: INFO on the main process, WARNING elsewhere, to stderr."""
    logger = logging.getLogger(name)
    root = logging.getLogger(_LOGGER_NAME)
    if not root.handlers:
        handler = _CurrentStderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
        root.addHandler(handler)
        root.propagate = False
    root.setLevel(logging.INFO if is_main_process() else logging.WARNING)
    return logger


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item") and callable(value.item):
        try:
            value = value.item()
        except (ValueError, RuntimeError):
            value = value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf; keep it visible as a string
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


class MetricsLogger:
    """Appends one JSON object per call to ``<run_dir>/metrics.jsonl`` (main process only).

    Each line is flushed at once, so a killed run keeps everything logged before.
    """

    def __init__(self, run_dir: Union[str, os.PathLike], filename: str = "metrics.jsonl", enabled: Optional[bool] = None):
        self.path = Path(run_dir) / filename
        self.enabled = is_main_process() if enabled is None else enabled
        if self.enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def log(self, record: Dict[str, Any] = None, **fields: Any) -> None:
        if not self.enabled:
            return
        record = {**(record or {}), **fields}
        record.setdefault("time", round(time.time(), 3))
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(_jsonable(record)) + "\n")

    def truncate_after(self, key: str, value: float) -> None:
        """Drop records whose ``key`` exceeds ``value`` (used on resume, so that the log of a
        resumed run does not repeat the epochs or steps it redoes)."""
        if not self.enabled or not self.path.exists():
            return
        kept = [r for r in read_metrics(self.path) if not (isinstance(r.get(key), (int, float)) and r[key] > value)]
        write_text_atomic(self.path, "".join(json.dumps(r) + "\n" for r in kept))


def read_metrics(path: Union[str, os.PathLike]) -> List[Dict[str, Any]]:
    """The records of a metrics file (a run directory or the file itself); a torn last line is ignored."""
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.jsonl"
    records = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class Progress:
    """Iterates like tqdm; with ``bar=False`` prints plain lines instead of redrawing a bar."""

    def __init__(
        self,
        iterable: Iterable,
        total: Optional[int] = None,
        desc: str = "",
        enabled: bool = True,
        bar: Optional[bool] = None,
        every_percent: float = 10.0,
        every_seconds: float = 60.0,
        stream=None,
    ):
        self.iterable = iterable
        if total is None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.total = total
        self.desc = desc
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.bar = (self.stream.isatty() if hasattr(self.stream, "isatty") else False) if bar is None else bar
        self.every_n = max(1, int(math.ceil((total or 0) * every_percent / 100))) if total else 50
        self.every_seconds = every_seconds
        self.postfix: Dict[str, Any] = {}
        self._tqdm = None

    def set_postfix(self, **fields: Any) -> None:
        self.postfix.update(fields)
        if self._tqdm is not None:
            self._tqdm.set_postfix({k: _fmt(v) for k, v in self.postfix.items()}, refresh=False)

    def __len__(self) -> int:
        return self.total or 0

    def __iter__(self) -> Iterator:
        if not self.enabled:
            yield from self.iterable
            return
        if self.bar:
            from tqdm.auto import tqdm

            self._tqdm = tqdm(self.iterable, total=self.total, desc=self.desc, file=self.stream, dynamic_ncols=True)
            try:
                yield from self._tqdm
            finally:
                self._tqdm.close()
                self._tqdm = None
            return
        start = last = time.time()
        n = 0
        for n, item in enumerate(self.iterable, 1):
            yield item
            now = time.time()
            if n % self.every_n == 0 or n == self.total or now - last >= self.every_seconds:
                last = now
                self._print_line(n, now - start)
        if n and self.total and n != self.total:
            self._print_line(n, time.time() - start)

    def _print_line(self, n: int, elapsed: float) -> None:
        done = f"{n}/{self.total}" if self.total else str(n)
        pct = f" ({100.0 * n / self.total:.0f}%)" if self.total else ""
        rate = n / elapsed if elapsed > 0 else 0.0
        fields = " ".join(f"{k}={_fmt(v)}" for k, v in self.postfix.items())
        stamp = time.strftime("%H:%M:%S")
        print(f"{stamp} {self.desc}: {done}{pct} {rate:.2f} it/s {fields}".rstrip(), file=self.stream, flush=True)


def progress(
    iterable: Iterable, total: Optional[int] = None, desc: str = "", enabled: Optional[bool] = None, **kwargs: Any
) -> Progress:
    """A progress display around ``iterable``: a tqdm bar on a terminal, plain periodic lines
    otherwise, nothing on non-main ranks (``enabled`` defaults to "this is rank 0")."""
    return Progress(iterable, total=total, desc=desc, enabled=is_main_process() if enabled is None else enabled, **kwargs)

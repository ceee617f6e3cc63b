"""Writing files so that a killed process never leaves a half-written one behind.

Everything litvit writes (checkpoints, exported graphs, figures, metrics, reports, the
synthetic datasets) goes through :func:`atomic_path`: the content is written to a temporary
name in the destination's directory (same file system, so the rename is atomic) and renamed
over the destination only once complete. A reader sees the old file or the new one, never a
mixture, and a failure leaves the destination as it was.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Union

PathLike = Union[str, os.PathLike]

__all__ = ["atomic_path", "write_text_atomic"]


def _umask() -> int:
    # The only portable way to read the umask is to set it; set it straight back.
    umask = os.umask(0)
    os.umask(umask)
    return umask


@contextlib.contextmanager
def atomic_path(path: PathLike, suffix: str = ".tmp", directory: bool = False, fsync: bool = False) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed over ``path`` when the block ends.

    The temporary file (or, with ``directory``, directory) already exists, created with the
    permissions ``open()`` / ``mkdir()`` would give it (``mkstemp`` makes it private), so
    writers that open it by name keep those permissions. ``suffix`` is the temporary name's
    ending, for writers that pick a format by it (``.png``). If the block raises, the
    temporary is removed and ``path`` is left untouched. ``fsync`` flushes the file's data to
    disk before the rename (checkpoints, reports), so a crash right after cannot leave an
    empty file under the final name. A directory can only replace an empty directory (or
    none): remove an old one inside the block, once the new one is complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent))
        os.chmod(tmp, 0o777 & ~_umask())
    else:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
        os.close(fd)
        tmp = Path(name)
        os.chmod(tmp, 0o666 & ~_umask())
    try:
        yield tmp
        if fsync and tmp.is_file():
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    finally:
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        elif os.path.lexists(tmp):
            tmp.unlink()


def write_text_atomic(path: PathLike, text: str, encoding: str = "utf-8", fsync: bool = False) -> Path:
    """Write ``text`` to ``path`` through :func:`atomic_path`; returns ``path``."""
    path = Path(path)
    with atomic_path(path, fsync=fsync) as tmp:
        # newline="": the text is written as given (a CSV keeps its own line endings).
        with open(tmp, "w", encoding=encoding, newline="") as f:
            f.write(text)
    return path

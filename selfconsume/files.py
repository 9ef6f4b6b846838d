"""Atomic file writing: a reader never sees a partial file, and a failed write keeps the old one.

Every file the package writes (results, checkpoints, CSV, JSON, figures) goes through
:func:`atomic_write`: the content is written to a temporary file in the target's folder, flushed
to disk, given the usual permissions, and moved into place with ``os.replace`` (atomic on POSIX and
Windows within one file system). A write killed half-way leaves a ``.<name>.<random>.tmp`` file
beside the target, never a truncated target; :func:`remove_stale` clears those.
"""

from __future__ import annotations

import contextlib
import glob
import os
import tempfile
from typing import Any, Callable

__all__ = ["atomic_write", "remove_stale"]


def atomic_write(path: str | os.PathLike, write: Callable[[Any], Any], *,
                 binary: bool) -> None:
    """Writes ``path`` through a temporary file in the same folder and ``os.replace``.

    Args:
        path: the file to write; its folder must exist.
        write: ``write(fh)`` writes the content to the open file object ``fh``.
        binary: open ``fh`` in binary mode (else text, UTF-8, no newline translation).

    Raises:
        Whatever ``write`` raises; the old file (if any) is then left untouched and the temporary
        file removed.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".",
                               suffix=".tmp")
    try:
        fh = os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8", newline="")
        with fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def remove_stale(folder: str | os.PathLike) -> list[str]:
    """Removes the temporary files that killed :func:`atomic_write` calls left in ``folder``.

    Returns:
        The paths removed.
    """
    removed = []
    for stale in glob.glob(os.path.join(os.fspath(folder), ".*.tmp")):
        with contextlib.suppress(FileNotFoundError):
            os.remove(stale)
            removed.append(stale)
    return removed

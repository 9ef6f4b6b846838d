"""Several processes, one result: process 0 touches the file system, the others are told.

Under ``jax.distributed`` every process runs the same program on its own devices (JAX's
multi-controller model). Computations are collective and need nothing here; what differs between
processes is the host side: folders may not be shared between machines, clocks differ, and only
one process may write a file. The rule of the package:

* every file is read and written by process 0 alone (:func:`is_writer`);
* what a process must know from the file system (does a checkpoint exist, what does it hold,
  which configuration did the run start with) is computed by process 0 and broadcast to all
  (:func:`from_writer`), errors included, so every process takes the same branch and raises the
  same exception instead of waiting in a collective that one of them left.

With one process both are the plain call.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import TypeVar

import jax
import numpy as np

__all__ = ["from_writer", "is_writer"]

T = TypeVar("T")


def is_writer() -> bool:
    """Whether this process writes files (process 0)."""
    return jax.process_index() == 0


def from_writer(fn: Callable[[], T]) -> T:
    """Runs ``fn()`` on process 0 only; every process returns its result or raises its exception.

    The result (or the exception) is pickled on process 0 and broadcast to every process with
    ``jax.experimental.multihost_utils.broadcast_one_to_all`` (a collective: every process must
    call :func:`from_writer` at the same point of the program).

    Args:
        fn: a function of no arguments whose result can be pickled.

    Returns:
        ``fn()`` as computed on process 0.

    Raises:
        Whatever ``fn`` raised on process 0 (on every process).
    """
    if jax.process_count() == 1:
        return fn()
    from jax.experimental import multihost_utils

    payload = b""
    if is_writer():
        try:
            outcome = (True, fn())
        except Exception as err:  # re-raised below, on every process
            outcome = (False, err)
        try:
            payload = pickle.dumps(outcome)
        except Exception:  # an exception that does not pickle: keep its message
            payload = pickle.dumps((False, RuntimeError(repr(outcome[1]))))
    size = int(multihost_utils.broadcast_one_to_all(np.int32(len(payload))))
    data = (np.frombuffer(payload, np.uint8) if is_writer() else np.zeros(size, np.uint8))
    ok, value = pickle.loads(np.asarray(multihost_utils.broadcast_one_to_all(data)).tobytes())
    if not ok:
        raise value
    return value

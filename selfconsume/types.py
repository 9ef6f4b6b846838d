"""Type aliases and the small frozen dataclasses shared across the package.

All containers are ``flax.struct.dataclass``es: immutable pytrees whose array fields are leaves, so
they pass through ``jit``, ``vmap`` and ``lax.scan`` unchanged.
"""

from __future__ import annotations

from typing import Any

import jax
from flax import struct

PRNGKey = jax.Array  # a typed key from ``jax.random.key``
Array = jax.Array
ArrayLike = jax.typing.ArrayLike
PyTree = Any


@struct.dataclass
class Curated:
    """The candidates kept by :func:`selfconsume.curate`.

    Attributes:
        samples: ``(n, ...)`` the kept candidate of each of the ``n`` groups (``(n*m, ...)``,
            group by group, for a curator that keeps m per group).
        rewards: ``(n,)`` the reward of each kept candidate (``(n*m, R)`` with R reward columns).
        index: ``(n,)`` int32, the position of the kept candidate inside its group, in ``[0, k)``
            (for the pooled ``top_fraction`` curator, its row among the ``n*k`` candidates).
    """

    samples: Array
    rewards: Array
    index: Array

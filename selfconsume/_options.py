"""Equality and hashing of option pytrees (curators, reward models, feedback protocols).

An option pytree is a ``flax.struct`` dataclass whose static fields (shape-setting integers,
column indices, callables) are its structure and whose array leaves are its rates. Two of them
are equal when their structures are and their leaves hold equal concrete values (traced leaves:
when they are the same object); the hash is the structure's, so equal options hash alike and a
jitted function taking one as a static argument retraces only when the structure changes.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from selfconsume import _checks

__all__ = ["Options"]


class Options:
    """Mixin: :meth:`signature`, ``__eq__`` and ``__hash__`` from the dataclass fields."""

    def signature(self) -> tuple:
        """The static structure: the type, the static options, and the signatures of the option
        pytrees nested in this one (what a change of would retrace a jitted function)."""
        out = [type(self).__name__]
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, Options):
                out.append(value.signature())
            elif isinstance(value, tuple) and value and isinstance(value[0], Options):
                out.append(tuple(c.signature() for c in value))
            elif not field.metadata.get("pytree_node", True):
                out.append((field.name, value))
        return tuple(out)

    def __eq__(self, other):
        if not isinstance(other, Options) or type(self) is not type(other):
            return NotImplemented
        if self.signature() != other.signature():
            return False
        a, b = jax.tree_util.tree_leaves(self), jax.tree_util.tree_leaves(other)
        if not all(_checks.is_concrete(x) and _checks.is_concrete(y) for x, y in zip(a, b)):
            return all(x is y for x, y in zip(a, b))
        return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a, b))

    def __hash__(self):
        return hash(self.signature())

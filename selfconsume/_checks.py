"""Argument validation shared by the public functions: one vocabulary, one rule for traced values.

* **Structural problems** (ranks, shapes, static integers, unknown names) raise ``ValueError`` at
  trace time, naming the argument, its value and what is allowed.
* **Value problems on concrete values** (a NumPy array or a Python number, not a tracer) raise the
  same ``ValueError`` at once: ``real_fraction = 1.5``, a probability vector that does not sum to
  one, NaN data.
* **Value problems on traced values** (inside ``jit``, ``vmap`` or ``scan``) cannot raise without a
  host round trip, so the function's result is *poisoned*: every floating leaf of its output is
  NaN (:func:`poison`), never a plausible-looking answer. The loop records this as
  ``fit_is_finite = False`` / ``is_finite = False``, and the command line stops with exit status 3
  naming the generation and configuration (``--checked`` names the operation).

``*_ok`` functions return the traced validity predicate of the concrete checks beside them.
"""

from __future__ import annotations

import math
import numbers

import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(x) -> bool:
    """True when ``x`` holds values known on the host (not a tracer inside a transformation)."""
    return not isinstance(x, jax.core.Tracer)


def show(value) -> str:
    if isinstance(value, (np.ndarray, jax.Array)) and is_concrete(value) and np.size(value) > 8:
        return f"array of shape {np.shape(value)}"
    return repr(value) if not isinstance(value, jax.Array) else repr(np.asarray(value).tolist())


def static_int(name: str, value, *, minimum: int = 1, allow_inf: bool = False):
    """Checks a static integer argument (a shape-setting value such as ``k``) and returns it.

    With ``allow_inf`` the value may also be ``math.inf`` (``jnp.inf``), returned as a float.
    """
    if allow_inf and isinstance(value, numbers.Real) and not isinstance(value, bool):
        if math.isinf(value) and value > 0:
            return math.inf
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        allowed = f"an integer >= {minimum}" + (" or jnp.inf" if allow_inf else "")
        raise ValueError(f"`{name}` must be {allowed} (a static Python value); got {value!r}.")
    if value < minimum:
        allowed = f">= {minimum}" + (" or jnp.inf" if allow_inf else "")
        raise ValueError(f"`{name}` must be {allowed}; got {value!r}.")
    return int(value)


def scalar(name: str, value, *, minimum: float | None = None, maximum: float | None = None):
    """Checks a scalar hyperparameter that may be traced; its range is checked when concrete."""
    if jnp.ndim(value) != 0:
        raise ValueError(f"`{name}` must be a scalar; got shape {jnp.shape(value)}.")
    if is_concrete(value):
        v = float(np.asarray(value))
        if math.isnan(v) or (minimum is not None and v < minimum) or (
                maximum is not None and v > maximum):
            if minimum is not None and maximum is not None:
                allowed = f"in [{minimum:g}, {maximum:g}]"
            elif minimum is not None:
                allowed = f">= {minimum:g} (inf allowed)"
            else:
                allowed = f"<= {maximum:g}"
            raise ValueError(f"`{name}` must be {allowed}; got {v!r}.")
    return value


def scalar_ok(value, *, minimum: float | None = None, maximum: float | None = None):
    """The traced predicate ``minimum <= value <= maximum`` (False for NaN) of :func:`scalar`."""
    v = jnp.asarray(value)
    ok = ~jnp.isnan(v) if jnp.issubdtype(v.dtype, jnp.inexact) else jnp.asarray(True)
    if minimum is not None:
        ok = ok & (v >= minimum)
    if maximum is not None:
        ok = ok & (v <= maximum)
    return ok


def rate(name: str, value, *, minimum: float | None = None, maximum: float | None = None,
         finite_only: bool = False):
    """A rate or temperature option as an array leaf: concrete values are checked
    (:func:`scalar`, and :func:`finite` with ``finite_only``); Python numbers become arrays of
    the default float dtype; traced values are kept (see :func:`rate_ok`)."""
    scalar(name, value, minimum=minimum, maximum=maximum)
    if finite_only:
        finite(name, value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return jnp.asarray(value, jnp.result_type(float))
    return jnp.asarray(value)


def rate_ok(value, *, minimum: float | None = None, maximum: float | None = None,
            finite_only: bool = False):
    """The traced validity of a :func:`rate` leaf (``True`` when concrete: checked already)."""
    if is_concrete(value):
        return True
    ok = scalar_ok(value, minimum=minimum, maximum=maximum)
    return ok & jnp.isfinite(value) if finite_only else ok


def probability_vector_ok(p, *, atol: float | None = None):
    """The traced predicate of :func:`probability_vector`: finite, non-negative, sums to one."""
    p = jnp.asarray(p)
    n = p.shape[-1]
    tol = atol if atol is not None else 1e-4 * max(1.0, math.sqrt(n) / 10)
    return (jnp.all(jnp.isfinite(p)) & jnp.all(p >= 0)
            & (jnp.abs(jnp.sum(p, dtype=jnp.result_type(p.dtype, jnp.float32)) - 1.0) <= tol))


def poison(ok, tree):
    """``tree`` with every floating leaf set to NaN where the traced predicate ``ok`` is False.

    The rule for value problems only known at run time (module docstring): the result is NaN,
    never a plausible answer. Integer and boolean leaves are left as they are; a concrete
    ``True`` returns ``tree`` unchanged (no extra operation is traced).
    """
    if is_concrete(ok) and bool(np.all(np.asarray(ok))):
        return tree

    def one(x):
        x = jnp.asarray(x)
        if jnp.issubdtype(x.dtype, jnp.inexact):
            return jnp.where(ok, x, jnp.asarray(jnp.nan, x.dtype))
        return x

    return jax.tree_util.tree_map(one, tree)


def probability_vector(name: str, p, *, atol: float | None = None):
    """Checks a 1-D probability vector: rank 1, non-empty; when concrete, entries >= 0, sum 1."""
    if jnp.ndim(p) != 1:
        raise ValueError(f"`{name}` must be a 1-D probability vector; got shape {jnp.shape(p)}.")
    if jnp.shape(p)[0] == 0:
        raise ValueError(f"`{name}` must have at least one entry; got an empty array.")
    if is_concrete(p):
        a = np.asarray(p, dtype=np.float64)
        if not np.all(np.isfinite(a)):
            raise ValueError(f"`{name}` must be finite; got {show(p)} with non-finite entries.")
        if np.any(a < 0):
            raise ValueError(
                f"`{name}` must be non-negative; got minimum entry {float(a.min()):.6g}.")
        tol = atol if atol is not None else 1e-4 * max(1.0, math.sqrt(a.size) / 10)
        if abs(a.sum() - 1.0) > tol:
            raise ValueError(f"`{name}` must sum to 1 (within {tol:g}); got sum {float(a.sum()):.8g}.")
    return p


def same_length(name_a: str, a, name_b: str, b):
    """Checks that two arrays share their leading size."""
    na, nb = jnp.shape(a)[:1], jnp.shape(b)[:1]
    if na != nb:
        raise ValueError(
            f"`{name_a}` and `{name_b}` must have the same leading size; got "
            f"{jnp.shape(a)} and {jnp.shape(b)}.")


def finite(name: str, x) -> None:
    """When ``x`` is concrete, checks that every entry is finite (NaN and inf are rejected)."""
    if is_concrete(x):
        a = np.asarray(x)
        if a.dtype.kind in "fc" and not np.all(np.isfinite(a)):
            raise ValueError(f"`{name}` must be finite; got {int(np.sum(~np.isfinite(a)))} "
                             f"non-finite entries in an array of shape {a.shape}.")


def weights(name: str, w) -> None:
    """When ``w`` is concrete, checks per-sample weights: finite, non-negative, not all zero."""
    if not is_concrete(w):
        return
    a = np.asarray(w, np.float64)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"`{name}` must be finite; got {int(np.sum(~np.isfinite(a)))} "
                         "non-finite entries.")
    if np.any(a < 0):
        raise ValueError(f"`{name}` must be non-negative; got minimum {float(a.min())!r}.")
    if not np.any(a > 0):
        raise ValueError(f"`{name}` must not all be zero; got an all-zero array.")


class UnknownNameError(KeyError, ValueError):
    """An unknown name looked up in a registry: both a ``KeyError`` (it is a missing key) and a
    ``ValueError`` (it is a bad argument), with a readable message."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class Registry(dict):
    """A ``dict`` of name -> factory whose missing keys raise :class:`UnknownNameError` naming the
    unknown name and listing the known ones."""

    def __init__(self, kind: str, entries):
        super().__init__(entries)
        self.kind = kind

    def __missing__(self, name):
        raise UnknownNameError(
            f"unknown {self.kind} name {name!r}: the {self.kind} name must be one of "
            f"{sorted(self)}.")

    def __reduce__(self):
        return (type(self), (self.kind, dict(self)))

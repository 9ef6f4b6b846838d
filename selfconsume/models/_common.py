r"""What the model families share (private): the model record, input checks, the covariance floor,
a log-sum-exp robust to recomputation, inverse-CDF sampling.

**Covariance floor.** Every Gaussian-based family (:mod:`~selfconsume.models.gaussian`,
:mod:`~selfconsume.models.gmm`, :mod:`~selfconsume.models.kde`) adds :math:`\delta I` to its fitted
covariances, with

.. math::
    \delta = 100\,\epsilon\, \bar\sigma^2 + \sigma^2_{\min}\, s_0, \qquad
    \bar\sigma^2 = \operatorname{tr}(\Sigma_{\rm data}) / d,

where :math:`\epsilon` is the machine epsilon of the dtype, :math:`\Sigma_{\rm data}` the weighted
covariance of the data being fitted, :math:`\sigma^2_{\min}` the factory option ``min_variance``
(a *relative* floor, default :data:`DEFAULT_MIN_VARIANCE` :math:`= 10^{-15}`) and :math:`s_0` the
params leaf ``data_scale``: the scale of the data given to ``init``,

.. math::
    s_0 = \bar\sigma^2_{\rm init}\ \text{if}\ > 0, \quad\text{else}\
    \lVert \bar x_{\rm init} \rVert^2 / d\ \text{if}\ > 0, \quad\text{else}\ 1,

(the fallbacks cover identical points and a single point), carried unchanged by ``fit`` (params
built by hand get :math:`s_0 = 1`). The KDE adds :math:`\delta` to the data covariance before the
bandwidth factor, so its kernel's floor is :math:`h^2 \delta`. The first
term keeps the Cholesky factorisation of rank-deficient covariances stable at every scale (a
relative error of :math:`1.2 \cdot 10^{-5}` in float32); the second keeps degenerate data finite.
Relative to :math:`s_0`, the second term is harmless: a Gaussian whose variance collapses over
generations follows the unfloored curve to float32 rounding down to variances of about
:math:`10^{-10} s_0` (and stops at :math:`\sigma^2_{\min} s_0` instead of 0).

**Log-sum-exp.** :func:`shifted_exp` returns :math:`m = \max_c a_c` and :math:`e_c = e^{\min(a_c
- m, 0)}` with :math:`e_{\arg\max} = 1` exactly, so :math:`\sum_c e_c \ge 1` even where XLA
evaluates :math:`a` twice with different rounding (log-densities near :math:`-10^{15}` under a
collapsed covariance); :math:`\log \sum_c e^{a_c} = m + \log \sum_c e_c`.

**Sampling.** :func:`inverse_cdf` draws ``n`` indices from ``M`` masses in :math:`O(M + n \log M)`.

**Validation** (the rule of :mod:`selfconsume._checks`): shapes raise ``ValueError`` at trace time;
concrete non-finite data and negative, non-finite or all-zero concrete weights raise too; the same
problems on traced values make :func:`fit_inputs` return a traced ``ok = False``, and the families
return :func:`selfconsume._checks.poison`\ ed (all-NaN) params.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from selfconsume import _checks
from selfconsume.types import Array, ArrayLike, PRNGKey

DEFAULT_MIN_VARIANCE = 1e-15
"""Default relative floor ``min_variance`` of the Gaussian-based families (module docstring)."""

HIGHEST = jax.lax.Precision.HIGHEST
"""The precision of every product feeding a density, a likelihood or an EM statistic: full float32
(accelerators default to bfloat16 passes or TF32)."""


# ------------------------------------------------------------------------------------------------
# The model record


class _ModelFields(NamedTuple):
    name: str
    init: Callable
    fit: Callable
    sample: Callable
    log_prob: Callable | None
    conform: Callable | None = None
    options: tuple | None = None


_FUNCTION_FIELDS = ("init", "fit", "sample", "log_prob", "conform")


class GenerativeModel(_ModelFields):
    """A family of generative models as pure functions (see :mod:`selfconsume.models`).

    Attributes:
        name: the registry name of the family (a key of :data:`selfconsume.models.MODELS`).
        init: ``init(key, data, weights=None) -> params``, fit from scratch.
        fit: ``fit(key, params, data, weights=None) -> params``, weighted MLE warm-started at
            ``params``.
        sample: ``sample(key, params, num_samples) -> x`` with ``num_samples`` a static int.
        log_prob: ``log_prob(params, x) -> (n,)`` log-density (log-mass for discrete families), or
            ``None`` where the family has no tractable density.
        conform: ``conform(params, like) -> params`` or ``None``. ``like`` is a pytree of
            ``jax.ShapeDtypeStruct`` (e.g. ``jax.eval_shape`` of ``fit``); the result has exactly
            those shapes and dtypes and represents the same distribution. Only families whose
            params change shape with the data (``kde``) have one; ``None`` means the params'
            shapes never change.
        options: the factory's options after validation, a sorted tuple of ``(name, value)``
            pairs (``get(model.name, **dict(model.options))`` builds an equal model), or ``None``
            for a model assembled by hand.

    Two models compare (and hash) equal when they have the same type, name and options, so a
    model can be a static argument of ``jax.jit`` and two separately built equal models share
    one compilation. A model with ``options=None`` compares by the identity of its functions;
    ``_replace`` of any function without new ``options`` gives such a model.
    """

    __slots__ = ()

    def _key(self) -> tuple:
        if self.options is None:
            return (type(self), self.name) + tuple(
                _Identity(getattr(self, f)) for f in _FUNCTION_FIELDS)
        return (type(self), self.name, self.options)

    def __eq__(self, other):
        if not isinstance(other, GenerativeModel):
            return NotImplemented
        return self._key() == other._key()

    def __ne__(self, other):
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq

    def __hash__(self):
        return hash(self._key())

    def _replace(self, **kwargs):
        if "options" not in kwargs and any(f in kwargs for f in _FUNCTION_FIELDS):
            kwargs["options"] = None  # new functions: no longer the factory's model
        return super()._replace(**kwargs)

    def __repr__(self) -> str:
        if self.options is None:
            return f"GenerativeModel(name={self.name!r}, options=None)"
        args = ", ".join(f"{k}={v!r}" for k, v in self.options)
        return f"GenerativeModel(name={self.name!r}, options=({args}))"


GenerativeModel.__module__ = "selfconsume.models"


class _Identity:
    """Wraps an object so that it compares and hashes by identity (``is``)."""

    __slots__ = ("obj",)

    def __init__(self, obj):
        self.obj = obj

    def __eq__(self, other):
        return isinstance(other, _Identity) and other.obj is self.obj

    def __hash__(self):
        return id(self.obj)

    def __repr__(self) -> str:
        return f"<{type(self.obj).__name__} at {id(self.obj):#x}>"


def identity_key(obj) -> _Identity:
    """A hashable key for ``obj`` that is equal only to keys of the same object."""
    return _Identity(obj)


def options_key(**options) -> tuple:
    """The sorted ``(name, value)`` pairs of hashable factory options."""
    return tuple(sorted(options.items()))


# ------------------------------------------------------------------------------------------------
# Input checks


def float_dtype(x: Array):
    """The floating dtype a family computes in: the input's if floating, else the jax default."""
    if jnp.issubdtype(x.dtype, jnp.floating):
        return x.dtype
    return jnp.result_type(float)


def check_points(name: str, x: ArrayLike, dim: int, *, finite: bool = True) -> Array:
    """Checks continuous data of shape ``(N, dim)``, N >= 1, and returns it as a float array.

    With ``finite`` (training data), concrete non-finite values raise as well; the points given
    to ``log_prob`` are not checked for values (a NaN point gets a NaN log-density).
    """
    x = jnp.asarray(x)
    if x.ndim != 2 or x.shape[1] != dim or x.shape[0] == 0:
        raise ValueError(
            f"`{name}` must have shape (N, dim) with N >= 1 and dim = {dim}; got shape {x.shape}.")
    if jnp.issubdtype(x.dtype, jnp.complexfloating) or x.dtype == jnp.bool_:
        raise ValueError(f"`{name}` must hold real numbers; got dtype {x.dtype}.")
    x = x.astype(float_dtype(x))
    if finite and _checks.is_concrete(x) and not np.all(np.isfinite(np.asarray(x))):
        raise ValueError(f"`{name}` must be finite; got {int(np.sum(~np.isfinite(np.asarray(x))))}"
                         f" non-finite entries in an array of shape {x.shape}.")
    return x


def check_weights(weights: ArrayLike | None, n: int, dtype) -> tuple[Array, Array | bool]:
    """Checks per-sample weights of shape ``(n,)``; returns them normalised, and their validity.

    ``None`` means uniform. Concrete weights must be finite, non-negative and not all zero
    (``ValueError`` otherwise). For traced weights the same condition is returned as a traced
    boolean (one ``min`` reduction; the sum is needed anyway); for concrete ones ``True``.

    Returns:
        ``(w, ok)``: ``w`` ``(n,)`` in ``dtype``, summing to one when ``ok``.
    """
    if weights is None:
        return jnp.full((n,), 1.0 / n, dtype), True
    w = jnp.asarray(weights)
    if w.shape != (n,):
        raise ValueError(
            f"`weights` must have shape (N,) = ({n},), one weight per data point; got shape "
            f"{w.shape}.")
    if not (jnp.issubdtype(w.dtype, jnp.floating) or jnp.issubdtype(w.dtype, jnp.integer)):
        raise ValueError(f"`weights` must be real numbers; got dtype {w.dtype}.")
    _checks.weights("weights", w)
    concrete = _checks.is_concrete(w)
    w = w.astype(dtype)
    total = jnp.sum(w)
    ok = True if concrete else (jnp.min(w) >= 0) & (total > 0) & jnp.isfinite(total)
    return w / total, ok


def points_ok(x: Array) -> Array | bool:
    """``True`` for concrete data (already checked by :func:`check_points`), else the traced
    predicate "every entry is finite" (one reduction)."""
    if _checks.is_concrete(x):
        return True
    return jnp.all(jnp.isfinite(x))


def fit_inputs(data: ArrayLike, weights: ArrayLike | None,
               dim: int) -> tuple[Array, Array, Array | bool]:
    """Checks training data ``(N, dim)`` and weights ``(N,)``; returns ``(x, w, ok)``.

    ``w`` is normalised; ``ok`` is ``True`` for concrete inputs (problems raise) and otherwise the
    traced validity of both (finite data; finite, non-negative, not all-zero weights).
    """
    x = check_points("data", data, dim)
    w, ok_w = check_weights(weights, x.shape[0], x.dtype)
    return x, w, both(points_ok(x), ok_w)


def both(a, b):
    """``a & b`` for predicates that may be Python ``True`` (no operation traced then)."""
    if a is True:
        return b
    if b is True:
        return a
    return a & b


def check_num_samples(num_samples) -> int:
    return _checks.static_int("num_samples", num_samples, minimum=1)


def check_param_shape(name: str, value: Array, shape: tuple[int, ...]):
    if jnp.shape(value) != shape:
        raise ValueError(
            f"`params.{name}` must have shape {shape} for this model; got {jnp.shape(value)}.")


def check_min_variance(min_variance) -> float:
    if isinstance(min_variance, bool) or not isinstance(min_variance, (int, float)) or not (
            min_variance >= 0 and np.isfinite(min_variance)):
        raise ValueError(
            f"`min_variance` must be a finite Python float >= 0 (relative to the data's scale); "
            f"got {min_variance!r}.")
    return float(min_variance)


# ------------------------------------------------------------------------------------------------
# The covariance floor


def data_scale(mean: Array, cov: Array) -> Array:
    r"""The scale :math:`s_0` of the module docstring from the weighted ``mean`` ``(d,)`` and
    covariance ``cov`` ``(d, d)``: the mean variance, else :math:`\lVert \bar x \rVert^2 / d`,
    else 1."""
    d = mean.shape[0]
    var = jnp.trace(cov) / d
    msq = jnp.sum(mean * mean) / d
    return jnp.where(var > 0, var, jnp.where(msq > 0, msq, jnp.ones_like(var)))


def resolve_scale(mean: Array, cov: Array, scale, ok):
    """``(s0, ok)``: the scale of a fit from scratch (``scale is None``: :func:`data_scale` of the
    data's moments) or the carried one (a refit), whose non-finite value (poisoned params) keeps
    the refit poisoned."""
    if scale is None:
        return data_scale(mean, cov), ok
    s0 = jnp.asarray(scale, mean.dtype)
    return s0, both(ok, jnp.isfinite(s0))


def default_scale(scale, like):
    """The ``data_scale`` of params built by hand: a Python float ``scale`` (the field's default)
    becomes an array of ``like``'s floating dtype and batch shape ``like.shape[:-1]``, so that the
    params have the dtypes ``fit`` returns and stack and ``vmap`` like the other leaves. Anything
    else (an array, a tracer, a ``ShapeDtypeStruct`` while unflattening) is returned as it is."""
    if type(scale) is not float:
        return scale
    if isinstance(like, jax.Array) and jnp.issubdtype(like.dtype, jnp.floating):
        return jnp.full(like.shape[:-1], scale, like.dtype)
    if isinstance(like, np.ndarray) and np.issubdtype(like.dtype, np.floating):
        return np.full(like.shape[:-1], scale, like.dtype)
    return scale


def covariance_floor(mean_variance: Array, min_variance: float, scale: Array, dtype) -> Array:
    r"""The diagonal covariance floor :math:`\delta = 100\,\epsilon\,\bar\sigma^2 +
    \sigma^2_{\min} s_0` (module docstring).

    Args:
        mean_variance: scalar :math:`\bar\sigma^2`, the mean variance of the data being fitted.
        min_variance: the relative floor :math:`\sigma^2_{\min}` (a Python float).
        scale: scalar :math:`s_0`, the params' ``data_scale``.
        dtype: the floating dtype of the result.
    """
    eps = jnp.finfo(dtype).eps
    return (100.0 * eps * mean_variance + min_variance * scale).astype(dtype)


# ------------------------------------------------------------------------------------------------
# Log-sum-exp


def shifted_exp(a: Array, axis: int) -> tuple[Array, Array]:
    r"""``top = max(a, axis)`` and ``e = exp(a - top)``, robust to recomputation of ``a``.

    With tiny covariances (a collapsed fit) log-densities reach :math:`\pm 10^{15}`. XLA may
    evaluate ``a`` separately inside the fused loops of the ``max`` and of the ``exp``, and two
    evaluations of the same expression then differ by many units (FMA contraction): ``a - top``
    can be far above 0 (``exp`` overflows) or far below for every entry (the sum is 0). So the
    exponent is clipped at 0 and the entry at ``argmax(a)`` is set to exactly 1: the sum over
    ``axis`` is always ``>= 1``. A slice that is all ``-inf`` gets ``top = -inf`` and ``e = 0``;
    NaN propagates.

    Args:
        a: array of log-terms.
        axis: the axis reduced.

    Returns:
        ``top`` (``a``'s shape without ``axis``) and ``e`` (``a``'s shape), with
        ``log sum exp(a) = top + log(sum(e, axis))``.
    """
    top = jnp.max(a, axis=axis)
    finite_top = jnp.expand_dims(jnp.isfinite(top), axis)
    shift = jnp.expand_dims(jnp.where(jnp.isneginf(top), jnp.zeros_like(top), top), axis)
    e = jnp.exp(jnp.minimum(a - shift, 0.0))
    hit = jnp.expand_dims(jnp.argmax(a, axis=axis), axis) == jax.lax.broadcasted_iota(
        jnp.int32, a.shape, axis % a.ndim)
    return top, jnp.where(hit & finite_top, jnp.ones_like(e), e)


def logsumexp(a: Array, axis: int) -> Array:
    """``log(sum(exp(a), axis))`` computed with :func:`shifted_exp`."""
    top, e = shifted_exp(a, axis)
    safe = jnp.where(jnp.isneginf(top), jnp.zeros_like(top), top)
    return safe + jnp.log(jnp.sum(e, axis=axis))


# ------------------------------------------------------------------------------------------------
# Sampling


def inverse_cdf(key: PRNGKey, masses: Array, shape: tuple[int, ...]) -> Array:
    r"""Draws indices ``i`` with probability ``masses[i] / sum(masses)`` by inverse CDF.

    Cost :math:`O(M + n \log M)` for ``n`` draws from ``M`` masses (a cumulative sum and a binary
    search), instead of :math:`O(n M)` for ``jax.random.categorical``. An index with zero mass is
    never returned: the cumulative sum is made exactly flat across zero-mass entries (running
    maximum of the partial sums at positive entries), and the result is clipped to the last index
    with positive mass (which guards ``u * total`` rounding up to ``total``).

    Args:
        key: a PRNG key, consumed.
        masses: ``(M,)`` non-negative masses, not all zero (otherwise index 0 is returned).
        shape: static shape of the draws.

    Returns:
        int32 indices of the given shape, in ``[0, M)``.
    """
    positive = masses > 0
    cdf = jax.lax.cummax(jnp.where(positive, jnp.cumsum(masses), 0.0).astype(masses.dtype))
    u = jax.random.uniform(key, shape, dtype=masses.dtype) * cdf[-1]
    # Few masses (mixture components): comparing with all of them beats a binary search on CPU.
    method = "compare_all" if masses.shape[0] <= 32 else "scan"
    index = jnp.searchsorted(cdf, u, side="right", method=method)
    last = jnp.max(jnp.where(positive, jnp.arange(masses.shape[0]), 0))
    return jnp.minimum(index, last).astype(jnp.int32)

r"""Generative model families as pure functions over a params pytree.

Every family is a :class:`GenerativeModel`: four pure functions closed over static sizes
(``num_states``, ``dim``, ``num_components``, ``em_steps``) fixed by the factory.

* ``init(key, data, weights=None) -> params``: fit from scratch.
* ``fit(key, params, data, weights=None) -> params``: weighted maximum likelihood, warm-started at
  ``params`` (closed-form families ignore the previous params).
* ``sample(key, params, num_samples) -> x``: ``num_samples`` is a static Python int.
* ``log_prob(params, x) -> (n,)``: ``None`` where the family has no tractable density.

Weights are per-sample, non-negative and not all zero, shape ``(N,)``; ``None`` means uniform.
They need not sum to one: every family fits the normalised weights :math:`w_n / \sum_m w_m`, i.e.
maximises :math:`\sum_n w_n \log p_\theta(x_n)`.

Params are frozen ``flax.struct.dataclass``es, so every function is jittable and vmappable over keys
and params, e.g. ``jax.vmap(model.fit, in_axes=(0, 0, None, None))``. Nothing is jitted here.

Validation is two-tier (DESIGN.md section 4): ranks, trailing sizes, the weights' shape and
``num_samples >= 1`` raise ``ValueError`` at trace time; when the data or weights are concrete (not
tracers), non-finite data and negative, non-finite or all-zero weights raise as well. Under ``jit``
such value problems are not detected and show up as non-finite params.

Families (:data:`MODELS`): :func:`categorical`, :func:`gaussian`, :func:`gmm`, :func:`kde`,
:func:`flow_matching`, :func:`histogram` (the fully expressive model of continuous data on a grid).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from selfconsume import _checks
from selfconsume.types import Array, ArrayLike, PRNGKey

__all__ = [
    "GenerativeModel",
    "MODELS",
    "get",
    "categorical",
    "gaussian",
    "gmm",
    "kde",
    "flow_matching",
    "histogram",
    "histogram_centers",
    "CategoricalParams",
    "GaussianParams",
    "GMMParams",
    "KDEParams",
    "FlowParams",
    "HistogramParams",
]


class GenerativeModel(NamedTuple):
    """A family of generative models as pure functions (see the module docstring).

    Attributes:
        name: the registry name of the family (a key of :data:`MODELS`).
        init: ``init(key, data, weights=None) -> params``, fit from scratch.
        fit: ``fit(key, params, data, weights=None) -> params``, weighted MLE warm-started at
            ``params``.
        sample: ``sample(key, params, num_samples) -> x`` with ``num_samples`` a static int.
        log_prob: ``log_prob(params, x) -> (n,)`` log-density (log-mass for discrete families), or
            ``None`` where the family has no tractable density.
    """

    name: str
    init: Callable
    fit: Callable
    sample: Callable
    log_prob: Callable | None


# ------------------------------------------------------------------------------------------------
# Validation and sampling helpers shared by the families (private).


def _float_dtype(x: Array):
    """The floating dtype a family computes in: the input's if floating, else the jax default."""
    if jnp.issubdtype(x.dtype, jnp.floating):
        return x.dtype
    return jnp.result_type(float)


def _check_points(name: str, x: ArrayLike, dim: int, *, finite: bool = True) -> Array:
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
    x = x.astype(_float_dtype(x))
    if finite and _checks.is_concrete(x) and not np.all(np.isfinite(np.asarray(x))):
        raise ValueError(f"`{name}` must be finite; got {int(np.sum(~np.isfinite(np.asarray(x))))}"
                         f" non-finite entries in an array of shape {x.shape}.")
    return x


def _check_weights(weights: ArrayLike | None, n: int, dtype) -> Array:
    """Checks per-sample weights of shape ``(n,)`` and returns them normalised to sum to one.

    ``None`` means uniform. When the weights are concrete they must be finite, non-negative and
    not all zero.
    """
    if weights is None:
        return jnp.full((n,), 1.0 / n, dtype)
    w = jnp.asarray(weights)
    if w.shape != (n,):
        raise ValueError(
            f"`weights` must have shape (N,) = ({n},), one weight per data point; got shape "
            f"{w.shape}.")
    if not (jnp.issubdtype(w.dtype, jnp.floating) or jnp.issubdtype(w.dtype, jnp.integer)):
        raise ValueError(f"`weights` must be real numbers; got dtype {w.dtype}.")
    _checks.weights("weights", w)
    w = w.astype(dtype)
    return w / jnp.sum(w)


def _check_num_samples(num_samples) -> int:
    return _checks.static_int("num_samples", num_samples, minimum=1)


def _check_param_shape(name: str, value: Array, shape: tuple[int, ...]):
    if jnp.shape(value) != shape:
        raise ValueError(
            f"`params.{name}` must have shape {shape} for this model; got {jnp.shape(value)}.")


def _inverse_cdf(key: PRNGKey, masses: Array, shape: tuple[int, ...]) -> Array:
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


def _covariance_floor(mean_variance: Array, min_variance: float, dtype) -> Array:
    r"""The diagonal covariance floor :math:`100\,\epsilon \cdot \bar\sigma^2 + \sigma^2_{\min}`.

    :math:`\bar\sigma^2` is the data's mean variance (trace of its covariance over ``dim``) and
    :math:`\epsilon` the machine epsilon of ``dtype``: the relative part keeps the Cholesky
    factorisation of rank-deficient covariances stable at every data scale, the absolute part keeps
    degenerate data (identical points, one point) finite.
    """
    eps = jnp.finfo(dtype).eps
    return (100.0 * eps * mean_variance + min_variance).astype(dtype)


def _check_min_variance(min_variance) -> float:
    if isinstance(min_variance, bool) or not isinstance(min_variance, (int, float)) or not (
            min_variance >= 0 and np.isfinite(min_variance)):
        raise ValueError(
            f"`min_variance` must be a finite Python float >= 0; got {min_variance!r}.")
    return float(min_variance)


# ------------------------------------------------------------------------------------------------
# The families (imported after the helpers they use).

from selfconsume.models.categorical import CategoricalParams, categorical  # noqa: E402
from selfconsume.models.gaussian import GaussianParams, gaussian  # noqa: E402
from selfconsume.models.gmm import GMMParams, gmm  # noqa: E402
from selfconsume.models.kde import KDEParams, kde  # noqa: E402
from selfconsume.models.flow_matching import FlowParams, flow_matching  # noqa: E402
from selfconsume.models.histogram import HistogramParams, histogram, histogram_centers  # noqa: E402

MODELS: dict[str, Callable[..., GenerativeModel]] = _checks.Registry("model", {
    "categorical": categorical,
    "gaussian": gaussian,
    "gmm": gmm,
    "kde": kde,
    "flow_matching": flow_matching,
    "histogram": histogram,
})
"""Registry: family name -> factory returning a :class:`GenerativeModel` (an unknown name raises
a ``ValueError`` that is also a ``KeyError``)."""


def get(name: str, /, **kwargs) -> GenerativeModel:
    """Builds the model family registered under ``name`` with the factory's arguments.

    Example: ``get("gmm", num_components=8, dim=2, em_steps=20)``.

    Raises:
        ValueError: if ``name`` is not a key of :data:`MODELS`.
    """
    if name not in MODELS:
        raise ValueError(f"`name` must be one of {sorted(MODELS)}; got {name!r}.")
    return MODELS[name](**kwargs)

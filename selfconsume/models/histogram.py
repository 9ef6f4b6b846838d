r"""The fully expressive model of continuous data on a grid: a categorical law on cell centres.

The box :math:`[\mathrm{low}, \mathrm{high})^d` is cut into ``bins`` cells per axis of width
:math:`h = (\mathrm{high} - \mathrm{low}) / \mathrm{bins}`; cell :math:`j` (row-major over the axes)
has centre :math:`c_j`. A point is assigned to the cell that contains it, points outside the box to
the nearest edge cell. Weighted maximum likelihood is the weighted share of each cell,

.. math::  \hat p_j = \frac{\sum_n w_n \mathbb{1}[x_n \in \text{cell } j]}{\sum_n w_n},

and samples are cell centres :math:`c_j` drawn with probability :math:`p_j` (inverse CDF). Fitting
the model to its own samples gives back the same :math:`p`, so a loop of this model is the
categorical loop on the states :math:`c_j`: its population dynamics are exactly those of
:mod:`selfconsume.theory` with rewards :math:`r(c_j)` and :math:`p_0` the histogram of the data.

``log_prob`` is the log-density of the piecewise-constant histogram density,
:math:`\log p_j - d \log h` for a point in cell :math:`j` (``-inf`` outside the box).

Under ``jit``, non-finite data or invalid weights make ``init`` and ``fit`` return NaN ``probs``
(:func:`selfconsume._checks.poison`; a NaN point has no cell).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from selfconsume import _checks
from selfconsume.models._common import (
    GenerativeModel,
    check_num_samples,
    check_param_shape,
    check_points,
    fit_inputs,
    inverse_cdf,
    options_key,
)
from selfconsume.types import Array, ArrayLike, PRNGKey

__all__ = ["HistogramParams", "histogram", "histogram_centers"]


@struct.dataclass
class HistogramParams:
    """Params of :func:`histogram`.

    Attributes:
        probs: ``(bins ** dim,)`` cell probabilities (row-major over the axes), summing to one.
    """

    probs: Array


def _check_box(bins, low, high, dim) -> tuple[int, float, float, int]:
    bins = _checks.static_int("bins", bins, minimum=1)
    dim = _checks.static_int("dim", dim, minimum=1)
    for name, value in (("low", low), ("high", high)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
            raise ValueError(f"`{name}` must be a finite Python number; got {value!r}.")
    if not low < high:
        raise ValueError(f"`low` must be below `high`; got low={low!r}, high={high!r}.")
    if bins ** dim > 2 ** 24:
        raise ValueError(f"`bins ** dim` must be at most 2**24 cells; got bins={bins}, dim={dim} "
                         f"({bins ** dim} cells).")
    return bins, float(low), float(high), dim


def histogram_centers(bins: int, low: float = -1.5, high: float = 1.5, dim: int = 2) -> Array:
    """The cell centres of :func:`histogram`, ``(bins ** dim, dim)``, row-major over the axes."""
    bins, low, high, dim = _check_box(bins, low, high, dim)
    axis = low + (jnp.arange(bins) + 0.5) * ((high - low) / bins)
    mesh = jnp.meshgrid(*([axis] * dim), indexing="ij")
    return jnp.stack([m.reshape(-1) for m in mesh], axis=-1)


def histogram(bins: int, low: float = -1.5, high: float = 1.5, dim: int = 2) -> GenerativeModel:
    """The histogram family on ``bins ** dim`` cells of the box ``[low, high) ** dim``.

    Args:
        bins: static number of cells per axis, >= 1.
        low: lower edge of the box on every axis.
        high: upper edge of the box on every axis, ``> low``.
        dim: static dimension of the data, >= 1.

    Returns:
        A :class:`~selfconsume.models.GenerativeModel` named ``"histogram"`` whose params are
        :class:`HistogramParams`. Data are float ``(N, dim)``; samples are cell centres of shape
        ``(num_samples, dim)`` (see :func:`histogram_centers`). Under ``jit``, non-finite data or
        invalid weights give NaN ``probs``.

    Raises:
        ValueError: if ``bins`` or ``dim`` is not an integer >= 1, ``low >= high``, or the grid
            has more than 2**24 cells.
    """
    bins, low, high, dim = _check_box(bins, low, high, dim)
    m = bins ** dim
    width = (high - low) / bins
    strides = jnp.asarray([bins ** (dim - 1 - i) for i in range(dim)], jnp.int32)

    def cell(x: Array) -> tuple[Array, Array]:
        """The cell index of each point (clipped into the box) and whether it is inside."""
        idx = jnp.floor((x - low) / width).astype(jnp.int32)
        inside = jnp.all((idx >= 0) & (idx < bins), axis=-1)
        return jnp.sum(jnp.clip(idx, 0, bins - 1) * strides[None, :], axis=-1), inside

    def init(key: PRNGKey, data: ArrayLike, weights: ArrayLike | None = None) -> HistogramParams:
        """Weighted cell shares of ``data`` ``(N, dim)``, ``weights`` ``(N,)``; ``key`` unused."""
        del key
        x, w, ok = fit_inputs(data, weights, dim)
        counts = jax.ops.segment_sum(w, cell(x)[0], num_segments=m)
        return _checks.poison(ok, HistogramParams(probs=counts / jnp.sum(counts)))

    def fit(key: PRNGKey, params: HistogramParams, data: ArrayLike,
            weights: ArrayLike | None = None) -> HistogramParams:
        """Weighted cell shares (closed form); the previous ``params`` are not used."""
        check_param_shape("probs", params.probs, (m,))
        return init(key, data, weights)

    def sample(key: PRNGKey, params: HistogramParams, num_samples: int) -> Array:
        """Draws ``num_samples`` cell centres, ``(num_samples, dim)``, by inverse CDF."""
        n = check_num_samples(num_samples)
        check_param_shape("probs", params.probs, (m,))
        j = inverse_cdf(key, params.probs, (n,))
        digits = (j[:, None] // strides[None, :]) % bins
        return (low + (digits + 0.5) * width).astype(params.probs.dtype)

    def log_prob(params: HistogramParams, x: ArrayLike) -> Array:
        """Log-density of the histogram density at ``x`` ``(n, dim)``; ``-inf`` outside."""
        check_param_shape("probs", params.probs, (m,))
        x = check_points("x", x, dim, finite=False)
        j, inside = cell(x)
        logp = jnp.log(params.probs)[j] - dim * jnp.log(jnp.asarray(width, params.probs.dtype))
        return jnp.where(inside, logp, -jnp.inf)

    return GenerativeModel(name="histogram", init=init, fit=fit, sample=sample, log_prob=log_prob,
                           options=options_key(bins=bins, low=low, high=high, dim=dim))

r"""Gaussian kernel density estimate on weighted training points.

With training points :math:`x_n`, normalised weights :math:`\tilde w_n` and kernel covariance
:math:`\Sigma_h = L L^\top`,

.. math::
    \log p(y) = \operatorname{logsumexp}_n \Big(\log \tilde w_n
    - \tfrac12 \lVert L^{-1}(y - x_n) \rVert^2\Big) - \textstyle\sum_i \log L_{ii}
    - \tfrac d2 \log 2\pi,

computed from the whitened points with :math:`\lVert a - b \rVert^2 = \lVert a \rVert^2 +
\lVert b \rVert^2 - 2 a^\top b` (one dense ``(n, N)`` product; the points are centred first).

Bandwidth, as ``scipy.stats.gaussian_kde`` with weights:
:math:`\Sigma_h = h^2\, \hat\Sigma + \delta I`, where :math:`\hat\Sigma = \sum_n \tilde w_n (x_n -
\bar x)(x_n - \bar x)^\top / (1 - \sum_n \tilde w_n^2)` is the unbiased weighted data covariance
(``np.cov(..., aweights=w)``; taken as 0 when :math:`n_{\rm eff} = 1`), :math:`n_{\rm eff} =
1 / \sum_n \tilde w_n^2`, and

* Scott (default): :math:`h = n_{\rm eff}^{-1/(d+4)}`;
* Silverman: :math:`h = (n_{\rm eff} (d + 2) / 4)^{-1/(d+4)}`;
* a number ``b``: :math:`h = b`.

:math:`\delta = 100\,\epsilon\,\operatorname{tr}(\hat\Sigma)/d + \sigma^2_{\min}` is the covariance
floor of :mod:`selfconsume.models.gaussian`. Sampling picks a training point with probability
:math:`\tilde w_n` (inverse CDF) and adds :math:`L z`, :math:`z \sim \mathcal N(0, I)`.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import struct

from selfconsume import _checks
from selfconsume.models import (
    GenerativeModel,
    _check_min_variance,
    _check_num_samples,
    _check_param_shape,
    _check_points,
    _check_weights,
    _covariance_floor,
    _inverse_cdf,
)
from selfconsume.models.gaussian import add_floor, inverse_cholesky, weighted_moments
from selfconsume.types import Array, ArrayLike, PRNGKey

__all__ = ["KDEParams", "kde"]


@struct.dataclass
class KDEParams:
    """Params of :func:`kde`.

    Attributes:
        points: ``(N, d)`` training points (the kernel centres).
        weights: ``(N,)`` their normalised weights (non-negative, summing to one).
        cov: ``(d, d)`` kernel covariance (floor included).
    """

    points: Array
    weights: Array
    cov: Array


def _check_bandwidth(bandwidth):
    if bandwidth is None or bandwidth in ("scott", "silverman"):
        return "scott" if bandwidth is None else bandwidth
    if isinstance(bandwidth, bool) or not isinstance(bandwidth, (int, float)) or not (
            bandwidth > 0 and math.isfinite(bandwidth)):
        raise ValueError(
            f"`bandwidth` must be None, 'scott', 'silverman' or a finite Python float > 0; got "
            f"{bandwidth!r}.")
    return float(bandwidth)


def kde(dim: int, *, bandwidth: float | str | None = None,
        min_variance: float = 1e-6) -> GenerativeModel:
    """The Gaussian kernel density estimate family.

    ``fit`` returns the KDE of the new data (the previous params are not used); the params hold
    the ``N`` training points, so ``N`` must stay fixed for a ``lax.scan`` over generations.
    ``log_prob`` of ``n`` points costs :math:`O(n N d)` time and :math:`O(n N)` memory.

    Args:
        dim: static dimension ``d >= 1``.
        bandwidth: ``None`` or ``"scott"`` (Scott's rule), ``"silverman"``, or a number ``b > 0``
            (kernel covariance ``b**2`` times the data covariance, scipy's scalar ``bw_method``).
        min_variance: absolute part of the covariance floor, ``>= 0``.

    Returns:
        A :class:`~selfconsume.models.GenerativeModel` named ``"kde"`` with params
        :class:`KDEParams`. Data are float ``(N, dim)``; samples ``(num_samples, dim)``.

    Raises:
        ValueError: if ``dim`` is not an integer >= 1, or ``bandwidth`` or ``min_variance`` is
            invalid.
    """
    d = _checks.static_int("dim", dim, minimum=1)
    bw = _check_bandwidth(bandwidth)
    min_var = _check_min_variance(min_variance)

    def _check_params(params: KDEParams):
        n = jnp.shape(params.points)[0] if jnp.ndim(params.points) == 2 else -1
        _check_param_shape("points", params.points, (n, d))
        _check_param_shape("weights", params.weights, (n,))
        _check_param_shape("cov", params.cov, (d, d))

    def init(key: PRNGKey, data: ArrayLike, weights: ArrayLike | None = None) -> KDEParams:
        """The KDE of ``data`` ``(N, dim)`` with ``weights`` ``(N,)``; ``key`` unused."""
        del key
        x = _check_points("data", data, d)
        w = _check_weights(weights, x.shape[0], x.dtype)
        _, biased = weighted_moments(x, w)
        sum_sq = jnp.sum(w * w)
        denom = 1.0 - sum_sq
        cov = jnp.where(denom > 0, biased / jnp.where(denom > 0, denom, 1.0), 0.0)
        n_eff = 1.0 / sum_sq
        if bw == "scott":
            factor = n_eff ** (-1.0 / (d + 4))
        elif bw == "silverman":
            factor = (n_eff * (d + 2) / 4.0) ** (-1.0 / (d + 4))
        else:
            factor = jnp.asarray(bw, x.dtype)
        floor = _covariance_floor(jnp.trace(cov) / d, min_var, x.dtype)
        kernel = add_floor((cov * factor**2).astype(x.dtype), floor)
        return KDEParams(points=x, weights=w, cov=kernel)

    def fit(key: PRNGKey, params: KDEParams, data: ArrayLike,
            weights: ArrayLike | None = None) -> KDEParams:
        """The KDE of the new data; the previous ``params`` are not used."""
        del params
        return init(key, data, weights)

    def sample(key: PRNGKey, params: KDEParams, num_samples: int) -> Array:
        """Draws ``(num_samples, dim)`` iid points: a weighted training point plus kernel noise."""
        n = _check_num_samples(num_samples)
        _check_params(params)
        key_i, key_z = jax.random.split(key)
        index = _inverse_cdf(key_i, params.weights, (n,))
        chol = jnp.linalg.cholesky(params.cov)
        z = jax.random.normal(key_z, (n, d), dtype=params.points.dtype)
        return params.points[index] + z @ chol.T

    def log_prob(params: KDEParams, x: ArrayLike) -> Array:
        """Log-density at ``x`` ``(n, dim)`` (logsumexp over the training points); ``(n,)``."""
        _check_params(params)
        x = _check_points("x", x, d, finite=False)
        inv_chol, half_logdet = inverse_cholesky(params.cov)
        centre = params.weights @ params.points
        a = (x - centre[None, :]) @ inv_chol.T  # (n, d) whitened queries
        b = (params.points - centre[None, :]) @ inv_chol.T  # (N, d) whitened centres
        sq = (jnp.sum(a * a, axis=1)[:, None] + jnp.sum(b * b, axis=1)[None, :]
              - 2.0 * (a @ b.T))
        log_k = -0.5 * jnp.maximum(sq, 0.0) + jnp.log(params.weights)[None, :]
        return (jax.nn.logsumexp(log_k, axis=1) - half_logdet
                - 0.5 * d * math.log(2 * math.pi))

    return GenerativeModel(name="kde", init=init, fit=fit, sample=sample, log_prob=log_prob)

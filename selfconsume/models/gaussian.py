r"""Full-covariance Gaussian fitted by weighted maximum likelihood.

With normalised weights :math:`\tilde w_n = w_n / \sum_m w_m` the weighted MLE is

.. math::
    \mu = \sum_n \tilde w_n x_n, \qquad
    \Sigma = \sum_n \tilde w_n (x_n - \mu)(x_n - \mu)^\top + \delta I,\qquad
    \delta = 100\,\epsilon\,\operatorname{tr}(\Sigma_{\rm data})/d + \sigma^2_{\min}\, s_0,

where the floor :math:`\delta` (:math:`\epsilon` = machine epsilon, :math:`\sigma^2_{\min}` =
``min_variance``, relative, default :math:`10^{-15}`) keeps degenerate data (identical points,
``N = 1``, points on a line) finite. :math:`s_0` (the params leaf ``data_scale``) is the scale of
the data given to ``init`` (their mean variance; for identical points
:math:`\lVert\bar x\rVert^2/d`, else 1), carried unchanged by ``fit``: a variance collapsing over
generations follows the unfloored MLE to float32 rounding down to about :math:`10^{-10} s_0` (see
:mod:`selfconsume.models._common`).

With :math:`\Sigma = L L^\top` (Cholesky), sampling is :math:`x = \mu + L z`, :math:`z \sim
\mathcal N(0, I)`, and

.. math::
    \log \mathcal N(x \mid \mu, \Sigma) = -\tfrac12 \lVert L^{-1}(x - \mu) \rVert^2
    - \textstyle\sum_i \log L_{ii} - \tfrac d2 \log 2\pi.

The density of a batch of ``C`` Gaussians at ``n`` points is computed with the inverse factors
:math:`L_c^{-1}` (``C`` small triangular solves against the identity) and one dense contraction of
the differences :math:`x_n - \mu_c`, cost :math:`O(n C d^2)`; the helpers here are shared with
:mod:`selfconsume.models.gmm` and :mod:`selfconsume.models.kde`. Every product runs at
``Precision.HIGHEST`` (full float32 on accelerators).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import struct
from jax.scipy.linalg import solve_triangular

from selfconsume import _checks
from selfconsume.models._common import (
    DEFAULT_MIN_VARIANCE,
    HIGHEST,
    GenerativeModel,
    check_min_variance,
    check_num_samples,
    check_param_shape,
    check_points,
    covariance_floor,
    default_scale,
    fit_inputs,
    options_key,
    resolve_scale,
)
from selfconsume.types import Array, ArrayLike, PRNGKey

__all__ = ["GaussianParams", "gaussian", "weighted_moments", "log_normal", "inverse_cholesky",
           "add_floor"]


@struct.dataclass
class GaussianParams:
    """Params of :func:`gaussian`.

    Attributes:
        mean: ``(d,)`` mean.
        cov: ``(d, d)`` covariance (symmetric positive definite, floor included).
        data_scale: scalar :math:`s_0`, the scale of the data given to ``init`` (the unit of the
            relative floor ``min_variance``); for params built by hand, ``1.0`` (an array of the
            params' dtype and batch shape).
    """

    mean: Array
    cov: Array
    data_scale: Array = 1.0

    def __post_init__(self):
        object.__setattr__(self, "data_scale", default_scale(self.data_scale, self.mean))


def weighted_moments(x: Array, w: Array) -> tuple[Array, Array]:
    r"""Weighted mean and (biased, maximum-likelihood) covariance.

    Args:
        x: ``(N, d)`` points.
        w: ``(N,)`` non-negative weights summing to one.

    Returns:
        ``mean`` ``(d,)`` :math:`= \sum_n w_n x_n` and ``cov`` ``(d, d)``
        :math:`= \sum_n w_n (x_n - \mu)(x_n - \mu)^\top` (no floor), both at full precision.
    """
    mean = jnp.matmul(w, x, precision=HIGHEST)
    centred = x - mean[None, :]
    cov = jnp.matmul((centred * w[:, None]).T, centred, precision=HIGHEST)
    return mean, 0.5 * (cov + cov.T)


def add_floor(cov: Array, floor: Array) -> Array:
    """``cov + floor * I`` for ``cov`` ``(..., d, d)`` and a scalar ``floor``."""
    eye = jnp.broadcast_to(jnp.eye(cov.shape[-1], dtype=cov.dtype), cov.shape)
    return cov + floor * eye


def inverse_cholesky(cov: Array) -> tuple[Array, Array]:
    r"""Inverse Cholesky factors and half log-determinants of a batch of covariances.

    Args:
        cov: ``(..., d, d)`` symmetric positive definite matrices.

    Returns:
        ``inv_chol`` ``(..., d, d)``, the lower-triangular :math:`L^{-1}` with :math:`\Sigma =
        L L^\top`, and ``half_logdet`` ``(...)`` :math:`= \tfrac12 \log\det\Sigma = \sum_i \log
        L_{ii}`.
    """
    chol = jnp.linalg.cholesky(cov)
    eye = jnp.broadcast_to(jnp.eye(cov.shape[-1], dtype=cov.dtype), cov.shape)
    inv_chol = solve_triangular(chol, eye, lower=True)
    half_logdet = jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)
    return inv_chol, half_logdet


def log_normal(x: Array, means: Array, covs: Array) -> Array:
    r"""Log-densities of ``C`` Gaussians at ``n`` points, as dense products.

    Args:
        x: ``(n, d)`` points.
        means: ``(C, d)`` means.
        covs: ``(C, d, d)`` covariances.

    Returns:
        ``(n, C)`` array of :math:`\log \mathcal N(x_i \mid \mu_c, \Sigma_c)`.
    """
    d = x.shape[-1]
    inv_chol, half_logdet = inverse_cholesky(covs)
    diff = x[:, None, :] - means[None, :, :]  # (n, C, d)
    white = jnp.einsum("ncd,ced->nce", diff, inv_chol, precision=HIGHEST)  # L_c^{-1}(x_n - mu_c)
    maha = jnp.sum(white * white, axis=-1)
    return -0.5 * maha - half_logdet[None, :] - 0.5 * d * math.log(2 * math.pi)


def gaussian(dim: int, *, min_variance: float = DEFAULT_MIN_VARIANCE) -> GenerativeModel:
    """The full-covariance Gaussian family in ``dim`` dimensions.

    Args:
        dim: static dimension ``d >= 1``.
        min_variance: the covariance floor's degenerate-data part, ``>= 0``, *relative* to the
            scale :math:`s_0` of the data given to ``init`` (the floor is ``100 * eps *
            trace(cov) / d + min_variance * params.data_scale``; module docstring). A TOML study
            sets it with ``[model] options = { min_variance = ... }``.

    Returns:
        A :class:`~selfconsume.models.GenerativeModel` named ``"gaussian"`` with params
        :class:`GaussianParams`. Data are float ``(N, dim)``; samples are ``(num_samples, dim)``
        in the params' dtype. Under ``jit``, non-finite data or invalid weights give NaN params.

    Raises:
        ValueError: if ``dim`` is not an integer >= 1 or ``min_variance`` is negative.
    """
    d = _checks.static_int("dim", dim, minimum=1)
    min_var = check_min_variance(min_variance)

    def _check_params(params: GaussianParams):
        check_param_shape("mean", params.mean, (d,))
        check_param_shape("cov", params.cov, (d, d))
        check_param_shape("data_scale", params.data_scale, ())

    def _mle(data, weights, scale):
        x, w, ok = fit_inputs(data, weights, d)
        mean, cov = weighted_moments(x, w)
        s0, ok = resolve_scale(mean, cov, scale, ok)
        floor = covariance_floor(jnp.trace(cov) / d, min_var, s0, x.dtype)
        return _checks.poison(ok, GaussianParams(mean=mean, cov=add_floor(cov, floor),
                                                 data_scale=s0))

    def init(key: PRNGKey, data: ArrayLike, weights: ArrayLike | None = None) -> GaussianParams:
        """Weighted MLE on ``data`` ``(N, dim)`` with ``weights`` ``(N,)``, recording the data
        scale :math:`s_0`; ``key`` unused."""
        del key
        return _mle(data, weights, None)

    def fit(key: PRNGKey, params: GaussianParams, data: ArrayLike,
            weights: ArrayLike | None = None) -> GaussianParams:
        """Weighted MLE (closed form); of the previous ``params`` only ``data_scale`` is used
        (and carried)."""
        del key
        _check_params(params)
        return _mle(data, weights, params.data_scale)

    def sample(key: PRNGKey, params: GaussianParams, num_samples: int) -> Array:
        """Draws ``(num_samples, dim)`` iid points :math:`\\mu + L z`."""
        n = check_num_samples(num_samples)
        _check_params(params)
        chol = jnp.linalg.cholesky(params.cov)
        z = jax.random.normal(key, (n, d), dtype=params.mean.dtype)
        return params.mean[None, :] + jnp.matmul(z, chol.T, precision=HIGHEST)

    def log_prob(params: GaussianParams, x: ArrayLike) -> Array:
        """Exact log-density at ``x`` ``(n, dim)``; returns ``(n,)``."""
        _check_params(params)
        x = check_points("x", x, d, finite=False)
        return log_normal(x, params.mean[None, :], params.cov[None, :, :])[:, 0]

    return GenerativeModel(name="gaussian", init=init, fit=fit, sample=sample, log_prob=log_prob,
                           options=options_key(dim=d, min_variance=min_var))

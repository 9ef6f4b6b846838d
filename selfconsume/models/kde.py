r"""Gaussian kernel density estimate on weighted training points.

With training points :math:`x_n`, normalised weights :math:`\tilde w_n` and kernel covariance
:math:`\Sigma_h = L L^\top`,

.. math::
    \log p(y) = \operatorname{logsumexp}_n \Big(\log \tilde w_n
    - \tfrac12 \lVert L^{-1}(y - x_n) \rVert^2\Big) - \textstyle\sum_i \log L_{ii}
    - \tfrac d2 \log 2\pi,

computed from the whitened points with :math:`\lVert a - b \rVert^2 = \lVert a \rVert^2 +
\lVert b \rVert^2 - 2 a^\top b` (one dense ``(n, N)`` product at ``Precision.HIGHEST``; the points
are first centred on the training point of largest weight, so that zero-weight rows change
nothing).

Bandwidth, as ``scipy.stats.gaussian_kde`` with weights:
:math:`\Sigma_h = h^2 (\hat\Sigma + \delta I)`, where :math:`\hat\Sigma = \sum_n \tilde w_n (x_n -
\bar x)(x_n - \bar x)^\top / (1 - \sum_n \tilde w_n^2)` is the unbiased weighted data covariance
(``np.cov(..., aweights=w)``; taken as 0 when :math:`n_{\rm eff} = 1`), :math:`n_{\rm eff} =
1 / \sum_n \tilde w_n^2`, and

* Scott (default): :math:`h = n_{\rm eff}^{-1/(d+4)}`;
* Silverman: :math:`h = (n_{\rm eff} (d + 2) / 4)^{-1/(d+4)}`;
* a number ``b``: :math:`h = b`.

:math:`\delta = 100\,\epsilon\,\operatorname{tr}(\hat\Sigma)/d + \sigma^2_{\min} s_0` is the
covariance floor of :mod:`selfconsume.models.gaussian` (``min_variance`` :math:`= \sigma^2_{\min}`
relative to the scale :math:`s_0` of the data given to ``init``, the params leaf ``data_scale``),
applied to the data covariance, so that the floor of the kernel covariance is :math:`h^2 \delta`:
relative to the kernel, not to the data. Sampling picks a training point with probability
:math:`\tilde w_n` (inverse CDF) and adds :math:`L z`, :math:`z \sim \mathcal N(0, I)`.

**Conform.** The params hold the ``N`` training points, so ``fit`` on ``N'`` points returns params
of another shape. ``conform(params, like)`` pads the points with zero-weight rows up to the shape
of ``like`` (e.g. ``jax.eval_shape`` of ``fit``), which neither sampling (inverse CDF never draws a
zero mass) nor ``log_prob`` (:math:`\log 0 = -\infty` in the logsumexp) ever uses: the padded
params represent the same distribution, and a ``lax.scan`` carry keeps one shape.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import struct

from selfconsume import _checks
from selfconsume.models._common import (
    DEFAULT_MIN_VARIANCE,
    HIGHEST,
    GenerativeModel,
    check_min_variance,
    check_num_samples,
    check_points,
    covariance_floor,
    default_scale,
    fit_inputs,
    inverse_cdf,
    logsumexp,
    options_key,
    resolve_scale,
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
        data_scale: scalar :math:`s_0`, the scale of the data given to ``init`` (the unit of the
            relative floor ``min_variance``); for params built by hand, ``1.0`` (an array of the
            params' dtype and batch shape).
    """

    points: Array
    weights: Array
    cov: Array
    data_scale: Array = 1.0

    def __post_init__(self):
        object.__setattr__(self, "data_scale", default_scale(self.data_scale, self.weights))


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
        min_variance: float = DEFAULT_MIN_VARIANCE) -> GenerativeModel:
    """The Gaussian kernel density estimate family.

    ``fit`` returns the KDE of the new data (of the previous params only ``data_scale`` is used);
    the params hold the ``N`` training points, so their shape follows the data: ``conform``
    pads params to a larger ``N`` for a ``lax.scan`` over generations (module docstring).
    ``log_prob`` of ``n`` points costs :math:`O(n N d)` time and :math:`O(n N)` memory.

    Args:
        dim: static dimension ``d >= 1``.
        bandwidth: ``None`` or ``"scott"`` (Scott's rule), ``"silverman"``, or a number ``b > 0``
            (kernel covariance ``b**2`` times the data covariance, scipy's scalar ``bw_method``).
        min_variance: the floor's degenerate-data part, ``>= 0``, *relative* to the scale
            :math:`s_0` of the data given to ``init``: the kernel covariance is ``h**2 * (cov +
            (100 * eps * trace(cov) / d + min_variance * params.data_scale) * I)`` (module
            docstring). A TOML study sets it with ``[model] options = { min_variance = ... }``.

    Returns:
        A :class:`~selfconsume.models.GenerativeModel` named ``"kde"`` with params
        :class:`KDEParams` and ``conform``. Data are float ``(N, dim)``; samples
        ``(num_samples, dim)``. Under ``jit``, non-finite data or invalid weights give NaN
        params.

    Raises:
        ValueError: if ``dim`` is not an integer >= 1, or ``bandwidth`` or ``min_variance`` is
            invalid.
    """
    d = _checks.static_int("dim", dim, minimum=1)
    bw = _check_bandwidth(bandwidth)
    min_var = check_min_variance(min_variance)

    def _check_params(params: KDEParams, name: str = "params"):
        n = jnp.shape(params.points)[0] if jnp.ndim(params.points) == 2 else -1
        for field, shape in (("points", (n, d)), ("weights", (n,)), ("cov", (d, d)),
                             ("data_scale", ())):
            if jnp.shape(getattr(params, field)) != shape:
                raise ValueError(f"`{name}.{field}` must have shape {shape} for this model; got "
                                 f"{jnp.shape(getattr(params, field))}.")

    def _kde(data, weights, scale):
        x, w, ok = fit_inputs(data, weights, d)
        mean, biased = weighted_moments(x, w)
        s0, ok = resolve_scale(mean, biased, scale, ok)
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
        floor = covariance_floor(jnp.trace(cov) / d, min_var, s0, x.dtype)
        kernel = (add_floor(cov, floor) * factor**2).astype(x.dtype)  # h^2 (cov + delta I)
        return _checks.poison(ok, KDEParams(points=x, weights=w, cov=kernel, data_scale=s0))

    def init(key: PRNGKey, data: ArrayLike, weights: ArrayLike | None = None) -> KDEParams:
        """The KDE of ``data`` ``(N, dim)`` with ``weights`` ``(N,)``, recording the data scale
        :math:`s_0`; ``key`` unused."""
        del key
        return _kde(data, weights, None)

    def fit(key: PRNGKey, params: KDEParams, data: ArrayLike,
            weights: ArrayLike | None = None) -> KDEParams:
        """The KDE of the new data ``(N', dim)``: params with ``N'`` points; of the previous
        ``params`` only ``data_scale`` is used (and carried)."""
        del key
        _check_params(params)
        return _kde(data, weights, params.data_scale)

    def conform(params: KDEParams, like: KDEParams) -> KDEParams:
        """``params`` with the shapes and dtypes of ``like`` and the same distribution.

        Args:
            params: :class:`KDEParams` with ``N`` points.
            like: :class:`KDEParams` of ``jax.ShapeDtypeStruct`` (or arrays) with ``M >= N``
                points, e.g. ``jax.eval_shape(model.fit, key, params, data, weights)``.

        Returns:
            :class:`KDEParams` whose points ``(M, dim)`` and weights ``(M,)`` are those of
            ``params`` followed by ``M - N`` zero rows of weight 0.

        Raises:
            ValueError: if ``like`` is not shaped as KDE params of this ``dim``, or has fewer
                points than ``params`` (the distribution would have to change).
        """
        _check_params(params)
        if not isinstance(like, KDEParams):
            raise ValueError(f"`like` must be KDEParams of jax.ShapeDtypeStruct (e.g. "
                             f"jax.eval_shape of fit); got {type(like).__name__}.")
        _check_params(like, "like")
        n, m = params.points.shape[0], like.points.shape[0]
        if m < n:
            raise ValueError(
                f"cannot conform KDE params with points of shape {params.points.shape} to the "
                f"shape {like.points.shape}: a KDE of {n} points cannot be expressed with {m} "
                "without changing the distribution (conform only pads).")
        pad = m - n

        def grow(value, spec, rows):
            dtype = spec.dtype if hasattr(spec, "dtype") else jnp.asarray(spec).dtype
            value = jnp.asarray(value, dtype)
            if rows:
                value = jnp.concatenate([value, jnp.zeros((rows,) + value.shape[1:], dtype)])
            return value

        return KDEParams(points=grow(params.points, like.points, pad),
                         weights=grow(params.weights, like.weights, pad),
                         cov=grow(params.cov, like.cov, 0),
                         data_scale=grow(params.data_scale, like.data_scale, 0))

    def sample(key: PRNGKey, params: KDEParams, num_samples: int) -> Array:
        """Draws ``(num_samples, dim)`` iid points: a weighted training point plus kernel noise."""
        n = check_num_samples(num_samples)
        _check_params(params)
        key_i, key_z = jax.random.split(key)
        index = inverse_cdf(key_i, params.weights, (n,))
        chol = jnp.linalg.cholesky(params.cov)
        z = jax.random.normal(key_z, (n, d), dtype=params.points.dtype)
        return params.points[index] + jnp.matmul(z, chol.T, precision=HIGHEST)

    def log_prob(params: KDEParams, x: ArrayLike) -> Array:
        """Log-density at ``x`` ``(n, dim)`` (logsumexp over the training points); ``(n,)``."""
        _check_params(params)
        x = check_points("x", x, d, finite=False)
        inv_chol, half_logdet = inverse_cholesky(params.cov)
        # Centre on the heaviest training point: inside the data, and independent of any
        # zero-weight rows (a weighted mean would be summed in another order once padded).
        centre = params.points[jnp.argmax(params.weights)]
        a = jnp.matmul(x - centre[None, :], inv_chol.T, precision=HIGHEST)  # (n, d) queries
        b = jnp.matmul(params.points - centre[None, :], inv_chol.T,
                       precision=HIGHEST)  # (N, d) whitened centres
        sq = (jnp.sum(a * a, axis=1)[:, None] + jnp.sum(b * b, axis=1)[None, :]
              - 2.0 * jnp.matmul(a, b.T, precision=HIGHEST))
        log_k = -0.5 * jnp.maximum(sq, 0.0) + jnp.log(params.weights)[None, :]
        return (logsumexp(log_k, axis=1) - half_logdet
                - 0.5 * d * math.log(2 * math.pi))

    return GenerativeModel(name="kde", init=init, fit=fit, sample=sample, log_prob=log_prob,
                           conform=conform,
                           options=options_key(dim=d, bandwidth=bw, min_variance=min_var))

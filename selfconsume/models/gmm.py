r"""Gaussian mixture with full covariances, fitted by weighted EM.

Model: :math:`p(x) = \sum_{c=1}^C \pi_c \mathcal N(x \mid \mu_c, \Sigma_c)`. With normalised sample
weights :math:`\tilde w_n`, one EM step maximises :math:`\sum_n \tilde w_n \log p(x_n)` as follows.

*E-step* (log space):

.. math::
    \log \gamma_{nc} = \log \pi_c + \log \mathcal N(x_n \mid \mu_c, \Sigma_c)
    - \operatorname{logsumexp}_{c'} \big(\log \pi_{c'} + \log \mathcal N(x_n \mid \mu_{c'},
    \Sigma_{c'})\big),

with the Mahalanobis terms :math:`\|L_c^{-1}(x_n - \mu_c)\|^2` (:math:`\Sigma_c = L_c L_c^\top`)
computed in the component-major layout ``(C, N)``, the coordinates unrolled for small ``d``.

*M-step*, with :math:`r_{nc} = \tilde w_n \gamma_{nc}` and :math:`N_c = \sum_n r_{nc}`:

.. math::
    \pi_c = N_c,\quad \mu_c = \frac{1}{N_c}\sum_n r_{nc} x_n,\quad
    \Sigma_c = \frac{1}{N_c}\sum_n r_{nc}(x_n - \mu_c)(x_n - \mu_c)^\top + \delta I,

with the floor :math:`\delta = 100\,\epsilon\,\operatorname{tr}(\Sigma_{\rm data})/d +
\sigma^2_{\min} s_0` (:mod:`selfconsume.models.gaussian`: ``min_variance`` :math:`=
\sigma^2_{\min}` is relative to the scale :math:`s_0` of the data given to ``init``, the params
leaf ``data_scale``). Each step does not decrease the weighted log-likelihood (up to the floor),
except when a component is re-seeded. The floor also bounds the EM singularity of a component
collapsing onto one point (its log-density there is at most about :math:`-\tfrac d2 \log(2\pi
\sigma^2_{\min} s_0)`); raise ``min_variance`` (e.g. ``1e-6``, scikit-learn's ``reg_covar`` for
unit-scale data) where that matters more than following a collapse. Every product of the E- and
M-steps runs at ``Precision.HIGHEST``.

*Re-seeding.* A component whose mass :math:`N_c` falls below :math:`10\,\epsilon` would give
:math:`0/0`; instead it is moved to a badly explained point of positive weight (large current
negative log-likelihood :math:`-\log p(x_n)`: the first empty component takes the worst point,
further ones the worst points of distinct residue classes of the indices, so that several empty
components get distinct points), with the pooled data covariance and weight :math:`1/C` (then
:math:`\pi` is renormalised). The choice is deterministic, so EM does not use its key.

*Initialisation* (``init``): greedy k-means++ seeding on the weighted data, as scikit-learn: the
first centre is drawn with probability :math:`\propto \tilde w_n`; each next centre is the best of
:math:`2 + \lfloor \log C \rfloor` candidates drawn with probability :math:`\propto \tilde w_n
D_n^2` (:math:`D_n` = distance to the nearest chosen centre), the one that most reduces the
potential :math:`\sum_n \tilde w_n D_n^2`. Then every point is assigned to its nearest centre, one
M-step gives the starting mixture, and EM runs. All weighted draws are inverse-CDF (cumulative sum
and binary search), :math:`O(N + k \log N)` for ``k`` draws.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import struct
from jax import lax

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
    inverse_cdf,
    logsumexp,
    options_key,
    resolve_scale,
    shifted_exp,
)
from selfconsume.models.gaussian import add_floor, inverse_cholesky, log_normal, weighted_moments
from selfconsume.types import Array, ArrayLike, PRNGKey

__all__ = ["GMMParams", "gmm", "kmeans_plusplus"]


@struct.dataclass
class GMMParams:
    """Params of :func:`gmm`.

    Attributes:
        weights: ``(C,)`` mixture weights :math:`\\pi_c`, non-negative, summing to one.
        means: ``(C, d)`` component means.
        covs: ``(C, d, d)`` component covariances (floor included).
        data_scale: scalar :math:`s_0`, the scale of the data given to ``init`` (the unit of the
            relative floor ``min_variance``); for params built by hand, ``1.0`` (an array of the
            params' dtype and batch shape).
    """

    weights: Array
    means: Array
    covs: Array
    data_scale: Array = 1.0

    def __post_init__(self):
        object.__setattr__(self, "data_scale", default_scale(self.data_scale, self.weights))


def _component_log_probs(params: GMMParams, x: Array) -> Array:
    """``(n, C)`` joint log-probabilities ``log pi_c + log N(x_n | mu_c, Sigma_c)``."""
    return jnp.log(params.weights)[None, :] + log_normal(x, params.means, params.covs)


# EM works in the component-major layout (C, N): reductions over the N points then run along the
# contiguous axis, and the logsumexp over the C components is elementwise across C rows. For
# small dimensions the d coordinates are unrolled, so that each E- and M-step is a few fused
# elementwise loops and reductions instead of small batched matrix products (3x faster on CPU).
_UNROLL_DIM = 8


def _joint_t(params: GMMParams, xt: Array) -> Array:
    """``(C, N)`` joint log-probabilities for the points ``xt`` ``(d, N)``."""
    d = xt.shape[0]
    inv_chol, half_logdet = inverse_cholesky(params.covs)  # (C, d, d), (C,)
    const = jnp.log(params.weights) - half_logdet - 0.5 * d * math.log(2 * math.pi)
    if d <= _UNROLL_DIM:
        diffs = [xt[i][None, :] - params.means[:, i][:, None] for i in range(d)]  # d x (C, N)
        maha = 0.0
        for k in range(d):  # z_k = sum_{i <= k} (L^-1)_{ki} (x_i - mu_i)
            z = sum(diffs[i] * inv_chol[:, k, i][:, None] for i in range(k + 1))
            maha = maha + z * z
    else:
        diff = xt.T[None, :, :] - params.means[:, None, :]  # (C, N, d)
        white = jnp.einsum("cnd,ced->cne", diff, inv_chol, precision=HIGHEST)
        maha = jnp.sum(white * white, axis=-1)
    return const[:, None] - 0.5 * maha


def _reseed_points(w: Array, badness: Array, dead: Array) -> Array:
    """For each component, the index of the point it is re-seeded on if it is ``dead``.

    The points of positive weight are split into ``C`` residue classes (index mod ``C``); the worst
    point (largest ``badness``) of each class is a candidate, and the ``j``-th dead component gets
    the ``j``-th worst candidate. The first dead component thus gets the worst point overall, and
    several dead components get distinct points. One pass over the points, O(N).

    Args:
        w: ``(N,)`` non-negative weights, not all zero.
        badness: ``(N,)`` how badly each point is explained (e.g. its negative log-likelihood).
        dead: ``(C,)`` bool.

    Returns:
        ``(C,)`` int32 point indices (meaningful where ``dead``).
    """
    c, n = dead.shape[0], w.shape[0]
    score = jnp.where(w > 0, jnp.nan_to_num(badness, nan=jnp.inf), -jnp.inf)
    grid = jnp.pad(score, (0, (-n) % c), constant_values=-jnp.inf).reshape(-1, c)  # (rows, C)
    rows = jnp.argmax(grid, axis=0)
    best = grid[rows, jnp.arange(c)]
    order = jnp.argsort(-best)  # candidates, worst first; empty classes (-inf) last
    index = (rows * c + jnp.arange(c))[order]
    rank = jnp.clip(jnp.cumsum(dead) - 1, 0, c - 1)  # rank of each dead component among the dead
    valid = best[order][rank] > -jnp.inf  # fewer candidates than dead components: the worst one
    return jnp.where(valid, index[rank], index[0]).astype(jnp.int32)


def _m_step(xt: Array, w: Array, resp: Array, badness: Array, pooled_cov: Array,
            floor: Array, scale: Array) -> GMMParams:
    """Weighted M-step from responsibilities ``resp`` ``(C, N)`` for the points ``xt`` ``(d, N)``,
    re-seeding empty components."""
    return _m_step_weighted(xt, resp * w[None, :], w, badness, pooled_cov, floor, scale)


def _m_step_weighted(xt: Array, r: Array, w: Array, badness: Array, pooled_cov: Array,
                     floor: Array, scale: Array) -> GMMParams:
    r"""The M-step from the weighted responsibilities ``r`` ``(C, N)`` :math:`= \tilde w_n
    \gamma_{nc}` (two passes over the points: the means, then the covariances about them)."""
    d, dtype = xt.shape[0], xt.dtype
    c = r.shape[0]
    mass = jnp.sum(r, axis=1)  # (C,)
    dead = mass < 10 * jnp.finfo(dtype).eps
    safe = jnp.where(dead, 1.0, mass)
    if d <= _UNROLL_DIM:
        means = jnp.stack([jnp.sum(r * xt[i][None, :], axis=1) for i in range(d)], axis=1)
        means = means / safe[:, None]
        diffs = [xt[i][None, :] - means[:, i][:, None] for i in range(d)]
        entries = {}
        for i in range(d):  # the upper triangle, mirrored
            for j in range(i, d):
                entries[i, j] = entries[j, i] = jnp.sum(r * diffs[i] * diffs[j], axis=1)
        covs = jnp.stack([jnp.stack([entries[i, j] for j in range(d)], axis=1)
                          for i in range(d)], axis=1) / safe[:, None, None]  # (C, d, d)
    else:
        means = jnp.matmul(r, xt.T, precision=HIGHEST) / safe[:, None]
        diff = xt.T[None, :, :] - means[:, None, :]  # (C, N, d)
        covs = jnp.einsum("cnd,cne->cde", diff * r[:, :, None], diff,
                          precision=HIGHEST) / safe[:, None, None]
        covs = 0.5 * (covs + jnp.swapaxes(covs, -1, -2))
    # Re-seed empty components on the worst-explained points with the pooled covariance.
    seeds = xt[:, _reseed_points(w, badness, dead)].T  # (C, d)
    means = jnp.where(dead[:, None], seeds, means)
    covs = jnp.where(dead[:, None, None], pooled_cov[None, :, :], covs)
    weights = jnp.where(dead, 1.0 / c, mass)
    return GMMParams(weights=weights / jnp.sum(weights), means=means, covs=add_floor(covs, floor),
                     data_scale=scale)


def _em(params: GMMParams, xt: Array, w: Array, pooled_cov: Array, floor: Array,
        num_steps: int) -> GMMParams:
    r"""``num_steps`` weighted EM steps from ``params`` on ``xt`` ``(d, N)`` (``lax.fori_loop``).

    The E-step takes one ``exp`` per (component, point): with :math:`m_n = \max_c j_{nc}` and
    :math:`s_n = \sum_c e^{j_{nc} - m_n}`, :math:`\tilde w_n \gamma_{nc} = e^{j_{nc} - m_n}
    \tilde w_n / s_n` and :math:`\log p(x_n) = m_n + \log s_n`; the sample weights are folded
    into the responsibilities before the M-step's reductions. The joint log-probabilities are
    materialised once (:func:`~selfconsume.models._common.shifted_exp`), so that :math:`j_{nc} -
    m_n \le 0` holds exactly even when a collapsed component puts them near :math:`-10^{15}`.
    """

    def step(_, p):
        top, e = shifted_exp(_joint_t(p, xt), axis=0)  # (N,), (C, N)
        total = jnp.sum(e, axis=0)  # >= 1: the top component contributes exactly exp(0)
        r = e * (w / total)[None, :]
        return _m_step_weighted(xt, r, w, -(top + jnp.log(total)), pooled_cov, floor,
                                p.data_scale)

    return lax.fori_loop(0, num_steps, step, params)


def _sq_dists(x: Array, centres: Array) -> Array:
    """``(k, N)`` squared distances between ``centres`` ``(k, d)`` and ``x`` ``(N, d)``."""
    diff = centres[:, None, :] - x[None, :, :]
    return jnp.sum(diff * diff, axis=-1)


def kmeans_plusplus(key: PRNGKey, x: Array, w: Array, num_centres: int) -> Array:
    r"""Greedy k-means++ seeding on weighted points (scikit-learn's ``_kmeans_plusplus``).

    Args:
        key: a PRNG key, consumed.
        x: ``(N, d)`` points.
        w: ``(N,)`` non-negative weights, not all zero (zero-weight points are never chosen).
        num_centres: static number of centres ``C``.

    Returns:
        ``(C, d)`` centres, each a data point of positive weight.
    """
    trials = 2 + int(math.log(num_centres))

    def add_centre(carry, inputs):
        centres, closest = carry
        k, i = inputs
        first = i == 0
        # Centre 0: one draw by weight. Centre i > 0: `trials` draws by weight x D^2 (by weight
        # alone if every weighted point already sits on a centre), keep the best.
        masses = w * jnp.where(first, 1.0, closest)
        masses = jnp.where(jnp.sum(masses) > 0, masses, w)
        cand = x[inverse_cdf(k, masses, (trials,))]  # (trials, d)
        dists = jnp.minimum(closest[None, :], _sq_dists(x, cand))  # (trials, N)
        best = jnp.where(first, 0, jnp.argmin(jnp.matmul(dists, w, precision=HIGHEST)))
        return (centres.at[i].set(cand[best]), dists[best]), None

    init = (jnp.zeros((num_centres, x.shape[1]), x.dtype), jnp.full(x.shape[:1], jnp.inf, x.dtype))
    (centres, _), _ = lax.scan(add_centre, init,
                               (jax.random.split(key, num_centres), jnp.arange(num_centres)))
    return centres


def gmm(num_components: int, dim: int, *, em_steps: int = 10, init_em_steps: int | None = None,
        min_variance: float = DEFAULT_MIN_VARIANCE) -> GenerativeModel:
    """The full-covariance Gaussian mixture family.

    Args:
        num_components: static number of components ``C >= 1``.
        dim: static dimension ``d >= 1``.
        em_steps: static number of EM steps run by ``fit`` (warm-started), ``>= 1``.
        init_em_steps: static number of EM steps run by ``init`` after the k-means++ seeding,
            ``>= 0``; defaults to ``em_steps``.
        min_variance: the covariance floor's degenerate-data part, ``>= 0``, *relative* to the
            scale :math:`s_0` of the data given to ``init`` (the floor is ``100 * eps *
            trace(pooled cov) / d + min_variance * params.data_scale``; module docstring). A TOML
            study sets it with ``[model] options = { min_variance = ... }``.

    Returns:
        A :class:`~selfconsume.models.GenerativeModel` named ``"gmm"`` with params
        :class:`GMMParams`. Data are float ``(N, dim)``; samples ``(num_samples, dim)``. Under
        ``jit``, non-finite data or invalid weights give NaN params.

    Raises:
        ValueError: if a static size is not an integer in its range or ``min_variance < 0``.
    """
    c = _checks.static_int("num_components", num_components, minimum=1)
    d = _checks.static_int("dim", dim, minimum=1)
    steps = _checks.static_int("em_steps", em_steps, minimum=1)
    init_steps = steps if init_em_steps is None else _checks.static_int(
        "init_em_steps", init_em_steps, minimum=0)
    min_var = check_min_variance(min_variance)

    def _check_params(params: GMMParams):
        check_param_shape("weights", params.weights, (c,))
        check_param_shape("means", params.means, (c, d))
        check_param_shape("covs", params.covs, (c, d, d))
        check_param_shape("data_scale", params.data_scale, ())

    def _prepare(data, weights, scale):
        x, w, ok = fit_inputs(data, weights, d)
        mean, cov = weighted_moments(x, w)  # pooled covariance for re-seeding (floor added later)
        s0, ok = resolve_scale(mean, cov, scale, ok)
        return x, w, ok, cov, covariance_floor(jnp.trace(cov) / d, min_var, s0, x.dtype), s0

    def init(key: PRNGKey, data: ArrayLike, weights: ArrayLike | None = None) -> GMMParams:
        """Greedy k-means++ seeding, nearest-centre M-step, then ``init_em_steps`` EM steps."""
        x, w, ok, pooled, floor, s0 = _prepare(data, weights, None)
        centres = kmeans_plusplus(key, x, w, c)
        dists = _sq_dists(x, centres)  # (C, N)
        resp = jax.nn.one_hot(jnp.argmin(dists, axis=0), c, dtype=x.dtype, axis=0)  # (C, N)
        params = _m_step(x.T, w, resp, jnp.min(dists, axis=0), pooled, floor, s0)
        params = _em(params, x.T, w, pooled, floor, init_steps) if init_steps else params
        return _checks.poison(ok, params)

    def fit(key: PRNGKey, params: GMMParams, data: ArrayLike,
            weights: ArrayLike | None = None) -> GMMParams:
        """``em_steps`` weighted EM steps on ``data`` ``(N, dim)``, warm-started at ``params``
        (``params.data_scale`` is carried).

        EM is deterministic: ``key`` is not used.
        """
        del key
        _check_params(params)
        x, w, ok, pooled, floor, _ = _prepare(data, weights, params.data_scale)
        params = jax.tree.map(lambda a: jnp.asarray(a, x.dtype), params)
        return _checks.poison(ok, _em(params, x.T, w, pooled, floor, steps))

    def sample(key: PRNGKey, params: GMMParams, num_samples: int) -> Array:
        """Draws ``(num_samples, dim)`` iid points: a component (inverse CDF), then its Gaussian."""
        n = check_num_samples(num_samples)
        _check_params(params)
        key_c, key_z = jax.random.split(key)
        comp = inverse_cdf(key_c, params.weights, (n,))
        chol = jnp.linalg.cholesky(params.covs)  # (C, d, d)
        z = jax.random.normal(key_z, (n, d), dtype=params.means.dtype)
        return params.means[comp] + jnp.einsum("nde,ne->nd", chol[comp], z, precision=HIGHEST)

    def log_prob(params: GMMParams, x: ArrayLike) -> Array:
        """Mixture log-density at ``x`` ``(n, dim)`` (logsumexp over components); ``(n,)``."""
        _check_params(params)
        x = check_points("x", x, d, finite=False)
        return logsumexp(_component_log_probs(params, x), axis=1)

    return GenerativeModel(
        name="gmm", init=init, fit=fit, sample=sample, log_prob=log_prob,
        options=options_key(num_components=c, dim=d, em_steps=steps, init_em_steps=init_steps,
                            min_variance=min_var))

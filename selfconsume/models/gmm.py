r"""Gaussian mixture with full covariances, fitted by weighted EM.

Model: :math:`p(x) = \sum_{c=1}^C \pi_c \mathcal N(x \mid \mu_c, \Sigma_c)`. With normalised sample
weights :math:`\tilde w_n`, one EM step maximises :math:`\sum_n \tilde w_n \log p(x_n)` as follows.

*E-step* (log space), with the joint log-probabilities :math:`j_{nc} = \log \pi_c + \log \mathcal
N(x_n \mid \mu_c, \Sigma_c)`:

.. math::
    \log \gamma_{nc} = j_{nc} - \operatorname{logsumexp}_{c'} j_{nc'}, \qquad
    r_{nc} = \tilde w_n \gamma_{nc} = e_{cn} v_n,\quad e_{cn} = e^{j_{nc} - m_n},\quad
    v_n = \tilde w_n \Big/ \sum_c e_{cn},

with :math:`m_n = \max_c j_{nc}` (one ``exp`` per component and point) and the Mahalanobis terms
:math:`\|L_c^{-1}(x_n - \mu_c)\|^2` (:math:`\Sigma_c = L_c L_c^\top`) computed in the
component-major layout ``(C, N)``, the coordinates unrolled for small ``d``.

*M-step*, with :math:`N_c = \sum_n r_{nc}`:

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

*Blocks.* A step makes two passes over the points, 1,024 of them at a time (``_BLOCK``, rounded
down to a multiple of ``C``), so that a block's ``(C, B)`` intermediates stay in cache (under
``vmap`` too, where they are ``(batch, C, B)``). The first pass runs the E-step of the block and
adds its share of :math:`N_c = \sum_n e_{cn} v_n` and :math:`\sum_n e_{cn} v_n x_n` (products of
:math:`e` with the vectors :math:`v` and :math:`v x_i`) and of the re-seeding candidates, and
keeps :math:`e` and :math:`v`; the second sums :math:`e_{cn} (x_n - \mu_c)_i (x_n - \mu_c)_j`
against :math:`v` about the new means. The points are padded to a whole number of blocks with
copies of the last point of weight 0, which add nothing to any sum. Only the order of the
summations depends on the block size (float rounding).

*Re-seeding.* A component whose mass :math:`N_c` falls below :math:`10\,\epsilon` would give
:math:`0/0`; instead it is moved to a badly explained point of positive weight (large current
negative log-likelihood :math:`-\log p(x_n) = -m_n - \log \sum_c e_{cn}`: the first empty
component takes the worst point, further ones the worst points of distinct residue classes of the
indices, so that several empty components get distinct points), with the pooled data covariance
and weight :math:`1/C` (then :math:`\pi` is renormalised). The choice is deterministic, so EM
does not use its key.

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
from selfconsume.models.gaussian import add_floor, inverse_cholesky, log_normal
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

# Points per block of an EM pass (module docstring). A (C, 1024) block of 8 components is 32 KB,
# 2 MB under a vmap over 64 configurations, where one pass over all points would stream (64, 8,
# 8192) arrays of 16 MB through memory: on CPU the blocked step is 1.1x faster there, and 10%
# slower for a single configuration, whose whole (8, 8192) arrays already stay in cache.
_BLOCK = 1024


def _joint_t(const: Array, means: Array, inv_chol: Array, xt: Array) -> Array:
    r"""``(C, B)`` joint log-probabilities for the points ``xt`` ``(d, B)``, from ``const``
    ``(C,)`` :math:`= \log \pi_c - \tfrac12 \log\det\Sigma_c - \tfrac d2 \log 2\pi`, the means
    ``(C, d)`` and the inverse Cholesky factors ``(C, d, d)``."""
    d = xt.shape[0]
    if d <= _UNROLL_DIM:
        diffs = [xt[i][None, :] - means[:, i][:, None] for i in range(d)]  # d x (C, B)
        maha = 0.0
        for k in range(d):  # z_k = sum_{i <= k} (L^-1)_{ki} (x_i - mu_i)
            z = sum(diffs[i] * inv_chol[:, k, i][:, None] for i in range(k + 1))
            maha = maha + z * z
    else:
        diff = xt.T[None, :, :] - means[:, None, :]  # (C, B, d)
        white = jnp.einsum("cnd,ced->cne", diff, inv_chol, precision=HIGHEST)
        maha = jnp.sum(white * white, axis=-1)
    return const[:, None] - 0.5 * maha


def _block_size(n: int, c: int) -> int:
    """The static number of points per block: ``_BLOCK`` rounded down to a multiple of ``c``
    (at least ``c``), at most ``n`` rounded up to a multiple of ``c``."""
    return min(max(_BLOCK // c, 1) * c, -(-n // c) * c)


def _pad(x: Array, w: Array, block: int) -> tuple[Array, Array]:
    """``(d, N')`` points and ``(N',)`` weights, ``N'`` the multiple of ``block`` from ``N``: the
    extra points repeat the last one, with weight 0."""
    extra = (-x.shape[0]) % block
    return jnp.pad(x, ((0, extra), (0, 0)), mode="edge").T, jnp.pad(w, (0, extra))


def _over_blocks(body, init, arrays, block: int):
    """``lax.fori_loop`` of ``body(i, carry, blocks) -> carry`` over the blocks ``i`` of ``block``
    points of ``arrays`` (each ``(..., N)``, cut along the last axis).

    The next block is cut at the end of each iteration and carried: the loops over a block then
    read plain arrays, where XLA:CPU would otherwise fuse the cut at a traced offset into each of
    them (several times slower). A single block is passed as it is.
    """
    n = arrays[0].shape[-1]
    if n == block:
        return body(0, init, arrays)

    def cut(i):
        return [lax.dynamic_slice_in_dim(a, i * block, block, axis=a.ndim - 1) for a in arrays]

    def step(i, carry):
        carry, blocks = carry
        return body(i, carry, blocks), cut(jnp.minimum(i + 1, n // block - 1))

    return lax.fori_loop(0, n // block, step, (init, cut(0)))[0]


def _moments(xt: Array, w: Array) -> tuple[Array, Array]:
    r"""Weighted mean ``(d,)`` :math:`\bar x = \sum_n w_n x_n` and (biased, maximum-likelihood)
    covariance ``(d, d)`` :math:`\sum_n w_n (x_n - \bar x)(x_n - \bar x)^\top` of the points
    ``xt`` ``(d, N)`` with weights ``w`` ``(N,)`` summing to one (no floor)."""
    d = xt.shape[0]
    mean = jnp.matmul(xt, w, precision=HIGHEST)
    centred = xt - mean[:, None]
    if d > _UNROLL_DIM:
        cov = jnp.matmul(centred * w[None, :], centred.T, precision=HIGHEST)
        return mean, 0.5 * (cov + cov.T)
    pairs = [(i, j) for i in range(d) for j in range(i, d)]
    sums = jnp.matmul(jnp.stack([centred[i] * centred[j] for i, j in pairs]), w,
                      precision=HIGHEST)
    entries = {}
    for k, (i, j) in enumerate(pairs):  # the upper triangle, mirrored
        entries[i, j] = entries[j, i] = sums[k]
    return mean, jnp.stack([jnp.stack([entries[i, j] for j in range(d)]) for i in range(d)])


def _first_sums(xt: Array, e: Array, v: Array) -> Array:
    r"""``(C, 1 + d)`` :math:`\sum_n e_{cn} v_n` and :math:`\sum_n e_{cn} v_n x_n` over the points
    ``xt`` ``(d, B)``, for ``e`` ``(C, B)`` and ``v`` ``(B,)``."""
    cols = [v] + [v * xt[i] for i in range(xt.shape[0])]
    return jnp.stack([jnp.matmul(e, col, precision=HIGHEST) for col in cols], axis=1)


def _reseed_candidates(w: Array, badness: Array, c: int) -> tuple[Array, Array]:
    """The worst point of each residue class (index mod ``c``) among the points of positive
    weight.

    Args:
        w: ``(B,)`` non-negative weights, ``B`` a multiple of ``c``.
        badness: ``(B,)`` how badly each point is explained (e.g. its negative log-likelihood).
        c: the static number of classes.

    Returns:
        ``best`` ``(c,)``, the largest badness of each class (``+inf`` for NaN, ``-inf`` where
        the class has no point of positive weight), and ``rows`` ``(c,)`` int32, the first row of
        the ``(B / c, c)`` grid of the points where it is reached (0 for an empty class).
    """
    score = jnp.where(w > 0, jnp.nan_to_num(badness, nan=jnp.inf), -jnp.inf).reshape(-1, c)
    best = jnp.max(score, axis=0)
    row = lax.broadcasted_iota(jnp.int32, score.shape, 0)
    # max, then the first row that reaches it: two plain reductions (argmax is a slow variadic
    # reduction on CPU); the last row only if no row compares equal, which exact comparison of the
    # same values rules out.
    rows = jnp.min(jnp.where(score == best[None, :], row, score.shape[0] - 1), axis=0)
    return best, rows


def _reseed_points(best: Array, rows: Array, dead: Array) -> Array:
    """For each component, the index of the point it is re-seeded on if it is ``dead``.

    The worst point of each residue class (:func:`_reseed_candidates` over all the points) is a
    candidate, and the ``j``-th dead component gets the ``j``-th worst candidate. The first dead
    component thus gets the worst point overall, and several dead components get distinct points.

    Args:
        best: ``(C,)`` the candidates' badness (``-inf``: no candidate in the class).
        rows: ``(C,)`` int32, their rows in the ``(N / C, C)`` grid of the points.
        dead: ``(C,)`` bool.

    Returns:
        ``(C,)`` int32 point indices (meaningful where ``dead``).
    """
    c = dead.shape[0]
    order = jnp.argsort(-best)  # candidates, worst first; empty classes (-inf) last
    index = (rows * c + jnp.arange(c))[order]
    rank = jnp.clip(jnp.cumsum(dead) - 1, 0, c - 1)  # rank of each dead component among the dead
    valid = best[order][rank] > -jnp.inf  # fewer candidates than dead components: the worst one
    return jnp.where(valid, index[rank], index[0]).astype(jnp.int32)


def _scatter(xt: Array, e: Array, v: Array, means: Array) -> Array:
    r"""``(C, d, d)`` :math:`\sum_n e_{cn} v_n (x_n - \mu_c)(x_n - \mu_c)^\top` over the points
    ``xt`` ``(d, B)``, for ``e`` ``(C, B)`` and ``v`` ``(B,)``."""
    d, c = xt.shape[0], e.shape[0]
    if d <= _UNROLL_DIM:  # the upper triangle's products, summed against v as one product
        diffs = [xt[i][None, :] - means[:, i][:, None] for i in range(d)]
        pairs = [(i, j) for i in range(d) for j in range(i, d)]
        prods = jnp.stack([e * diffs[i] * diffs[j] for i, j in pairs])  # (P, C, B)
        sums = jnp.matmul(prods.reshape(len(pairs) * c, -1), v, precision=HIGHEST)
        sums = sums.reshape(len(pairs), c)
        entries = {}
        for k, (i, j) in enumerate(pairs):
            entries[i, j] = entries[j, i] = sums[k]
        return jnp.stack([jnp.stack([entries[i, j] for j in range(d)], axis=1)
                          for i in range(d)], axis=1)
    diff = xt.T[None, :, :] - means[:, None, :]  # (C, B, d)
    r = e * v[None, :]
    return jnp.einsum("cnd,cne->cde", diff * r[:, :, None], diff, precision=HIGHEST)


def _m_step(xt: Array, e: Array, v: Array, sums: Array, best: Array, rows: Array,
            pooled_cov: Array, floor: Array, scale: Array, block: int) -> GMMParams:
    r"""The M-step for the weighted responsibilities :math:`r_{nc} = e_{cn} v_n` of the points
    ``xt`` ``(d, N)`` (``e`` ``(C, N)``, ``v`` ``(N,)``), from their sums ``sums`` ``(C, 1 +
    d)`` (:math:`N_c` and :math:`\sum_n r_{nc} x_n`) and the re-seeding candidates ``best``,
    ``rows`` (:func:`_reseed_candidates` over all the points), re-seeding empty components. The
    covariances about the new means take a second pass over the points, block by block."""
    d, c, dtype = xt.shape[0], e.shape[0], xt.dtype
    mass = sums[:, 0]
    dead = mass < 10 * jnp.finfo(dtype).eps
    safe = jnp.where(dead, 1.0, mass)
    means = sums[:, 1:] / safe[:, None]
    covs = _over_blocks(lambda i, acc, b: acc + _scatter(b[0], b[1], b[2], means),
                        jnp.zeros((c, d, d), dtype), [xt, e, v], block) / safe[:, None, None]
    if d > _UNROLL_DIM:
        covs = 0.5 * (covs + jnp.swapaxes(covs, -1, -2))
    # Re-seed empty components on the worst-explained points with the pooled covariance.
    seeds = xt[:, _reseed_points(best, rows, dead)].T  # (C, d)
    means = jnp.where(dead[:, None], seeds, means)
    covs = jnp.where(dead[:, None, None], pooled_cov[None, :, :], covs)
    weights = jnp.where(dead, 1.0 / c, mass)
    return GMMParams(weights=weights / jnp.sum(weights), means=means, covs=add_floor(covs, floor),
                     data_scale=scale)


def _em(params: GMMParams, xt: Array, w: Array, pooled_cov: Array, floor: Array,
        num_steps: int, block: int) -> GMMParams:
    r"""``num_steps`` weighted EM steps from ``params`` on ``xt`` ``(d, N)`` with weights ``w``
    ``(N,)``, ``N`` a multiple of ``block`` (``lax.fori_loop`` over the steps, and over the blocks
    of points within a step).

    The E-step takes one ``exp`` per (component, point): with :math:`m_n = \max_c j_{nc}`,
    :math:`e_{cn} = e^{j_{nc} - m_n}` and :math:`s_n = \sum_c e_{cn}`, :math:`r_{nc} = \tilde
    w_n \gamma_{nc} = e_{cn} v_n` with :math:`v_n = \tilde w_n / s_n`, and :math:`\log p(x_n) =
    m_n + \log s_n`. Each block adds its share of :math:`N_c` and :math:`\sum_n r_{nc} x_n`
    (products of ``e`` with the vectors :math:`v` and :math:`v x_i`) and its re-seeding candidates
    while it is in cache, and keeps ``e`` and ``v`` for the covariances. The joint
    log-probabilities are materialised once (:func:`~selfconsume.models._common.shifted_exp`),
    so that :math:`j_{nc} - m_n \le 0` holds exactly even when a collapsed component puts them
    near :math:`-10^{15}`.
    """
    d, n = xt.shape
    c, dtype = params.weights.shape[0], xt.dtype

    def step(_, carry):
        p, e_all, v_all = carry
        inv_chol, half_logdet = inverse_cholesky(p.covs)  # (C, d, d), (C,)
        const = jnp.log(p.weights) - half_logdet - 0.5 * d * math.log(2 * math.pi)

        def block_e(i, acc, blocks):
            sums, best, rows, e_all, v_all = acc
            xb, wb = blocks
            top, e = shifted_exp(_joint_t(const, p.means, inv_chol, xb), axis=0)  # (B,), (C, B)
            total = jnp.sum(e, axis=0)  # >= 1: the top component contributes exactly exp(0)
            v = wb / total
            sums = sums + _first_sums(xb, e, v)
            block_best, block_rows = _reseed_candidates(wb, -(top + jnp.log(total)), c)
            better = block_best > best  # ties keep the earlier block: the first maximum
            start = i * xb.shape[1]
            return (sums, jnp.where(better, block_best, best),
                    jnp.where(better, block_rows + start // c, rows),
                    lax.dynamic_update_slice_in_dim(e_all, e, start, axis=1),
                    lax.dynamic_update_slice_in_dim(v_all, v, start, axis=0))

        init = (jnp.zeros((c, 1 + d), dtype), jnp.full((c,), -jnp.inf, dtype),
                jnp.zeros((c,), jnp.int32), e_all, v_all)
        sums, best, rows, e_all, v_all = _over_blocks(block_e, init, [xt, w], block)
        return (_m_step(xt, e_all, v_all, sums, best, rows, pooled_cov, floor, p.data_scale,
                        block), e_all, v_all)

    init = (params, jnp.zeros((c, n), dtype), jnp.zeros((n,), dtype))
    return lax.fori_loop(0, num_steps, step, init)[0]


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
        """``(x, xt, w, ok, pooled, floor, s0, block)``: the checked data ``x`` ``(N, d)``, the
        points ``xt`` ``(d, N')`` and normalised weights ``w`` ``(N',)`` padded to whole blocks,
        and the pooled covariance (for re-seeding), floor and scale of the fit."""
        x, w, ok = fit_inputs(data, weights, d)
        block = _block_size(x.shape[0], c)
        xt, w = _pad(x, w, block)
        mean, cov = _moments(xt, w)  # pooled covariance for re-seeding (floor added later)
        s0, ok = resolve_scale(mean, cov, scale, ok)
        floor = covariance_floor(jnp.trace(cov) / d, min_var, s0, x.dtype)
        return x, xt, w, ok, cov, floor, s0, block

    def init(key: PRNGKey, data: ArrayLike, weights: ArrayLike | None = None) -> GMMParams:
        """Greedy k-means++ seeding, nearest-centre M-step, then ``init_em_steps`` EM steps."""
        x, xt, w, ok, pooled, floor, s0, block = _prepare(data, weights, None)
        centres = kmeans_plusplus(key, x, w[:x.shape[0]], c)
        dists = _sq_dists(xt.T, centres)  # (C, N')
        nearest = jax.nn.one_hot(jnp.argmin(dists, axis=0), c, dtype=x.dtype, axis=0)
        best, rows = _reseed_candidates(w, jnp.min(dists, axis=0), c)
        params = _m_step(xt, nearest, w, _first_sums(xt, nearest, w), best, rows, pooled, floor,
                         s0, block)
        if init_steps:
            params = _em(params, xt, w, pooled, floor, init_steps, block)
        return _checks.poison(ok, params)

    def fit(key: PRNGKey, params: GMMParams, data: ArrayLike,
            weights: ArrayLike | None = None) -> GMMParams:
        """``em_steps`` weighted EM steps on ``data`` ``(N, dim)``, warm-started at ``params``
        (``params.data_scale`` is carried).

        EM is deterministic: ``key`` is not used.
        """
        del key
        _check_params(params)
        x, xt, w, ok, pooled, floor, _, block = _prepare(data, weights, params.data_scale)
        params = jax.tree.map(lambda a: jnp.asarray(a, x.dtype), params)
        return _checks.poison(ok, _em(params, xt, w, pooled, floor, steps, block))

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

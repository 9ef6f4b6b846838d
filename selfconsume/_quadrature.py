r"""The exact Luce curation factor on a finite support (private): quadrature, tilt, best-of-k.

:mod:`selfconsume.theory` documents the integral

.. math::  H_p(x) = K \int e^{\,s + \log w(x) - e^{s + \log w(x)}}\, \kappa(s)\, ds

that these functions evaluate, with the Luce kernel :math:`\kappa = \phi(e^s)^{K-1}`; the
top-m curator of :mod:`selfconsume.curators` uses the same nodes with the binomial kernel
:math:`\kappa = \frac{1}{m} P(\mathrm{Bin}(K-1, 1 - \phi(e^s)) \le m - 1)`, passed as
``log_kernel``. The node placement, the analytic left tails and the accuracy are those described
in :mod:`selfconsume.theory`.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax import lax

from selfconsume._choice import scaled_rewards
from selfconsume.types import Array

_LOG_PHI_CUT = -60.0  # the kernel below e^-60 is dropped from the quadrature window


def support_max(p: Array, rewards: Array) -> Array:
    """Largest reward among the states with positive probability."""
    return jnp.max(jnp.where(p > 0, rewards, -jnp.inf))


# --------------------------------------------------------------------------------------------


def tilt_factor(p: Array, rewards: Array, beta: Array) -> Array:
    """K = inf: H = e^{b r} / E_p[e^{b r}] (inf above the support when beta = inf)."""
    logw = scaled_rewards(rewards, beta, support_max(p, rewards))
    log_norm = jax.nn.logsumexp(jnp.where(p > 0, logw + jnp.log(p), -jnp.inf))
    return jnp.exp(logw - log_norm)


def best_of_k_factor(p: Array, rewards: Array, beta: Array, *, k: int) -> Array:
    """beta = inf: H(x) = F^{K-1} (1 - (1-q)^K) / q with q = P(r = r(x)) / F(r(x))."""
    del beta
    level_mass, below, _ = levels(p, rewards)
    cdf = below + level_mass
    q = jnp.where(cdf > 0, level_mass / jnp.where(cdf > 0, cdf, 1.0), 0.0)
    power = jnp.where(cdf > 0, jnp.exp((k - 1) * jnp.log(jnp.where(cdf > 0, cdf, 1.0))), 0.0)
    safe_q = jnp.where(q > 0, q, 1.0)
    ratio = jnp.where(q > 0, -jnp.expm1(k * jnp.log1p(-safe_q)) / safe_q, float(k))
    return power * ratio


def _log_phi_psi(s: Array, p: Array, logw: Array):
    """(log phi, log psi) at a scalar s: phi = E_p[exp(-e^s w)] and psi = 1 - phi, both accurate
    (phi through log1p of -psi, psi = E_p[-expm1(-e^s w)] summed directly)."""
    psi = jnp.minimum(jnp.sum(p * -jnp.expm1(-jnp.exp(s + logw)), axis=-1), 1.0)
    return jnp.log1p(-psi), jnp.log(psi)


def log_kernel(log_phi: Array, log_psi: Array, *, k: int, m: int = 1) -> Array:
    r"""The log of the kernel :math:`\kappa = \frac{1}{m} P(\mathrm{Bin}(K-1, \psi) \le m-1)`,
    :math:`\psi = 1 - \phi`: the probability that fewer than m of the other K - 1 candidates
    outscore a candidate whose perturbed score is :math:`-s`, divided by m. ``m = 1`` is the
    Luce kernel :math:`\phi^{K-1}`. Elementwise; ``k`` and ``m`` static, ``m <= k``."""
    if m == 1:
        return (k - 1) * log_phi
    shape = (1,) * jnp.ndim(log_phi) + (m,)  # explicit ranks (rank promotion may be an error)
    i = jnp.arange(m, dtype=log_phi.dtype).reshape(shape)
    log_comb = jnp.asarray([math.lgamma(k) - math.lgamma(j + 1) - math.lgamma(k - j)
                            for j in range(m)], log_phi.dtype).reshape(shape)
    lp, ls = log_phi[..., None], log_psi[..., None]
    terms = (log_comb + jnp.where(i == 0, 0.0, i * ls)
             + jnp.where(i == k - 1, 0.0, (k - 1 - i) * lp))
    return jax.nn.logsumexp(terms, axis=-1) - math.log(m)


def _left_tail(dtype) -> float:
    """Where the window in s = log u starts, before the -log K shift: the relative truncation error
    is below e^-(this), far below the dtype's resolution."""
    return 36.0 if dtype == jnp.float64 else 20.0


_RIGHT_TAIL = 4.0  # e^{t - e^t} beyond t = 4 holds e^-54 of its mass: windows end at -log w + 4


def _safe_step(dtype) -> float:
    """The node spacing in s below which the trapezoid error exp(-pi^2 / h) is at the dtype's
    resolution (1e-7 in float32, 1e-12 in float64)."""
    return 0.35 if dtype == jnp.float64 else 0.6


def _sort_nonnegative(v: Array) -> Array:
    """Sorts non-negative floats (+inf allowed) through their integer bit patterns, several times
    faster than a floating-point sort on CPU; the order of non-negative IEEE floats is that of
    their bits."""
    itype = jnp.int64 if v.dtype == jnp.float64 else jnp.int32
    bits = lax.bitcast_convert_type(v + 0.0, itype)  # + 0.0 turns -0.0 into +0.0
    return lax.bitcast_convert_type(jnp.sort(bits), v.dtype)


_NUM_BINS = 4096  # bins of -log w that locate the clusters without a sort (see below)


def _quadrature_nodes(v: Array, s_max_rel: Array, v_ref: Array, *, merge: float, pad: float,
                      num_nodes: int):
    """Nodes spread uniformly over the union of the per-state windows in s = log u.

    The integrand of state x, as a function of s, is negligible outside [v(x) - merge, v(x) + 4]
    with v = -log w. Values of v closer than ``span = merge + 4`` form one cluster, covered by
    the window [first v - pad, last v + 4] (clipped at s_max = v_ref + s_max_rel); the gaps
    between clusters carry no integrand and are skipped (the integrand left of each window, an
    exponential, is added by the weights of :func:`_quadrature_weights`). Each node is returned
    as (anchor, offset) with s = anchor + offset, the anchor being the first v of its cluster, so
    that s - v(x) = (anchor - v(x)) + offset stays accurate when s itself is huge (beta times the
    reward spread of millions of nats in float32).

    Three ways, by the range of v: when one uniform grid on [-pad, s_max] is already fine (step
    below :func:`_safe_step`) it is used as is; else, when ``_NUM_BINS`` bins of width at most
    span / 2 cover the range, the clusters are found from the per-bin minimum and maximum of v
    (O(M), no sort; a gap inside a bin is shorter than span and would not be skipped anyway);
    else v is sorted.

    Returns:
        anchor, offset: ``(num_nodes,)``; cluster: ``(num_nodes,)`` non-decreasing integer label
        of each node's cluster; total: the length of the union.
    """
    dtype = v.dtype
    span = merge + _RIGHT_TAIL
    grid = jnp.arange(num_nodes, dtype=dtype) / (num_nodes - 1)
    single_total = v_ref + s_max_rel + pad  # the min of v is 0: the global maximum of the reward
    v_hi = v_ref + (s_max_rel + span)  # beyond it nothing counts
    width = v_hi / _NUM_BINS

    def single(v):
        offset = single_total * grid - pad
        zeros = jnp.zeros((num_nodes,), dtype)
        return zeros, offset, jnp.zeros((num_nodes,), jnp.int32), single_total

    def clusters(lo, hi):  # ordered, disjoint groups of v: [lo, hi], empty where lo > hi
        filled = lo <= hi
        inf = jnp.full((1,), jnp.inf, dtype)
        prev_hi = jnp.concatenate([-inf, lax.cummax(hi)[:-1]])
        next_lo = jnp.concatenate([lax.cummin(lo, reverse=True)[1:], inf])
        starts = filled & (lo - prev_hi > span)
        ends = filled & (next_lo - hi > span)
        v_last = lax.cummin(jnp.where(ends, hi, jnp.inf), reverse=True)  # last v of the cluster
        length = jnp.minimum(v_last - lo + (pad + _RIGHT_TAIL), s_max_rel - (lo - v_ref) + pad)
        length = jnp.where(starts, jnp.maximum(length, 0.0), 0.0)
        cum = jnp.cumsum(length)
        total = cum[-1]
        last = jnp.searchsorted(cum, total, side="left")  # the last cluster of positive length
        c = total * grid
        idx = jnp.minimum(jnp.searchsorted(cum, c, side="right"), last)
        offset = c - (cum[idx] - length[idx]) - pad
        return lo[idx], offset, idx.astype(jnp.int32), total

    def binned(v):
        v = jnp.minimum(v, v_hi)
        b = jnp.clip(jnp.floor(v / width), 0, _NUM_BINS - 1).astype(jnp.int32)
        lo = jax.ops.segment_min(v, b, num_segments=_NUM_BINS)
        hi = jax.ops.segment_max(v, b, num_segments=_NUM_BINS)
        return clusters(lo, hi)

    def sorted_(v):
        v = jnp.minimum(_sort_nonnegative(v), v_hi)
        return clusters(v, v)

    way = jnp.where(single_total <= _safe_step(dtype) * (num_nodes - 1), 0,
                    jnp.where(width <= 0.5 * span, 1, 2))
    return lax.switch(way, (single, binned, sorted_), v)


def quadrature_weights(cluster: Array, h: Array) -> Array:
    """Trapezoid weights (in units of h) with each cluster's left tail summed analytically.

    Left of its cluster's window the integrand is c1 e^s + c2 e^{2s} up to O(e^{3s}) relative
    terms (every e^{-u w} expands in powers of u = e^s there). Continuing the nodes leftwards
    with the same spacing h, the two-term fit through the first node of the cluster and the node
    H = n h after it adds the geometric sum f_0 / (e^h - 1) + b (q_2 - q_1), with q_i =
    1 / (e^{ih} - 1) and b = (f_n - f_0 e^H) / (e^H (e^H - 1)): weights
    1 + q_1 + D / (e^H - 1) on the first node and 1 - D / (e^H (e^H - 1)) on node n, where
    D = q_1 - q_2. n is the smallest with e^H (e^H - 1) >= D, so that no weight is negative
    (no cancellation; H is about 1 at h = 0.1 and 2 at h = 0.01). A cluster shorter than H
    gets the first-order weight 1 + q_1, exact for c1 e^s. The last node gets 1/2.

    Args:
        cluster: ``(N,)`` non-decreasing cluster index of each node.
        h: the node spacing.
    """
    num_nodes = cluster.shape[0]
    first = jnp.concatenate([jnp.ones((1,), bool), cluster[1:] != cluster[:-1]])
    e1, e2 = jnp.expm1(h), jnp.expm1(2.0 * h)
    d = 1.0 / e1 - 1.0 / e2  # q_1 - q_2 > 0
    x = 0.5 * (1.0 + jnp.sqrt(1.0 + 4.0 * d))  # e^H for the smallest admissible H
    n = jnp.maximum(jnp.ceil(jnp.log(x) / h), 1.0)
    n_int = n.astype(jnp.int32)
    big_h = n * h
    j = jnp.arange(num_nodes)
    partner = jnp.minimum(j + n_int, num_nodes - 1)
    paired = first & (j + n_int < num_nodes) & (cluster[partner] == cluster)
    eh = jnp.exp(big_h)
    w = jnp.where(first, 1.0 + 1.0 / e1 + jnp.where(paired, d / (eh - 1.0), 0.0), 1.0)
    w = w.at[-1].set(jnp.where(first[-1], w[-1], 0.5))
    # node j is the partner of node j - n when that one is a paired first node
    src = j - n_int
    second = (src >= 0) & paired[jnp.maximum(src, 0)]
    return jnp.where(second, w - d / (eh * (eh - 1.0)), w)


def quadrature_grid(p: Array, rewards: Array, beta: Array, *, k: int, num_nodes: int,
                    m: int = 1):
    """-log w of every state and the quadrature nodes: (v, anchor, offset, cluster, spacing h),
    for the top-``m`` kernel (:func:`log_kernel`)."""
    dtype = p.dtype
    v = -scaled_rewards(rewards, beta, jnp.max(rewards))  # -log w >= 0; the global max maps to 0
    merge = _left_tail(dtype) + math.log(k)  # left of v - merge: relative mass below e^-left_tail
    pad = _left_tail(dtype) / 3.0 + math.log(k)  # enough with the second-order tail weights
    # Positions relative to v_ref, the largest -log w on the support (precise near it).
    v_ref = jnp.max(jnp.where(p > 0, v, -jnp.inf))
    logw_rel = v_ref - v

    # Bisection for the point where the log kernel crosses the cut (it decreases in s).
    def bisect(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        below_cut = log_kernel(*_log_phi_psi(mid, p, logw_rel), k=k, m=m) < _LOG_PHI_CUT
        return jnp.where(below_cut, lo, mid), jnp.where(below_cut, mid, hi)

    lo = jnp.asarray(-merge, dtype) - v_ref
    _, s_cut = lax.fori_loop(0, 40, bisect, (lo, jnp.asarray(_RIGHT_TAIL, dtype)))
    s_max_rel = jnp.minimum(s_cut, _RIGHT_TAIL)  # s_max - v_ref
    anchor, offset, cluster, total = _quadrature_nodes(v, s_max_rel, v_ref, merge=merge,
                                                       pad=pad, num_nodes=num_nodes)
    return v, anchor, offset, cluster, total / (num_nodes - 1)


def quadrature_factor(p: Array, rewards: Array, beta: Array, *, k: int, num_nodes: int,
                      m: int = 1, block: int = 2048) -> Array:
    """Finite K and beta: trapezoidal rule in s = log u for the Laplace-transform integral.

    The nodes cover the union of the per-state windows (:func:`_quadrature_nodes`). States are
    processed in blocks of ``block`` so that the (nodes x block) temporaries stay in cache: cost
    O(M x num_nodes) (plus O(M) to locate the clusters, O(M log M) at huge ranges of -log w),
    memory O(num_nodes x block).
    """
    size, dtype = p.shape[0], p.dtype
    v, anchor, offset, cluster, h = quadrature_grid(p, rewards, beta, k=k, num_nodes=num_nodes,
                                                   m=m)
    weights = quadrature_weights(cluster, h)

    block = min(block, size)
    num_blocks = -(-size // block)
    pad_m = num_blocks * block - size
    p_blocks = jnp.pad(p, (0, pad_m)).reshape(num_blocks, block)
    v_blocks = jnp.pad(v, (0, pad_m), constant_values=jnp.inf).reshape(num_blocks, block)

    def log_uw(v_i):  # t = s_j + log w(x) = (anchor_j - v(x)) + offset_j
        return (anchor[:, None] - v_i[None, :]) + offset[:, None]

    def add_psi(psi, blk):  # psi(s_j) = E_p[-expm1(-e^{s_j} w)] = 1 - phi(e^{s_j})
        p_i, v_i = blk
        u_w = jnp.exp(log_uw(v_i))
        return psi + jnp.sum(p_i[None, :] * -jnp.expm1(-u_w), axis=1), None

    psi, _ = lax.scan(add_psi, jnp.zeros((num_nodes,), dtype), (p_blocks, v_blocks))
    psi = jnp.minimum(psi, 1.0)
    kernel = log_kernel(jnp.log1p(-psi), jnp.log(psi), k=k, m=m)
    coef = math.log(k) + kernel + jnp.log(h * weights)  # (N,); weights >= 0

    def factor(v_i):  # H(x) = sum_j exp(coef_j + t_j(x) - e^{t_j(x)})
        t = log_uw(v_i)
        return jnp.sum(jnp.exp(coef[:, None] + t - jnp.exp(t)), axis=0)

    return lax.map(factor, v_blocks).reshape(-1)[:size]


def finite_k_factor(p, rewards, beta, *, k: int, num_nodes: int, m: int = 1):
    """H for a finite ``k`` (top-``m`` of a Plackett–Luce ranking; ``m = 1``: Luce): the hard
    ranking when ``beta = inf``, else the quadrature. Jitted at call time (nothing is jitted at
    import, no module-level cache): jit's own cache, keyed on the module-level function and the
    static ``(k, num_nodes, m)``, spares eager calls a retrace."""
    return jax.jit(finite_k_factor_impl, static_argnames=("k", "num_nodes", "m"))(
        p, rewards, beta, k=k, num_nodes=num_nodes, m=m)


def finite_k_factor_impl(p, rewards, beta, *, k: int, num_nodes: int, m: int = 1):
    if m >= k:  # every candidate is kept: the law is p
        return jnp.ones_like(p)
    hard = (functools.partial(best_of_k_factor, k=k) if m == 1
            else functools.partial(hard_top_m_factor, k=k, m=m))
    return lax.cond(jnp.isinf(beta), hard,
                    functools.partial(quadrature_factor, k=k, num_nodes=num_nodes, m=m),
                    p, rewards, beta)


def levels(p: Array, rewards: Array):
    """Per state: the mass of its reward level, of the levels below and of those above (under
    p), each summed directly (no differences of nearly equal totals)."""
    m = p.shape[0]
    order = jnp.argsort(rewards)
    r_sorted, p_sorted = rewards[order], p[order]
    new_level = jnp.concatenate([jnp.ones((1,), bool), r_sorted[1:] != r_sorted[:-1]])
    level = jnp.cumsum(new_level) - 1
    at = jax.ops.segment_sum(p_sorted, level, num_segments=m)[level]
    below = jax.ops.segment_min(jnp.cumsum(p_sorted) - p_sorted, level, num_segments=m)[level]
    above = jax.ops.segment_min(jnp.cumsum(p_sorted[::-1])[::-1] - p_sorted, level,
                                num_segments=m)[level]
    unsort = jnp.zeros_like(order).at[order].set(jnp.arange(m))
    return at[unsort], below[unsort], jnp.maximum(above[unsort], 0.0)


def hard_top_m_factor(p: Array, rewards: Array, beta: Array, *, k: int, m: int) -> Array:
    r"""beta = inf, top m of k by reward, ties broken uniformly: with A others above the level of
    x and B at it (trinomial under p),
    :math:`H(x) = \frac{K}{m} \mathbb{E}[\min(1, (m - A)^+ / (B + 1))]`. Cost O(M m K)."""
    del beta
    at, below, above = levels(p, rewards)
    dtype = p.dtype
    a = jnp.arange(m, dtype=dtype)[:, None]
    b = jnp.arange(k, dtype=dtype)[None, :]
    c = (k - 1) - a - b
    valid = c >= 0
    lgam = jax.scipy.special.gammaln
    log_coef = jnp.where(valid, lgam(jnp.asarray(k, dtype)) - lgam(a + 1) - lgam(b + 1)
                         - lgam(jnp.maximum(c, 0) + 1), -jnp.inf)
    share = jnp.minimum(1.0, (m - a) / (b + 1))

    def xlogy(n, x):  # n log x with 0 log 0 = 0
        return jnp.where(n == 0, 0.0, n * jnp.log(jnp.where(n == 0, 1.0, x)))

    log_terms = (log_coef[None] + xlogy(a[None], above[:, None, None])
                 + xlogy(b[None], at[:, None, None]) + xlogy(c[None], below[:, None, None]))
    prob = jnp.sum(jnp.where(valid[None], jnp.exp(log_terms), 0.0) * share[None], axis=(1, 2))
    return (k / m) * prob

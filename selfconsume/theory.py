r"""Exact population dynamics of curated retraining on a finite support of M states.

Notation: model :math:`p` on states :math:`x = 1..M`, reward :math:`r`, inverse temperature
:math:`b = \beta`, :math:`K` candidates, weights :math:`w(x) = e^{b (r(x) - r^*)} \le 1`.

**Curated law.** The kept sample of K-way curation has law :math:`p H_p` with

.. math::
    H_p(x) = \mathbb{E}\Big[\frac{K\, w(x)}{w(x) + \sum_{i<K} w(X_i)}\Big],\quad X_i \sim p
    \;\text{iid}.

Writing :math:`1/s = \int_0^\infty e^{-us}\,du` and :math:`\phi(u) = \mathbb{E}_p[e^{-u w(X)}]`,

.. math::
    H_p(x) = K\, w(x) \int_0^\infty e^{-u\, w(x)}\, \phi(u)^{K-1}\, du
           = K \int_{-\infty}^{\infty} e^{\,s + \log w(x) - e^{s + \log w(x)}}\,
             \phi(e^s)^{K-1}\, ds,

computed by the trapezoidal rule in :math:`s = \log u` (spectrally accurate here: the integrand is
analytic in the strip :math:`|\Im s| < \pi/2` and decays exponentially to the left and
doubly exponentially to the right; the error falls like :math:`e^{-\pi^2/h}` with the step
:math:`h`). The window is :math:`s \in [-(c + \log K),\, s_{\max}]` with :math:`c = 36` in
float64 and 20 in float32 (relative truncation error below :math:`e^{-c}`), and :math:`s_{\max}`
the smaller of :math:`\max_{p>0}(-\log w) + 4` and the point where :math:`\phi^{K-1}` falls
below :math:`e^{-60}`. :math:`\log\phi` is evaluated as :math:`\log(1 - \mathbb{E}_p[-\mathrm{expm1}(-u w)])` so
that it stays accurate near :math:`\phi = 1` (large K). Cost: :math:`O(M \times` ``num_nodes``
:math:`)`, independent of K.

* ``K = inf`` gives the exponential tilt :math:`H = e^{b r} / \mathbb{E}_p[e^{b r}]`.
* ``beta = inf`` (best-of-K, ties uniform) gives, with :math:`F` the reward CDF under :math:`p`
  and :math:`q(x) = P_p(r = r(x)) / F(r(x))`,
  :math:`H(x) = F^{K-1} (1 - (1 - q)^K) / q` (and :math:`K F^{K-1}` where :math:`q = 0`).

**Retraining map.** With real-data fraction :math:`a`:
:math:`p_{t+1} = a\, p_{\rm data} + (1-a)\, p_t H_{p_t}`; the paper's
:math:`\lambda` (synthetic/real) is :math:`(1-a)/a`.

**Facts** checked by :func:`check_theorems` (Ferbach et al., 2024):

1. :math:`\sum_x p H = 1`; :math:`H` depends on :math:`x` only through :math:`r(x)` and is
   non-decreasing in it.
2. Pure curation (:math:`a = 0`) raises :math:`\mathbb{E}[g(r)]` for every non-decreasing
   :math:`g`, and :math:`\mathbb{E}_{t+1}[e^{br}] - \mathbb{E}_t[e^{br}] \ge \frac{K-1}{K}
   \mathrm{Var}_t[e^{br}] / e^{b r^*}`.
3. Pure curation converges to :math:`p_0(\cdot \mid r = r^*)`; with :math:`K = \infty`,
   :math:`p_t \propto p_0 e^{t b r}` exactly.
4. With :math:`a > 0`: :math:`\mathrm{KL}(p_{\rm data} \| p_t) \le \log(1/a)` for :math:`t \ge 1`;
   for :math:`K = \infty` the fixed point is
   :math:`p^* = p_{\rm data} / (1 + \lambda - \lambda e^{br}/Z)`, :math:`Z` set by normalisation.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from selfconsume import _checks
from selfconsume.curation import scaled_rewards
from selfconsume.types import Array, ArrayLike

__all__ = [
    "curation_factor",
    "curated",
    "retrain_map",
    "trajectory",
    "limit",
    "fixed_point",
    "reward_gain_bound",
    "check_theorems",
    "real_fraction_from_lambda",
    "lambda_from_real_fraction",
]

_LOG_PHI_CUT = -60.0  # phi^(K-1) below e^-60 is dropped from the quadrature window


# --------------------------------------------------------------------------------------------
# Conversions and input handling
# --------------------------------------------------------------------------------------------


def real_fraction_from_lambda(lam: ArrayLike) -> Array:
    r"""Converts the paper's synthetic-to-real ratio :math:`\lambda` to ``real_fraction`` = 1/(1+λ).

    ``lam = jnp.inf`` (fully synthetic) gives 0.
    """
    return 1.0 / (1.0 + jnp.asarray(lam, dtype=jnp.result_type(float)))


def lambda_from_real_fraction(real_fraction: ArrayLike) -> Array:
    r"""Converts ``real_fraction`` :math:`a` to the paper's :math:`\lambda = (1-a)/a` (inf at 0)."""
    a = jnp.asarray(real_fraction, dtype=jnp.result_type(float))
    return (1.0 - a) / a


def _prepare(p, rewards, *, name: str = "p"):
    """Validates a (distribution, rewards) pair and casts both to one floating dtype."""
    if jnp.ndim(rewards) != 1:
        raise ValueError(f"`rewards` must be 1-D with shape (M,); got shape {jnp.shape(rewards)}.")
    if jnp.ndim(p) == 1 and jnp.shape(rewards) != jnp.shape(p):
        raise ValueError(
            f"`rewards` must have the shape of `{name}`; got {jnp.shape(rewards)} and "
            f"{jnp.shape(p)}.")
    _checks.probability_vector(name, p)
    if _checks.is_concrete(rewards) and not np.all(np.isfinite(np.asarray(rewards))):
        raise ValueError(f"`rewards` must be finite on the support; got {_checks._show(rewards)} "
                         "with non-finite entries.")
    dtype = jnp.promote_types(jnp.asarray(p).dtype, jnp.asarray(rewards).dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = jnp.result_type(float)
    return jnp.asarray(p, dtype), jnp.asarray(rewards, dtype)


def _support_max(p: Array, rewards: Array) -> Array:
    """Largest reward among the states with positive probability."""
    return jnp.max(jnp.where(p > 0, rewards, -jnp.inf))


def _check_k(k):
    return _checks.static_int("k", k, minimum=1, allow_inf=True)


def _check_beta(beta, dtype):
    _checks.scalar("beta", beta, minimum=0.0)
    return jnp.asarray(beta, dtype)


# --------------------------------------------------------------------------------------------
# The curation factor H
# --------------------------------------------------------------------------------------------


def _tilt_factor(p: Array, rewards: Array, beta: Array) -> Array:
    """K = inf: H = e^{b r} / E_p[e^{b r}] (inf above the support when beta = inf)."""
    logw = scaled_rewards(rewards, beta, _support_max(p, rewards))
    log_norm = jax.nn.logsumexp(jnp.where(p > 0, logw + jnp.log(p), -jnp.inf))
    return jnp.exp(logw - log_norm)


def _best_of_k_factor(p: Array, rewards: Array, beta: Array, *, k: int) -> Array:
    """beta = inf: H(x) = F^{K-1} (1 - (1-q)^K) / q with q = P(r = r(x)) / F(r(x))."""
    del beta
    m = p.shape[0]
    order = jnp.argsort(rewards)
    r_sorted, p_sorted = rewards[order], p[order]
    new_level = jnp.concatenate([jnp.ones((1,), bool), r_sorted[1:] != r_sorted[:-1]])
    level = jnp.cumsum(new_level) - 1
    level_mass = jax.ops.segment_sum(p_sorted, level, num_segments=m)[level]
    below = jax.ops.segment_min(jnp.cumsum(p_sorted) - p_sorted, level, num_segments=m)[level]
    cdf = below + level_mass
    q = jnp.where(cdf > 0, level_mass / jnp.where(cdf > 0, cdf, 1.0), 0.0)
    power = jnp.where(cdf > 0, jnp.exp((k - 1) * jnp.log(jnp.where(cdf > 0, cdf, 1.0))), 0.0)
    safe_q = jnp.where(q > 0, q, 1.0)
    ratio = jnp.where(q > 0, -jnp.expm1(k * jnp.log1p(-safe_q)) / safe_q, float(k))
    return jnp.zeros_like(p).at[order].set(power * ratio)


def _log_phi(s: Array, p: Array, logw: Array) -> Array:
    """log E_p[exp(-e^s w)] for a scalar s, accurate near 0 (computed as log1p of -E[-expm1])."""
    psi = jnp.sum(p * -jnp.expm1(-jnp.exp(s + logw)))
    return jnp.log1p(-jnp.minimum(psi, 1.0))


def _left_tail(dtype) -> float:
    """Where the window in s = log u starts, before the -log K shift: the relative truncation error
    is below e^-(this), far below the dtype's resolution."""
    return 36.0 if dtype == jnp.float64 else 20.0


def _quadrature_factor(p: Array, rewards: Array, beta: Array, *, k: int, num_nodes: int,
                       block: int = 2048) -> Array:
    """Finite K and beta: trapezoidal rule in s = log u for the Laplace-transform integral.

    States are processed in blocks of ``block`` so that the (nodes x block) temporaries stay in
    cache: cost O(M x num_nodes), memory O(num_nodes x block).
    """
    m, dtype = p.shape[0], p.dtype
    logw = scaled_rewards(rewards, beta, jnp.max(rewards))  # <= 0; the global maximum maps to 0
    s_min = -(_left_tail(dtype) + math.log(k))
    s_hi = jnp.max(jnp.where(p > 0, -logw, -jnp.inf)) + 4.0

    # Bisection for the point where (K-1) log phi(e^s) crosses the cut (log phi decreases in s).
    def bisect(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        below_cut = (k - 1) * _log_phi(mid, p, logw) < _LOG_PHI_CUT
        return jnp.where(below_cut, lo, mid), jnp.where(below_cut, mid, hi)

    _, s_cut = lax.fori_loop(0, 40, bisect, (jnp.asarray(s_min, dtype), s_hi))
    s_max = jnp.minimum(s_cut, s_hi)
    h = (s_max - s_min) / (num_nodes - 1)
    s = s_min + h * jnp.arange(num_nodes, dtype=dtype)
    trapezoid = jnp.full((num_nodes,), 1.0, dtype).at[jnp.array([0, -1])].set(0.5)

    block = min(block, m)
    num_blocks = -(-m // block)
    pad = num_blocks * block - m
    p_blocks = jnp.pad(p, (0, pad)).reshape(num_blocks, block)
    logw_blocks = jnp.pad(logw, (0, pad), constant_values=-jnp.inf).reshape(num_blocks, block)

    def add_psi(psi, blk):  # psi(s_j) = E_p[-expm1(-e^{s_j} w)] = 1 - phi(e^{s_j})
        p_i, logw_i = blk
        u_w = jnp.exp(s[:, None] + logw_i[None, :])
        return psi + jnp.sum(p_i[None, :] * -jnp.expm1(-u_w), axis=1), None

    psi, _ = lax.scan(add_psi, jnp.zeros((num_nodes,), dtype), (p_blocks, logw_blocks))
    log_phi = jnp.log1p(-jnp.minimum(psi, 1.0))
    coef = math.log(k) + (k - 1) * log_phi + jnp.log(h * trapezoid) + s  # (N,)

    def factor(logw_i):  # H(x) = sum_j exp(coef_j + log w(x) - e^{s_j} w(x))
        y = s[:, None] + logw_i[None, :]
        return jnp.sum(jnp.exp(coef[:, None] + logw_i[None, :] - jnp.exp(y)), axis=0)

    return lax.map(factor, logw_blocks).reshape(-1)[:m]


def curation_factor(
    p: ArrayLike, rewards: ArrayLike, *, k, beta: ArrayLike = 1.0, num_nodes: int | None = None
) -> Array:
    r"""The curation factor :math:`H_p(x)`: the kept sample's law is :math:`p H_p`.

    Exact for any integer ``k`` up to the quadrature error (below 1e-10 relative in float64 while
    ``beta`` times the reward spread of the support is below ~20 nats, 1e-9 up to ~60 nats at the
    default ``num_nodes``; raise ``num_nodes`` for larger spreads), the exponential tilt for
    ``k = jnp.inf``, and the best-of-k law for ``beta = jnp.inf``.

    Args:
        p: ``(M,)`` probabilities of the current model (non-negative, summing to 1).
        rewards: ``(M,)`` finite rewards of the states.
        k: static number of candidates, an integer ``>= 1`` or ``jnp.inf``.
        beta: scalar inverse temperature ``>= 0`` (``jnp.inf`` allowed), possibly traced.
        num_nodes: static number of quadrature nodes in ``log u``; default 256 in float64 and 128
            in float32 (step about 0.25 and 0.4 for spreads up to 20 nats).

    Returns:
        ``(M,)`` the factor :math:`H`, with :math:`\sum_x p(x) H(x) = 1`. States with ``p = 0``
        get the factor they would have (``inf`` above the support for ``k = beta = inf``).
    """
    k = _check_k(k)
    p, rewards = _prepare(p, rewards)
    beta = _check_beta(beta, p.dtype)
    if num_nodes is None:
        num_nodes = 256 if p.dtype == jnp.float64 else 128
    num_nodes = _checks.static_int("num_nodes", num_nodes, minimum=8)
    if k == 1:
        return jnp.ones_like(p)
    if math.isinf(k):
        return _tilt_factor(p, rewards, beta)
    return lax.cond(jnp.isinf(beta), *_finite_k_branches(k, num_nodes), p, rewards, beta)


@functools.lru_cache(maxsize=None)
def _finite_k_branches(k: int, num_nodes: int):
    """The (beta = inf, finite beta) branches, built once per static (k, num_nodes) so that
    ``lax.cond`` finds them in its cache and eager calls do not retrace."""
    return (functools.partial(_best_of_k_factor, k=k),
            functools.partial(_quadrature_factor, k=k, num_nodes=num_nodes))


def curated(
    p: ArrayLike, rewards: ArrayLike, *, k, beta: ArrayLike = 1.0, num_nodes: int | None = None
) -> Array:
    r"""The law of the kept sample, :math:`p H_p`, renormalised to sum to 1 exactly.

    Args:
        p: ``(M,)`` probabilities. rewards: ``(M,)`` rewards. k, beta, num_nodes: as in
            :func:`curation_factor`.

    Returns:
        ``(M,)`` probabilities; zero wherever ``p`` is zero.
    """
    h = curation_factor(p, rewards, k=k, beta=beta, num_nodes=num_nodes)
    p = jnp.asarray(p, h.dtype)
    q = jnp.where(p > 0, p * h, 0.0)
    return q / jnp.sum(q)


def _mix(p_data, real_fraction, curated_p):
    if p_data is None:
        return curated_p
    a = jnp.asarray(real_fraction, curated_p.dtype)
    q = a * p_data + (1.0 - a) * curated_p
    return q / jnp.sum(q)


def _prepare_real(p_data, real_fraction, like, *, allow_zero: bool = True):
    """Validates (p_data, real_fraction); p_data=None is allowed only with real_fraction = 0."""
    _checks.scalar("real_fraction", real_fraction, minimum=0.0, maximum=1.0)
    if p_data is None:
        if not _checks.is_concrete(real_fraction) or float(real_fraction) != 0.0:
            raise ValueError(
                f"`p_data` is required when `real_fraction` is not 0; got real_fraction="
                f"{real_fraction!r} and p_data=None.")
        return None
    p_data, _ = _prepare(p_data, like, name="p_data")
    if not allow_zero and _checks.is_concrete(real_fraction) and float(real_fraction) == 0.0:
        raise ValueError("`real_fraction` must be in (0, 1] here; got 0.0.")
    return p_data.astype(like.dtype)


def retrain_map(
    p: ArrayLike,
    rewards: ArrayLike,
    *,
    k,
    beta: ArrayLike = 1.0,
    p_data: ArrayLike | None = None,
    real_fraction: ArrayLike = 0.0,
    num_nodes: int | None = None,
) -> Array:
    r"""One generation of fully expressive retraining: :math:`a\, p_{\rm data} + (1-a)\, p H_p`.

    Args:
        p: ``(M,)`` current model. rewards: ``(M,)``. k, beta, num_nodes: as in
            :func:`curation_factor`.
        p_data: ``(M,)`` the real-data law; required unless ``real_fraction`` is 0.
        real_fraction: scalar :math:`a \in [0, 1]`, possibly traced.

    Returns:
        ``(M,)`` the next model, renormalised.
    """
    p, rewards = _prepare(p, rewards)
    p_data = _prepare_real(p_data, real_fraction, rewards)
    return _mix(p_data, real_fraction, curated(p, rewards, k=k, beta=beta, num_nodes=num_nodes))


def trajectory(
    p0: ArrayLike,
    rewards: ArrayLike,
    *,
    num_generations: int,
    k,
    beta: ArrayLike = 1.0,
    p_data: ArrayLike | None = None,
    real_fraction: ArrayLike = 0.0,
    num_nodes: int | None = None,
) -> Array:
    """Iterates :func:`retrain_map` with ``lax.scan``; ``beta`` and ``real_fraction`` may be vmapped.

    Args:
        p0: ``(M,)`` initial model. rewards: ``(M,)``.
        num_generations: static number of generations T >= 0.
        k, beta, p_data, real_fraction, num_nodes: as in :func:`retrain_map`.

    Returns:
        ``(T + 1, M)``; row 0 is ``p0``, row t the model after t generations.
    """
    num_generations = _checks.static_int("num_generations", num_generations, minimum=0)
    k = _check_k(k)
    p0, rewards = _prepare(p0, rewards, name="p0")
    beta = _check_beta(beta, p0.dtype)
    p_data = _prepare_real(p_data, real_fraction, rewards)
    return _trajectory(p0, rewards, beta, p_data, jnp.asarray(real_fraction, p0.dtype),
                       num_generations=num_generations, k=k, num_nodes=num_nodes)


@functools.partial(jax.jit, static_argnames=("num_generations", "k", "num_nodes"))
def _trajectory(p0, rewards, beta, p_data, real_fraction, *, num_generations, k, num_nodes):
    def step(p, _):
        q = _mix(p_data, real_fraction, curated(p, rewards, k=k, beta=beta, num_nodes=num_nodes))
        return q, q

    _, ps = lax.scan(step, p0, None, length=num_generations)
    return jnp.concatenate([p0[None], ps], axis=0)


def limit(p0: ArrayLike, rewards: ArrayLike) -> Array:
    r"""The limit of pure curation (``beta > 0``, ``k >= 2``): :math:`p_0(\cdot \mid r = r^*)`.

    :math:`r^*` is the largest reward on the support of ``p0``; tied states keep their initial
    proportions.

    Returns:
        ``(M,)`` probabilities.
    """
    p0, rewards = _prepare(p0, rewards, name="p0")
    top = (p0 > 0) & (rewards == _support_max(p0, rewards))
    q = jnp.where(top, p0, 0.0)
    return q / jnp.sum(q)


@jax.jit
def _tilt_fixed_point(p_data: Array, rewards: Array, beta: Array, a: Array) -> Array:
    """Closed form for K = inf: p* = a p_d Z / (Z - (1-a) w), Z = (1-a) + a*theta, theta in (0, 1]."""
    logw = scaled_rewards(rewards, beta, _support_max(p_data, rewards))
    on = p_data > 0
    one_minus_w = jnp.where(on, -jnp.expm1(jnp.minimum(logw, 0.0)), 1.0)

    def unnormalised(log_theta):
        theta = jnp.exp(log_theta)
        z = (1.0 - a) + a * theta
        # z - (1-a) w written as a*theta + (1-a)(1-w) to keep precision near the pole.
        return jnp.where(on, a * p_data * z / (a * theta + (1.0 - a) * one_minus_w), 0.0)

    def bisect(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        too_much = jnp.sum(unnormalised(mid)) > 1.0  # the total decreases in theta
        return jnp.where(too_much, mid, lo), jnp.where(too_much, hi, mid)

    lo0 = jnp.asarray(math.log(np.finfo(p_data.dtype).tiny), p_data.dtype)
    lo, hi = lax.fori_loop(0, 100, bisect, (lo0, jnp.zeros((), p_data.dtype)))
    q = unnormalised(0.5 * (lo + hi))
    return q / jnp.sum(q)


def fixed_point(
    p_data: ArrayLike,
    rewards: ArrayLike,
    *,
    k,
    beta: ArrayLike = 1.0,
    real_fraction: ArrayLike,
    tol: float | None = None,
    max_iterations: int = 10_000,
    num_nodes: int | None = None,
) -> Array:
    r"""The fixed point of :func:`retrain_map` reached from ``p_data`` (support of ``p_data``).

    For ``k = jnp.inf`` the closed form :math:`p^* = p_{\rm data} / (1 + \lambda - \lambda
    e^{br}/Z)` with :math:`Z` found by bisection (100 steps). For finite ``k`` the map is iterated
    from ``p_data`` until two successive iterates differ by less than ``tol`` in L1 (default 1e-12
    in float64, 1e-6 in float32); if that does not happen within ``max_iterations`` the result is
    all NaN, so that non-convergence can never pass for an answer.

    Args:
        p_data: ``(M,)`` real-data law. rewards: ``(M,)``.
        k, beta, num_nodes: as in :func:`curation_factor`.
        real_fraction: scalar in ``(0, 1]``, possibly traced.
        tol: L1 stopping tolerance for finite ``k``.
        max_iterations: static iteration cap for finite ``k``.

    Returns:
        ``(M,)`` probabilities.
    """
    k = _check_k(k)
    p_data, rewards = _prepare(p_data, rewards, name="p_data")
    beta = _check_beta(beta, p_data.dtype)
    _prepare_real(p_data, real_fraction, rewards, allow_zero=False)
    a = jnp.asarray(real_fraction, p_data.dtype)
    if math.isinf(k):
        return _tilt_fixed_point(p_data, rewards, beta, a)
    if tol is None:
        tol = 1e-12 if p_data.dtype == jnp.float64 else 1e-6
    max_iterations = _checks.static_int("max_iterations", max_iterations, minimum=1)
    return _iterated_fixed_point(p_data, rewards, beta, a, jnp.asarray(tol, p_data.dtype), k=k,
                                 max_iterations=max_iterations, num_nodes=num_nodes)


@functools.partial(jax.jit, static_argnames=("k", "max_iterations", "num_nodes"))
def _iterated_fixed_point(p_data, rewards, beta, a, tol, *, k, max_iterations, num_nodes):
    def body(carry):
        p, _, i = carry
        q = _mix(p_data, a, curated(p, rewards, k=k, beta=beta, num_nodes=num_nodes))
        return q, jnp.sum(jnp.abs(q - p)), i + 1

    def cond(carry):
        _, change, i = carry
        return (change >= tol) & (i < max_iterations)

    init = (p_data, jnp.asarray(jnp.inf, p_data.dtype), jnp.zeros((), jnp.int32))
    p, change, _ = lax.while_loop(cond, body, init)
    return jnp.where(change < tol, p, jnp.nan)


def reward_gain_bound(p: ArrayLike, rewards: ArrayLike, *, k, beta: ArrayLike = 1.0) -> Array:
    r"""Lower bound on one step's gain in :math:`\mathbb{E}[e^{br}]` under pure curation.

    :math:`\frac{K-1}{K} \mathrm{Var}_p[e^{br}] / e^{b r^*}` with :math:`r^*` the largest reward on
    the support of ``p`` (the factor is 1 for ``k = jnp.inf``). In absolute units, so it
    overflows when :math:`b r^*` is large; :func:`check_theorems` uses the shifted form.

    Returns:
        Scalar.
    """
    k = _check_k(k)
    p, rewards = _prepare(p, rewards)
    beta = _check_beta(beta, p.dtype)
    r_star = _support_max(p, rewards)
    w = jnp.exp(scaled_rewards(rewards, beta, r_star))
    w = jnp.where(p > 0, w, 0.0)
    mean = jnp.sum(p * w)
    var = jnp.sum(p * (w - mean) ** 2)
    factor = 1.0 if math.isinf(k) else (k - 1) / k
    return factor * var * jnp.exp(beta * r_star)


# --------------------------------------------------------------------------------------------
# Numerical checks of the theorems
# --------------------------------------------------------------------------------------------


def _default_tolerance(dtype) -> float:
    return 1e-9 if dtype == jnp.float64 else 1e-4


@functools.partial(jax.jit, static_argnames=("k", "num_generations", "num_nodes"))
def _pure_curation_diagnostics(p0, rewards, beta, *, k, num_generations, num_nodes):
    """Everything facts 1-3 need, computed in one compiled program (shifted units w <= 1)."""
    ps = trajectory(p0, rewards, num_generations=num_generations, k=k, beta=beta,
                    num_nodes=num_nodes)
    hs = jax.vmap(lambda p: curation_factor(p, rewards, k=k, beta=beta, num_nodes=num_nodes))(
        ps[:-1])
    # 1. normalisation, and H a non-decreasing function of r (equal on level sets).
    norm_dev = jnp.max(jnp.abs(jnp.sum(ps[:-1] * hs, axis=1) - 1.0))
    order = jnp.argsort(rewards)
    r_sorted, h_sorted = rewards[order], hs[:, order]
    scale = jnp.max(hs, axis=1, keepdims=True)
    step = (h_sorted[:, 1:] - h_sorted[:, :-1]) / scale
    tied = (r_sorted[1:] == r_sorted[:-1])[None, :]
    level_slack = jnp.min(jnp.where(tied, -jnp.abs(step), step))
    # 2a. first-order stochastic dominance: every upper tail P(r >= level) grows.
    desc = jnp.argsort(-rewards)
    tails = jnp.cumsum(ps[:, desc], axis=1)
    dominance_slack = jnp.min(tails[1:] - tails[:-1])
    # 2b. gain in E[w] against (K-1)/K Var[w] / w*, with w* = 1 in shifted units.
    logw = scaled_rewards(rewards, beta, _support_max(p0, rewards))
    w = jnp.where(p0 > 0, jnp.exp(jnp.minimum(logw, 0.0)), 0.0)
    mean = ps @ w
    var = ps @ (w * w) - mean**2
    factor = 1.0 if math.isinf(k) else (k - 1) / k
    gain_slack = jnp.min((mean[1:] - mean[:-1]) - factor * var[:-1])
    # 3. convergence to p0( . | r = r*): level-set proportions kept, TV non-increasing and, for
    #    K = inf, p_t proportional to p0 exp(t b r).
    lim = limit(p0, rewards)
    top = lim > 0
    in_top = jnp.where(top[None, :], ps, 0.0)
    in_top = in_top / jnp.sum(in_top, axis=1, keepdims=True)
    level_dev = jnp.max(0.5 * jnp.sum(jnp.abs(in_top - lim[None, :]), axis=1))
    tv = 0.5 * jnp.sum(jnp.abs(ps - lim[None, :]), axis=1)
    tv_rise = jnp.max(tv[1:] - tv[:-1]) if num_generations > 0 else jnp.zeros((), tv.dtype)
    limit_slack = -jnp.maximum(level_dev, jnp.maximum(tv_rise, 0.0))
    if math.isinf(k):
        t = jnp.arange(num_generations + 1, dtype=p0.dtype)[:, None]
        logits = jnp.where(t == 0, 0.0, t * logw[None, :]) + jnp.log(p0)[None, :]
        tilted = jax.nn.softmax(jnp.where(p0[None, :] > 0, logits, -jnp.inf), axis=1)
        tilt_dev = jnp.max(0.5 * jnp.sum(jnp.abs(ps - tilted), axis=1))
        limit_slack = jnp.minimum(limit_slack, -tilt_dev)
    return dict(
        normalization=-norm_dev,
        level_sets=level_slack,
        monotone_reward=dominance_slack,
        reward_gain_bound=gain_slack,
        limit=limit_slack,
    )


def check_theorems(
    p0: ArrayLike,
    rewards: ArrayLike,
    *,
    k,
    beta: ArrayLike = 1.0,
    p_data: ArrayLike | None = None,
    real_fraction: ArrayLike = 0.0,
    num_generations: int = 50,
    tol: float | None = None,
    num_nodes: int | None = None,
) -> dict[str, dict[str, float | bool]]:
    r"""Checks the facts of the theory numerically on exact trajectories.

    A host-level function (it returns Python values); the trajectories are computed in compiled
    code. Each entry's ``slack`` is the margin by which the statement holds, minimised over
    generations and states: ``rhs - lhs`` for an inequality ``lhs <= rhs``, ``-|deviation|`` for
    an equality; ``holds`` is ``slack >= -tol`` (``tol`` defaults to 1e-9 in float64 and 1e-4 in
    float32, the accumulated rounding of these computations).

    Facts 1-3 are evaluated on the pure-curation trajectory from ``p0`` (whatever
    ``real_fraction`` is): they are statements about the curation operator.

    * ``normalization``: :math:`\sum_x p_t H_t = 1` at every generation.
    * ``level_sets``: :math:`H_t` is non-decreasing in the reward and constant on level sets
      (differences relative to :math:`\max H_t`).
    * ``monotone_reward``: :math:`P_{t+1}(r \ge \ell) \ge P_t(r \ge \ell)` for every level
      :math:`\ell`, i.e. :math:`\mathbb{E}[g(r)]` grows for every non-decreasing :math:`g`.
    * ``reward_gain_bound``: :math:`\mathbb{E}_{t+1}[w] - \mathbb{E}_t[w] \ge \frac{K-1}{K}
      \mathrm{Var}_t[w]` with :math:`w = e^{b(r - r^*)}` (the stated bound divided by
      :math:`e^{br^*}`).
    * ``limit``: inside the top level set :math:`p_t \propto p_0`, and the total variation to
      :func:`limit` never increases; for ``k = inf`` also :math:`p_t \propto p_0 e^{tbr}`.

    With ``p_data`` and ``real_fraction > 0``, on the trajectory with real data:

    * ``kl_bound``: :math:`\mathrm{KL}(p_{\rm data} \| p_t) \le \log(1/a)` for :math:`t \ge 1`.
    * ``fixed_point``: :math:`\|\mathrm{retrain\_map}(p^*) - p^*\|_1 = 0` for
      :math:`p^*` = :func:`fixed_point`.

    Args:
        p0: ``(M,)`` initial model. rewards: ``(M,)``. k, beta, num_nodes: as in
            :func:`curation_factor`.
        p_data: ``(M,)`` real-data law (needed for facts 4).
        real_fraction: scalar in ``[0, 1]``.
        num_generations: static number of generations T.
        tol: the tolerance of ``holds``.

    Returns:
        ``{name: {"holds": bool, "slack": float}}`` for the facts above.
    """
    k = _check_k(k)
    p0, rewards = _prepare(p0, rewards, name="p0")
    beta = _check_beta(beta, p0.dtype)
    num_generations = _checks.static_int("num_generations", num_generations, minimum=1)
    p_data = _prepare_real(p_data, real_fraction, rewards)
    if tol is None:
        tol = _default_tolerance(p0.dtype)
    slacks = _pure_curation_diagnostics(p0, rewards, beta, k=k, num_generations=num_generations,
                                        num_nodes=num_nodes)
    order = ("normalization", "level_sets", "monotone_reward", "reward_gain_bound", "limit")
    slacks = {name: float(slacks[name]) for name in order}
    a = float(real_fraction)
    if p_data is not None and a > 0:
        ps = trajectory(p0, rewards, num_generations=num_generations, k=k, beta=beta,
                        p_data=p_data, real_fraction=a, num_nodes=num_nodes)
        on = p_data > 0
        log_data = jnp.log(jnp.where(on, p_data, 1.0))
        kl = jnp.sum(jnp.where(on[None, :], p_data[None, :] * (log_data[None, :] - jnp.log(ps[1:])),
                               0.0), axis=1)
        slacks["kl_bound"] = float(jnp.min(math.log(1.0 / a) - kl))
        star = fixed_point(p_data, rewards, k=k, beta=beta, real_fraction=a, num_nodes=num_nodes)
        if bool(jnp.all(jnp.isfinite(star))):
            image = retrain_map(star, rewards, k=k, beta=beta, p_data=p_data, real_fraction=a,
                                num_nodes=num_nodes)
            slacks["fixed_point"] = -float(jnp.sum(jnp.abs(image - star)))
        else:  # fixed_point did not converge: the fact is not confirmed
            slacks["fixed_point"] = math.nan
    return {name: {"holds": bool(s >= -tol), "slack": s} for name, s in slacks.items()}

r"""Reward statistics and divergences between laws, for monitoring the retraining loop.

Every function here is pure, jittable and vmappable: ranks and shapes are checked at trace time
(``ValueError`` naming the argument), values are never branched on, and value problems (NaN rewards,
singular covariances) come back as data (NaN or ``inf`` entries, ``nan_fraction``). Arguments
with a required range follow the rule of :mod:`selfconsume._checks`: a concrete probability
vector that is not one (or a negative ``bandwidth``) raises ``ValueError`` naming it; a traced one
makes the result NaN (one reduction, nothing for concrete values), never a plausible number.
Matrix products request ``Precision.HIGHEST`` (full float32 on accelerators).

**Reward statistics.** :func:`reward_summary` reports the mean, the population standard deviation
(``ddof = 0``) and quantiles (linear interpolation, as ``numpy.quantile``) of the non-NaN rewards,
and the fraction of NaN rewards.

**Categorical laws** :math:`p, q` on :math:`M` states (conventions :math:`0 \log 0 = 0`,
:math:`p \log(p/0) = +\infty` for :math:`p > 0`):

.. math::
    \mathrm{KL}(p \,\|\, q) = \sum_x p(x) \log\frac{p(x)}{q(x)},\qquad
    \mathrm{TV}(p, q) = \tfrac12 \sum_x |p(x) - q(x)|,\qquad
    H(p) = -\sum_x p(x) \log p(x),\qquad \mathbb{E}_p[r] = \sum_{p(x) > 0} p(x) r(x).

**Gaussians** :math:`N_i = \mathcal{N}(m_i, S_i)` in dimension :math:`d`. With Cholesky factors
:math:`S_i = L_i L_i^\top` and :math:`A = L_1^{-1} L_0` (lower triangular, so
:math:`\log\det S_1 - \log\det S_0 = -2 \sum_j \log A_{jj}`),

.. math::
    \mathrm{KL}(N_0 \,\|\, N_1)
      = \tfrac12\Big[\|L_1^{-1}(m_1 - m_0)\|^2 + \sum_{i \ne j} A_{ij}^2
        + \sum_j \big(\mathrm{expm1}(2 \ell_j) - 2 \ell_j\big)\Big],\quad
      \ell_j = \log A_{jj} = \log (L_0)_{jj} - \log (L_1)_{jj},

which is the usual :math:`\tfrac12[\mathrm{tr}(S_1^{-1} S_0) + \|\cdot\|^2 - d + \log\det S_1 -
\log\det S_0]` regrouped into non-negative terms, so that nearly equal Gaussians do not lose
every digit to the cancellation of :math:`\mathrm{tr} - d` against the log-determinants. The
squared 2-Wasserstein distance is

.. math::
    W_2^2(N_0, N_1) = \|m_0 - m_1\|^2 + \mathrm{tr}\big(S_0 + S_1
      - 2 (S_1^{1/2} S_0 S_1^{1/2})^{1/2}\big),

with the matrix square roots from a symmetric eigendecomposition (eigenvalues clipped at 0).

**Maximum mean discrepancy** with the Gaussian kernel :math:`k(a, b) = e^{-\|a - b\|^2 / (2h^2)}`,
unbiased (U-statistic) estimate from :math:`x_{1..n} \sim P`, :math:`y_{1..m} \sim Q`:

.. math::
    \widehat{\mathrm{MMD}}^2_u = \frac{1}{n(n-1)} \sum_{i \ne j} k(x_i, x_j)
      + \frac{1}{m(m-1)} \sum_{i \ne j} k(y_i, y_j) - \frac{2}{nm} \sum_{i, j} k(x_i, y_j).

Its mean is :math:`\mathrm{MMD}^2(P, Q) \ge 0` but a single estimate can be negative. Pairwise
squared distances are :math:`\|a\|^2 + \|b\|^2 - 2 a \cdot b` (matrix products), clipped at 0,
after centring both sets on their pooled mean (distances are translation invariant; centring
removes most of the cancellation). The median heuristic sets :math:`h` to the median of the
pairwise distances :math:`\|z_i - z_j\|`, :math:`i < j`, of the pooled first
``MEDIAN_MAX_POINTS`` points of each set.

**Modes.** :func:`nearest_mode` assigns each sample to its nearest centre in Euclidean distance
(first centre on ties); :func:`mode_shares` is the histogram of those assignments divided by the
number of samples.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax.scipy.linalg import solve_triangular

from selfconsume import _checks
from selfconsume.types import Array, ArrayLike

__all__ = [
    "reward_summary",
    "kl_divergence",
    "total_variation",
    "entropy",
    "expected_reward",
    "gaussian_kl",
    "gaussian_w2",
    "mmd_rbf",
    "median_bandwidth",
    "mode_shares",
    "nearest_mode",
    "MEDIAN_MAX_POINTS",
]

MEDIAN_MAX_POINTS = 1000  # the median heuristic looks at most at this many points of each set

DEFAULT_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


# --------------------------------------------------------------------------------------------
# Input handling
# --------------------------------------------------------------------------------------------


def _float(*arrays: ArrayLike) -> tuple[Array, ...]:
    """Casts the arrays to one common floating dtype (the default float for integer inputs)."""
    dtype = jnp.result_type(*arrays)
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = jnp.result_type(float)
    return tuple(jnp.asarray(a, dtype) for a in arrays)


def _two_laws(name_p: str, p, name_q: str, q) -> tuple[Array, Array]:
    _checks.probability_vector(name_p, p)
    _checks.probability_vector(name_q, q)
    if jnp.shape(p) != jnp.shape(q):
        raise ValueError(
            f"`{name_p}` and `{name_q}` must have the same shape (M,); got {jnp.shape(p)} and "
            f"{jnp.shape(q)}.")
    return _float(p, q)


def _laws_ok(*laws):
    """The traced predicate that every traced law is a probability vector (concrete ones were
    checked, and raised, already): a Python ``True`` when none is traced."""
    ok = True
    for p in laws:
        if not _checks.is_concrete(p):
            ok = ok & _checks.probability_vector_ok(p)
    return ok


def _samples(name: str, x, *, minimum: int = 1) -> None:
    if jnp.ndim(x) != 2:
        raise ValueError(f"`{name}` must be 2-D with shape (n, d); got shape {jnp.shape(x)}.")
    if jnp.shape(x)[0] < minimum:
        raise ValueError(
            f"`{name}` must have at least {minimum} rows; got shape {jnp.shape(x)}.")


def _same_dim(name_a: str, a, name_b: str, b) -> None:
    if jnp.shape(a)[-1] != jnp.shape(b)[-1]:
        raise ValueError(
            f"`{name_a}` and `{name_b}` must have the same dimension d (last axis); got shapes "
            f"{jnp.shape(a)} and {jnp.shape(b)}.")


def _quantile_key(q: float) -> str:
    """0.05 -> 'q05', 0.5 -> 'q50', 1.0 -> 'q100', 0.975 -> 'q97_5'."""
    pct = round(100.0 * q, 6)
    whole = int(pct)
    if pct == whole:
        return f"q{whole:02d}"
    return f"q{whole:02d}_" + f"{pct:.6f}".split(".")[1].rstrip("0")


def _check_quantiles(quantiles) -> tuple[tuple[float, ...], tuple[str, ...]]:
    if isinstance(quantiles, (str, bytes)) or not isinstance(quantiles, Sequence):
        raise ValueError(
            "`quantiles` must be a tuple of static Python numbers in [0, 1]; got "
            f"{quantiles!r}.")
    values = []
    for q in quantiles:
        if not _checks.is_concrete(q) or jnp.ndim(q) != 0 or isinstance(q, bool):
            raise ValueError(
                "`quantiles` must be a tuple of static Python numbers in [0, 1]; got entry "
                f"{q!r}.")
        v = float(q)
        if not 0.0 <= v <= 1.0:  # also rejects NaN
            raise ValueError(f"`quantiles` entries must be in [0, 1]; got {v!r}.")
        values.append(v)
    names = tuple(_quantile_key(v) for v in values)
    if len(set(names)) != len(names):
        raise ValueError(
            f"`quantiles` must be distinct (to 1e-6 %); got {tuple(values)!r}, named {names}.")
    return tuple(values), names


def _sq_dists(a: Array, b: Array) -> Array:
    """(n, m) squared Euclidean distances |a|^2 + |b|^2 - 2 a.b, clipped at 0."""
    aa = jnp.sum(a * a, axis=-1)
    bb = jnp.sum(b * b, axis=-1)
    ab = jnp.matmul(a, b.T, precision=jax.lax.Precision.HIGHEST)
    return jnp.maximum(aa[:, None] + bb[None, :] - 2.0 * ab, 0.0)


# --------------------------------------------------------------------------------------------
# Reward statistics
# --------------------------------------------------------------------------------------------


def reward_summary(
    rewards: ArrayLike,
    *,
    quantiles: Sequence[float] = DEFAULT_QUANTILES,
) -> dict[str, Array]:
    """Summary statistics of a batch of rewards, ignoring NaN rewards.

    Args:
        rewards: ``(n,)`` rewards, ``n >= 1``; NaN entries are left out of every statistic
            (``inf`` entries are kept).
        quantiles: static tuple of levels in ``[0, 1]``. Level ``q`` is reported under the key
            ``"q"`` + ``100 q`` written with at least two digits: 0.05 -> ``"q05"``, 0.5 ->
            ``"q50"``, 1.0 -> ``"q100"``, 0.975 -> ``"q97_5"``.

    Returns:
        dict of scalars: ``"mean"``, ``"std"`` (population, ``ddof = 0``), one key per quantile
        (linear interpolation) and ``"nan_fraction"`` (fraction of NaN rewards, in ``[0, 1]``).
        When every reward is NaN, all statistics but ``"nan_fraction"`` (= 1) are NaN.

    Raises:
        ValueError: if ``rewards`` is not 1-D or is empty, or ``quantiles`` is not a tuple of
            distinct numbers in ``[0, 1]``.
    """
    levels, names = _check_quantiles(quantiles)
    if jnp.ndim(rewards) != 1:
        raise ValueError(f"`rewards` must be 1-D with shape (n,); got shape {jnp.shape(rewards)}.")
    if jnp.shape(rewards)[0] == 0:
        raise ValueError("`rewards` must not be empty; got shape (0,).")
    (rewards,) = _float(rewards)
    out = {
        "mean": jnp.nanmean(rewards),
        "std": jnp.nanstd(rewards),
    }
    if levels:
        values = jnp.nanquantile(rewards, jnp.asarray(levels, rewards.dtype))
        out.update({name: values[i] for i, name in enumerate(names)})
    out["nan_fraction"] = jnp.mean(jnp.isnan(rewards).astype(rewards.dtype))
    return out


# --------------------------------------------------------------------------------------------
# Categorical laws
# --------------------------------------------------------------------------------------------


def kl_divergence(p: ArrayLike, q: ArrayLike) -> Array:
    r"""Kullback–Leibler divergence :math:`\mathrm{KL}(p \,\|\, q) = \sum_x p \log(p / q)` in nats.

    Uses :math:`0 \log(0/q) = 0` (also for ``q = 0``) and returns ``+inf`` when ``q = 0`` at a
    state where ``p > 0``. Gradients are finite wherever the value is.

    Args:
        p: ``(M,)`` probability vector.
        q: ``(M,)`` probability vector.

    Returns:
        Scalar, ``>= 0`` (up to rounding), possibly ``inf``.

    Raises:
        ValueError: if ``p`` or ``q`` is not a non-empty 1-D array, or they differ in shape; when
            concrete, if either has negative or non-finite entries or does not sum to 1 (when
            traced, such a law makes the result NaN).
    """
    p, q = _two_laws("p", p, "q", q)
    on = p > 0
    safe_p = jnp.where(on, p, 1.0)
    safe_q = jnp.where(on, q, 1.0)
    kl = jnp.sum(jnp.where(on, p * (jnp.log(safe_p) - jnp.log(safe_q)), 0.0))
    return _checks.poison(_laws_ok(p, q), kl)


def total_variation(p: ArrayLike, q: ArrayLike) -> Array:
    r"""Total-variation distance :math:`\tfrac12 \sum_x |p(x) - q(x)|`, in ``[0, 1]``.

    Args:
        p: ``(M,)`` probability vector.
        q: ``(M,)`` probability vector.

    Returns:
        Scalar.

    Raises:
        ValueError: as :func:`kl_divergence`.
    """
    p, q = _two_laws("p", p, "q", q)
    return _checks.poison(_laws_ok(p, q), 0.5 * jnp.sum(jnp.abs(p - q)))


def entropy(p: ArrayLike) -> Array:
    r"""Shannon entropy :math:`-\sum_x p \log p` in nats, with :math:`0 \log 0 = 0`.

    Args:
        p: ``(M,)`` probability vector.

    Returns:
        Scalar in ``[0, log M]``.

    Raises:
        ValueError: if ``p`` is not a non-empty 1-D array; when concrete, if it has negative or
            non-finite entries or does not sum to 1 (when traced, the result is NaN instead).
    """
    _checks.probability_vector("p", p)
    (p,) = _float(p)
    on = p > 0
    h = -jnp.sum(jnp.where(on, p * jnp.log(jnp.where(on, p, 1.0)), 0.0))
    return _checks.poison(_laws_ok(p), h)


def expected_reward(p: ArrayLike, rewards: ArrayLike) -> Array:
    r"""Mean reward :math:`\sum_x p(x) r(x)` over the states with :math:`p(x) > 0`.

    States with zero probability do not contribute, even when their reward is infinite or NaN.

    Args:
        p: ``(M,)`` probability vector.
        rewards: ``(M,)`` reward of each state.

    Returns:
        Scalar.

    Raises:
        ValueError: if ``p`` is not a non-empty 1-D array, ``rewards`` does not have the shape of
            ``p``; when ``p`` is concrete, if it is not a probability vector (when traced, the
            result is NaN instead).
    """
    if jnp.ndim(rewards) != 1 or jnp.shape(rewards) != jnp.shape(p):
        raise ValueError(
            f"`rewards` must have the shape (M,) of `p`; got {jnp.shape(rewards)} and "
            f"{jnp.shape(p)}.")
    _checks.probability_vector("p", p)
    p, rewards = _float(p, rewards)
    return _checks.poison(_laws_ok(p), jnp.sum(jnp.where(p > 0, p * rewards, 0.0)))


# --------------------------------------------------------------------------------------------
# Gaussians
# --------------------------------------------------------------------------------------------


def _gaussian_args(mean0, cov0, mean1, cov1) -> tuple[Array, Array, Array, Array]:
    for name, mean in (("mean0", mean0), ("mean1", mean1)):
        if jnp.ndim(mean) != 1 or jnp.shape(mean)[0] == 0:
            raise ValueError(
                f"`{name}` must be 1-D with shape (d,), d >= 1; got shape {jnp.shape(mean)}.")
    if jnp.shape(mean0) != jnp.shape(mean1):
        raise ValueError(
            f"`mean0` and `mean1` must have the same shape (d,); got {jnp.shape(mean0)} and "
            f"{jnp.shape(mean1)}.")
    d = jnp.shape(mean0)[0]
    for name, cov in (("cov0", cov0), ("cov1", cov1)):
        if jnp.shape(cov) != (d, d):
            raise ValueError(
                f"`{name}` must have shape (d, d) = {(d, d)} to match the means; got "
                f"{jnp.shape(cov)}.")
    mean0, cov0, mean1, cov1 = _float(mean0, cov0, mean1, cov1)
    sym = lambda s: 0.5 * (s + s.T)  # noqa: E731
    return mean0, sym(cov0), mean1, sym(cov1)


def gaussian_kl(mean0: ArrayLike, cov0: ArrayLike, mean1: ArrayLike, cov1: ArrayLike) -> Array:
    r"""Closed-form :math:`\mathrm{KL}(\mathcal{N}(m_0, S_0) \,\|\, \mathcal{N}(m_1, S_1))` in nats.

    Computed from Cholesky factors as a sum of non-negative terms (see the module docstring), so
    the result keeps its relative accuracy when the two Gaussians are close.

    Args:
        mean0: ``(d,)`` mean of the first Gaussian.
        cov0: ``(d, d)`` symmetric positive-definite covariance of the first Gaussian (only its
            symmetric part ``(S + S^T) / 2`` is used).
        mean1: ``(d,)`` mean of the second Gaussian.
        cov1: ``(d, d)`` symmetric positive-definite covariance of the second Gaussian.

    Returns:
        Scalar ``>= 0``; NaN when a covariance is not positive definite (its Cholesky fails).

    Raises:
        ValueError: if a mean is not 1-D, the means differ in shape, or a covariance is not
            ``(d, d)``.
    """
    mean0, cov0, mean1, cov1 = _gaussian_args(mean0, cov0, mean1, cov1)
    chol0 = jnp.linalg.cholesky(cov0)
    chol1 = jnp.linalg.cholesky(cov1)
    a = solve_triangular(chol1, chol0, lower=True)  # L1^{-1} L0, lower triangular
    z = solve_triangular(chol1, mean1 - mean0, lower=True)
    ell = jnp.log(jnp.diagonal(chol0)) - jnp.log(jnp.diagonal(chol1))  # log A_jj
    off = jnp.sum(jnp.square(jnp.tril(a, -1)))
    diag = jnp.sum(jnp.maximum(jnp.expm1(2.0 * ell) - 2.0 * ell, 0.0))
    return 0.5 * (jnp.sum(z * z) + off + diag)


def _psd_sqrt(s: Array) -> Array:
    """Symmetric square root V diag(sqrt(max(w, 0))) V^T of a symmetric matrix."""
    w, v = jnp.linalg.eigh(s)
    return jnp.matmul(v * jnp.sqrt(jnp.maximum(w, 0.0))[None, :], v.T,
                      precision=jax.lax.Precision.HIGHEST)


def gaussian_w2(mean0: ArrayLike, cov0: ArrayLike, mean1: ArrayLike, cov1: ArrayLike) -> Array:
    r"""**Squared** 2-Wasserstein distance :math:`W_2^2` between two Gaussians.

    .. math::
        W_2^2 = \|m_0 - m_1\|^2
          + \mathrm{tr}\big(S_0 + S_1 - 2 (S_1^{1/2} S_0 S_1^{1/2})^{1/2}\big).

    Take ``jnp.sqrt`` of the result for :math:`W_2` itself. Matrix square roots come from a
    symmetric eigendecomposition with negative eigenvalues (rounding) clipped at 0, so positive
    semi-definite (singular) covariances are allowed. The trace term loses absolute accuracy of
    order ``eps * (tr S0 + tr S1)`` to cancellation; the result is clipped at 0.

    Args:
        mean0: ``(d,)`` mean of the first Gaussian.
        cov0: ``(d, d)`` symmetric positive semi-definite covariance of the first Gaussian (only
            its symmetric part is used).
        mean1: ``(d,)`` mean of the second Gaussian.
        cov1: ``(d, d)`` symmetric positive semi-definite covariance of the second Gaussian.

    Returns:
        Scalar :math:`W_2^2 \ge 0` (squared distance, in squared units of the samples).

    Raises:
        ValueError: as :func:`gaussian_kl`.
    """
    mean0, cov0, mean1, cov1 = _gaussian_args(mean0, cov0, mean1, cov1)
    root1 = _psd_sqrt(cov1)
    cross = jnp.matmul(jnp.matmul(root1, cov0, precision=jax.lax.Precision.HIGHEST), root1,
                       precision=jax.lax.Precision.HIGHEST)
    cross_eigs = jnp.linalg.eigvalsh(0.5 * (cross + cross.T))
    trace_root = jnp.sum(jnp.sqrt(jnp.maximum(cross_eigs, 0.0)))
    diff = mean0 - mean1
    value = jnp.sum(diff * diff) + jnp.trace(cov0) + jnp.trace(cov1) - 2.0 * trace_root
    return jnp.maximum(value, 0.0)


# --------------------------------------------------------------------------------------------
# Maximum mean discrepancy
# --------------------------------------------------------------------------------------------


def median_bandwidth(x: ArrayLike, y: ArrayLike) -> Array:
    """Median-heuristic bandwidth: median pairwise distance of the pooled (capped) samples.

    Pools the first ``MEDIAN_MAX_POINTS`` (1,000) rows of ``x`` and of ``y`` (so the cost is at most
    O(2000^2 d), whatever n and m) and returns the median of ``|z_i - z_j|`` over pairs ``i < j``.
    The rows should be in random order (iid draws are), since only the first ones are used.

    Args:
        x: ``(n, d)`` samples, ``n >= 1``.
        y: ``(m, d)`` samples, ``m >= 1``; ``n + m >= 2``.

    Returns:
        Scalar ``h >= 0`` (0 when most pooled points coincide).

    Raises:
        ValueError: if ``x`` or ``y`` is not 2-D with at least one row, or they differ in ``d``.
    """
    _samples("x", x)
    _samples("y", y)
    _same_dim("x", x, "y", y)
    x, y = _float(x, y)
    z = jnp.concatenate([x[:MEDIAN_MAX_POINTS], y[:MEDIAN_MAX_POINTS]], axis=0)
    if z.shape[0] < 2:
        raise ValueError(f"`x` and `y` must hold at least 2 points together; got {z.shape[0]}.")
    z = z - jnp.mean(z, axis=0)[None, :]
    dist = jnp.sqrt(_sq_dists(z, z))
    n = z.shape[0]
    upper = (jax.lax.broadcasted_iota(jnp.int32, (n, n), 0)
             < jax.lax.broadcasted_iota(jnp.int32, (n, n), 1))
    return jnp.nanmedian(jnp.where(upper, dist, jnp.nan))


def _rbf(d2: Array, gamma: Array) -> Array:
    """exp(-gamma d2), with k = 1 at d2 = 0 also for gamma = inf (bandwidth 0)."""
    return jnp.where(d2 > 0, jnp.exp(-d2 * gamma), 1.0)


def mmd_rbf(x: ArrayLike, y: ArrayLike, *, bandwidth: ArrayLike | None = None) -> Array:
    r"""Unbiased (U-statistic) squared MMD between two samples, Gaussian kernel.

    .. math::
        \widehat{\mathrm{MMD}}^2_u = \frac{1}{n(n-1)} \sum_{i \ne j} k(x_i, x_j)
          + \frac{1}{m(m-1)} \sum_{i \ne j} k(y_i, y_j) - \frac{2}{nm} \sum_{i, j} k(x_i, y_j),
        \qquad k(a, b) = e^{-\|a - b\|^2 / (2 h^2)}.

    An unbiased estimate of :math:`\mathrm{MMD}^2 \ge 0`: a single value can be slightly
    negative, and two samples of the same law give values scattered around 0 with a standard
    deviation of order :math:`1/n`. Cost O((n + m)^2 d) time and O((n + m)^2) memory.

    Args:
        x: ``(n, d)`` samples, ``n >= 2``.
        y: ``(m, d)`` samples, ``m >= 2``.
        bandwidth: scalar ``h >= 0`` (possibly traced). ``None`` uses the median heuristic
            :func:`median_bandwidth` (median pairwise distance of the pooled first 1,000 rows of
            each set). ``h = 0`` gives the limit kernel ``k(a, b) = 1[a = b]``.

    Returns:
        Scalar squared MMD estimate (can be negative).

    Raises:
        ValueError: if ``x`` or ``y`` is not 2-D with at least 2 rows, they differ in ``d``, or
            ``bandwidth`` is not a non-negative scalar.
    """
    _samples("x", x, minimum=2)
    _samples("y", y, minimum=2)
    _same_dim("x", x, "y", y)
    if bandwidth is not None:
        _checks.scalar("bandwidth", bandwidth, minimum=0.0)
    x, y = _float(x, y)
    h = median_bandwidth(x, y) if bandwidth is None else jnp.asarray(bandwidth, x.dtype)
    n, m = x.shape[0], y.shape[0]
    center = (jnp.sum(x, axis=0) + jnp.sum(y, axis=0)) / (n + m)
    x = x - center[None, :]
    y = y - center[None, :]
    gamma = 0.5 / jnp.square(h)

    def off_diagonal_mean(a: Array) -> Array:
        k = _rbf(_sq_dists(a, a), gamma)
        k = jnp.where(jnp.eye(a.shape[0], dtype=bool), 0.0, k)
        return jnp.sum(k) / (a.shape[0] * (a.shape[0] - 1))

    kxy = jnp.mean(_rbf(_sq_dists(x, y), gamma))
    value = off_diagonal_mean(x) + off_diagonal_mean(y) - 2.0 * kxy
    if bandwidth is not None and not _checks.is_concrete(bandwidth):
        value = _checks.poison(_checks.scalar_ok(bandwidth, minimum=0.0), value)
    return value


# --------------------------------------------------------------------------------------------
# Modes
# --------------------------------------------------------------------------------------------


def _mode_args(x, centers) -> tuple[Array, Array]:
    _samples("x", x)
    if jnp.ndim(centers) != 2:
        raise ValueError(
            f"`centers` must be 2-D with shape (C, d); got shape {jnp.shape(centers)}.")
    if jnp.shape(centers)[0] == 0:
        raise ValueError(f"`centers` must have at least one row; got shape {jnp.shape(centers)}.")
    _same_dim("x", x, "centers", centers)
    return _float(x, centers)


def nearest_mode(x: ArrayLike, centers: ArrayLike) -> Array:
    """Index of the nearest centre (Euclidean) of each sample.

    Args:
        x: ``(n, d)`` samples, ``n >= 1``.
        centers: ``(C, d)`` mode centres, ``C >= 1``.

    Returns:
        ``(n,)`` int32 in ``[0, C)``: the nearest centre, the first one on ties; ``-1`` for a
        sample with a non-finite coordinate (it belongs to no mode).

    Raises:
        ValueError: if ``x`` is not 2-D with at least one row, ``centers`` is not 2-D with at least
            one row, or they differ in ``d``.
    """
    x, centers = _mode_args(x, centers)
    shift = jnp.mean(centers, axis=0)
    d2 = _sq_dists(x - shift[None, :], centers - shift[None, :])
    index = jnp.argmin(d2, axis=1).astype(jnp.int32)
    finite = jnp.all(jnp.isfinite(x), axis=1)
    return jnp.where(finite, index, -1)


def mode_shares(x: ArrayLike, centers: ArrayLike) -> Array:
    """Fraction of the samples whose nearest centre is each centre.

    Args:
        x: ``(n, d)`` samples, ``n >= 1``.
        centers: ``(C, d)`` mode centres, ``C >= 1``.

    Returns:
        ``(C,)`` fractions of the ``n`` samples (floating dtype of the inputs). They sum to 1 when
        every sample is finite; samples with a non-finite coordinate count in no mode, so in general
        the shares sum to the fraction of finite samples.

    Raises:
        ValueError: as :func:`nearest_mode`.
    """
    x, centers = _mode_args(x, centers)
    index = nearest_mode(x, centers)
    one_hot = jax.nn.one_hot(index, centers.shape[0], dtype=x.dtype)  # -1 -> all zeros
    return jnp.mean(one_hot, axis=0)


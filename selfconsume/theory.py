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
:math:`h`). In :math:`t = s + \log w(x)` the integrand of state :math:`x` is a Gumbel shape
:math:`e^{t - e^t}` of width O(1), so it is negligible outside the window
:math:`[v(x) - c - \log K,\, v(x) + 4]`, :math:`v = -\log w \ge 0`, with :math:`c = 36` in float64
and 20 in float32 (relative truncation error below :math:`e^{-c}`). The ``num_nodes`` nodes are
spread uniformly over the union of these windows, cut at :math:`s_{\max}`, the point where
:math:`\phi^{K-1}` falls below :math:`e^{-60}` if that comes before :math:`\max_{p>0} v + 4`:
levels closer than :math:`c + \log K + 4` form one cluster, and the gaps between clusters
(negligible integrand) are skipped, so that :math:`h` depends on the total width of the
clusters, not on :math:`\beta` times the reward spread. Left of each cluster the integrand is
:math:`a e^{s} + b e^{2s}` up to relative :math:`O(K e^{s - v})` terms; that tail is summed
analytically (a geometric continuation of the nodes), which lets each cluster's nodes start only
:math:`c/3 + \log K` before its first level. The clusters are found from a histogram of
:math:`-\log w` (4096 bins) while its range is below about :math:`5 \times 10^4` nats, by a sort
beyond, and not at all when one uniform grid is already fine. :math:`\log\phi` is evaluated as
:math:`\log(1 - \mathbb{E}_p[-\mathrm{expm1}(-u w)])` so that it stays accurate near
:math:`\phi = 1` (large K). Cost: :math:`O(M \times` ``num_nodes`` :math:`)`, independent of K
(plus :math:`O(M \log M)` for the sort at huge ranges). Accuracy limit: :math:`h` grows with the
number of well-separated clusters of levels (about 11 nats of nodes each in float32, 16 in
float64) and with the width of a continuous spread; :func:`quadrature_step` reports it.

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

**Ecosystems** (:func:`ecosystem_map`, :func:`ecosystem_trajectory`,
:func:`ecosystem_fixed_point`; here M *models* on S states). Model :math:`i` has the law
:math:`p_i`, the reward :math:`r_i` (one column of the reward table), its curator (factor
:math:`H^i`) and real fraction :math:`a_i`; each trains on a mixture of the models' curated
samples given by a row-stochastic interaction matrix :math:`W` (:math:`W_{ij} \ge 0`,
:math:`\sum_j W_{ij} = 1`):

.. math::
    p'_i = a_i\, p_{\rm data} + (1 - a_i) \sum_j W_{ij}\, p_j H^j_{p_j}[r_j].

``M = 1`` is :func:`retrain_map`. Facts checked by :func:`check_ecosystem`:
:math:`\sum_x p_i H^i = 1`; with :math:`\pi W = \pi` (:math:`\pi \ge 0`, :math:`\sum \pi_i = 1`),
one shared reward and monotone curators, pure curation raises every upper tail
:math:`P(r \ge \ell)` of the mixture :math:`\sum_i \pi_i p_i` (since
:math:`\sum_i \pi_i p'_i = \sum_j \pi_j p_j H^j`); :math:`p^i_t \ge a_i p_{\rm data}`, so
:math:`\mathrm{KL}(p_{\rm data} \| p^i_t) \le \log(1/a_i)` for :math:`t \ge 1`; and the fixed
point.

**Drifting preferences** (:func:`drift_trajectory`; co-evolving preferences, Wei, Xie, Zhu and
Zhang). A reward linear in features :math:`\Phi` (S x F) whose weights follow the model:

.. math::
    r_t = \Phi w_t,\quad p_{t+1} = a\, p_{\rm data} + (1-a)\, p_t H_{p_t}[r_t],\quad
    w_{t+1} = (1 - \eta)\, w_t + \eta\, \Phi^\top p_{t+1}.

**Validation** (the rule of :mod:`selfconsume._checks`). Shapes, ranks and static integers raise
``ValueError`` at trace time. Values are checked by the outermost public call: concrete
probability vectors (finite, non-negative, summing to one), rewards (finite), ``beta`` (``>= 0``,
inf allowed) and ``real_fraction`` (in ``[0, 1]``; ``(0, 1]`` for :func:`fixed_point`) raise
``ValueError`` at once; when they are traced (``jit``, ``vmap``, ``scan``) an invalid value makes
every floating entry of the result NaN (:func:`selfconsume._checks.poison`), one row at a time
under ``vmap``, and :func:`check_theorems` then reports ``holds: False`` with NaN slack. The
check is one reduction over the traced inputs, and nothing for concrete ones; calls made inside
the package on values already checked skip it. The ecosystem functions treat ``interaction``
(row-stochastic, within the tolerance of a probability vector) and per-model ``beta`` and
``real_fraction`` (scalars or ``(M,)``) alike. Dot products feeding expectations request
``Precision.HIGHEST`` (full float32 on accelerators).
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from selfconsume import _checks
from selfconsume import curators as curators_lib
from selfconsume import reward_models as rm_lib
from selfconsume._choice import scaled_rewards
from selfconsume._quadrature import (finite_k_factor, quadrature_grid,
                                     support_max, tilt_factor)
from selfconsume.types import Array, ArrayLike

__all__ = [
    "curation_factor",
    "quadrature_step",
    "curated",
    "retrain_map",
    "trajectory",
    "reward_model_trajectory",
    "limit",
    "fixed_point",
    "reward_gain_bound",
    "adversarial_threshold",
    "check_theorems",
    "real_fraction_from_lambda",
    "lambda_from_real_fraction",
    "ecosystem_map",
    "ecosystem_trajectory",
    "ecosystem_fixed_point",
    "check_ecosystem",
    "drift_trajectory",
]


# --------------------------------------------------------------------------------------------
# Conversions and input handling
# --------------------------------------------------------------------------------------------


def _rates(name: str, x: Array, *, maximum: float | None, allowed: str) -> Array:
    """Elementwise range check of a conversion's input: ``0 <= x`` (``<= maximum``), not NaN.

    Concrete: raises ``ValueError`` naming ``name``. Traced: the predicate, elementwise (the
    conversions act entry by entry, so only the invalid entries become NaN).
    """
    if _checks.is_concrete(x):
        a = np.asarray(x, np.float64)
        bad = np.isnan(a) | (a < 0) | ((a > maximum) if maximum is not None else False)
        if np.any(bad):
            raise ValueError(f"`{name}` must be {allowed}; got {float(a[bad].flat[0])!r}"
                             + (f" ({int(bad.sum())} invalid entries)" if a.ndim else "") + ".")
        return True
    ok = x >= 0
    return ok & (x <= maximum) if maximum is not None else ok


def real_fraction_from_lambda(lam: ArrayLike) -> Array:
    r"""Converts the paper's synthetic-to-real ratio :math:`\lambda` to ``real_fraction`` = 1/(1+λ).

    ``lam = jnp.inf`` (fully synthetic) gives 0. Elementwise; ``lam`` must be ``>= 0`` (a concrete
    negative or NaN entry raises ``ValueError``, a traced one gives NaN).
    """
    lam = jnp.asarray(lam, dtype=jnp.result_type(float))
    ok = _rates("lam", lam, maximum=None, allowed=">= 0 (inf allowed)")
    return _checks.poison(ok, 1.0 / (1.0 + lam))


def lambda_from_real_fraction(real_fraction: ArrayLike) -> Array:
    r"""Converts ``real_fraction`` :math:`a` to the paper's :math:`\lambda = (1-a)/a` (inf at 0).

    Elementwise; ``real_fraction`` must be in ``[0, 1]`` (a concrete entry outside, or NaN, raises
    ``ValueError``, a traced one gives NaN).
    """
    a = jnp.asarray(real_fraction, dtype=jnp.result_type(float))
    ok = _rates("real_fraction", a, maximum=1.0, allowed="in [0, 1]")
    return _checks.poison(ok, (1.0 - a) / a)


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
        raise ValueError(f"`rewards` must be finite on the support; got {_checks.show(rewards)} "
                         "with non-finite entries.")
    dtype = jnp.promote_types(jnp.asarray(p).dtype, jnp.asarray(rewards).dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = jnp.result_type(float)
    return jnp.asarray(p, dtype), jnp.asarray(rewards, dtype)


def _prepare_table(p, rewards, curator, beta, *, name: str = "p"):
    """:func:`_prepare` for a curator: rewards ``(M,)`` or ``(M, R)``, returned as ``(M, R)``;
    checks that ``beta`` is left at its default and that the curator's columns exist."""
    curators_lib.check(curator, beta=None if _INSIDE.get() else beta)
    r = jnp.asarray(rewards)
    if r.ndim not in (1, 2):
        raise ValueError(f"`rewards` must be (M,) or (M, R) with a curator; got shape {r.shape}.")
    table = r if r.ndim == 2 else r[:, None]
    if jnp.ndim(p) == 1 and table.shape[0] != jnp.shape(p)[0]:
        raise ValueError(f"`rewards` must have one row per state of `{name}`; got shapes "
                         f"{r.shape} and {jnp.shape(p)}.")
    _checks.probability_vector(name, p)
    if _checks.is_concrete(table) and not np.all(np.isfinite(np.asarray(table))):
        raise ValueError(f"`rewards` must be finite on the support; got {_checks.show(table)} "
                         "with non-finite entries.")
    for column in curator.columns():
        curators_lib.read_column(table[:1], column)  # raises for a column that does not exist
    dtype = jnp.promote_types(jnp.asarray(p).dtype, table.dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = jnp.result_type(float)
    return jnp.asarray(p, dtype), jnp.asarray(table, dtype)


def _prepare_any(p, rewards, curator, beta, *, name: str = "p"):
    """``(p, rewards, like)``: :func:`_prepare` without a curator, :func:`_prepare_table` with
    one; ``like`` is the 1-D array that ``p_data`` must match."""
    if curator is None:
        p, rewards = _prepare(p, rewards, name=name)
        return p, rewards, rewards
    p, table = _prepare_table(p, rewards, curator, beta, name=name)
    return p, table, p


def _curator_ok(curator):
    """The curator's traced validity at a public entry point (``True`` inside the package)."""
    return True if _INSIDE.get() or curator is None else curator.ok()


_INSIDE = contextvars.ContextVar("selfconsume_theory_inside", default=False)


@contextlib.contextmanager
def _inside():
    """Marks what is traced from inside a public function whose inputs are already checked: the
    public functions called there skip the traced value checks (one check per outermost call)."""
    token = _INSIDE.set(True)
    try:
        yield
    finally:
        _INSIDE.reset(token)


def _values_ok(*, probs=(), rewards=None, beta=None, real_fraction=None,
               positive_fraction: bool = False):
    """The traced validity predicate of the value checks, built from the traced arguments only.

    Concrete arguments have been checked already (and raised); a Python ``True`` comes back when
    nothing is traced, so that :func:`selfconsume._checks.poison` adds no operation.

    Args:
        probs: probability vectors (finite, non-negative, summing to one).
        rewards: rewards, which must be finite.
        beta: inverse temperature, ``>= 0`` (inf allowed).
        real_fraction: in ``[0, 1]``, or in ``(0, 1]`` with ``positive_fraction``.
    """
    def traced(x):
        return x is not None and not _checks.is_concrete(x)

    ok = True
    for p in probs:
        if traced(p):
            ok = ok & _checks.probability_vector_ok(p)
    if traced(rewards):
        ok = ok & jnp.all(jnp.isfinite(rewards))
    if traced(beta):
        ok = ok & _checks.scalar_ok(beta, minimum=0.0)
    if traced(real_fraction):
        ok = ok & _checks.scalar_ok(real_fraction, minimum=0.0, maximum=1.0)
        if positive_fraction:
            ok = ok & (jnp.asarray(real_fraction) > 0)
    return ok


def _traced_ok(**values):
    """:func:`_values_ok` at a public entry point; ``True`` when called from inside the package
    (:func:`_inside`) on values that the outermost call has checked."""
    return True if _INSIDE.get() else _values_ok(**values)


def _check_k(k):
    return _checks.static_int("k", k, minimum=1, allow_inf=True)


def _check_beta(beta, dtype):
    _checks.scalar("beta", beta, minimum=0.0)
    return jnp.asarray(beta, dtype)


def curation_factor(
    p: ArrayLike, rewards: ArrayLike, *, k, beta: ArrayLike = 1.0, num_nodes: int | None = None,
    curator=None,
) -> Array:
    r"""The curation factor :math:`H_p(x)`: the kept sample's law is :math:`p H_p`.

    Exact for any integer ``k`` up to the quadrature error, the exponential tilt for
    ``k = jnp.inf``, and the best-of-k law for ``beta = jnp.inf``. The quadrature error falls
    like :math:`e^{-\pi^2/h}` with the node spacing :math:`h` (:func:`quadrature_step`): the
    nodes cover the range of :math:`-\log w(x)` over each cluster of reward levels, widened by
    about :math:`10 + \log k` nats in float32 and :math:`16 + \log k` in float64, and skip the
    gaps between clusters. At the default ``num_nodes``, measured absolute errors of the curated
    law stay below 1e-11 (float64) and 1e-6 (float32) while ``beta`` times the reward spread is
    below ~70 nats, and below 5e-8 (float64) and 6e-6 (float32) for 8 isolated levels at any
    distance apart (best-of-k curation at huge ``beta``). A continuous spread of rewards over
    hundreds of nats, or many isolated levels, makes :math:`h` large and the result inaccurate:
    check :func:`quadrature_step` (below 0.6 in float32, 0.35 in float64 is at the resolution;
    above ~1.5 errors reach 1e-3) and raise ``num_nodes`` (the cost is linear in it).

    Args:
        p: ``(M,)`` probabilities of the current model (non-negative, summing to 1).
        rewards: ``(M,)`` finite rewards of the states.
        k: static number of candidates, an integer ``>= 1`` or ``jnp.inf``.
        beta: scalar inverse temperature ``>= 0`` (``jnp.inf`` allowed), possibly traced.
        num_nodes: static number of quadrature nodes in ``log u``; default 256 in float64 and 128
            in float32.
        curator: a :class:`~selfconsume.curators.Curator` (``None``: ``luce(beta)``); its exact
            factor is documented in :mod:`selfconsume.curators`. With a curator ``rewards`` may be
            ``(M, R)`` and ``beta`` stays at its default. For a curator that keeps m > 1 per
            group, :math:`p H` is the law of one kept sample drawn uniformly among them; for
            ``top_fraction`` it is the population limit.

    Returns:
        ``(M,)`` the factor :math:`H`, with :math:`\sum_x p(x) H(x) = 1`. States with ``p = 0``
        get the factor they would have (``inf`` above the support for ``k = beta = inf``).
    """
    k = _check_k(k)
    if curator is not None:
        p, table = _prepare_table(p, rewards, curator, beta)
        ok = _traced_ok(probs=(p,), rewards=table) & _curator_ok(curator)
        h = (jnp.ones_like(p) if k == 1 else
             curator.factor(p, table, k=k, num_nodes=_num_nodes(num_nodes, p.dtype)))
        return _checks.poison(ok, h)
    p, rewards = _prepare(p, rewards)
    beta = _check_beta(beta, p.dtype)
    num_nodes = _num_nodes(num_nodes, p.dtype)
    ok = _traced_ok(probs=(p,), rewards=rewards, beta=beta)
    if k == 1:
        h = jnp.ones_like(p)
    elif math.isinf(k):
        h = tilt_factor(p, rewards, beta)
    else:
        h = finite_k_factor(p, rewards, beta, k=k, num_nodes=num_nodes)
    return _checks.poison(ok, h)


def _num_nodes(num_nodes, dtype) -> int:
    if num_nodes is None:
        return 256 if dtype == jnp.float64 else 128
    return _checks.static_int("num_nodes", num_nodes, minimum=8)


def quadrature_step(
    p: ArrayLike, rewards: ArrayLike, *, k, beta: ArrayLike = 1.0, num_nodes: int | None = None
) -> Array:
    r"""The node spacing :math:`h` in :math:`\log u` of the quadrature in :func:`curation_factor`.

    Its error falls like :math:`e^{-\pi^2/h}`: at the dtype's resolution for :math:`h \le 0.6`
    in float32 and :math:`h \le 0.35` in float64, about 1e-5 at 0.9 and 1e-3 at 1.5. Larger
    values mean ``num_nodes`` is too small for this ``beta`` and spread of rewards.

    Args:
        p, rewards, k, beta, num_nodes: as in :func:`curation_factor`.

    Returns:
        Scalar :math:`h`; 0 where no quadrature is used (``k`` = 1 or inf, ``beta = inf``).
    """
    k = _check_k(k)
    p, rewards = _prepare(p, rewards)
    beta = _check_beta(beta, p.dtype)
    num_nodes = _num_nodes(num_nodes, p.dtype)
    ok = _traced_ok(probs=(p,), rewards=rewards, beta=beta)
    if k == 1 or math.isinf(k):
        return _checks.poison(ok, jnp.zeros((), p.dtype))
    finite = jnp.isfinite(beta)
    h = quadrature_grid(p, rewards, jnp.where(finite, beta, 1.0), k=k, num_nodes=num_nodes)[-1]
    return _checks.poison(ok, jnp.where(finite, h, 0.0))


def curated(
    p: ArrayLike, rewards: ArrayLike, *, k, beta: ArrayLike = 1.0, num_nodes: int | None = None,
    curator=None,
) -> Array:
    r"""The law of the kept sample, :math:`p H_p`, renormalised to sum to 1 exactly.

    Args:
        p: ``(M,)`` probabilities. rewards: ``(M,)`` rewards. k, beta, num_nodes, curator: as in
            :func:`curation_factor`.

    Returns:
        ``(M,)`` probabilities; zero wherever ``p`` is zero.
    """
    if curator is not None and not _INSIDE.get():
        curators_lib.check(curator, beta=beta)  # inside, curation_factor skips the beta check
    with _inside():
        h = curation_factor(p, rewards, k=k, beta=beta, num_nodes=num_nodes,
                            curator=curator)  # checks the args
    ok = _traced_ok(probs=(p,), rewards=rewards, beta=beta) & _curator_ok(curator)
    p = jnp.asarray(p, h.dtype)
    q = jnp.where(p > 0, p * h, 0.0)
    return _checks.poison(ok, q / jnp.sum(q))


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
    curator=None,
) -> Array:
    r"""One generation of fully expressive retraining: :math:`a\, p_{\rm data} + (1-a)\, p H_p`.

    Args:
        p: ``(M,)`` current model. rewards: ``(M,)`` (or ``(M, R)`` with a curator). k, beta,
            num_nodes, curator: as in :func:`curation_factor`.
        p_data: ``(M,)`` the real-data law; required unless ``real_fraction`` is 0.
        real_fraction: scalar :math:`a \in [0, 1]`, possibly traced.

    Returns:
        ``(M,)`` the next model, renormalised.
    """
    p, rewards, like = _prepare_any(p, rewards, curator, beta)
    p_data = _prepare_real(p_data, real_fraction, like)
    with _inside():
        q = _mix(p_data, real_fraction, curated(p, rewards, k=k, beta=beta, num_nodes=num_nodes,
                                                curator=curator))
    ok = (_traced_ok(probs=(p, p_data), rewards=rewards, beta=beta, real_fraction=real_fraction)
          & _curator_ok(curator))
    return _checks.poison(ok, q)


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
    curator=None,
) -> Array:
    """Iterates :func:`retrain_map` with ``lax.scan``; ``beta``, ``real_fraction`` and the
    curator's rates may be vmapped.

    Args:
        p0: ``(M,)`` initial model. rewards: ``(M,)`` (or ``(M, R)`` with a curator).
        num_generations: static number of generations T >= 0.
        k, beta, p_data, real_fraction, num_nodes, curator: as in :func:`retrain_map`.

    Returns:
        ``(T + 1, M)``; row 0 is ``p0``, row t the model after t generations.
    """
    num_generations = _checks.static_int("num_generations", num_generations, minimum=0)
    k = _check_k(k)
    p0, rewards, like = _prepare_any(p0, rewards, curator, beta, name="p0")
    beta = _check_beta(beta, p0.dtype)
    p_data = _prepare_real(p_data, real_fraction, like)
    ok = (_traced_ok(probs=(p0, p_data), rewards=rewards, beta=beta, real_fraction=real_fraction)
          & _curator_ok(curator))
    with _inside():
        ps = _trajectory(p0, rewards, beta, p_data, jnp.asarray(real_fraction, p0.dtype),
                         curator, num_generations=num_generations, k=k, num_nodes=num_nodes)
    return _checks.poison(ok, ps)


def _trajectory(*args, **kwargs):
    """Jitted at call time (nothing is jitted at import); jit's cache reuses the program."""
    return jax.jit(_trajectory_impl, static_argnames=("num_generations", "k", "num_nodes"))(*args, **kwargs)


def _trajectory_impl(p0, rewards, beta, p_data, real_fraction, curator, *, num_generations, k,
                     num_nodes):
    def step(p, _):
        q = _mix(p_data, real_fraction, curated(p, rewards, k=k, beta=beta, num_nodes=num_nodes,
                                                curator=curator))
        return q, q

    _, ps = lax.scan(step, p0, None, length=num_generations)
    return jnp.concatenate([p0[None], ps], axis=0)


def reward_model_trajectory(
    p0: ArrayLike,
    rewards: ArrayLike,
    *,
    num_generations: int,
    k,
    reward_model,
    feedback=None,
    beta: ArrayLike = 1.0,
    p_data: ArrayLike | None = None,
    real_fraction: ArrayLike = 0.0,
    num_nodes: int | None = None,
    curator=None,
) -> tuple[Array, Array]:
    r"""The loop of :func:`selfconsume.run` with a learned tabular reward and infinitely many
    comparisons: at every refit generation ``t`` (``feedback.refit_every``) the reward is
    :math:`u_t = ` :func:`selfconsume.reward_models.population_fit` of :math:`p_t` (else
    :math:`u_t = u_{t-1}`), and :math:`p_{t+1} = a\, p_{\rm data} + (1-a)\, p_t H_{p_t}[u_t]`, the
    curator reading the learned reward.

    Args:
        p0: ``(M,)`` initial model. rewards: ``(M,)`` the true rewards (what the judge sees).
        num_generations: static T >= 0.
        k, beta, p_data, real_fraction, num_nodes, curator: as in :func:`trajectory` (the
            curation of the generated candidates, on the learned reward).
        reward_model: a :func:`selfconsume.reward_models.tabular` model.
        feedback: :func:`selfconsume.reward_models.feedback` of pairs, ``flip`` ``"random"`` or
            ``"margin"``.

    Returns:
        ``(ps, us)``, both ``(T + 1, M)``: the models and the learned rewards that curate them.
    """
    num_generations = _checks.static_int("num_generations", num_generations, minimum=0)
    k = _check_k(k)
    fb = rm_lib.feedback() if feedback is None else feedback
    p0, table, like = _prepare_any(p0, rewards, curator, beta, name="p0")
    true = table if curator is None else table[:, 0]
    if curator is not None and table.shape[1] != 1:
        raise ValueError(f"`rewards` must be one column (M,) with a learned reward; got shape "
                         f"{jnp.shape(rewards)}.")
    beta = _check_beta(beta, p0.dtype)
    p_data = _prepare_real(p_data, real_fraction, like)
    a = jnp.asarray(real_fraction, p0.dtype)
    ok = (_traced_ok(probs=(p0, p_data), rewards=true, beta=beta, real_fraction=real_fraction)
          & _curator_ok(curator))
    fit = lambda p: rm_lib.population_fit(p, true, reward_model=reward_model, feedback=fb)  # noqa

    def step(carry, t):
        p, u = carry
        u = lax.cond(fb.due(t), fit, lambda _: u, p)
        with _inside():
            q = _mix(p_data, a, curated(p, u if curator is None else u[:, None], k=k, beta=beta,
                                        num_nodes=num_nodes, curator=curator))
        return (q, u), (p, u)

    generations = jnp.arange(num_generations + 1, dtype=jnp.int32)
    _, (ps, us) = lax.scan(step, (p0, jnp.zeros_like(p0)), generations)
    return _checks.poison(ok, ps), _checks.poison(ok, us)


def limit(p0: ArrayLike, rewards: ArrayLike) -> Array:
    r"""The limit of pure curation (``beta > 0``, ``k >= 2``): :math:`p_0(\cdot \mid r = r^*)`.

    :math:`r^*` is the largest reward on the support of ``p0``; tied states keep their initial
    proportions.

    Returns:
        ``(M,)`` probabilities.
    """
    p0, rewards = _prepare(p0, rewards, name="p0")
    top = (p0 > 0) & (rewards == support_max(p0, rewards))
    q = jnp.where(top, p0, 0.0)
    return _checks.poison(_traced_ok(probs=(p0,), rewards=rewards), q / jnp.sum(q))


def _tilt_fixed_point(*args, **kwargs):
    """Jitted at call time (nothing is jitted at import); jit's cache reuses the program."""
    return jax.jit(_tilt_fixed_point_impl, static_argnames=())(*args, **kwargs)


def _tilt_fixed_point_impl(p_data: Array, rewards: Array, beta: Array, a: Array) -> Array:
    """Closed form for K = inf: p* = a p_d Z / (Z - (1-a) w), Z = (1-a) + a*theta, theta in (0, 1]."""
    logw = scaled_rewards(rewards, beta, support_max(p_data, rewards))
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
    curator=None,
) -> Array:
    r"""The fixed point of :func:`retrain_map` reached from ``p_data`` (support of ``p_data``).

    For ``k = jnp.inf`` with the Luce or top-m curator the closed form :math:`p^* = p_{\rm data} / (1 + \lambda - \lambda
    e^{br}/Z)` with :math:`Z` found by bisection (100 steps). For finite ``k`` the map is iterated
    from ``p_data`` until two successive iterates differ by less than ``tol`` in L1 (default 1e-12
    in float64, 1e-6 in float32); if that does not happen within ``max_iterations`` the result is
    all NaN, so that non-convergence can never pass for an answer (other curators: likewise, for
    any ``k``).

    Args:
        p_data: ``(M,)`` real-data law. rewards: ``(M,)`` (or ``(M, R)`` with a curator).
        k, beta, num_nodes, curator: as in :func:`curation_factor`.
        real_fraction: scalar in ``(0, 1]``, possibly traced.
        tol: L1 stopping tolerance for finite ``k``.
        max_iterations: static iteration cap for finite ``k``.

    Returns:
        ``(M,)`` probabilities.
    """
    k = _check_k(k)
    p_data, rewards, like = _prepare_any(p_data, rewards, curator, beta, name="p_data")
    beta = _check_beta(beta, p_data.dtype)
    _prepare_real(p_data, real_fraction, like, allow_zero=False)
    a = jnp.asarray(real_fraction, p_data.dtype)
    tilt = curator is None or isinstance(curator, (curators_lib.Luce, curators_lib.TopM))
    if math.isinf(k) and tilt:
        if curator is not None:
            rewards = curators_lib.read_column(rewards, curator.column)
            beta = jnp.asarray(curator.beta, p_data.dtype)
        star = _tilt_fixed_point(p_data, rewards, beta, a)
    else:
        if tol is None:
            tol = 1e-12 if p_data.dtype == jnp.float64 else 1e-6
        max_iterations = _checks.static_int("max_iterations", max_iterations, minimum=1)
        with _inside():
            star = _iterated_fixed_point(p_data, rewards, beta, a,
                                         jnp.asarray(tol, p_data.dtype), curator, k=k,
                                         max_iterations=max_iterations, num_nodes=num_nodes)
    ok = _traced_ok(probs=(p_data,), rewards=rewards, beta=beta, real_fraction=real_fraction,
                    positive_fraction=True) & _curator_ok(curator)
    return _checks.poison(ok, star)


def _iterated_fixed_point(*args, **kwargs):
    """Jitted at call time (nothing is jitted at import); jit's cache reuses the program."""
    return jax.jit(_iterated_fixed_point_impl, static_argnames=("k", "max_iterations", "num_nodes"))(*args, **kwargs)


def _iterated_fixed_point_impl(p_data, rewards, beta, a, tol, curator, *, k, max_iterations,
                               num_nodes):
    def body(carry):
        p, _, i = carry
        q = _mix(p_data, a, curated(p, rewards, k=k, beta=beta, num_nodes=num_nodes,
                                    curator=curator))
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
    r_star = support_max(p, rewards)
    w = jnp.exp(scaled_rewards(rewards, beta, r_star))
    w = jnp.where(p > 0, w, 0.0)
    mean = jnp.sum(p * w)
    var = jnp.sum(p * (w - mean) ** 2)
    factor = 1.0 if math.isinf(k) else (k - 1) / k
    ok = _traced_ok(probs=(p,), rewards=rewards, beta=beta)
    return _checks.poison(ok, factor * var * jnp.exp(beta * r_star))


def adversarial_threshold(p: ArrayLike, rewards: ArrayLike, *, k, curator,
                          num_nodes: int | None = None) -> Array:
    r"""The flip rate beyond which adversarial curation lowers the expected reward in one step.

    For :func:`~selfconsume.curators.adversarial` (``base``, :math:`\varepsilon`) the expected
    reward of the column ``base`` reads changes by :math:`(1 - \varepsilon) G_+ -
    \varepsilon G_-` (exactly: the kept law is linear in :math:`\varepsilon`), with
    :math:`G_+ = \mathbb{E}_{p H[r]}[r] - \mathbb{E}_p[r]` and :math:`G_- = \mathbb{E}_p[r] -
    \mathbb{E}_{p H[-r]}[r]` for ``base``'s factor :math:`H`; it rises iff
    :math:`\varepsilon < \varepsilon^* = G_+ / (G_+ + G_-)`.

    Args:
        p: ``(M,)`` the current model. rewards: ``(M,)`` or ``(M, R)``.
        k, num_nodes: as in :func:`curation_factor`.
        curator: an adversarial curator (its ``eps`` is not used) or the base curator itself.

    Returns:
        Scalar :math:`\varepsilon^*` in ``[0, 1]``; NaN where the base does not move the
        expected reward (:math:`G_+ + G_- = 0`, e.g. ``beta = 0``).
    """
    base = curator.base if isinstance(curator, curators_lib.Adversarial) else curator
    k = _check_k(k)
    p, table = _prepare_table(p, rewards, base, 1.0)
    column = base.columns()[0] if len(base.columns()) == 1 else base.monotone()
    if column is False:
        raise ValueError(f"`curator` must read one reward column to have a threshold; got "
                         f"{base.name!r} reading {base.columns()}.")
    r = curators_lib.read_column(table, column)
    with _inside():
        up = curated(p, table, k=k, num_nodes=num_nodes, curator=base) @ r
        down = curated(p, -table, k=k, num_nodes=num_nodes, curator=base) @ r
    mean = jnp.sum(p * r)
    gain, loss = up - mean, mean - down
    ok = _traced_ok(probs=(p,), rewards=table) & _curator_ok(base)
    return _checks.poison(ok, jnp.where(gain + loss > 0, gain / (gain + loss), jnp.nan))


# --------------------------------------------------------------------------------------------
# Numerical checks of the theorems
# --------------------------------------------------------------------------------------------


def _default_tolerance(dtype) -> float:
    return 1e-9 if dtype == jnp.float64 else 1e-4


def _pure_curation_diagnostics(*args, **kwargs):
    """Jitted at call time (nothing is jitted at import); jit's cache reuses the program."""
    return jax.jit(_pure_curation_diagnostics_impl,
                   static_argnames=("k", "num_generations", "num_nodes", "facts", "column"))(
        *args, **kwargs)


def _pure_curation_diagnostics_impl(p0, table, curator, *, k, num_generations, num_nodes,
                                    facts=("monotone_reward", "limit", "reward_gain_bound"),
                                    column=None):
    """Everything facts 1-3 need, computed in one compiled program (shifted units w <= 1).

    The inputs are traced here: invalid ones make every slack NaN (the checks then fail).
    """
    ok = _values_ok(probs=(p0,), rewards=table) & curator.ok()
    with _inside():
        slacks = _pure_curation_slacks(p0, table, curator, k=k, num_generations=num_generations,
                                       num_nodes=num_nodes, facts=facts, column=column)
    return _checks.poison(ok, slacks)


def _pure_curation_slacks(p0, table, curator, *, k, num_generations, num_nodes, facts, column):
    """The slacks of ``facts`` on the pure-curation trajectory of ``curator`` from ``p0``.

    ``level_sets`` checks that H is equal on the level sets of the reward columns the curator
    reads, and, for a monotone curator, non-decreasing in the reward of its column; the other
    facts are evaluated only when they apply (:func:`_facts`). ``column`` is the monotone column
    found on the concrete curator (``False`` when none): inside this compiled function the rates
    are traced, and a rate-dependent answer (``adversarial`` at ``eps = 0``) is not available.
    """
    ps = trajectory(p0, table, num_generations=num_generations, k=k, num_nodes=num_nodes,
                    curator=curator)
    hs = jax.vmap(lambda p: curation_factor(p, table, k=k, num_nodes=num_nodes,
                                            curator=curator))(ps[:-1])
    out = {}
    # 1. normalisation, and H a function of the rewards read (non-decreasing when monotone).
    out["normalization"] = -jnp.max(jnp.abs(jnp.sum(ps[:-1] * hs, axis=1) - 1.0))
    read = [0 if c is None else c for c in curator.columns()]
    keys = table[:, read]  # (M, columns read)
    order = jnp.lexsort(tuple(keys[:, i] for i in range(keys.shape[1] - 1, -1, -1)))
    h_sorted, k_sorted = hs[:, order], keys[order]
    scale = jnp.max(hs, axis=1, keepdims=True)
    step = (h_sorted[:, 1:] - h_sorted[:, :-1]) / scale
    tied = jnp.all(k_sorted[1:] == k_sorted[:-1], axis=1)[None, :]
    level_slack = jnp.min(jnp.where(tied, -jnp.abs(step), jnp.inf))
    if column is not False:  # a single column read: sorted by it, H must not decrease
        level_slack = jnp.minimum(level_slack, jnp.min(step))
    out["level_sets"] = jnp.where(jnp.isinf(level_slack), 0.0, level_slack)
    if "monotone_reward" in facts:
        rewards = curators_lib.read_column(table, column)
        # 2a. first-order stochastic dominance: every upper tail P(r >= level) grows.
        desc = jnp.argsort(-rewards)
        tails = jnp.cumsum(ps[:, desc], axis=1)
        out["monotone_reward"] = jnp.min(tails[1:] - tails[:-1])
        # 3. convergence to p0( . | r = r*): level-set proportions kept, TV non-increasing.
        lim = limit(p0, rewards)
        top = lim > 0
        in_top = jnp.where(top[None, :], ps, 0.0)
        in_top = in_top / jnp.sum(in_top, axis=1, keepdims=True)
        level_dev = jnp.max(0.5 * jnp.sum(jnp.abs(in_top - lim[None, :]), axis=1))
        tv = 0.5 * jnp.sum(jnp.abs(ps - lim[None, :]), axis=1)
        tv_rise = jnp.max(tv[1:] - tv[:-1]) if num_generations > 0 else jnp.zeros((), tv.dtype)
        limit_slack = -jnp.maximum(level_dev, jnp.maximum(tv_rise, 0.0))
        if "tilt" in facts:  # K = inf Luce / top-m: p_t proportional to p0 exp(t b r)
            logw = scaled_rewards(rewards, curator.beta, support_max(p0, rewards))
            t = jnp.arange(num_generations + 1, dtype=p0.dtype)[:, None]
            logits = jnp.where(t == 0, 0.0, t * logw[None, :]) + jnp.log(p0)[None, :]
            tilted = jax.nn.softmax(jnp.where(p0[None, :] > 0, logits, -jnp.inf), axis=1)
            tilt_dev = jnp.max(0.5 * jnp.sum(jnp.abs(ps - tilted), axis=1))
            limit_slack = jnp.minimum(limit_slack, -tilt_dev)
        out["limit"] = limit_slack
    if "reward_gain_bound" in facts:
        # 2b. gain in E[w] against (K-1)/K Var[w] / w*, with w* = 1 in shifted units.
        rewards = curators_lib.read_column(table, column)
        logw = scaled_rewards(rewards, curator.beta, support_max(p0, rewards))
        w = jnp.where(p0 > 0, jnp.exp(jnp.minimum(logw, 0.0)), 0.0)
        mean = jnp.matmul(ps, w, precision=lax.Precision.HIGHEST)
        var = jnp.matmul(ps, w * w, precision=lax.Precision.HIGHEST) - mean**2
        factor = 1.0 if math.isinf(k) else (k - 1) / k
        out["reward_gain_bound"] = jnp.min((mean[1:] - mean[:-1]) - factor * var[:-1])
    return out


_ORDER = ("normalization", "level_sets", "monotone_reward", "reward_gain_bound", "limit",
          "kl_bound", "fixed_point")


def _facts(curator, k) -> tuple[str, ...]:
    """The facts of pure curation that apply to ``curator`` beyond normalisation and level sets:
    dominance and the limit for a curator monotone in one reward column, the tilt for K = inf
    Luce or top-m, the gain bound for Luce."""
    facts = []
    if curator.monotone() is not False:
        facts += ["monotone_reward", "limit"]
        if math.isinf(k) and isinstance(curator, (curators_lib.Luce, curators_lib.TopM)):
            facts.append("tilt")
    if isinstance(curator, curators_lib.Luce):
        facts.append("reward_gain_bound")
    return tuple(facts)


_NOT_APPLICABLE = {
    "monotone_reward": "the curator is not monotone in one reward column",
    "limit": "the curator is not monotone in one reward column",
    "reward_gain_bound": "the bound is proved for the Luce rule",
}


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
    curator=None,
) -> dict[str, dict[str, float | bool]]:
    r"""Checks the facts of the theory numerically on exact trajectories, for any curator.

    A host-level function (it returns Python values); the trajectories are computed in compiled
    code. Each entry's ``slack`` is the margin by which the statement holds, minimised over
    generations and states: ``rhs - lhs`` for an inequality ``lhs <= rhs``, ``-|deviation|`` for
    an equality; ``holds`` is ``slack >= -tol`` (``tol`` defaults to 1e-9 in float64 and 1e-4 in
    float32, the accumulated rounding of these computations).

    Facts 1-3 are evaluated on the pure-curation trajectory from ``p0`` (whatever
    ``real_fraction`` is): they are statements about the curation operator.

    * ``normalization``: :math:`\sum_x p_t H_t = 1` at every generation.
    * ``level_sets``: :math:`H_t` is constant on the level sets of the rewards the curator reads
      and, for a curator monotone in one reward column, non-decreasing in it (differences
      relative to :math:`\max H_t`).
    * ``monotone_reward``: :math:`P_{t+1}(r \ge \ell) \ge P_t(r \ge \ell)` for every level
      :math:`\ell`, i.e. :math:`\mathbb{E}[g(r)]` grows for every non-decreasing :math:`g`.
    * ``reward_gain_bound``: :math:`\mathbb{E}_{t+1}[w] - \mathbb{E}_t[w] \ge \frac{K-1}{K}
      \mathrm{Var}_t[w]` with :math:`w = e^{b(r - r^*)}` (the stated bound divided by
      :math:`e^{br^*}`).
    * ``limit``: inside the top level set :math:`p_t \propto p_0`, and the total variation to
      :func:`limit` never increases; for ``k = inf`` (Luce, top-m) also
      :math:`p_t \propto p_0 e^{tbr}`.

    ``monotone_reward`` and ``limit`` apply to curators monotone in one reward column (Luce,
    top-m, Thurstone, top-fraction, and sequential stages or mixtures of those on one column;
    adversarial only at ``eps = 0``); ``reward_gain_bound`` to the Luce rule. The others are
    reported as not applicable (``holds: None``, ``applicable: False``, with a ``reason``),
    never as failing; :mod:`selfconsume.curators` says what holds instead.

    With ``p_data`` and ``real_fraction > 0``, on the trajectory with real data:

    * ``kl_bound``: :math:`\mathrm{KL}(p_{\rm data} \| p_t) \le \log(1/a)` for :math:`t \ge 1`.
    * ``fixed_point``: :math:`\|\mathrm{retrain\_map}(p^*) - p^*\|_1 = 0` for
      :math:`p^*` = :func:`fixed_point`.

    Args:
        p0: ``(M,)`` initial model. rewards: ``(M,)`` (or ``(M, R)`` with a curator). k, beta,
            num_nodes, curator: as in :func:`curation_factor`; the curator's rates must be
            concrete.
        p_data: ``(M,)`` real-data law (needed for facts 4).
        real_fraction: scalar in ``[0, 1]``.
        num_generations: static number of generations T.
        tol: the tolerance of ``holds``.

    A NaN slack never holds: the compiled diagnostics make every slack NaN when their (traced)
    inputs fail the value checks, and ``fixed_point`` is NaN when it does not converge.

    Returns:
        ``{name: {"holds": bool, "slack": float, "applicable": True}}`` for the facts above
        (``{"holds": None, "slack": nan, "applicable": False, "reason": str}`` for those that
        do not apply to the curator).

    Raises:
        ValueError: for invalid arguments (as :func:`trajectory`), and for traced ones: this is a
            host-level function, to be called outside ``jit`` and ``vmap``.
    """
    k = _check_k(k)
    if curator is None:
        p0, rewards = _prepare(p0, rewards, name="p0")
        beta = _check_beta(beta, p0.dtype)
        used, table, like = curators_lib.Luce(beta=beta), rewards[:, None], rewards
    else:
        p0, table = _prepare_table(p0, rewards, curator, beta, name="p0")
        used, rewards, like = curator, table, p0
    num_generations = _checks.static_int("num_generations", num_generations, minimum=1)
    p_data = _prepare_real(p_data, real_fraction, like)
    leaves = [("p0", p0), ("rewards", rewards), ("beta", beta), ("p_data", p_data),
              ("real_fraction", real_fraction)]
    leaves += [("curator", leaf) for leaf in jax.tree_util.tree_leaves(used)]
    for name, value in leaves:
        if value is not None and not _checks.is_concrete(value):
            raise ValueError(
                f"`{name}` must be concrete: check_theorems is a host-level function that returns "
                "Python values; call it outside jit/vmap/scan; got a traced value.")
    if tol is None:
        tol = _default_tolerance(p0.dtype)
    facts = _facts(used, k)
    computed = _pure_curation_diagnostics(p0, table, used, k=k, num_generations=num_generations,
                                          num_nodes=num_nodes, facts=facts,
                                          column=used.monotone())
    slacks = {name: float(value) for name, value in computed.items()}
    a = float(real_fraction)
    if p_data is not None and a > 0:
        options = dict(k=k, beta=beta, num_nodes=num_nodes, curator=curator)
        ps = trajectory(p0, rewards, num_generations=num_generations, p_data=p_data,
                        real_fraction=a, **options)
        on = p_data > 0
        log_data = jnp.log(jnp.where(on, p_data, 1.0))
        kl = jnp.sum(jnp.where(on[None, :], p_data[None, :] * (log_data[None, :] - jnp.log(ps[1:])),
                               0.0), axis=1)
        slacks["kl_bound"] = float(jnp.min(math.log(1.0 / a) - kl))
        star = fixed_point(p_data, rewards, real_fraction=a, **options)
        if bool(jnp.all(jnp.isfinite(star))):
            image = retrain_map(star, rewards, p_data=p_data, real_fraction=a, **options)
            slacks["fixed_point"] = -float(jnp.sum(jnp.abs(image - star)))
        else:  # fixed_point did not converge: the fact is not confirmed
            slacks["fixed_point"] = math.nan
    out = {}
    for name in _ORDER:
        if name in slacks:
            s = slacks[name]
            out[name] = {"holds": bool(not math.isnan(s) and s >= -tol), "slack": s,
                         "applicable": True}
        elif name in _NOT_APPLICABLE:
            out[name] = {"holds": None, "slack": math.nan, "applicable": False,
                         "reason": _NOT_APPLICABLE[name]}
    return out


# --------------------------------------------------------------------------------------------
# Ecosystems of models (here M models on S states)
# --------------------------------------------------------------------------------------------


class _Ecosystem(NamedTuple):
    """The validated inputs of an ecosystem call (host-side; not a pytree)."""

    ps: Array | None  # (M, S) or None
    rows: Array  # (M, S) model i's reward
    columns: tuple  # the reward column each model reads
    betas: Array  # (M,)
    p_data: Array | None  # (S,)
    fractions: Array  # (M,)
    weights: Array  # (M, M) rows renormalised
    curator: object  # the curators stacked on a leading axis of M, or None
    curators: tuple | None  # the per-model curators (unstacked), or None
    ok: object  # traced validity (True when everything is concrete)


def _ecosystem_floating(*xs):
    dtype = jnp.result_type(*[jnp.asarray(x).dtype for x in xs if x is not None])
    return dtype if jnp.issubdtype(dtype, jnp.floating) else jnp.result_type(float)


def _probability_rows(name: str, ps, num_states: int):
    """Checks ``(M, S)`` probability rows (concrete: raises naming the row); returns the traced
    predicate (``True`` when concrete)."""
    if jnp.ndim(ps) != 2 or 0 in jnp.shape(ps):
        raise ValueError(f"`{name}` must be (M, S): one probability vector per model, M >= 1 and "
                         f"S >= 1; got shape {jnp.shape(ps)}.")
    tol = 1e-4 * max(1.0, math.sqrt(num_states) / 10)
    if _checks.is_concrete(ps):
        a = np.asarray(ps, np.float64)
        if not np.all(np.isfinite(a)):
            raise ValueError(f"`{name}` must be finite; got {_checks.show(ps)} with non-finite "
                             "entries.")
        if np.any(a < 0):
            i = int(np.argmin(a.min(axis=1)))
            raise ValueError(f"`{name}` must be non-negative; got minimum entry "
                             f"{float(a.min()):.6g} in row {i}.")
        sums = a.sum(axis=1)
        bad = np.flatnonzero(np.abs(sums - 1.0) > tol)
        if bad.size:
            raise ValueError(f"every row of `{name}` must sum to 1 (within {tol:g}); got row "
                             f"{int(bad[0])} summing to {float(sums[bad[0]]):.8g}.")
        return True
    p = jnp.asarray(ps)
    return (jnp.all(jnp.isfinite(p)) & jnp.all(p >= 0)
            & jnp.all(jnp.abs(jnp.sum(p, axis=1, dtype=jnp.result_type(p.dtype, jnp.float32))
                              - 1.0) <= tol))


def _per_model(name: str, value, num_models: int, dtype, *, minimum: float, maximum=None,
               positive: bool = False):
    """A scalar or ``(M,)`` rate, broadcast to ``(M,)``; (values, traced validity)."""
    v = jnp.asarray(value)
    if v.ndim > 1 or (v.ndim == 1 and v.shape[0] != num_models):
        raise ValueError(f"`{name}` must be a scalar or have shape ({num_models},), one per "
                         f"model; got shape {v.shape}.")
    if maximum is None:
        allowed = f">= {minimum:g} (inf allowed)"
    else:
        allowed = f"in {'(' if positive else '['}{minimum:g}, {maximum:g}]"
    if _checks.is_concrete(v):
        a = np.asarray(v, np.float64)
        bad = np.isnan(a) | (a < minimum) | ((a > maximum) if maximum is not None else False)
        if positive:
            bad = bad | (a <= minimum)
        if np.any(bad):
            where = f" (model {int(np.flatnonzero(np.atleast_1d(bad))[0])})" if a.ndim else ""
            raise ValueError(f"`{name}` must be {allowed}"
                             f"{' for every model here' if positive else ''}; got "
                             f"{float(a[bad].flat[0])!r}{where}.")
        ok = True
    else:
        ok = jnp.all(_checks.scalar_ok(v, minimum=minimum, maximum=maximum))
        if positive:
            ok = ok & jnp.all(v > minimum)
    return jnp.broadcast_to(v.astype(dtype), (num_models,)), ok


def _interaction(interaction, num_models: int, dtype):
    """Checks the (M, M) row-stochastic ``interaction``; (rows renormalised, traced validity)."""
    w = jnp.asarray(interaction)
    if w.shape != (num_models, num_models):
        raise ValueError(f"`interaction` must have shape (M, M) = ({num_models}, {num_models}): "
                         f"row i holds the weights model i gives to every model's curated "
                         f"samples; got shape {w.shape}.")
    tol = 1e-4 * max(1.0, math.sqrt(num_models) / 10)
    allowed = "a row-stochastic matrix (entries >= 0, every row summing to 1)"
    if _checks.is_concrete(w):
        a = np.asarray(w, np.float64)
        if not np.all(np.isfinite(a)):
            raise ValueError(f"`interaction` must be {allowed}; got {int(np.sum(~np.isfinite(a)))}"
                             " non-finite entries.")
        if np.any(a < 0):
            raise ValueError(f"`interaction` must be {allowed}; got a negative entry "
                             f"{float(a.min()):.6g}.")
        sums = a.sum(axis=1)
        bad = np.flatnonzero(np.abs(sums - 1.0) > tol)
        if bad.size:
            raise ValueError(f"`interaction` must be {allowed} (within {tol:g}); got row "
                             f"{int(bad[0])} summing to {float(sums[bad[0]]):.8g}.")
        ok = True
    else:
        ok = (jnp.all(jnp.isfinite(w)) & jnp.all(w >= 0)
              & jnp.all(jnp.abs(jnp.sum(w, axis=1) - 1.0) <= tol))
    w = w.astype(dtype)
    return w / jnp.sum(w, axis=1, keepdims=True), ok


def _reward_rows(rewards, columns, num_models: int, num_states: int, dtype):
    """Model i's reward ``(M, S)`` from ``(S,)`` or ``(S, R)`` rewards; (rows, columns, ok)."""
    r = jnp.asarray(rewards)
    if r.ndim not in (1, 2) or r.shape[0] != num_states:
        raise ValueError(f"`rewards` must be (S,) or (S, R) with S = {num_states} states (one row "
                         f"per state); got shape {r.shape}.")
    if r.ndim == 1:
        if columns is not None:
            raise ValueError(f"`columns` must be None with one reward (rewards of shape (S,)); "
                             f"got columns={columns!r}.")
        columns = (0,) * num_models
        r = r[:, None]
    elif columns is None:
        if r.shape[1] != 1:
            raise ValueError(f"`columns` is required with {r.shape[1]} reward columns: a tuple of "
                             f"{num_models} column indices, model i reading rewards[:, "
                             f"columns[i]]; got columns=None.")
        columns = (0,) * num_models
    else:
        if not isinstance(columns, (tuple, list)) or len(columns) != num_models:
            raise ValueError(f"`columns` must be a tuple of {num_models} column indices, one per "
                             f"model (static); got {columns!r}.")
        for c in columns:
            if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or not (
                    0 <= c < r.shape[1]):
                raise ValueError(f"`columns` must hold integers in [0, {r.shape[1] - 1}] for "
                                 f"rewards with {r.shape[1]} columns; got {columns!r}.")
        columns = tuple(int(c) for c in columns)
    if _checks.is_concrete(r):
        if not np.all(np.isfinite(np.asarray(r))):
            raise ValueError(f"`rewards` must be finite on the support; got {_checks.show(r)} "
                             "with non-finite entries.")
        ok = True
    else:
        ok = jnp.all(jnp.isfinite(r))
    return jnp.asarray(r, dtype)[:, np.asarray(columns)].T, columns, ok


def _one_column_curator(name: str, curator, beta):
    """Checks a curator that reads the one reward column handed to it (its ``column`` None)."""
    curators_lib.check(curator, beta=beta)
    if curator.columns() != (None,):
        raise ValueError(f"`{name}` must read the one reward column it is handed (its own "
                         f"`column` None: the reward of a model is chosen by `columns`, a "
                         f"drifting reward is features @ w); got {curator.name!r} reading "
                         f"columns {curator.columns()}.")
    return curator


def _ecosystem_curators(curator, beta, num_models: int):
    """(per-model curators, the same stacked on a leading axis of M, traced validity)."""
    if curator is None:
        return None, None, True
    if isinstance(curator, curators_lib.Curator):
        items = (curator,) * num_models
    elif isinstance(curator, (tuple, list)):
        items = tuple(curator)
        if len(items) != num_models:
            raise ValueError(f"`curator` must be one curator or a sequence of M = {num_models} "
                             f"curators, one per model; got {len(items)}.")
    else:
        raise ValueError(f"`curator` must be None, a selfconsume.curators curator or a sequence "
                         f"of {num_models} of them; got {type(curator).__name__}.")
    if jnp.ndim(beta) != 0:
        raise ValueError("`beta` must be left at its default with a curator (the curator holds "
                         f"its own rates); got beta of shape {jnp.shape(beta)}.")
    ok = True
    for i, c in enumerate(items):
        _one_column_curator("curator" if len(set(map(id, items))) == 1 else f"curator[{i}]",
                            c, beta)
        if c.signature() != items[0].signature():
            raise ValueError(f"`curator` must hold curators of one structure (only their rates "
                             f"may differ per model); curator[{i}] is {c.signature()}, "
                             f"curator[0] is {items[0].signature()}.")
        if i == 0 or c is not items[i - 1]:
            ok = ok & c.ok()
    return items, curators_lib.stack(items, num=num_models), ok


def _prepare_ecosystem(ps, rewards, *, interaction, beta, p_data, real_fraction, columns,
                       curator, num_models=None, ps_name="ps", positive_fraction=False):
    """Validates the arguments shared by the ecosystem functions (module docstring's rule)."""
    if ps is not None:
        if jnp.ndim(ps) != 2 or 0 in jnp.shape(ps):
            raise ValueError(f"`{ps_name}` must be (M, S): one probability vector per model, "
                             f"M >= 1 and S >= 1; got shape {jnp.shape(ps)}.")
        num_models, num_states = jnp.shape(ps)
    else:
        _checks.probability_vector("p_data", p_data)
        if jnp.ndim(interaction) != 2:
            raise ValueError(f"`interaction` must have shape (M, M); got shape "
                             f"{jnp.shape(interaction)}.")
        num_models, num_states = jnp.shape(interaction)[0], jnp.shape(p_data)[0]
    dtype = _ecosystem_floating(ps, rewards, p_data)
    ok = True if ps is None else _probability_rows(ps_name, ps, num_states)
    rows, columns, rewards_ok = _reward_rows(rewards, columns, num_models, num_states, dtype)
    weights, w_ok = _interaction(interaction, num_models, dtype)
    items, stacked, c_ok = _ecosystem_curators(curator, beta, num_models)
    betas, b_ok = _per_model("beta", beta, num_models, dtype, minimum=0.0)
    fractions, a_ok = _per_model("real_fraction", real_fraction, num_models, dtype, minimum=0.0,
                                 maximum=1.0, positive=positive_fraction)
    if p_data is None:
        if not _checks.is_concrete(real_fraction) or np.any(np.asarray(real_fraction) != 0):
            raise ValueError(f"`p_data` is required when `real_fraction` is not 0; got "
                             f"real_fraction={_checks.show(real_fraction)} and p_data=None.")
        d_ok = True
    else:
        _checks.probability_vector("p_data", p_data)
        if jnp.shape(p_data) != (num_states,):
            raise ValueError(f"`p_data` must have shape (S,) = ({num_states},); got shape "
                             f"{jnp.shape(p_data)}.")
        d_ok = True if _checks.is_concrete(p_data) else _checks.probability_vector_ok(p_data)
        p_data = jnp.asarray(p_data, dtype)
    ok = ok & rewards_ok & w_ok & c_ok & b_ok & a_ok & d_ok
    if _INSIDE.get():
        ok = True
    return _Ecosystem(None if ps is None else jnp.asarray(ps, dtype), rows, columns, betas,
                      p_data, fractions, weights, stacked, items, ok)


def _ecosystem_step(ps, rows, betas, p_data, fractions, weights, curator, *, k, num_nodes):
    """One generation of the ecosystem (traced, called under :func:`_inside`)."""
    def curate_one(p, r, b, c):
        if c is None:
            return curated(p, r, k=k, beta=b, num_nodes=num_nodes)
        return curated(p, r[:, None], k=k, num_nodes=num_nodes, curator=c)

    if ps.shape[0] == 1:
        qs = _over_models(curate_one, ps, rows, betas, curator)
    else:  # model by model: batched, the quadrature's branches would all run for every model
        qs = lax.map(lambda a: curate_one(*a), (ps, rows, betas, curator))
    mixed = jnp.matmul(weights, qs, precision=lax.Precision.HIGHEST)
    return _over_models(lambda a, m: _mix(p_data, a, m), fractions, mixed)


def _over_models(f, *args):
    """``jax.vmap(f)`` over the leading (model) axis of ``args``; with one model, ``f`` on that
    model directly, so that ``M = 1`` reproduces :func:`retrain_map` bit for bit (a batched
    reduction may round differently)."""
    if jax.tree_util.tree_leaves(args)[0].shape[0] == 1:
        out = f(*jax.tree_util.tree_map(lambda x: x[0], args))
        return jax.tree_util.tree_map(lambda x: x[None], out)
    return jax.vmap(f)(*args)


def ecosystem_map(
    ps: ArrayLike,
    rewards: ArrayLike,
    *,
    interaction: ArrayLike,
    k,
    beta: ArrayLike = 1.0,
    p_data: ArrayLike | None = None,
    real_fraction: ArrayLike = 0.0,
    columns: tuple[int, ...] | None = None,
    num_nodes: int | None = None,
    curator=None,
) -> Array:
    r"""One generation of an ecosystem of M models on S states, each training on the others'
    curated samples: :math:`p'_i = a_i\, p_{\rm data} + (1 - a_i) \sum_j W_{ij}\, p_j H^j_{p_j}`.

    Model j's curated law :math:`q_j = p_j H^j_{p_j}` is :func:`curated` of :math:`p_j` on its
    reward :math:`r_j` with its curator (Luce with :math:`\beta_j`, or ``curator[j]``); model i
    refits on the mixture of the curated laws given by row i of ``interaction``, mixed with real
    data at its rate :math:`a_i`. ``M = 1``, ``W = [[1]]`` is :func:`retrain_map`; ``W = I`` is M
    independent :func:`trajectory` steps.

    Args:
        ps: ``(M, S)`` the models, one probability vector per row.
        rewards: ``(S,)`` one reward read by every model, or ``(S, R)`` with ``columns``.
        interaction: ``(M, M)`` row-stochastic :math:`W` (entries ``>= 0``, rows summing to 1;
            rows are renormalised to sum to 1 exactly), possibly traced.
        k: static number of candidates, as in :func:`curation_factor`.
        beta: scalar or ``(M,)`` Luce inverse temperatures ``>= 0``, possibly traced; left at its
            default with a curator.
        p_data: ``(S,)`` the real-data law; required unless every ``real_fraction`` is 0.
        real_fraction: scalar or ``(M,)`` :math:`a_i \in [0, 1]`, possibly traced.
        columns: static tuple of M column indices, model i reading ``rewards[:, columns[i]]``;
            required when ``rewards`` has R > 1 columns, ``None`` for ``(S,)`` rewards.
        num_nodes: as in :func:`curation_factor`.
        curator: ``None`` (Luce with ``beta``), one curator shared by the models, or a sequence
            of M curators of one structure (:func:`selfconsume.curators.stack`: their rates may
            differ). A curator reads the one column of its model: its own ``column`` must be
            ``None``.

    Returns:
        ``(M, S)`` the next models; a traced invalid input (``interaction``, ``ps``, rates)
        makes every entry NaN.

    Raises:
        ValueError: for shapes, columns, curators, and concrete invalid values, naming the
            argument.
    """
    k = _check_k(k)
    eco = _prepare_ecosystem(ps, rewards, interaction=interaction, beta=beta, p_data=p_data,
                             real_fraction=real_fraction, columns=columns, curator=curator)
    with _inside():  # not jitted, as retrain_map: M = 1 runs its operations exactly
        out = _ecosystem_step(eco.ps, eco.rows, eco.betas, eco.p_data, eco.fractions, eco.weights,
                             eco.curator, k=k, num_nodes=num_nodes)
    return _checks.poison(eco.ok, out)


def _ecosystem_trajectory(*args, **kwargs):
    """Jitted at call time (nothing is jitted at import); jit's cache reuses the program."""
    return jax.jit(_ecosystem_trajectory_impl,
                   static_argnames=("num_generations", "k", "num_nodes"))(*args, **kwargs)


def _ecosystem_trajectory_impl(ps0, rows, betas, p_data, fractions, weights, curator, *,
                               num_generations, k, num_nodes):
    def step(ps, _):
        nxt = _ecosystem_step(ps, rows, betas, p_data, fractions, weights, curator, k=k,
                              num_nodes=num_nodes)
        return nxt, nxt

    _, out = lax.scan(step, ps0, None, length=num_generations)
    return jnp.concatenate([ps0[None], out], axis=0)


def ecosystem_trajectory(
    ps0: ArrayLike,
    rewards: ArrayLike,
    *,
    num_generations: int,
    interaction: ArrayLike,
    k,
    beta: ArrayLike = 1.0,
    p_data: ArrayLike | None = None,
    real_fraction: ArrayLike = 0.0,
    columns: tuple[int, ...] | None = None,
    num_nodes: int | None = None,
    curator=None,
) -> Array:
    """Iterates :func:`ecosystem_map` with ``lax.scan``; ``interaction``, ``beta``,
    ``real_fraction`` and the curators' rates may be traced and vmapped.

    Args:
        ps0: ``(M, S)`` the initial models.
        num_generations: static number of generations T >= 0.
        rewards, interaction, k, beta, p_data, real_fraction, columns, num_nodes, curator: as in
            :func:`ecosystem_map`.

    Returns:
        ``(T + 1, M, S)``; row 0 is ``ps0``, row t the models after t generations.
    """
    num_generations = _checks.static_int("num_generations", num_generations, minimum=0)
    k = _check_k(k)
    eco = _prepare_ecosystem(ps0, rewards, interaction=interaction, beta=beta, p_data=p_data,
                             real_fraction=real_fraction, columns=columns, curator=curator,
                             ps_name="ps0")
    with _inside():
        out = _ecosystem_trajectory(eco.ps, eco.rows, eco.betas, eco.p_data, eco.fractions,
                                    eco.weights, eco.curator, num_generations=num_generations,
                                    k=k, num_nodes=num_nodes)
    return _checks.poison(eco.ok, out)


def _ecosystem_fixed_point(*args, **kwargs):
    """Jitted at call time (nothing is jitted at import); jit's cache reuses the program."""
    return jax.jit(_ecosystem_fixed_point_impl,
                   static_argnames=("k", "max_iterations", "num_nodes"))(*args, **kwargs)


def _ecosystem_fixed_point_impl(rows, betas, p_data, fractions, weights, curator, tol, *, k,
                                max_iterations, num_nodes):
    def body(carry):
        ps, _, i = carry
        nxt = _ecosystem_step(ps, rows, betas, p_data, fractions, weights, curator, k=k,
                              num_nodes=num_nodes)
        return nxt, jnp.sum(jnp.abs(nxt - ps)), i + 1

    def cond(carry):
        _, change, i = carry
        return (change >= tol) & (i < max_iterations)

    ps0 = jnp.broadcast_to(p_data, rows.shape)
    init = (ps0, jnp.asarray(jnp.inf, p_data.dtype), jnp.zeros((), jnp.int32))
    ps, change, _ = lax.while_loop(cond, body, init)
    return jnp.where(change < tol, ps, jnp.nan)


def ecosystem_fixed_point(
    p_data: ArrayLike,
    rewards: ArrayLike,
    *,
    interaction: ArrayLike,
    k,
    real_fraction: ArrayLike,
    beta: ArrayLike = 1.0,
    columns: tuple[int, ...] | None = None,
    tol: float | None = None,
    max_iterations: int = 10_000,
    num_nodes: int | None = None,
    curator=None,
) -> Array:
    r"""The fixed point of :func:`ecosystem_map` reached from :math:`p_i = p_{\rm data}` for every
    model.

    The map is iterated until the L1 change summed over the models falls below ``tol`` (default
    1e-12 in float64, 1e-6 in float32); if that does not happen within ``max_iterations`` the
    result is all NaN (as :func:`fixed_point`), so that non-convergence never passes for an
    answer. With every :math:`a_i > 0` the map is a contraction in practice
    (:math:`p'_i \ge a_i p_{\rm data}`), but no rate is guaranteed.

    Args:
        p_data: ``(S,)`` the real-data law.
        rewards, interaction, k, beta, columns, num_nodes, curator: as in :func:`ecosystem_map`
            (M is the size of ``interaction``).
        real_fraction: scalar or ``(M,)``, in ``(0, 1]`` for every model, possibly traced.
        tol: L1 stopping tolerance (summed over the models).
        max_iterations: static iteration cap.

    Returns:
        ``(M, S)`` the fixed point, or all NaN.
    """
    k = _check_k(k)
    if p_data is None:
        raise ValueError("`p_data` is required for the fixed point; got None.")
    eco = _prepare_ecosystem(None, rewards, interaction=interaction, beta=beta, p_data=p_data,
                             real_fraction=real_fraction, columns=columns, curator=curator,
                             positive_fraction=True)
    dtype = eco.rows.dtype
    if tol is None:
        tol = 1e-12 if dtype == jnp.float64 else 1e-6
    max_iterations = _checks.static_int("max_iterations", max_iterations, minimum=1)
    with _inside():
        star = _ecosystem_fixed_point(eco.rows, eco.betas, eco.p_data, eco.fractions, eco.weights,
                                      eco.curator, jnp.asarray(tol, dtype), k=k,
                                      max_iterations=max_iterations, num_nodes=num_nodes)
    return _checks.poison(eco.ok, star)


def _ecosystem_diagnostics(*args, **kwargs):
    """Jitted at call time (nothing is jitted at import); jit's cache reuses the program."""
    return jax.jit(_ecosystem_diagnostics_impl,
                   static_argnames=("num_generations", "k", "num_nodes", "fixed",
                                    "max_iterations"))(*args, **kwargs)


def _ecosystem_diagnostics_impl(ps0, rows, betas, p_data, runs, fractions, weights, curator, tol,
                                *, num_generations, k, num_nodes, fixed, max_iterations):
    """Everything :func:`check_ecosystem` needs, in one compiled program: the trajectories for
    each row of ``runs`` (``(N, M)`` real fractions; a row of zeros is pure curation) with every
    model's curation factor at every generation, and, with ``fixed``, the fixed point for
    ``fractions`` and its image under the map."""
    def factor_one(p, r, b, c):
        if c is None:
            return curation_factor(p, r, k=k, beta=b, num_nodes=num_nodes)
        return curation_factor(p, r[:, None], k=k, num_nodes=num_nodes, curator=c)

    def run(a):
        def step(ps, _):
            hs = _over_models(factor_one, ps, rows, betas, curator)
            nxt = _ecosystem_step(ps, rows, betas, p_data, a, weights, curator, k=k,
                                  num_nodes=num_nodes)
            return nxt, (nxt, hs)

        _, (traj, hs) = lax.scan(step, ps0, None, length=num_generations)
        return jnp.concatenate([ps0[None], traj], axis=0), hs

    trajectories, factors = jax.vmap(run)(runs)
    out = {"trajectories": trajectories, "factors": factors}
    if fixed:
        star = _ecosystem_fixed_point_impl(rows, betas, p_data, fractions, weights, curator, tol,
                                           k=k, max_iterations=max_iterations,
                                           num_nodes=num_nodes)
        out["star"] = star
        out["image"] = _ecosystem_step(star, rows, betas, p_data, fractions, weights, curator,
                                       k=k, num_nodes=num_nodes)
    return out


def _stationary(weights) -> np.ndarray:
    r"""A left stationary vector :math:`\pi W = \pi`, :math:`\pi \ge 0`, :math:`\sum \pi = 1`
    (float64): the least-norm solution of :math:`\pi (W - I) = 0`, :math:`\pi 1 = 1`. The
    stationary vectors are the convex combinations of the stationary laws of the closed classes,
    which have disjoint supports, so the least-norm one is non-negative (rounding clipped)."""
    w = np.asarray(weights, np.float64)
    w = w / w.sum(axis=1, keepdims=True)
    m = w.shape[0]
    lhs = np.vstack([(w - np.eye(m)).T, np.ones((1, m))])
    rhs = np.zeros(m + 1)
    rhs[-1] = 1.0
    pi = np.clip(np.linalg.lstsq(lhs, rhs, rcond=None)[0], 0.0, None)
    return pi / pi.sum()


def _level_tails(ps: np.ndarray, r: np.ndarray) -> np.ndarray:
    """``(..., L)`` :math:`P(r \\ge \\ell)` at every distinct level :math:`\\ell` of ``r``."""
    order = np.argsort(-r, kind="stable")
    rs = r[order]
    ends = np.r_[np.flatnonzero(rs[1:] != rs[:-1]), rs.size - 1]
    return np.cumsum(ps[..., order], axis=-1)[..., ends]


_ECOSYSTEM_ORDER = ("normalization", "mixture_monotone", "kl_bound", "fixed_point")


def check_ecosystem(
    ps0: ArrayLike,
    rewards: ArrayLike,
    *,
    interaction: ArrayLike,
    k,
    beta: ArrayLike = 1.0,
    p_data: ArrayLike | None = None,
    real_fraction: ArrayLike = 0.0,
    columns: tuple[int, ...] | None = None,
    num_generations: int = 50,
    tol: float | None = None,
    num_nodes: int | None = None,
    curator=None,
) -> dict[str, dict[str, float | bool]]:
    r"""Checks the facts of ecosystem dynamics numerically on exact trajectories.

    A host-level function (it returns Python values; every input must be concrete), in the format
    of :func:`check_theorems`: ``slack`` is the margin by which a statement holds, minimised over
    generations, models and levels (``rhs - lhs`` for ``lhs <= rhs``, ``-|deviation|`` for an
    equality), and ``holds`` is ``slack >= -tol`` (``tol`` defaults to 1e-9 in float64 and 1e-4 in
    float32). A NaN slack never holds.

    * ``normalization``: :math:`\sum_x p^i_t H^i_t = 1` (every model's curated law sums to one)
      and :math:`\sum_x p^i_t = 1`, for every model and generation, on the pure-curation
      trajectory and, with real data, on the trajectory with it.
    * ``mixture_monotone``: on the pure-curation trajectory (:math:`a_i = 0`, whatever
      ``real_fraction`` is), with :math:`\pi` a left stationary vector of W
      (:math:`\pi W = \pi`, :math:`\pi \ge 0`, :math:`\sum_i \pi_i = 1`), the mixture
      :math:`m_t = \sum_i \pi_i p^i_t` satisfies :math:`P_{m_{t+1}}(r \ge \ell) \ge
      P_{m_t}(r \ge \ell)` at every reward level :math:`\ell`. Proof: :math:`\sum_i \pi_i p^i_{t+1}
      = \sum_j (\pi W)_j q_j = \sum_j \pi_j q_j`, and each monotone curator raises every upper
      tail of :math:`p_j` in :math:`q_j`. Applies when every model reads the same reward column
      and every curator is monotone in it (``curator.monotone() is not False``); a single model's
      tails need not rise (it may train on a model with a worse law).
    * ``kl_bound``: with ``p_data`` and :math:`a_i > 0`: :math:`\mathrm{KL}(p_{\rm data} \|
      p^i_t) \le \log(1/a_i)` for :math:`t \ge 1` and every model with :math:`a_i > 0`
      (:math:`p^i_t \ge a_i p_{\rm data}` pointwise).
    * ``fixed_point``: with every :math:`a_i > 0`: :math:`\sum_i \|\mathrm{ecosystem\_map}(p^*)_i
      - p^*_i\|_1 = 0` for :math:`p^*` = :func:`ecosystem_fixed_point` (NaN, failing, when it
      does not converge).

    Facts that do not apply are reported as ``{"holds": None, "slack": nan, "applicable": False,
    "reason": str}``, never as failing.

    Args:
        ps0: ``(M, S)`` initial models.
        rewards, interaction, k, beta, p_data, real_fraction, columns, num_nodes, curator: as in
            :func:`ecosystem_map`; all concrete.
        num_generations: static number of generations T >= 1.
        tol: the tolerance of ``holds``.

    Returns:
        ``{name: {"holds": bool, "slack": float, "applicable": True}}`` for the facts above.

    Raises:
        ValueError: for invalid or traced arguments.
    """
    k = _check_k(k)
    num_generations = _checks.static_int("num_generations", num_generations, minimum=1)
    eco = _prepare_ecosystem(ps0, rewards, interaction=interaction, beta=beta, p_data=p_data,
                             real_fraction=real_fraction, columns=columns, curator=curator,
                             ps_name="ps0")
    leaves = [("ps0", ps0), ("rewards", rewards), ("interaction", interaction), ("beta", beta),
              ("p_data", p_data), ("real_fraction", real_fraction)]
    leaves += [("curator", leaf) for leaf in jax.tree_util.tree_leaves(eco.curators)]
    for name, value in leaves:
        if value is not None and not _checks.is_concrete(value):
            raise ValueError(
                f"`{name}` must be concrete: check_ecosystem is a host-level function that "
                "returns Python values; call it outside jit/vmap/scan; got a traced value.")
    if tol is None:
        tol = _default_tolerance(eco.ps.dtype)
    fractions = np.asarray(eco.fractions, np.float64)
    with_data = p_data is not None and bool(np.any(fractions > 0))
    fixed = p_data is not None and bool(np.all(fractions > 0))
    dtype = eco.ps.dtype
    runs = jnp.stack([jnp.zeros_like(eco.fractions)] + ([eco.fractions] if with_data else []))
    with _inside():
        d = _ecosystem_diagnostics(
            eco.ps, eco.rows, eco.betas, eco.p_data, runs, eco.fractions, eco.weights,
            eco.curator, jnp.asarray(1e-12 if dtype == jnp.float64 else 1e-6, dtype),
            num_generations=num_generations, k=k, num_nodes=num_nodes, fixed=fixed,
            max_iterations=10_000)
    trajectories = np.asarray(d["trajectories"], np.float64)  # (runs, T + 1, M, S)
    factors = np.asarray(d["factors"], np.float64)  # (runs, T, M, S)
    slacks, reasons = {}, {}
    kept = np.sum(trajectories[:, :-1] * factors, axis=-1)
    slacks["normalization"] = -max(float(np.max(np.abs(kept - 1.0))),
                                   float(np.max(np.abs(trajectories.sum(axis=-1) - 1.0))))
    monotone = eco.curators is None or all(c.monotone() is not False for c in eco.curators)
    if len(set(eco.columns)) != 1:
        reasons["mixture_monotone"] = "the models read different reward columns"
    elif not monotone:
        reasons["mixture_monotone"] = "a curator is not monotone in the reward"
    else:
        pi = _stationary(eco.weights)
        mix = np.einsum("i,tis->ts", pi, trajectories[0])
        tails = _level_tails(mix, np.asarray(eco.rows[0], np.float64))
        slacks["mixture_monotone"] = float(np.min(tails[1:] - tails[:-1]))
    if not with_data:
        reasons["kl_bound"] = "needs p_data and real_fraction > 0 for some model"
    else:
        data = np.asarray(eco.p_data, np.float64)
        on = data > 0
        traj = trajectories[-1, 1:]  # (T, M, S), t >= 1
        log_ratio = np.log(np.where(on, data, 1.0)) - np.log(np.where(on, traj, 1.0))
        kl = np.sum(np.where(on, data * log_ratio, 0.0), axis=-1)  # (T, M)
        pos = fractions > 0
        slacks["kl_bound"] = float(np.min(np.log(1.0 / fractions[pos])[None, :] - kl[:, pos]))
    if not fixed:
        reasons["fixed_point"] = "needs p_data and real_fraction > 0 for every model"
    else:  # NaN (failing) when the fixed point did not converge
        slacks["fixed_point"] = -float(np.sum(np.abs(np.asarray(d["image"], np.float64)
                                                      - np.asarray(d["star"], np.float64))))
    out = {}
    for name in _ECOSYSTEM_ORDER:
        if name in slacks:
            s = slacks[name]
            out[name] = {"holds": bool(not math.isnan(s) and s >= -tol), "slack": s,
                         "applicable": True}
        else:
            out[name] = {"holds": None, "slack": math.nan, "applicable": False,
                         "reason": reasons[name]}
    return out


# --------------------------------------------------------------------------------------------
# Drifting preferences
# --------------------------------------------------------------------------------------------


def _drift_impl(p0, features, w0, eta, beta, p_data, a, curator, *, num_generations, k,
                num_nodes):
    hi = lax.Precision.HIGHEST

    def step(carry, _):
        p, w = carry
        r = jnp.matmul(features, w, precision=hi)
        if curator is None:
            q = curated(p, r, k=k, beta=beta, num_nodes=num_nodes)
        else:
            q = curated(p, r[:, None], k=k, num_nodes=num_nodes, curator=curator)
        q = _mix(p_data, a, q)
        w = (1.0 - eta) * w + eta * jnp.matmul(q, features, precision=hi)
        return (q, w), (q, w)

    _, (ps, ws) = lax.scan(step, (p0, w0), None, length=num_generations)
    return jnp.concatenate([p0[None], ps], axis=0), jnp.concatenate([w0[None], ws], axis=0)


def _drift(*args, **kwargs):
    """Jitted at call time (nothing is jitted at import); jit's cache reuses the program."""
    return jax.jit(_drift_impl, static_argnames=("num_generations", "k", "num_nodes"))(
        *args, **kwargs)


def drift_trajectory(
    p0: ArrayLike,
    features: ArrayLike,
    weights0: ArrayLike,
    *,
    eta: ArrayLike,
    num_generations: int,
    k,
    beta: ArrayLike = 1.0,
    p_data: ArrayLike | None = None,
    real_fraction: ArrayLike = 0.0,
    num_nodes: int | None = None,
    curator=None,
) -> tuple[Array, Array]:
    r"""Curated retraining under drifting preferences: the reward is linear in features and its
    weights move toward the feature mean of the current model (co-evolving preferences, as Wei,
    Xie, Zhu and Zhang).

    .. math::
        r_t = \Phi w_t,\quad p_{t+1} = a\, p_{\rm data} + (1-a)\, p_t H_{p_t}[r_t],\quad
        w_{t+1} = (1 - \eta)\, w_t + \eta\, \Phi^\top p_{t+1}.

    ``eta = 0`` is :func:`trajectory` with the fixed reward :math:`\Phi w_0`; ``eta = 1`` makes
    the preference the feature mean of the last model.

    Args:
        p0: ``(S,)`` initial model.
        features: ``(S, F)`` the features :math:`\Phi` of the states, finite.
        weights0: ``(F,)`` the initial reward weights :math:`w_0`, finite.
        eta: scalar drift rate in ``[0, 1]``, possibly traced.
        num_generations: static number of generations T >= 0.
        k, beta, p_data, real_fraction, num_nodes: as in :func:`retrain_map` (``beta`` and
            ``real_fraction`` scalars, possibly traced).
        curator: as in :func:`curation_factor`, reading the one drifting reward (its own
            ``column`` must be ``None``); ``beta`` then stays at its default.

    Returns:
        ``(ps, ws)``: ``(T + 1, S)`` the models and ``(T + 1, F)`` the weights; row t of ``ws``
        is the weights of the reward that curates ``ps[t]``.
    """
    num_generations = _checks.static_int("num_generations", num_generations, minimum=0)
    k = _check_k(k)
    _checks.probability_vector("p0", p0)
    num_states = jnp.shape(p0)[0]
    if jnp.ndim(features) != 2 or jnp.shape(features)[0] != num_states:
        raise ValueError(f"`features` must be (S, F) with S = {num_states} rows, one per state of "
                         f"`p0`; got shape {jnp.shape(features)}.")
    num_features = jnp.shape(features)[1]
    if jnp.shape(weights0) != (num_features,):
        raise ValueError(f"`weights0` must have shape (F,) = ({num_features},), one weight per "
                         f"feature; got shape {jnp.shape(weights0)}.")
    _checks.finite("features", features)
    _checks.finite("weights0", weights0)
    _checks.scalar("eta", eta, minimum=0.0, maximum=1.0)
    dtype = _ecosystem_floating(p0, features, weights0)
    p0 = jnp.asarray(p0, dtype)
    features, w0 = jnp.asarray(features, dtype), jnp.asarray(weights0, dtype)
    if curator is not None:
        _one_column_curator("curator", curator, beta)
    beta = _check_beta(beta, dtype)
    p_data = _prepare_real(p_data, real_fraction, p0)
    eta_arr, a = jnp.asarray(eta, dtype), jnp.asarray(real_fraction, dtype)
    ok = (_traced_ok(probs=(p0, p_data), beta=beta, real_fraction=real_fraction)
          & _curator_ok(curator))
    if not _INSIDE.get():
        for x in (features, w0):
            if not _checks.is_concrete(x):
                ok = ok & jnp.all(jnp.isfinite(x))
        if not _checks.is_concrete(eta):
            ok = ok & _checks.scalar_ok(eta, minimum=0.0, maximum=1.0)
    with _inside():
        ps, ws = _drift(p0, features, w0, eta_arr, beta, p_data, a, curator,
                        num_generations=num_generations, k=k, num_nodes=num_nodes)
    return _checks.poison(ok, ps), _checks.poison(ok, ws)

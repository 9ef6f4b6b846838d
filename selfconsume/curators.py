r"""Curators: the choice rules that keep some of the generated candidates, sampled and exact.

A curator is shown a group of :math:`K` iid candidates :math:`x_1, \dots, x_K \sim p` with rewards
:math:`r_i` (one reward column, or a column of several) and keeps some of them. Its **kept law**
on a finite support is :math:`p H_p`, the law of one kept sample (drawn uniformly among the
:math:`m` kept when :math:`m > 1`):

* :func:`luce` (:math:`\beta`): keep :math:`j` with probability
  :math:`\operatorname{softmax}(\beta r)_j`;
  :math:`H(x) = K \int e^{s + \log w(x) - e^{s + \log w(x)}} \phi(e^s)^{K-1} ds`,
  :math:`w = e^{\beta (r - r^*)}`, :math:`\phi(u) = \mathbb{E}_p[e^{-u w}]` (:mod:`selfconsume.theory`).
* :func:`top_m` (:math:`m, \beta`): sort by :math:`\beta r_i + G_i` (:math:`G_i` iid standard
  Gumbel: exactly a Plackett–Luce ranking) and keep the first :math:`m`. With
  :math:`q(t) = P(\beta r(X') + G' > t)`,
  :math:`H(x) = \frac{K}{m} \mathbb{E}_G[P(\mathrm{Bin}(K-1, q(\beta r(x) + G)) \le m-1)]`, the
  Luce integral with the kernel :math:`\phi^{K-1}` replaced by the binomial tail. ``beta = inf``
  keeps the m best (ties uniform): a trinomial sum over the others above and at the level of x.
* :func:`thurstone` (:math:`\sigma`): keep the argmax of :math:`r_i + \sigma Z_i`, :math:`Z_i` iid
  standard normal (the probit choice model):
  :math:`H(x) = K \mathbb{E}_Z[F(r(x) + \sigma Z)^{K-1}]`,
  :math:`F(t) = \sum_y p(y) \Phi((t - r(y))/\sigma)`, a Gaussian integral by the trapezoidal rule
  on nodes in :math:`t` shared by all states (spectrally accurate: the error falls like
  :math:`e^{-2\pi^2 \sigma^2 / h^2}` with the node spacing :math:`h`). ``sigma = 0`` is best-of-K
  with ties uniform, ``sigma = inf`` uniform (no curation).
* :func:`adversarial` (``base``, :math:`\varepsilon`): with probability :math:`\varepsilon` a group
  is judged by ``base`` on :math:`-r`: :math:`H = (1-\varepsilon) H_{\rm base}[r] + \varepsilon
  H_{\rm base}[-r]`.
* :func:`mixture` (components, weights): with probability :math:`w_j` a group is judged by
  component :math:`j` (each on its own reward column): :math:`H = \sum_j w_j H_j`.
* :func:`sequential` (``first``, ``second``): ``first`` keeps :math:`m` of the :math:`K`, then
  ``second`` keeps 1 of those :math:`m`. No one-dimensional form is known: the m kept by the
  first stage are not independent. With a Plackett–Luce first stage (scores
  :math:`\beta_1 r_1 + G`, finite :math:`\beta_1`) and a random-utility second stage (Luce:
  utilities :math:`\beta_2 r_2 + G'`; Thurstone: :math:`r_2 / \sigma + Z`), condition on
  :math:`\tau`, the m-th largest first-stage score, and on :math:`v`, the utility of x: the other
  members above :math:`\tau` are then iid, and x is kept when all of them have utility below
  :math:`v`. This gives :math:`H` as a two-dimensional integral in :math:`(\tau, v)` whose
  integrand needs three expectations under p per node pair (:func:`_sequential_factor`),
  computed exactly by the trapezoidal rule on a uniform node grid: cost
  :math:`O(M N^2)`, linear in the number of states M. Hard stages (``beta = inf``,
  ``sigma = 0``) break ties and have no such form; their exact law is not implemented.
* :func:`top_fraction`: the best :math:`n` of all :math:`nK` candidates, pooled (ties uniform).
  As :math:`n \to \infty` (the population limit used by the theory) it keeps :math:`p` above the
  reward level where the upper tail reaches :math:`1/K`: :math:`H = K` above it, :math:`K\theta`
  on it (:math:`\theta` the share of the level that fits), 0 below.

``k = inf``: the exponential tilt :math:`e^{\beta r}/\mathbb{E}_p[e^{\beta r}]` for Luce and top-m
(the Gumbel-perturbed candidates form a Poisson process whose top marks are iid from the tilt),
:math:`p(\cdot \mid r = r^*)` for Thurstone (:math:`\sigma < \infty`) and top-fraction; linear
combinations for adversarial and mixture; sequential needs a finite ``k``.

**Structure.** Each curator is a ``flax.struct`` pytree: shape-setting options (``m``,
``column``, the components of a mixture) are static, rates and temperatures (``beta``, ``sigma``,
``eps``, ``weights``) are array leaves, so that ``vmap`` over them batches one compiled program.
Rewards are ``(n,)`` or ``(n, R)`` (R reward functions); a curator with ``column = j`` reads
``rewards[:, j]``, ``column = None`` the only column. Factories check concrete values at once
(``ValueError`` naming the option); traced invalid values make the floating outputs of
:func:`selfconsume.curate` and :mod:`selfconsume.theory` NaN (:mod:`selfconsume._checks`).

**What holds when a curator is not monotone in the reward** (measured with
:func:`selfconsume.theory.check_theorems` and :func:`selfconsume.theory.adversarial_threshold`,
float64, ``tests/test_curators.py``):

* ``adversarial(base, eps)``: one step changes the expected reward by
  :math:`\Delta = (1-\varepsilon) G_+ - \varepsilon G_-`, with :math:`G_+` the gain of ``base`` on
  :math:`r` and :math:`G_-` the loss of ``base`` on :math:`-r`; it rises iff
  :math:`\varepsilon < \varepsilon^*(p) = G_+ / (G_+ + G_-)`. For Luce with ``k = 2`` the factor is
  :math:`(1 - 2\varepsilon) H + 2\varepsilon` and :math:`\varepsilon^* = 1/2` exactly, for any p.
  For ``k > 2`` it depends on the skew of the reward law: on 10 states with rewards 0, 1/9,
  ..., 1 and beta = 5, :math:`\varepsilon^* = 1/2` for a uniform p (by symmetry) but, for p the
  Dirichlet(1) draw of ``numpy.random.default_rng(0)``, 0.500 at K = 2, 0.382 at K = 4 and 0.261
  at K = 16: with more candidates an adversarial group loses more than an honest one gains, and
  a smaller share of adversaries stops the rise. On the 8-mode ring with the clipped distance
  reward (``experiments/adversarial_curation.py``) it goes the other way, 0.500, 0.554 and
  0.624 at K = 2, 4, 16 (an adversary's loss is capped by the reward's floor, an honest gain is
  not), and the boundary after 20 generations stays within 0.06 of it. Normalisation, level sets
  (H is a function of r, no longer monotone), the KL bound with real data and the fixed point
  still hold.
* ``mixture`` of components reading different columns: H is a function of the reward vector,
  non-decreasing in each column (each component is); the expected reward of a single column can
  fall. Pure curation does not pick one column's maximiser: with two Luce curators on two
  separated modes of the ring chosen with probabilities q and 1 - q, the limit splits the mass
  q : 1 - q at K = inf (within 5e-4), follows the two-basin map
  :math:`a' = q (1 - (1-a)^K) + (1-q) a^K` at finite K (a split only for
  :math:`1/K < q < 1 - 1/K`, else the majority takes all) and is winner-take-all at K = 2 for
  every q != 1/2 (``experiments/pluralistic.py``).
"""

from __future__ import annotations

import math
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax import lax

from selfconsume import _checks
from selfconsume._choice import (
    PAIRWISE_MAX_K,
    first_m,
    group_logits,
    inverse_cdf_choice,
    pairwise_ranks,
    scaled_rewards,
    top_fraction_search,
    top_fraction_top_k,
)
from selfconsume._options import Options
from selfconsume._quadrature import (
    best_of_k_factor,
    finite_k_factor,
    levels,
    support_max,
    tilt_factor,
)
from selfconsume.types import Array, ArrayLike, PRNGKey

__all__ = [
    "CURATORS",
    "stack",
    "Adversarial",
    "Curator",
    "Luce",
    "Mixture",
    "Sequential",
    "Thurstone",
    "TopFraction",
    "TopM",
    "adversarial",
    "check",
    "get",
    "luce",
    "mixture",
    "read_column",
    "sequential",
    "thurstone",
    "top_fraction",
    "top_m",
]


def read_column(rewards: Array, column: int | None) -> Array:
    """``rewards[..., column]`` of ``(..., R)`` rewards (``column=None``: the only column).

    Raises:
        ValueError: if ``column`` is out of range, or ``None`` while ``R > 1``.
    """
    num = rewards.shape[-1]
    if isinstance(column, bool) or not (column is None or isinstance(column, (int, np.integer))):
        raise ValueError(f"`column` must be None or an integer; got {column!r}.")
    if column is None:
        if num != 1:
            raise ValueError(f"the rewards have {num} columns: the curator's `column` must say "
                             f"which one it reads (0 to {num - 1}); got column=None.")
        return rewards[..., 0]
    if not 0 <= column < num:
        raise ValueError(f"`column` must be in [0, {num - 1}] for rewards with {num} columns; "
                         f"got {column}.")
    return rewards[..., column]


def check(curator, *, beta=None) -> None:
    """Checks an argument ``curator`` (a :class:`Curator`) and, with ``beta``, that the caller's
    ``beta`` is left at its default of 1 (the curator holds its own rates).

    Raises:
        ValueError: naming ``curator`` or ``beta``.
    """
    if not isinstance(curator, Curator):
        raise ValueError(f"`curator` must be a selfconsume.curators curator or None; got "
                         f"{type(curator).__name__}.")
    if beta is not None and not (_checks.is_concrete(beta) and float(np.asarray(beta)) == 1.0):
        shown = _checks.show(beta) if _checks.is_concrete(beta) else "a traced value"
        raise ValueError(f"`beta` must be left at its default with a curator (the curator holds "
                         f"its own rates); got beta={shown} with {curator.name!r}.")


def _column_option(column):
    if column is None:
        return None
    if isinstance(column, bool) or not isinstance(column, (int, np.integer)) or column < 0:
        raise ValueError(f"`column` must be None or an integer >= 0 (a static Python value); got "
                         f"{column!r}.")
    return int(column)


class Curator(Options):
    """The protocol of a curator (subclasses are ``flax.struct`` dataclasses).

    Methods:
        kept(k): the static number of rows kept per group of ``k``.
        choose(key, rewards): ``(n, k, R)`` rewards -> ``(n, kept(k))`` int32 positions inside each
            group (per-group curators; :class:`TopFraction` pools the groups instead).
        factor(p, rewards, k, num_nodes): the exact kept-law factor ``(M,)`` on ``(M, R)`` rewards.
        ok(): the traced validity of the array leaves (``True`` when all are concrete).
        monotone(): the column in whose reward ``H`` is non-decreasing (and on which it alone
            depends), or ``False``; ``None`` is the only column.
        columns(): the reward columns read.
    """

    name: ClassVar[str] = ""
    per_group: ClassVar[bool] = True

    def kept(self, k: int) -> int:
        return 1

    def keep(self, key: PRNGKey, rewards: Array, *, k: int) -> tuple[Array, Array]:
        """Rows kept of ``(n*k, R)`` rewards: ``(rows, index)``, group by group."""
        n = rewards.shape[0] // k
        index = self.choose(key, rewards.reshape(n, k, rewards.shape[-1])).astype(jnp.int32)
        rows = jnp.arange(n, dtype=jnp.int32)[:, None] * k + index
        return rows.reshape(-1), index.reshape(-1)


class _OneColumn(Curator):
    """A curator that reads one reward column (its ``column`` field) and is monotone in it."""

    def monotone(self):
        return self.column

    def columns(self):
        return (self.column,)


# --------------------------------------------------------------------------------------------
# Luce and top-m: Plackett-Luce rankings
# --------------------------------------------------------------------------------------------


@struct.dataclass(eq=False)
class Luce(_OneColumn):
    """Keep 1 of k with probability ``softmax(beta r)`` (``beta = inf``: best-of-k, ties uniform)."""

    beta: Array
    column: int | None = struct.field(pytree_node=False, default=None)
    name: ClassVar[str] = "luce"

    def ok(self):
        return _checks.rate_ok(self.beta, minimum=0.0)

    def choose(self, key, rewards, num_candidates=None):
        logits = group_logits(read_column(rewards, self.column), self.beta, num_candidates)
        return inverse_cdf_choice(key, logits)[:, None]

    def factor(self, p, rewards, *, k, num_nodes):
        return _pl_factor(p, read_column(rewards, self.column), self.beta, k=k, m=1,
                          num_nodes=num_nodes)


@struct.dataclass(eq=False)
class TopM(_OneColumn):
    """Rank the k by a Plackett–Luce draw (``beta r + Gumbel``) and keep the first ``m``."""

    beta: Array
    m: int = struct.field(pytree_node=False, default=1)
    column: int | None = struct.field(pytree_node=False, default=None)
    name: ClassVar[str] = "top_m"

    def kept(self, k):
        if self.m > k:
            raise ValueError(f"top_m keeps `m`={self.m} of each group: `m` must be <= k={k}.")
        return self.m

    def ok(self):
        return _checks.rate_ok(self.beta, minimum=0.0)

    def choose(self, key, rewards):
        r = read_column(rewards, self.column)
        g = jax.random.gumbel(key, r.shape, r.dtype)
        valid = ~jnp.isnan(r)
        best = jnp.max(jnp.where(valid, r, -jnp.inf), axis=-1, keepdims=True)
        soft = scaled_rewards(r, self.beta, best) + g
        primary = jnp.where(valid, jnp.where(jnp.isinf(self.beta), r, soft), -jnp.inf)
        # descending by (primary, g): ties in beta r (beta = inf, or all NaN) go to the larger
        # Gumbel, i.e. uniformly at random
        if r.shape[-1] <= PAIRWISE_MAX_K:  # the same order by pairwise comparisons, faster
            return first_m(pairwise_ranks(primary, g), self.m)
        iota = lax.broadcasted_iota(jnp.int32, r.shape, r.ndim - 1)
        _, _, order = lax.sort((-primary, -g, iota), dimension=r.ndim - 1, num_keys=2)
        return order[..., :self.m]

    def factor(self, p, rewards, *, k, num_nodes):
        return _pl_factor(p, read_column(rewards, self.column), self.beta, k=k,
                          m=self.kept(k) if not math.isinf(k) else self.m, num_nodes=num_nodes)


def _pl_factor(p, r, beta, *, k, m, num_nodes):
    """Top-m of a Plackett–Luce ranking of k (m = 1: Luce): 1 for k <= m, the tilt for k = inf."""
    if math.isinf(k):
        return tilt_factor(p, r, beta)
    if k <= m:
        return jnp.ones_like(p)
    return finite_k_factor(p, r, beta, k=k, num_nodes=num_nodes, m=m)


# --------------------------------------------------------------------------------------------
# Thurstone (probit)
# --------------------------------------------------------------------------------------------


@struct.dataclass(eq=False)
class Thurstone(_OneColumn):
    """Keep the argmax of ``r + sigma Z`` (``Z`` iid standard normal; ties uniform)."""

    sigma: Array
    column: int | None = struct.field(pytree_node=False, default=None)
    name: ClassVar[str] = "thurstone"

    def ok(self):
        return _checks.rate_ok(self.sigma, minimum=0.0)

    def choose(self, key, rewards):
        r = read_column(rewards, self.column)
        z = jax.random.normal(key, r.shape, r.dtype)
        noise = jnp.where(z == 0, 0.0, self.sigma * z)  # sigma = inf, z = 0: no inf * 0
        score = jnp.where(jnp.isnan(r), -jnp.inf, r + noise)
        score = jnp.where(jnp.isnan(score), -jnp.inf, score)
        best = jnp.max(score, axis=-1, keepdims=True)
        # among the tied best scores the largest z: uniform, z being iid and independent of r
        return jnp.argmax(jnp.where(score == best, z, -jnp.inf), axis=-1)[:, None]

    def factor(self, p, rewards, *, k, num_nodes):
        r = read_column(rewards, self.column)
        if k == 1:
            return jnp.ones_like(p)
        sigma = jnp.asarray(self.sigma, p.dtype)
        if math.isinf(k):
            top = jnp.where(p > 0, r, -jnp.inf) == support_max(p, r)
            level = jnp.where(r == support_max(p, r), 1.0, 0.0) / jnp.sum(jnp.where(top, p, 0.0))
            return jnp.where(jnp.isinf(sigma), 1.0, level)
        return _thurstone_factor(p, r, sigma, k=k, num_nodes=4 * num_nodes)


def _thurstone_factor(*args, **kwargs):
    """Jitted at call time (nothing is jitted at import); jit's cache reuses the program."""
    return jax.jit(_thurstone_factor_impl, static_argnames=("k", "num_nodes"))(*args, **kwargs)


def _thurstone_factor_impl(p, r, sigma, *, k, num_nodes):
    """sigma = 0: best-of-k; sigma = inf: 1; else the Gaussian integral on shared nodes."""
    def probit(p, r, sigma):
        return _probit_integral(p, r, jnp.where((sigma > 0) & jnp.isfinite(sigma), sigma, 1.0),
                                k=k, num_nodes=num_nodes)

    way = jnp.where(sigma == 0, 0, jnp.where(jnp.isinf(sigma), 1, 2))
    return lax.switch(way, (lambda p, r, s: best_of_k_factor(p, r, s, k=k),
                            lambda p, r, s: jnp.ones_like(p), probit), p, r, sigma)


def _probit_integral(p, r, sigma, *, k, num_nodes, block=2048):
    r"""H(x) = K h \sum_j \varphi(t_j - u(x)) F(t_j)^{K-1}, u = r / sigma, on uniform nodes t_j.

    The nodes span [max(min u - c, t_cut), max u + c], with c = 8.5 (float64) or 6 (float32)
    standard deviations (beyond, :math:`\varphi` is below the resolution) and t_cut the point
    where :math:`F^{K-1}` falls below :math:`e^{-60}` (bisection). The integrand is analytic, so
    the trapezoidal rule converges like :math:`e^{-2\pi^2/h^2}`: h <= 0.7 is at float64
    resolution, h <= 1 at float32's. States are processed in blocks (cost O(M N), memory
    O(N x block)).
    """
    dtype = p.dtype
    c = 8.5 if dtype == jnp.float64 else 6.0
    u = r / sigma
    size = p.shape[0]
    block = min(block, size)
    num_blocks = -(-size // block)
    pad = num_blocks * block - size
    p_blocks = jnp.pad(p, (0, pad)).reshape(num_blocks, block)
    u_blocks = jnp.pad(u, (0, pad), constant_values=jnp.max(u)).reshape(num_blocks, block)

    def log_cdf(t):  # log F(t) for a vector of nodes t
        def add(total, blk):
            p_i, u_i = blk
            return total + jnp.sum(p_i[None, :] * jax.scipy.stats.norm.cdf(
                t[:, None] - u_i[None, :]), axis=1), None
        total, _ = lax.scan(add, jnp.zeros(t.shape, dtype), (p_blocks, u_blocks))
        return jnp.log(jnp.minimum(total, 1.0))

    lo = jnp.min(u) - c
    hi = jnp.max(u) + c

    def bisect(_, bounds):  # (K-1) log F(t) < -60 left of the cut
        a, b = bounds
        mid = 0.5 * (a + b)
        below = (k - 1) * log_cdf(mid[None])[0] < -60.0
        return jnp.where(below, mid, a), jnp.where(below, b, mid)

    t_cut, _ = lax.fori_loop(0, 50, bisect, (lo, hi))
    start = jnp.maximum(lo, t_cut)
    t = start + (hi - start) * jnp.arange(num_nodes, dtype=dtype) / (num_nodes - 1)
    h = (hi - start) / (num_nodes - 1)
    coef = math.log(k) + (k - 1) * log_cdf(t) + jnp.log(h)

    def factor(u_i):
        z = t[:, None] - u_i[None, :]
        return jnp.sum(jnp.exp(coef[:, None] - 0.5 * z * z - 0.5 * math.log(2 * math.pi)),
                       axis=0)

    return lax.map(factor, u_blocks).reshape(-1)[:size]


# --------------------------------------------------------------------------------------------
# Combinations: adversarial flips, mixtures, two stages
# --------------------------------------------------------------------------------------------


def _group_curator(name: str, c) -> Curator:
    if not isinstance(c, Curator):
        raise ValueError(f"`{name}` must be a curator (selfconsume.curators); got "
                         f"{type(c).__name__}.")
    if not c.per_group:
        raise ValueError(f"`{name}` must judge each group on its own; got {c.name!r}, which "
                         "pools the groups.")
    return c


@struct.dataclass(eq=False)
class Adversarial(Curator):
    """With probability ``eps`` a group is judged by ``base`` on the negated rewards."""

    base: Curator
    eps: Array
    name: ClassVar[str] = "adversarial"

    def kept(self, k):
        return self.base.kept(k)

    def ok(self):
        return _checks.rate_ok(self.eps, minimum=0.0, maximum=1.0) & self.base.ok()

    def monotone(self):
        if _checks.is_concrete(self.eps) and float(self.eps) == 0.0:
            return self.base.monotone()
        return False

    def columns(self):
        return self.base.columns()

    def choose(self, key, rewards):
        key_flip, key_base = jax.random.split(key)
        flip = jax.random.bernoulli(key_flip, self.eps, rewards.shape[:1])
        return self.base.choose(key_base, jnp.where(flip[:, None, None], -rewards, rewards))

    def factor(self, p, rewards, *, k, num_nodes):
        eps = jnp.asarray(self.eps, p.dtype)
        honest = self.base.factor(p, rewards, k=k, num_nodes=num_nodes)
        flipped = self.base.factor(p, -rewards, k=k, num_nodes=num_nodes)
        return (1.0 - eps) * honest + eps * flipped


@struct.dataclass(eq=False)
class Mixture(Curator):
    """With probability ``weights[j]`` a group is judged by ``components[j]``."""

    components: tuple
    weights: Array
    name: ClassVar[str] = "mixture"

    def kept(self, k):
        counts = {c.kept(k) for c in self.components}
        if len(counts) != 1:
            raise ValueError(f"the components of a mixture must keep as many rows per group; "
                             f"got {sorted(counts)} for k={k}.")
        return counts.pop()

    def ok(self):
        ok = True
        for c in self.components:
            ok = ok & c.ok()
        if not _checks.is_concrete(self.weights):
            w = self.weights
            ok = ok & jnp.all(w >= 0) & (jnp.abs(jnp.sum(w) - 1.0) <= 1e-4)
        return ok

    def monotone(self):
        cols = {c.monotone() for c in self.components}
        if len(cols) == 1 and cols != {False}:
            return cols.pop()
        return False

    def columns(self):
        return tuple(dict.fromkeys(col for c in self.components for col in c.columns()))

    def choose(self, key, rewards):
        keys = jax.random.split(key, len(self.components) + 1)
        n = rewards.shape[0]
        logw = jnp.log(jnp.asarray(self.weights, rewards.dtype))
        which = jax.random.categorical(keys[0], logw, shape=(n,))
        index = self.components[0].choose(keys[1], rewards)
        for j, c in enumerate(self.components[1:], start=1):
            index = jnp.where((which == j)[:, None], c.choose(keys[j + 1], rewards), index)
        return index

    def factor(self, p, rewards, *, k, num_nodes):
        w = jnp.asarray(self.weights, p.dtype)
        return sum(w[j] * c.factor(p, rewards, k=k, num_nodes=num_nodes)
                   for j, c in enumerate(self.components))


@struct.dataclass(eq=False)
class Sequential(Curator):
    """``first`` keeps m of the k, then ``second`` keeps 1 of those m."""

    first: Curator
    second: Curator
    name: ClassVar[str] = "sequential"

    def kept(self, k):
        m = self.first.kept(k)
        kept = self.second.kept(m)
        if kept != 1:
            raise ValueError(f"the `second` stage of a sequential curator must keep 1 of the m "
                             f"kept by `first`; got {self.second.name!r} keeping {kept}.")
        return 1

    def ok(self):
        return self.first.ok() & self.second.ok()

    def monotone(self):
        a, b = self.first.monotone(), self.second.monotone()
        return a if a is not False and a == b else False

    def columns(self):
        return tuple(dict.fromkeys(self.first.columns() + self.second.columns()))

    def choose(self, key, rewards):
        key_first, key_second = jax.random.split(key)
        first = self.first.choose(key_first, rewards)  # (n, m)
        shown = jnp.take_along_axis(rewards, first[..., None], axis=1)  # (n, m, R)
        second = self.second.choose(key_second, shown)  # (n, 1)
        return jnp.take_along_axis(first, second, axis=1)

    def factor(self, p, rewards, *, k, num_nodes):
        if math.isinf(k):
            raise ValueError("the exact law of a sequential curator needs a finite `k`; got "
                             "k=inf.")
        m = self.first.kept(k)
        if m == 1:
            return self.first.factor(p, rewards, k=k, num_nodes=num_nodes)
        if m == k:
            return self.second.factor(p, rewards, k=k, num_nodes=num_nodes)
        if not isinstance(self.first, (Luce, TopM)):
            raise ValueError(f"the exact law of a sequential curator is implemented for a "
                             f"Plackett–Luce `first` stage (luce or top_m); got "
                             f"{self.first.name!r}.")
        u2, kind = _utility(self.second, rewards, p.dtype)
        beta1 = jnp.asarray(self.first.beta, p.dtype)
        hard = jnp.isinf(beta1)
        if kind == "gumbel":
            hard = hard | jnp.isinf(jnp.asarray(self.second.beta, p.dtype))
        else:
            hard = hard | (jnp.asarray(self.second.sigma, p.dtype) == 0)
        if _checks.is_concrete(hard) and bool(hard):
            raise ValueError("the exact law of a sequential curator needs random utilities in "
                             "both stages: a finite `beta` in luce/top_m and `sigma > 0` in "
                             "thurstone (hard stages break ties, which has no form linear in the "
                             "number of states).")
        r1 = read_column(rewards, self.first.column)
        h = _sequential_factor(p, r1, jnp.where(hard, 0.0, beta1),
                               jnp.where(hard, 0.0, jnp.where(jnp.isfinite(u2), u2, 0.0)),
                               kind=kind, k=k, m=m, num_nodes=2 * num_nodes)
        return jnp.where(hard, jnp.nan, h)


def _utility(curator, rewards, dtype):
    """The second stage as a random-utility rule: (location u of each state, noise law), with
    the kept candidate the argmax of u + noise: Luce is Gumbel noise on beta r, Thurstone standard
    normal noise on r / sigma."""
    if isinstance(curator, Luce):
        return jnp.asarray(curator.beta, dtype) * read_column(rewards, curator.column), "gumbel"
    if isinstance(curator, Thurstone):
        sigma = jnp.asarray(curator.sigma, dtype)
        r = read_column(rewards, curator.column)
        return jnp.where(jnp.isinf(sigma), 0.0, r / sigma), "normal"
    raise ValueError(f"the exact law of a sequential curator is implemented for a `second` stage "
                     f"that is luce or thurstone; got {curator.name!r}.")


def _noise(kind, z, dtype):
    """(log density, CDF) of the standard noise at z."""
    if kind == "gumbel":
        return -z - jnp.exp(-z), jnp.exp(-jnp.exp(-z))
    return (-0.5 * z * z - 0.5 * math.log(2 * math.pi),
            jax.scipy.special.ndtr(z.astype(dtype)))


def _sequential_factor(p, r1, beta1, u2, *, kind, k, m, num_nodes):
    r"""The two-dimensional integral of the sequential law (module docstring): first stage scores
    :math:`\beta_1 r_1 + G` and second-stage utilities :math:`u_2 + \epsilon`.

    Condition on :math:`\tau`, the m-th largest first-stage score, and on :math:`v`, the utility
    of x. Either x is the m-th (its score is :math:`\tau`, m - 1 others above) or x is above
    :math:`\tau` (another candidate at :math:`\tau`, m - 2 others above); the others above are
    iid, and x is kept when every other member of the set has utility below :math:`v`:

    .. math::
        H(x) = K \iint f_2(v; x) \Big[f_1(\tau; x) \tbinom{K-1}{m-1} a^{m-1}
               + (K-1) S_1(\tau; x) \tbinom{K-2}{m-2} b\, a^{m-2}\Big] (1-\alpha)^{K-m}
               \,d\tau\, dv,

    with :math:`f_1, S_1` the density and survival of the first-stage score, :math:`f_2, C_2`
    the density and CDF of the utility, :math:`\alpha(\tau) = E_p[S_1]`,
    :math:`a = E_p[S_1 C_2]` and :math:`b = E_p[f_1 C_2]`. Trapezoidal rule on ``num_nodes``
    uniform nodes in each variable (both integrands are analytic: spectral accuracy while the
    spacing stays below about 0.3); cost O(M num_nodes^2) as matrix products.
    """
    dtype = p.dtype
    left, right = 4.5, (40.0 if dtype == jnp.float64 else 25.0)
    s1 = beta1 * r1
    tau = jnp.min(s1) - left + (jnp.max(s1) - jnp.min(s1) + left + right) * (
        jnp.arange(num_nodes, dtype=dtype) / (num_nodes - 1))
    h_tau = tau[1] - tau[0]
    lo, hi = (jnp.min(u2) - left, jnp.max(u2) + right) if kind == "gumbel" else (
        jnp.min(u2) - 9.0, jnp.max(u2) + 9.0)
    v = lo + (hi - lo) * jnp.arange(num_nodes, dtype=dtype) / (num_nodes - 1)
    h_v = v[1] - v[0]
    z1 = tau[:, None] - s1[None, :]  # (N, M)
    log_f1 = -z1 - jnp.exp(-z1)
    below1 = jnp.exp(-jnp.exp(-z1))  # P(score < tau)
    above1 = -jnp.expm1(-jnp.exp(-z1))
    log_f2, c2 = _noise(kind, v[:, None] - u2[None, :], dtype)  # (N, M)
    hi_prec = lax.Precision.HIGHEST
    not_alpha = jnp.matmul(below1, p, precision=hi_prec)  # (N,) P(another scores below tau)
    a = jnp.matmul(above1 * p[None, :], c2.T, precision=hi_prec)  # (N_tau, N_v)
    b = jnp.matmul(jnp.exp(log_f1) * p[None, :], c2.T, precision=hi_prec)
    rest = jnp.where(k == m, 1.0, not_alpha ** (k - m))[:, None]
    coef_x_at = math.comb(k - 1, m - 1) * a ** (m - 1) * rest
    coef_x_above = (k - 1) * math.comb(k - 2, m - 2) * b * a ** (m - 2) * rest
    g = (jnp.matmul(jnp.exp(log_f1).T, coef_x_at, precision=hi_prec)
         + jnp.matmul(above1.T, coef_x_above, precision=hi_prec))  # (M, N_v)
    return k * h_tau * h_v * jnp.sum(jnp.exp(log_f2).T * g, axis=1)


# --------------------------------------------------------------------------------------------
# Top fraction: pooled hard selection
# --------------------------------------------------------------------------------------------


@struct.dataclass(eq=False)
class TopFraction(_OneColumn):
    """Keep the best n of all n*k candidates, pooled (ties uniform)."""

    column: int | None = struct.field(pytree_node=False, default=None)
    name: ClassVar[str] = "top_fraction"
    per_group: ClassVar[bool] = False

    def ok(self):
        return True

    def keep(self, key, rewards, *, k):
        r = read_column(rewards, self.column)
        n = r.shape[0] // k
        primary = jnp.where(jnp.isnan(r), -jnp.inf, r)
        # the n best rows, ties at the cut to the larger of iid uniforms (then the lower row),
        # sorted: the order of lax.sort((-primary, -u, iota), num_keys=2), without the sort
        if k >= 32 and primary.dtype == jnp.float32:
            rows = top_fraction_top_k(key, primary, n)
        else:
            rows = top_fraction_search(key, primary, n)
        return rows, rows

    def factor(self, p, rewards, *, k, num_nodes):
        r = read_column(rewards, self.column)
        at, _, above = levels(p, r)
        if math.isinf(k):
            return jnp.where(above > 0, 0.0, 1.0 / jnp.where(at > 0, at, 1.0))
        inside = jnp.clip((1.0 - k * above) / jnp.where(at > 0, at, 1.0), 0.0, float(k))
        return jnp.where(at > 0, inside, jnp.where(k * above < 1.0, float(k), 0.0))


# --------------------------------------------------------------------------------------------
# Factories and registry
# --------------------------------------------------------------------------------------------


def luce(beta: ArrayLike = 1.0, *, column: int | None = None) -> Luce:
    """Keep 1 of k with probability ``softmax(beta r)``; ``beta = jnp.inf``: best-of-k.

    Args:
        beta: inverse temperature ``>= 0`` (inf allowed), an array leaf.
        column: the reward column read (static), ``None`` for the only one.
    """
    return Luce(beta=_checks.rate("beta", beta, minimum=0.0), column=_column_option(column))


def top_m(m: int, beta: ArrayLike = 1.0, *, column: int | None = None) -> TopM:
    """Rank the k candidates by a Plackett–Luce draw with inverse temperature ``beta`` and keep
    the top ``m`` (static, ``1 <= m <= k``); ``beta = jnp.inf`` keeps the m best, ties uniform."""
    m = _checks.static_int("m", m, minimum=1)
    return TopM(beta=_checks.rate("beta", beta, minimum=0.0), m=m, column=_column_option(column))


def thurstone(sigma: ArrayLike = 1.0, *, column: int | None = None) -> Thurstone:
    """Keep the argmax of ``r + sigma Z`` with ``Z`` iid standard normal (``sigma >= 0``, inf
    allowed: uniform choice; 0: best-of-k with ties uniform)."""
    return Thurstone(sigma=_checks.rate("sigma", sigma, minimum=0.0),
                     column=_column_option(column))


def adversarial(base: Curator, eps: ArrayLike) -> Adversarial:
    """With probability ``eps`` in ``[0, 1]`` a group is judged by ``base`` on ``-r``."""
    return Adversarial(base=_group_curator("base", base),
                       eps=_checks.rate("eps", eps, minimum=0.0, maximum=1.0))


def mixture(components, weights: ArrayLike) -> Mixture:
    """With probability ``weights[j]`` a group is judged by ``components[j]`` (a heterogeneous
    population; components may read different reward columns and must keep as many rows).

    Args:
        components: a non-empty sequence of per-group curators (static structure).
        weights: ``(J,)`` non-negative weights summing to 1, an array leaf.
    """
    components = tuple(components)
    if not components:
        raise ValueError("`components` must hold at least one curator; got none.")
    for i, c in enumerate(components):
        _group_curator(f"components[{i}]", c)
    if isinstance(weights, (list, tuple)):
        weights = jnp.asarray(weights, jnp.result_type(float))
    weights = jnp.asarray(weights)
    if weights.shape != (len(components),):
        raise ValueError(f"`weights` must have shape ({len(components)},), one per component; "
                         f"got shape {weights.shape}.")
    if _checks.is_concrete(weights):
        a = np.asarray(weights, np.float64)
        if not np.all(np.isfinite(a)) or np.any(a < 0) or abs(a.sum() - 1.0) > 1e-4:
            raise ValueError(f"`weights` must be non-negative and sum to 1; got "
                             f"{_checks.show(weights)}.")
    return Mixture(components=components, weights=weights)


def sequential(first: Curator, second: Curator) -> Sequential:
    """``first`` keeps m of the k (e.g. ``top_m(m, ...)``), ``second`` keeps 1 of those m."""
    return Sequential(first=_group_curator("first", first), second=_group_curator("second", second))


def top_fraction(*, column: int | None = None) -> TopFraction:
    """Keep the best n of all n*k candidates, pooled across groups (hard selection)."""
    return TopFraction(column=_column_option(column))


CURATORS = _checks.Registry("curator", {
    "luce": luce,
    "top_m": top_m,
    "thurstone": thurstone,
    "adversarial": adversarial,
    "mixture": mixture,
    "sequential": sequential,
    "top_fraction": top_fraction,
})

_NESTED = {"base": False, "first": False, "second": False, "components": True}


def get(name: str, **options) -> Curator:
    """The curator ``name`` with ``options`` (``CURATORS[name](**options)``).

    Nested curators (``base``, ``first``, ``second``, ``components``) may be given as curators
    or as dicts ``{"name": ..., **options}``, as a TOML ``[curator]`` section writes them.
    """
    factory = CURATORS[name]
    for key, many in _NESTED.items():
        if key in options:
            value = options[key]
            options[key] = ([_nested(f"{key}[{i}]", v) for i, v in enumerate(value)] if many
                            else _nested(key, value))
    try:
        return factory(**options)
    except TypeError as e:
        raise ValueError(f"invalid options for curator {name!r}: {e}") from None


def stack(curators, num: int | None = None) -> Curator:
    """One curator for several models: the rates of ``curators`` stacked on a leading axis.

    ``jax.vmap`` over the result (``in_axes=0``) gives model ``i`` the curator ``curators[i]``;
    this is how an ecosystem (:mod:`selfconsume.ecosystem`) gives each model its own rates in
    one compiled program. The curators must share one structure (family, static options,
    nesting); only their rates may differ.

    Args:
        curators: a sequence of curators of one structure, or one curator (repeated ``num``
            times).
        num: the number of models, required with one curator and checked with a sequence.

    Returns:
        A curator of the same structure whose leaves have a leading axis of ``len(curators)``.

    Raises:
        ValueError: for an empty sequence, a non-curator, curators of different structures, or a
            length other than ``num``.
    """
    if isinstance(curators, Curator):
        if num is None:
            raise ValueError("`num` is required to stack one curator; got num=None.")
        curators = [curators] * _checks.static_int("num", num, minimum=1)
    curators = list(curators)
    if not curators:
        raise ValueError("`curators` must hold at least one curator; got an empty sequence.")
    for i, c in enumerate(curators):
        if not isinstance(c, Curator):
            raise ValueError(f"`curators[{i}]` must be a selfconsume.curators curator; got "
                             f"{type(c).__name__}.")
        if c.signature() != curators[0].signature():
            raise ValueError(f"`curators` must share one structure (only their rates may differ); "
                             f"curators[{i}] is {c.signature()}, curators[0] is "
                             f"{curators[0].signature()}.")
    if num is not None and len(curators) != num:
        raise ValueError(f"`curators` must hold one curator per model ({num}); got "
                         f"{len(curators)}.")
    return jax.tree_util.tree_map(lambda *xs: jnp.stack([jnp.asarray(x) for x in xs]), *curators)


def _nested(where: str, value):
    if isinstance(value, Curator):
        return value
    if isinstance(value, dict) and "name" in value:
        options = dict(value)
        return get(options.pop("name"), **options)
    raise ValueError(f"`{where}` must be a curator or a dict with a 'name'; got {value!r}.")

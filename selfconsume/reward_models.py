r"""Learned reward models: comparisons of generated samples, and Bradley–Terry / Plackett–Luce fits.

**Comparisons.** :func:`compare` splits ``n`` samples into ``G = n / k`` groups of ``k`` and has a
*judge* (a random-utility curator of :mod:`selfconsume.curators`) rank each group on the true
reward :math:`r`: :func:`~selfconsume.curators.luce` and :func:`~selfconsume.curators.top_m` sort
:math:`\beta r_i + G_i` (:math:`G_i` iid standard Gumbel: a Plackett–Luce ranking, whose first
item is the Luce pick), :func:`~selfconsume.curators.thurstone` sorts :math:`r_i + \sigma Z_i`;
``adversarial`` and ``mixture`` judges pick a component per group. The label of a group is its
order :math:`\pi_g` and a *depth* :math:`d` (the judge's ``kept(k)``: 1 for a pick, ``m`` for
``top_m(m)``, ``k`` for ``top_m(k)``, a full ranking), so that for ``k = 2`` a label is one
pairwise preference. Then a budget of :math:`\varepsilon G` labels (rounded to the nearest
integer, halves down, so that a budget stated in float32 or float64 flips the same number) is
*flipped* (the group's order reversed; for pairs, the preference swapped), chosen

* ``"random"``: uniformly at random;
* ``"margin"``: the groups with the largest true-reward margin :math:`\max_i r_i - \min_i r_i`
  first (the most confident labels, the most damaging flips);
* ``"influence"``: Wei & Zhang's gradient attack (ICML 2025, ``Wei-0125/Adversarial-Curation``),
  at its first-order step: the attacker fits the reward model :math:`u_c` on the clean labels and
  flips the groups whose flip most decreases :math:`J(\theta) = \operatorname{Cov}(e^{u_c(x)},
  e^{u_\theta(x)})` over the compared samples, to first order by the influence function:
  :math:`\Delta J_g = -\frac{w_g}{W} \nabla J^\top H^{-1} \nabla_\theta [\ell_g^{\rm flip} -
  \ell_g]` at :math:`\theta_c`, with :math:`H` the Hessian of the fit's loss (one solve by
  conjugate gradients on Hessian-vector products, at most 100 iterations). Their code adds a
  distance term :math:`\lVert u_\theta - u_c \rVert^2` whose gradient vanishes at
  :math:`\theta_c`, averages 5 re-fits and ranks by the absolute value of the score; here the
  signed first-order score ranks the groups.

**Fits.** A reward model :math:`u_\theta` is fitted by maximising the (weighted) Plackett–Luce
likelihood of the labels, with a ridge penalty :math:`\lambda` (``l2``) that makes the answer
finite for a separable set of comparisons and fixes the additive constant the likelihood leaves
free:

.. math:: L(\theta) = -\frac{1}{W} \sum_g w_g \sum_{j < d} \Big[u_\theta(x_{g,\pi_g(j)})
          - \log \sum_{l \ge j} e^{u_\theta(x_{g,\pi_g(l)})}\Big] + \frac{\lambda}{2}
          \lVert \theta \rVert^2,

the Bradley–Terry likelihood :math:`\sigma(u(x_{\rm win}) - u(x_{\rm lose}))` for pairs.

* :func:`tabular` (``num_states``): :math:`\theta \in \mathbb{R}^M`, :math:`u(x) = \theta_x` on
  integer states; :math:`L` is strictly convex and is minimised by damped Newton steps to a
  gradient below ``tol`` (:mod:`selfconsume._solvers`).
* :func:`linear` (``features``): :math:`u(x) = \theta^\top \phi(x)` for a fixed feature map
  (:func:`coordinates`, :func:`radial` or any hashable callable); strictly convex, Newton.
* :func:`mlp` (``dim``, ``hidden``): a ``flax`` network, fitted by ``steps`` full-batch Adam steps
  (``optax``) from the params it is given (a warm start), ``learning_rate`` an array leaf.

Every family is a ``flax.struct`` pytree (shape-setting options static, ``l2`` and
``learning_rate`` array leaves) with pure ``init(key, samples=None)``, ``fit(key, params,
comparisons)`` and ``apply(params, x)``; :data:`REWARD_MODELS` registers them.
:func:`feedback` bundles how the loop of :func:`selfconsume.run` makes and uses comparisons.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Callable, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from jax import lax

from selfconsume import _checks
from selfconsume import curators as curators_lib
from selfconsume._choice import as_float
from selfconsume._options import Options
from selfconsume._solvers import newton
from selfconsume.curators import Curator
from selfconsume.types import Array, ArrayLike, PRNGKey, PyTree

__all__ = [
    "Comparisons",
    "RewardModel",
    "Feedback",
    "compare",
    "log_likelihood",
    "group_rewards",
    "accuracy",
    "tabular",
    "linear",
    "mlp",
    "coordinates",
    "radial",
    "table",
    "feedback",
    "population_loss",
    "population_fit",
    "REWARD_MODELS",
    "FLIPS",
    "get",
]

FLIPS = ("random", "margin", "influence")


@struct.dataclass
class Comparisons:
    """Labelled groups of samples (made by :func:`compare`).

    Attributes:
        samples: ``(G, k, ...)`` the compared samples, group by group.
        order: ``(G, k)`` int32, ``order[g, j]`` the position in group ``g`` of the item ranked
            ``j``-th (``order[g, 0]`` the preferred one).
        weights: ``(G,)`` non-negative weights of the groups.
        flipped: ``(G,)`` bool, whether the group's label was flipped (its order reversed).
        depth: static number of ranked positions the label states (1: the first is preferred to
            the rest; ``k``: a full ranking).
    """

    samples: Array
    order: Array
    weights: Array
    flipped: Array
    depth: int = struct.field(pytree_node=False, default=1)

    @property
    def num_groups(self) -> int:
        return self.order.shape[0]

    @property
    def k(self) -> int:
        return self.order.shape[1]


# --------------------------------------------------------------------------------------------
# Likelihood
# --------------------------------------------------------------------------------------------


def log_likelihood(rewards: ArrayLike, order: ArrayLike, depth: int) -> Array:
    r"""Plackett–Luce log-likelihood of each group's label:
    :math:`\sum_{j<d} [u_{\pi(j)} - \log \sum_{l \ge j} e^{u_{\pi(l)}}]`.

    Args:
        rewards: ``(G, k)`` the model's rewards of the compared samples.
        order: ``(G, k)`` the labels (:attr:`Comparisons.order`).
        depth: static number of ranked positions.

    Returns:
        ``(G,)`` log-likelihoods (``k = 2``, ``depth = 1``: the Bradley–Terry
        :math:`\log \sigma(u_{\rm win} - u_{\rm lose})`).
    """
    ranked = jnp.take_along_axis(jnp.asarray(rewards), jnp.asarray(order), axis=1)
    tail = lax.cumlogsumexp(ranked, axis=1, reverse=True)
    return jnp.sum((ranked - tail)[:, :depth], axis=1)


def group_rewards(reward_model: RewardModel, params: PyTree, comparisons: Comparisons) -> Array:
    """``(G, k)`` the reward model's rewards of the compared samples."""
    g, k = comparisons.order.shape
    flat = comparisons.samples.reshape((g * k,) + comparisons.samples.shape[2:])
    return reward_model.apply(params, flat).reshape(g, k)


def accuracy(rewards: ArrayLike, comparisons: Comparisons) -> Array:
    """The weighted share of groups whose labelled first item the rewards rank first (ties
    between the top rewards count as a uniform guess).

    Args:
        rewards: ``(G, k)`` rewards of the compared samples (e.g. :func:`group_rewards`).
        comparisons: the labelled groups.

    Returns:
        scalar in ``[0, 1]`` (for pairs: the pairwise accuracy).
    """
    rewards = jnp.asarray(rewards)
    first = jnp.take_along_axis(rewards, comparisons.order[:, :1], axis=1)[:, 0]
    top = jnp.max(rewards, axis=1)
    ties = jnp.sum(rewards == top[:, None], axis=1)
    hit = jnp.where(first == top, 1.0 / jnp.maximum(ties, 1), 0.0)
    w = comparisons.weights
    return jnp.sum(w * hit) / jnp.sum(w)


# --------------------------------------------------------------------------------------------
# Reward-model families
# --------------------------------------------------------------------------------------------


def _tolerance(tol, dtype):
    if tol is not None:
        return tol
    return 1e-10 if jnp.finfo(dtype).bits == 64 else 1e-5


class RewardModel(Options):
    """The protocol of a reward-model family (subclasses are ``flax.struct`` dataclasses).

    Methods:
        init(key, samples=None): initial params (``samples``: ``(n, ...)`` example inputs, needed
            where the input size is not an option).
        apply(params, x): ``(n, ...)`` inputs -> ``(n,)`` rewards.
        fit(key, params, comparisons): params maximising the penalised likelihood of the labels
            (from ``params``: the starting point).
        loss(params, comparisons): the penalised negative log-likelihood :math:`L` the fit
            minimises.
        ok(): traced validity of the array leaves (``True`` when concrete).
    """

    name: ClassVar[str] = ""

    def loss(self, params: PyTree, comparisons: Comparisons) -> Array:
        ll = log_likelihood(group_rewards(self, params, comparisons), comparisons.order,
                            comparisons.depth)
        w = comparisons.weights
        penalty = sum(jnp.sum(jnp.square(x)) for x in jax.tree_util.tree_leaves(params))
        return -jnp.sum(w * ll) / jnp.sum(w) + 0.5 * self.l2 * penalty

    def ok(self):
        return _checks.rate_ok(self.l2, minimum=0.0, finite_only=True)


class _Convex(RewardModel):
    """Families whose penalised loss is strictly convex: fitted by Newton to ``tol``."""

    def fit(self, key: PRNGKey, params: PyTree, comparisons: Comparisons) -> PyTree:
        del key
        dtype = jax.tree_util.tree_leaves(params)[0].dtype
        hessian = getattr(self, "hessian", None)
        fitted, _ = newton(lambda p: self.loss(p, comparisons), params,
                           tol=_tolerance(self.tol, dtype), max_iterations=self.max_iterations,
                           hessian=None if hessian is None else partial(hessian,
                                                                        comparisons=comparisons))
        return fitted


@struct.dataclass(eq=False)
class Tabular(_Convex):
    """One reward per state of ``{0, ..., num_states - 1}`` (see :func:`tabular`)."""

    l2: Array
    num_states: int = struct.field(pytree_node=False, default=1)
    tol: float | None = struct.field(pytree_node=False, default=None)
    max_iterations: int = struct.field(pytree_node=False, default=50)
    name: ClassVar[str] = "tabular"

    def init(self, key: PRNGKey, samples: ArrayLike | None = None) -> Array:
        del key, samples
        return jnp.zeros((self.num_states,), jnp.result_type(float))

    def apply(self, params: Array, x: ArrayLike) -> Array:
        x = jnp.asarray(x)
        if not jnp.issubdtype(x.dtype, jnp.integer):
            raise ValueError(f"the tabular reward model reads integer states in [0, "
                             f"{self.num_states}); got samples of dtype {x.dtype}.")
        x = x.reshape(x.shape[0])
        inside = (x >= 0) & (x < self.num_states)  # a state outside [0, M) reads NaN
        return jnp.where(inside, params[jnp.clip(x, 0, self.num_states - 1)], jnp.nan)

    def hessian(self, params: Array, *, comparisons: Comparisons) -> Array:
        r"""The Hessian of :meth:`loss` in the M rewards, built from the groups:
        :math:`\sum_g \frac{w_g}{W} P_g^\top \nabla^2(-\ell_g) P_g + \lambda I`, each group's
        ``(k, k)`` curvature (autodiff on its k rewards) scattered onto its states; cost
        :math:`O(G k^2 + M^2)` rather than autodiff's :math:`O(G M)`."""
        g, k = comparisons.order.shape
        states = jnp.clip(comparisons.samples.reshape(g, k), 0, self.num_states - 1)

        def group_loss(u, order):
            return -log_likelihood(u[None], order[None], comparisons.depth)[0]

        curvature = jax.vmap(jax.hessian(group_loss))(params[states], comparisons.order)
        w = comparisons.weights / jnp.sum(comparisons.weights)
        h = jnp.zeros((self.num_states, self.num_states), params.dtype)
        h = h.at[states[:, :, None], states[:, None, :]].add(w[:, None, None] * curvature)
        return h + self.l2 * jnp.eye(self.num_states, dtype=params.dtype)


@dataclasses.dataclass(frozen=True)
class Coordinates:
    """The feature map :math:`\\phi(x) = x` (flattened; integer states become floats)."""

    def __call__(self, x: Array) -> Array:
        x = jnp.asarray(x)
        return x.reshape(x.shape[0], -1).astype(jnp.result_type(float))


@dataclasses.dataclass(frozen=True)
class Radial:
    """Gaussian radial features :math:`\\phi_c(x) = e^{-\\lVert x - c \\rVert^2 / (2 h^2)}`
    (hashable: the centres are stored as nested tuples)."""

    centers: tuple
    bandwidth: float

    def __call__(self, x: Array) -> Array:
        x = jnp.asarray(x)
        x = x.reshape(x.shape[0], -1).astype(jnp.result_type(float))
        c = jnp.asarray(self.centers, x.dtype)
        d2 = jnp.sum(jnp.square(x[:, None, :] - c[None]), axis=-1)
        return jnp.exp(-d2 / (2.0 * self.bandwidth ** 2))


@dataclasses.dataclass(frozen=True)
class Table:
    r"""Features of integer states read from a table: :math:`\phi(x)` is row :math:`x` (NaN
    outside ``[0, S)``; hashable: the rows are stored as nested tuples)."""

    rows: tuple

    def __call__(self, x: Array) -> Array:
        x = jnp.asarray(x)
        if not jnp.issubdtype(x.dtype, jnp.integer):
            raise ValueError(f"table features read integer states in [0, {len(self.rows)}); got "
                             f"samples of dtype {x.dtype}.")
        x = x.reshape(x.shape[0])
        t = jnp.asarray(self.rows, jnp.result_type(float))
        inside = (x >= 0) & (x < t.shape[0])
        return jnp.where(inside[:, None], t[jnp.clip(x, 0, t.shape[0] - 1)], jnp.nan)


def table(rows: ArrayLike) -> Table:
    """Features of the integer states ``0..S-1`` from a ``(S, F)`` table (concrete, finite)."""
    rows = np.asarray(rows, float)
    if rows.ndim != 2 or rows.shape[0] == 0 or rows.shape[1] == 0 or not np.all(
            np.isfinite(rows)):
        raise ValueError(f"`rows` must be a finite (S, F) table with S, F >= 1; got shape "
                         f"{rows.shape}.")
    return Table(tuple(map(tuple, rows.tolist())))


def coordinates() -> Coordinates:
    """The identity feature map (a linear reward in the sample's coordinates)."""
    return Coordinates()


def radial(centers: ArrayLike, bandwidth: float) -> Radial:
    """Gaussian radial features around ``centers``.

    Args:
        centers: ``(C, d)`` feature centres (concrete).
        bandwidth: the width ``h > 0``.
    """
    centers = np.asarray(centers, float)
    if centers.ndim == 1:
        centers = centers[:, None]
    if centers.ndim != 2 or centers.shape[0] == 0 or not np.all(np.isfinite(centers)):
        raise ValueError(f"`centers` must be a finite (C, d) array with C >= 1; got shape "
                         f"{centers.shape}.")
    if not (isinstance(bandwidth, (int, float, np.integer, np.floating))
            and not isinstance(bandwidth, bool) and np.isfinite(bandwidth) and bandwidth > 0):
        raise ValueError(f"`bandwidth` must be a finite number > 0; got {bandwidth!r}.")
    return Radial(tuple(map(tuple, centers.tolist())), float(bandwidth))


_FEATURES = {"coordinates": coordinates, "radial": radial, "table": table}


@struct.dataclass(eq=False)
class Linear(_Convex):
    """A reward linear in fixed features (see :func:`linear`)."""

    l2: Array
    features: Callable = struct.field(pytree_node=False, default=None)
    tol: float | None = struct.field(pytree_node=False, default=None)
    max_iterations: int = struct.field(pytree_node=False, default=50)
    name: ClassVar[str] = "linear"

    def init(self, key: PRNGKey, samples: ArrayLike | None = None) -> Array:
        del key
        if samples is None:
            raise ValueError("the linear reward model needs example `samples` to size its "
                             "weights: init(key, samples); got samples=None.")
        width = jax.eval_shape(self.features, jnp.asarray(samples)).shape[-1]
        return jnp.zeros((width,), jnp.result_type(float))

    def apply(self, params: Array, x: ArrayLike) -> Array:
        return self.features(jnp.asarray(x)) @ params


class _Net(nn.Module):
    hidden: tuple

    @nn.compact
    def __call__(self, x):
        dtype = jnp.result_type(float)  # float64 params under x64, like the other families
        for width in self.hidden:
            x = nn.silu(nn.Dense(width, param_dtype=dtype)(x))
        return nn.Dense(1, param_dtype=dtype)(x)[..., 0]


@struct.dataclass(eq=False)
class MLP(RewardModel):
    """A neural reward (see :func:`mlp`)."""

    l2: Array
    learning_rate: Array
    dim: int = struct.field(pytree_node=False, default=1)
    hidden: tuple = struct.field(pytree_node=False, default=(64,))
    steps: int = struct.field(pytree_node=False, default=300)
    name: ClassVar[str] = "mlp"

    def init(self, key: PRNGKey, samples: ArrayLike | None = None) -> PyTree:
        del samples
        return _Net(self.hidden).init(key, jnp.zeros((1, self.dim), jnp.result_type(float)))

    def apply(self, params: PyTree, x: ArrayLike) -> Array:
        x = jnp.asarray(x)
        x = x.reshape(x.shape[0], -1).astype(jnp.result_type(float))
        if x.shape[1] != self.dim:
            raise ValueError(f"the mlp reward model reads samples of dimension {self.dim}; got "
                             f"samples of shape {x.shape}.")
        return _Net(self.hidden).apply(params, x)

    def fit(self, key: PRNGKey, params: PyTree, comparisons: Comparisons) -> PyTree:
        del key
        opt = optax.adam(self.learning_rate)
        loss = lambda p: self.loss(p, comparisons)  # noqa: E731

        def step(carry, _):
            p, state = carry
            updates, state = opt.update(jax.grad(loss)(p), state, p)
            return (optax.apply_updates(p, updates), state), None

        (params, _), _ = lax.scan(step, (params, opt.init(params)), None, length=self.steps)
        return params

    def ok(self):
        return (_checks.rate_ok(self.l2, minimum=0.0, finite_only=True)
                & _checks.rate_ok(self.learning_rate, minimum=0.0, finite_only=True))


def _tol_option(tol):
    if tol is not None and not (isinstance(tol, (int, float)) and tol > 0):
        raise ValueError(f"`tol` must be None or a number > 0; got {tol!r}.")
    return None if tol is None else float(tol)


def tabular(num_states: int, *, l2: ArrayLike = 1e-3, tol: float | None = None,
            max_iterations: int = 50) -> Tabular:
    r"""One reward per state: the fully expressive reward model on a finite support.

    Args:
        num_states: static number of states M (samples are integers in ``[0, M)``).
        l2: ridge :math:`\lambda \ge 0` on the M rewards (an array leaf; > 0 keeps a separable
            set of comparisons finite and centres the rewards: at the minimiser they sum to 0).
        tol: the fit stops when the gradient's largest entry is at most ``tol`` (``None``:
            ``1e-10`` in float64, ``1e-5`` in float32).
        max_iterations: static bound on the Newton steps.
    """
    return Tabular(l2=_checks.rate("l2", l2, minimum=0.0, finite_only=True),
                   num_states=_checks.static_int("num_states", num_states, minimum=1),
                   tol=_tol_option(tol),
                   max_iterations=_checks.static_int("max_iterations", max_iterations,
                                                     minimum=1))


def linear(features: Callable | str = "coordinates", *, l2: ArrayLike = 1e-3,
           tol: float | None = None, max_iterations: int = 50) -> Linear:
    r"""A reward linear in fixed features, :math:`u(x) = \theta^\top \phi(x)`.

    Args:
        features: ``"coordinates"``, a map from :func:`radial` (or the dict ``{"name":
            "radial", "centers": ..., "bandwidth": ...}``), or any hashable callable
            ``(n, ...) -> (n, F)``.
        l2, tol, max_iterations: as in :func:`tabular`.
    """
    if isinstance(features, dict) and isinstance(features.get("name"), str):  # a TOML table
        options = dict(features)
        name = options.pop("name")
        if name not in _FEATURES:
            raise ValueError(f"`features` name must be one of {sorted(_FEATURES)}; got {name!r}.")
        features = _FEATURES[name](**options)
    elif isinstance(features, str):
        if features not in _FEATURES:
            raise ValueError(f"`features` must be one of {sorted(_FEATURES)} or a callable; got "
                             f"{features!r}.")
        features = _FEATURES[features]()
    if not callable(features):
        raise ValueError(f"`features` must be a feature map (callable) or a name; got "
                         f"{type(features).__name__}.")
    return Linear(l2=_checks.rate("l2", l2, minimum=0.0, finite_only=True), features=features,
                  tol=_tol_option(tol),
                  max_iterations=_checks.static_int("max_iterations", max_iterations,
                                                    minimum=1))


def mlp(dim: int, hidden: int | tuple = (64,), *, learning_rate: ArrayLike = 1e-2,
        l2: ArrayLike = 1e-4, steps: int = 300) -> MLP:
    r"""A multilayer perceptron reward (SiLU hidden layers, ``flax``), fitted by Adam.

    Args:
        dim: static input dimension (samples are flattened to ``(n, dim)``).
        hidden: widths of the hidden layers (an int: one layer).
        learning_rate: Adam's step size (an array leaf, sweepable).
        l2: ridge on every parameter.
        steps: static number of full-batch Adam steps per fit (from the params given).
    """
    hidden = (hidden,) if isinstance(hidden, int) else tuple(hidden)
    for width in hidden:
        _checks.static_int("hidden", width, minimum=1)
    return MLP(l2=_checks.rate("l2", l2, minimum=0.0, finite_only=True),
               learning_rate=_checks.rate("learning_rate", learning_rate, minimum=0.0,
                                          finite_only=True),
               dim=_checks.static_int("dim", dim, minimum=1), hidden=hidden,
               steps=_checks.static_int("steps", steps, minimum=1))


REWARD_MODELS: dict[str, Callable[..., RewardModel]] = _checks.Registry("reward model", {
    "tabular": tabular,
    "linear": linear,
    "mlp": mlp,
})
"""Registry: family name -> factory (an unknown name raises a ``ValueError`` that is also a
``KeyError``)."""


def get(name: str, /, **options) -> RewardModel:
    """Builds the reward model registered under ``name``, e.g. ``get("tabular", num_states=8)``.

    Raises:
        ValueError: if ``name`` is not a key of :data:`REWARD_MODELS`.
    """
    if name not in REWARD_MODELS:
        raise ValueError(f"`name` must be one of {sorted(REWARD_MODELS)}; got {name!r}.")
    try:
        return REWARD_MODELS[name](**options)
    except TypeError as e:
        raise ValueError(f"invalid options for reward model {name!r}: {e}") from None


# --------------------------------------------------------------------------------------------
# Judges and comparisons
# --------------------------------------------------------------------------------------------


def _one_column(rewards, column):
    return curators_lib.read_column(rewards, column)


def _utilities(key, judge, rewards, sign):
    """``(primary, secondary)`` ``(G, k)`` keys whose descending lexicographic order is the
    judge's ranking of each group (``sign = -1``: the judge ranks ``-r``)."""
    g, k = rewards.shape[:2]
    key_noise, key_tie = jax.random.split(key)
    tie = jax.random.uniform(key_tie, (g, k))
    if isinstance(judge, (curators_lib.Luce, curators_lib.TopM)):
        r = sign * _one_column(rewards, judge.column)
        r = jnp.where(jnp.isnan(r), -jnp.inf, r)
        beta = jnp.asarray(judge.beta, r.dtype)
        hard = jnp.isinf(beta)
        noisy = jnp.where(hard, 0.0, beta) * r + jax.random.gumbel(key_noise, (g, k), r.dtype)
        noisy = jnp.where(jnp.isneginf(r), -jnp.inf, noisy)
        return jnp.where(hard, r, noisy), tie
    if isinstance(judge, curators_lib.Thurstone):
        r = sign * _one_column(rewards, judge.column)
        r = jnp.where(jnp.isnan(r), -jnp.inf, r)
        sigma = jnp.asarray(judge.sigma, r.dtype)
        z = jax.random.normal(key_noise, (g, k), r.dtype)
        noisy = jnp.where(jnp.isinf(sigma), z, r + jnp.where(jnp.isinf(sigma), 0.0, sigma) * z)
        return noisy, tie
    if isinstance(judge, curators_lib.Adversarial):
        key_base, key_flip = jax.random.split(key_noise)
        honest = _utilities(key_base, judge.base, rewards, sign)
        adverse = _utilities(key_base, judge.base, rewards, -sign)
        which = jax.random.uniform(key_flip, (g, 1)) < judge.eps
        return tuple(jnp.where(which, a, h) for h, a in zip(honest, adverse))
    if isinstance(judge, curators_lib.Mixture):
        keys = jax.random.split(key_noise, len(judge.components) + 1)
        logits = jnp.log(jnp.asarray(judge.weights))
        pick = jax.random.categorical(keys[-1], logits, shape=(g,))[:, None]
        parts = [_utilities(kk, c, rewards, sign) for kk, c in zip(keys, judge.components)]
        return tuple(jnp.choose(pick, [p[i] for p in parts], mode="clip") for i in range(2))
    raise ValueError(f"`judge` must be a random-utility curator (luce, top_m, thurstone, or an "
                     f"adversarial or mixture of them); got {getattr(judge, 'name', judge)!r}.")


def _check_judge(judge):
    if isinstance(judge, (curators_lib.Adversarial,)):
        _check_judge(judge.base)
    elif isinstance(judge, curators_lib.Mixture):
        for c in judge.components:
            _check_judge(c)
    elif not isinstance(judge, (curators_lib.Luce, curators_lib.TopM, curators_lib.Thurstone)):
        raise ValueError(f"`judge` must be a random-utility curator (luce, top_m, thurstone, or "
                         f"an adversarial or mixture of them); got "
                         f"{getattr(judge, 'name', type(judge).__name__)!r}.")


def _flip_order(order, flipped):
    return jnp.where(flipped[:, None], order[:, ::-1], order)


def _influence_scores(key, reward_model, comparisons):
    """Per group, the first-order decrease of :math:`J = \\operatorname{Cov}(e^{u_c}, e^{u})`
    that flipping its label causes (larger: a more harmful flip)."""
    sample = comparisons.samples.reshape((-1,) + comparisons.samples.shape[2:])
    key_init, key_fit = jax.random.split(key)
    theta = reward_model.fit(key_fit, reward_model.init(key_init, sample), comparisons)
    u_clean = reward_model.apply(theta, sample)
    e_clean = jnp.exp(u_clean - jnp.max(u_clean))
    shift = lax.stop_gradient(jnp.max(u_clean))

    def objective(p):
        e = jnp.exp(reward_model.apply(p, sample) - shift)
        return jnp.mean((e_clean - jnp.mean(e_clean)) * (e - jnp.mean(e)))

    loss = lambda p: reward_model.loss(p, comparisons)  # noqa: E731
    hvp = lambda v: jax.jvp(jax.grad(loss), (theta,), (v,))[1]  # noqa: E731
    v, _ = jax.scipy.sparse.linalg.cg(hvp, jax.grad(objective)(theta), maxiter=100)
    reversed_order = comparisons.order[:, ::-1]

    def flip_cost(p):  # l_g(flipped) - l_g(original), per group
        u = group_rewards(reward_model, p, comparisons)
        return (log_likelihood(u, comparisons.order, comparisons.depth)
                - log_likelihood(u, reversed_order, comparisons.depth))

    directional = jax.jvp(flip_cost, (theta,), (v,))[1]
    w = comparisons.weights
    return w / jnp.sum(w) * directional


def compare(
    key: PRNGKey,
    samples: ArrayLike,
    true_rewards: ArrayLike,
    *,
    k: int,
    judge: Curator | None = None,
    eps: ArrayLike = 0.0,
    flip: str = "random",
    weights: ArrayLike | None = None,
    reward_model: RewardModel | None = None,
) -> Comparisons:
    """Comparison data the way people make it: groups of ``k`` ranked by a judge, then poisoned.

    Args:
        key: PRNG key, consumed.
        samples: ``(n, ...)`` samples, ``n`` a multiple of ``k``; group ``g`` holds rows
            ``[g*k, (g+1)*k)``.
        true_rewards: ``(n,)`` their true rewards.
        k: static group size >= 2.
        judge: the curator that ranks each group (``None``: ``luce(1.0)``, a Bradley–Terry judge
            for pairs); its ``kept(k)`` is the label's depth.
        eps: the flip budget, a fraction in ``[0, 1]`` of the groups (``eps * G`` rounded to
            the nearest integer are flipped); an array leaf: traced values outside give NaN
            weights.
        flip: how the flipped groups are chosen: ``"random"``, ``"margin"`` or ``"influence"``
            (the module docstring).
        weights: optional ``(G,)`` non-negative group weights (default 1).
        reward_model: the family the attacker fits (``flip="influence"`` only).

    Returns:
        :class:`Comparisons` of ``G = n / k`` groups.

    Raises:
        ValueError: naming the argument, for shapes and concrete values out of range.
    """
    k = _checks.static_int("k", k, minimum=2)
    samples = jnp.asarray(samples)
    true_rewards = as_float(true_rewards)
    n = samples.shape[0] if samples.ndim else 0
    if n == 0 or n % k:
        raise ValueError(f"`samples` must hold a positive multiple of k={k} rows; got shape "
                         f"{samples.shape}.")
    if true_rewards.shape != (n,):
        raise ValueError(f"`true_rewards` must have shape ({n},) like the samples; got "
                         f"{true_rewards.shape}.")
    judge = curators_lib.luce(1.0) if judge is None else judge
    _check_judge(judge)
    if flip not in FLIPS:
        raise ValueError(f"`flip` must be one of {FLIPS}; got {flip!r}.")
    if flip == "influence" and not isinstance(reward_model, RewardModel):
        raise ValueError("`flip='influence'` needs the attacker's `reward_model` (e.g. "
                         "sc.reward_models.tabular(M)); got reward_model=None.")
    _checks.scalar("eps", eps, minimum=0.0, maximum=1.0)
    g = n // k
    if weights is None:
        weights = jnp.ones((g,), true_rewards.dtype)
    else:
        weights = jnp.asarray(weights, true_rewards.dtype)
        if weights.shape != (g,):
            raise ValueError(f"`weights` must have shape ({g},), one per group; got "
                             f"{weights.shape}.")
        _checks.weights("weights", weights)
    key_judge, key_flip = jax.random.split(key)
    grouped = true_rewards.reshape(g, k)
    primary, secondary = _utilities(key_judge, judge, grouped[..., None], 1.0)
    order = jnp.lexsort((-secondary, -primary), axis=-1).astype(jnp.int32)
    clean = Comparisons(samples=samples.reshape((g, k) + samples.shape[1:]), order=order,
                        weights=weights, flipped=jnp.zeros((g,), bool), depth=judge.kept(k))
    if flip == "random":
        score = jax.random.uniform(key_flip, (g,))
    elif flip == "margin":
        finite = jnp.where(jnp.isfinite(grouped), grouped, jnp.nan)
        score = jnp.nan_to_num(jnp.nanmax(finite, axis=1) - jnp.nanmin(finite, axis=1),
                               nan=-1.0)
    else:
        score = _influence_scores(key_flip, reward_model, clean)
    rank = jnp.argsort(jnp.argsort(-score, stable=True), stable=True)
    eps_arr = jnp.asarray(eps, true_rewards.dtype)
    flipped = rank.astype(true_rewards.dtype) + 0.5 < eps_arr * g  # round(eps * G) flips
    ok = _checks.rate_ok(eps_arr, minimum=0.0, maximum=1.0, finite_only=True)
    return clean.replace(order=_flip_order(order, flipped), flipped=flipped,
                         weights=_checks.poison(ok, weights))


# --------------------------------------------------------------------------------------------
# The feedback protocol of the loop
# --------------------------------------------------------------------------------------------


@struct.dataclass(eq=False)
class Feedback(Options):
    """How the loop of :func:`selfconsume.run` makes comparisons and refits (see
    :func:`feedback`)."""

    judge: Curator
    eps: Array
    num_comparisons: int = struct.field(pytree_node=False, default=1024)
    k: int = struct.field(pytree_node=False, default=2)
    flip: str = struct.field(pytree_node=False, default="random")
    refit_every: int = struct.field(pytree_node=False, default=1)
    num_heldout: int = struct.field(pytree_node=False, default=256)

    def ok(self):
        return (_checks.rate_ok(self.eps, minimum=0.0, maximum=1.0, finite_only=True)
                & self.judge.ok())

    def due(self, generation):
        """Whether the reward model is refitted at ``generation`` (0, r, 2r, ...; only 0 for
        ``refit_every = 0``)."""
        if self.refit_every == 0:
            return generation == 0
        return generation % self.refit_every == 0


def feedback(num_comparisons: int = 1024, *, k: int = 2, judge: Curator | None = None,
             eps: ArrayLike = 0.0, flip: str = "random", refit_every: int = 1,
             num_heldout: int = 256) -> Feedback:
    """The comparisons the loop's reward model learns from.

    Each refit draws ``num_comparisons * k`` fresh samples of the current model, has them
    compared by :func:`compare` (``judge``, ``eps``, ``flip``) and refits the reward model from
    its current params; ``num_heldout`` further groups, judged but never flipped, measure its
    accuracy every generation.

    Args:
        num_comparisons: static number of groups per refit (pairs for ``k = 2``).
        k: static group size >= 2.
        judge: the curator that labels (``None``: ``luce(1.0)``); its rates are array leaves.
        eps: flip budget in ``[0, 1]`` (an array leaf, sweepable).
        flip: ``"random"``, ``"margin"`` or ``"influence"``.
        refit_every: static; refit at generations ``0, r, 2r, ...`` (``1``: every generation,
            Wei & Zhang's pipeline; ``0``: once, at generation 0).
        num_heldout: static number of held-out groups (>= 1).
    """
    judge = curators_lib.luce(1.0) if judge is None else judge
    _check_judge(judge)
    k = _checks.static_int("k", k, minimum=2)
    judge.kept(k)  # raises for a judge that cannot rank groups of k
    if flip not in FLIPS:
        raise ValueError(f"`flip` must be one of {FLIPS}; got {flip!r}.")
    return Feedback(judge=judge,
                    eps=_checks.rate("eps", eps, minimum=0.0, maximum=1.0, finite_only=True),
                    num_comparisons=_checks.static_int("num_comparisons", num_comparisons,
                                                       minimum=1),
                    k=k, flip=flip,
                    refit_every=_checks.static_int("refit_every", refit_every, minimum=0),
                    num_heldout=_checks.static_int("num_heldout", num_heldout, minimum=1))


# --------------------------------------------------------------------------------------------
# Infinitely many comparisons: the population fit of the tabular model
# --------------------------------------------------------------------------------------------


def _pair_probability(judge, delta):
    r"""P(the first of a pair is preferred) when its true reward exceeds the other's by
    ``delta``, for a random-utility judge of pairs."""
    if isinstance(judge, (curators_lib.Luce, curators_lib.TopM)):
        beta = jnp.asarray(judge.beta, delta.dtype)
        soft = jax.nn.sigmoid(jnp.where(jnp.isinf(beta), 0.0, beta) * delta)
        return jnp.where(jnp.isinf(beta), 0.5 * (1.0 + jnp.sign(delta)), soft)
    if isinstance(judge, curators_lib.Thurstone):
        sigma = jnp.asarray(judge.sigma, delta.dtype)
        z = delta / (jnp.sqrt(2.0) * jnp.where(sigma > 0, sigma, 1.0))
        soft = jnp.where(jnp.isinf(sigma), 0.5, jax.scipy.stats.norm.cdf(z))
        return jnp.where(sigma == 0, 0.5 * (1.0 + jnp.sign(delta)), soft)
    if isinstance(judge, curators_lib.Adversarial):
        eps = jnp.asarray(judge.eps, delta.dtype)
        return ((1 - eps) * _pair_probability(judge.base, delta)
                + eps * _pair_probability(judge.base, -delta))
    weights = jnp.asarray(judge.weights, delta.dtype)
    return sum(w * _pair_probability(c, delta) for w, c in zip(weights, judge.components))


def _margin_flips(mass, margin, eps):
    """The share of each pair flipped when a mass ``eps`` of pairs is flipped, largest margins
    first (the pairs at the boundary margin share what is left); one sort of the pairs."""
    m, w = margin.reshape(-1), mass.reshape(-1)
    order = jnp.argsort(-m)
    descending = -m[order]  # ascending in -margin
    cum = jnp.concatenate([jnp.zeros((1,), w.dtype), jnp.cumsum(w[order])])
    above = cum[jnp.searchsorted(descending, -m, side="left")]
    level = cum[jnp.searchsorted(descending, -m, side="right")] - above
    share = jnp.clip((eps - above) / jnp.where(level > 0, level, 1.0), 0.0, 1.0)
    return share.reshape(mass.shape)


def _population_pieces(p, true_rewards, fb, dtype):
    """``(mass, q)``: the mass of each ordered pair and the probability its label prefers the
    first."""
    p, r = jnp.asarray(p, dtype), jnp.asarray(true_rewards, dtype)
    prefer = _pair_probability(fb.judge, r[:, None] - r[None, :])
    mass = p[:, None] * p[None, :]
    eps = jnp.asarray(fb.eps, dtype)
    share = eps if fb.flip == "random" else _margin_flips(mass, jnp.abs(r[:, None] - r[None, :]),
                                                          eps)
    return mass, (1 - share) * prefer + share * (1 - prefer)


def _population_value(u, mass, q, l2):
    d = u[:, None] - u[None, :]
    nll = -(q * jax.nn.log_sigmoid(d) + (1 - q) * jax.nn.log_sigmoid(-d))
    return jnp.sum(mass * nll) + 0.5 * l2 * jnp.sum(jnp.square(u))


def _population_hessian(u, mass, l2):
    """The Hessian of :func:`population_loss` in u: a weighted graph Laplacian plus the ridge,
    built in O(M^2) (the curvature of each pair does not depend on its label)."""
    d = u[:, None] - u[None, :]
    c = mass * jax.nn.sigmoid(d) * jax.nn.sigmoid(-d)
    c = c + c.T
    return jnp.diag(jnp.sum(c, axis=1)) - c + l2 * jnp.eye(u.shape[0], dtype=u.dtype)


def population_loss(params: ArrayLike, p: ArrayLike, true_rewards: ArrayLike, *,
                    reward_model: Tabular, feedback: Feedback | None = None) -> Array:
    r"""The tabular fit's loss with infinitely many pairs drawn from ``p``:
    :math:`-\sum_{x,y} p_x p_y [q_{xy} \log\sigma(u_x - u_y) + (1 - q_{xy}) \log\sigma(u_y - u_x)]
    + \frac{\lambda}{2} \lVert u \rVert^2`, with :math:`q_{xy}` the probability that the (possibly
    flipped) label prefers x: :math:`(1-s_{xy}) P_{xy} + s_{xy} (1 - P_{xy})`, :math:`P_{xy}` the
    judge's, :math:`s_{xy}` the flipped share (``eps`` for random flips; for margin flips 1 on
    the pairs of largest :math:`|r_x - r_y|` up to a mass ``eps``).

    Args:
        params: ``(M,)`` the tabular rewards u.
        p: ``(M,)`` the law of the compared samples.
        true_rewards: ``(M,)`` the true rewards.
        reward_model: the :func:`tabular` model (its ``l2``).
        feedback: pairs (``k = 2``) with ``flip`` ``"random"`` or ``"margin"`` (default
            :func:`feedback`).
    """
    fb = feedback if feedback is not None else globals()["feedback"]()
    u = jnp.asarray(params)
    mass, q = _population_pieces(p, true_rewards, fb, u.dtype)
    return _population_value(u, mass, q, reward_model.l2)


def population_fit(p: ArrayLike, true_rewards: ArrayLike, *, reward_model: Tabular,
                   feedback: Feedback | None = None) -> Array:
    """The tabular reward fitted from infinitely many comparisons of samples of ``p``: the
    minimiser of :func:`population_loss` (Newton, to the model's ``tol``). With random flips at
    rate ``eps`` it is not a rescaled true reward (the flips pull each pair's logit toward 0 by
    an amount that depends on the pair's margin).

    Args:
        p: ``(M,)`` the law of the compared samples. true_rewards: ``(M,)``.
        reward_model: a :func:`tabular` model with ``num_states = M``.
        feedback: pairs (``k = 2``), ``flip`` ``"random"`` or ``"margin"``.

    Returns:
        ``(M,)`` the fitted rewards (a state with ``p = 0`` gets 0, as in a sample fit).

    Raises:
        ValueError: for another family, another ``k``, the ``influence`` rule, or shapes.
    """
    fb = feedback if feedback is not None else globals()["feedback"]()
    if not isinstance(reward_model, Tabular):
        raise ValueError(f"`reward_model` must be a tabular model for the population fit; got "
                         f"{getattr(reward_model, 'name', type(reward_model).__name__)!r}.")
    if not isinstance(fb, Feedback) or fb.k != 2 or fb.flip == "influence":
        raise ValueError("`feedback` must compare pairs (k=2) with flip 'random' or 'margin' for "
                         f"the population fit; got {fb!r}.")
    p = as_float(p)
    if jnp.shape(p) != (reward_model.num_states,) or jnp.shape(true_rewards) != jnp.shape(p):
        raise ValueError(f"`p` and `true_rewards` must have shape ({reward_model.num_states},); "
                         f"got {jnp.shape(p)} and {jnp.shape(true_rewards)}.")
    mass, q = _population_pieces(p, true_rewards, fb, p.dtype)
    l2 = jnp.asarray(reward_model.l2, p.dtype)
    u, _ = newton(lambda u: _population_value(u, mass, q, l2), jnp.zeros(p.shape, p.dtype),
                  tol=_tolerance(reward_model.tol, p.dtype),
                  max_iterations=reward_model.max_iterations,
                  hessian=lambda u: _population_hessian(u, mass, l2))
    ok = reward_model.ok() & fb.ok()
    return _checks.poison(ok, u)

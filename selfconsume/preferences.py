r"""Drifting preferences: a reward whose parameters move with what the model shows.

A preference is a reward :math:`r_w(x)` whose parameters :math:`w` are part of the loop's state
(``RetrainState.reward_params``). At every generation :math:`t \ge 1` they move before the
candidates of :math:`p_t` are curated, by a rule of the candidates :math:`x_1..x_N \sim p_t`:

.. math:: w_t = \mathrm{drift}(w_{t-1}, x_{1..N}),

and the curator reads :math:`r_{w_t}` (at :math:`t = 0`, :math:`w_0`). :func:`linear` is the
co-evolving rule of Wei, Xie, Zhu and Zhang: a reward linear in features :math:`\phi`,
:math:`r_w(x) = \phi(x)^\top w`, pulled toward the features the model now produces,

.. math:: w_t = (1 - \eta)\, w_{t-1} + \eta\, \bar\phi(p_t), \qquad
          \bar\phi(p) = \mathbb{E}_p[\phi(X)],

with :math:`\bar\phi(p_t)` estimated by the candidates' mean. :math:`\eta = 0` is a fixed
preference; :math:`\eta = 1` prefers exactly what the model produced last. With one-hot features
on a finite support (``features="states"``) :math:`w` is a reward per state, and the drift adds
the model's own probabilities to it: popularity feeds preference. The exact dynamics on a finite
support are :func:`selfconsume.theory.drift_trajectory`. :func:`custom` wraps any rule.

**Structure.** A preference is a ``flax.struct`` pytree: the feature map and the rule are static,
:math:`\eta` and :math:`w_0` are array leaves, so ``vmap`` over :math:`\eta` batches one compiled
program. Pass it to :func:`selfconsume.run` (or :func:`selfconsume.ecosystem.run`) as
``preference=``; the history then adds ``preference_reward_mean`` (the mean drifting reward of
the candidates) and ``reward_params`` (:math:`w_t`), while ``reward_fn`` stays the fixed
reference reward of the reward metrics.
"""

from __future__ import annotations

from typing import Callable, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from selfconsume import _checks
from selfconsume import reward_models as reward_models_lib
from selfconsume._options import Options
from selfconsume.types import Array, ArrayLike, PyTree

__all__ = ["Preference", "Linear", "Custom", "linear", "custom", "PREFERENCES", "get"]


class Preference(Options):
    """The protocol of a drifting preference (subclasses are ``flax.struct`` dataclasses).

    Methods:
        init(): the initial parameters :math:`w_0`.
        apply(params, x): ``(n, ...)`` samples -> ``(n,)`` rewards :math:`r_w(x)`.
        drift(params, samples): the parameters after one generation, moved by the model's
            ``(N, ...)`` samples.
        ok(): traced validity of the array leaves (``True`` when concrete).
    """

    name: ClassVar[str] = ""


@struct.dataclass(eq=False)
class Linear(Preference):
    """A reward linear in features, drifting toward the model's feature mean (:func:`linear`)."""

    eta: Array
    weights0: Array
    features: Callable = struct.field(pytree_node=False, default=None)
    name: ClassVar[str] = "linear"

    def init(self) -> Array:
        return self.weights0

    def apply(self, params: Array, x: ArrayLike) -> Array:
        return self.features(jnp.asarray(x)) @ params

    def drift(self, params: Array, samples: ArrayLike) -> Array:
        mean = jnp.mean(self.features(jnp.asarray(samples)), axis=0).astype(params.dtype)
        eta = jnp.asarray(self.eta, params.dtype)
        return (1.0 - eta) * params + eta * mean

    def ok(self):
        return _checks.rate_ok(self.eta, minimum=0.0, maximum=1.0)


@struct.dataclass(eq=False)
class Custom(Preference):
    """Any rule: ``apply_fn(params, x)`` and ``drift_fn(params, samples)`` (:func:`custom`)."""

    params0: PyTree
    apply_fn: Callable = struct.field(pytree_node=False, default=None)
    drift_fn: Callable = struct.field(pytree_node=False, default=None)
    name: ClassVar[str] = "custom"

    def init(self) -> PyTree:
        return self.params0

    def apply(self, params: PyTree, x: ArrayLike) -> Array:
        return self.apply_fn(params, jnp.asarray(x))

    def drift(self, params: PyTree, samples: ArrayLike) -> PyTree:
        return self.drift_fn(params, jnp.asarray(samples))

    def ok(self):
        return True


def _features(features, width: int):
    """The feature map of :func:`linear`'s ``features`` option."""
    if isinstance(features, str) and features == "states":
        return reward_models_lib.table(np.eye(width))
    if isinstance(features, (np.ndarray, jax.Array, list)) and not callable(features):
        table = np.asarray(features, float)
        if table.ndim != 2 or table.shape[1] != width:
            raise ValueError(f"`features` as a table must have shape (S, {width}) (one row of "
                             f"{width} features per state, like `weights0`); got shape "
                             f"{table.shape}.")
        return reward_models_lib.table(table)
    try:
        fn = reward_models_lib.linear(features).features
    except ValueError as err:
        raise ValueError(str(err).replace("`features` must be one of", "`features` must be "
                                          "'states', a (S, F) table, or one of")) from None
    if isinstance(fn, reward_models_lib.Radial) and len(fn.centers) != width:
        raise ValueError(f"`features` has {len(fn.centers)} radial centres but `weights0` has "
                         f"{width} weights; give one weight per centre.")
    return fn


def linear(features, weights0: ArrayLike, *, eta: ArrayLike = 0.1) -> Linear:
    r"""A reward linear in features, :math:`r_w(x) = \phi(x)^\top w`, drifting by
    :math:`w_t = (1 - \eta) w_{t-1} + \eta \bar\phi(p_t)`.

    Args:
        features: the feature map :math:`\phi`: ``"states"`` (one-hot on the integer states
            ``0..F-1``: :math:`w` is a reward per state), a ``(S, F)`` table (:math:`\phi(x)` is
            row :math:`x` of it, for integer states), ``"coordinates"``, a radial map (a dict
            ``{"name": "radial", "centers": ..., "bandwidth": ...}`` or
            :func:`selfconsume.reward_models.radial`), or any hashable callable
            ``(n, ...) -> (n, F)``.
        weights0: ``(F,)`` the initial weights :math:`w_0` (finite; an array leaf).
        eta: the drift rate :math:`\eta \in [0, 1]` (an array leaf, sweepable).

    Raises:
        ValueError: naming the option, for a bad feature map, non-finite or non-vector weights,
            or :math:`\eta` outside :math:`[0, 1]`.
    """
    if isinstance(weights0, (list, tuple)):
        weights0 = np.asarray(weights0, float)
    if jnp.ndim(weights0) != 1 or jnp.shape(weights0)[0] < 1:
        raise ValueError(f"`weights0` must be a vector (F,) with F >= 1; got shape "
                         f"{jnp.shape(weights0)}.")
    weights0 = jnp.asarray(weights0, jnp.result_type(float)) if isinstance(
        weights0, np.ndarray) else jnp.asarray(weights0)
    if not jnp.issubdtype(weights0.dtype, jnp.floating):
        weights0 = weights0.astype(jnp.result_type(float))
    _checks.finite("weights0", weights0)
    _checks.scalar("eta", eta, minimum=0.0, maximum=1.0)
    eta = jnp.asarray(eta, weights0.dtype) if isinstance(eta, (int, float)) else jnp.asarray(eta)
    return Linear(eta=eta, weights0=weights0, features=_features(features, weights0.shape[0]))


def custom(apply: Callable, drift: Callable, params0: PyTree) -> Custom:
    """Any drifting preference: ``apply(params, x) -> (n,)`` rewards and ``drift(params,
    samples) -> params`` (pure, hashable callables; ``params0`` the initial parameters, whose
    leaves may be swept).

    Raises:
        ValueError: if ``apply`` or ``drift`` is not callable.
    """
    for name, fn in (("apply", apply), ("drift", drift)):
        if not callable(fn):
            raise ValueError(f"`{name}` must be callable; got {type(fn).__name__}.")
    return Custom(params0=jax.tree.map(jnp.asarray, params0), apply_fn=apply, drift_fn=drift)


PREFERENCES: dict[str, Callable[..., Preference]] = _checks.Registry("preference", {
    "linear": linear,
})
"""Registry: name -> factory (an unknown name raises a ``ValueError`` that is also a
``KeyError``)."""


def get(name: str, /, **options) -> Preference:
    """Builds the preference registered under ``name``, e.g. ``get("linear", features="states",
    weights0=r, eta=0.3)``.

    Raises:
        ValueError: for an unknown name or options that do not fit.
    """
    if name not in PREFERENCES:
        raise ValueError(f"`name` must be one of {sorted(PREFERENCES)}; got {name!r}.")
    try:
        return PREFERENCES[name](**options)
    except TypeError as e:
        raise ValueError(f"invalid options for preference {name!r}: {e}") from None

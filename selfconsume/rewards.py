r"""Reward functions: pure maps from samples ``(n, ...)`` to rewards ``(n,)``.

* ``distance(center, scale, radius)``: :math:`r(x) = -s \max(0, \|x - c\| - \rho)`, the clipped
  distance reward of the paper's two-dimensional experiments (flat, maximal, inside the ball of
  radius :math:`\rho` around :math:`c`).
* ``linear(direction, scale)``: :math:`r(x) = s \langle d, x \rangle`.
* ``table(values)``: :math:`r(x) = v_x` for categorical states :math:`x \in \{0..M-1\}`.

Rewards from a classifier :math:`q(x) = \operatorname{softmax}(f(x))` over ``C`` classes (a
:class:`selfconsume.classifier.Classifier`) or from a generative model's density:

* ``class_probability(classifier, i, scale)``: :math:`r(x) = s\, q_i(x)`; the paper's CIFAR-10
  reward is ``class_probability(classifier, 0, scale=5.0)`` = :math:`5 q_{\rm airplane}(x)`.
* ``confidence(classifier, scale)``: :math:`r(x) = s \max_i q_i(x)`.
* ``log_density(model, params, scale)``: :math:`r(x) = s \log p_\theta(x)` for a
  :class:`selfconsume.models.GenerativeModel` with a tractable ``log_prob``.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable

import jax.numpy as jnp
import numpy as np

from selfconsume import _checks
from selfconsume.types import Array, ArrayLike, PyTree

__all__ = ["distance", "linear", "table", "class_probability", "confidence", "log_density",
           "REWARDS"]

RewardFn = Callable[[Array], Array]


def _vector(name: str, value: ArrayLike) -> Array:
    value = jnp.asarray(value, jnp.result_type(float))
    if value.ndim != 1 or value.shape[0] == 0:
        raise ValueError(f"`{name}` must be a non-empty 1-D vector; got shape {value.shape}.")
    return value


def _check_points(x: Array, dim: int) -> Array:
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f"the reward expects samples of shape (n, {dim}); got shape {x.shape}.")
    return x


def distance(center: ArrayLike, *, scale: ArrayLike = 1.0, radius: ArrayLike = 0.0) -> RewardFn:
    """The clipped distance reward ``-scale * max(0, ||x - center|| - radius)``.

    Args:
        center: ``(d,)`` the rewarded point. scale: reward scale (may be traced). radius: the
            radius of the flat top.

    Returns:
        ``reward(x: (n, d)) -> (n,)``.
    """
    center = _vector("center", center)
    _check_scale(scale)
    _checks.scalar("radius", radius, minimum=0.0)

    def reward(x: Array) -> Array:
        x = _check_points(jnp.asarray(x), center.shape[0])
        dist = jnp.sqrt(jnp.sum((x - center[None, :]) ** 2, axis=1))
        return -scale * jnp.maximum(dist - radius, 0.0)

    return reward


def linear(direction: ArrayLike, *, scale: ArrayLike = 1.0) -> RewardFn:
    """The linear reward ``scale * <direction, x>``; returns ``reward(x: (n, d)) -> (n,)``."""
    direction = _vector("direction", direction)
    _check_scale(scale)

    def reward(x: Array) -> Array:
        return scale * (_check_points(jnp.asarray(x), direction.shape[0]) @ direction)

    return reward


def table(values: ArrayLike) -> RewardFn:
    """Rewards of categorical states: ``reward(x: (n,) int) -> values[x]``."""
    values = _vector("values", values)

    def reward(x: Array) -> Array:
        x = jnp.asarray(x)
        if x.ndim != 1:
            raise ValueError(f"the reward expects state indices of shape (n,); got {x.shape}.")
        if not jnp.issubdtype(x.dtype, jnp.integer):
            raise ValueError(f"the reward expects integer state indices; got dtype {x.dtype}.")
        if _checks.is_concrete(x) and x.size:
            a = np.asarray(x)
            if a.min() < 0 or a.max() >= values.shape[0]:
                raise ValueError(
                    f"the reward expects state indices in [0, {values.shape[0] - 1}] (one per "
                    f"entry of `values`); got values in [{a.min()}, {a.max()}].")
        return values[x]

    return reward


def _check_scale(scale: ArrayLike) -> ArrayLike:
    if jnp.ndim(scale) != 0:
        raise ValueError(f"`scale` must be a scalar (it may be traced); got shape "
                         f"{jnp.shape(scale)}.")
    return scale


def _check_classifier(classifier: Any) -> int:
    """Checks the classifier interface the rewards use; returns its number of classes."""
    num_classes = getattr(classifier, "num_classes", None)
    if not callable(getattr(classifier, "probabilities", None)) or not isinstance(
            num_classes, numbers.Integral) or isinstance(num_classes, bool):
        raise ValueError(
            "`classifier` must be a selfconsume.classifier.Classifier (or have an int "
            f"`num_classes` and a `probabilities(x)` method); got {type(classifier).__name__}.")
    return int(num_classes)


def _class_probabilities(classifier: Any, x: Array) -> Array:
    """``(n, C)`` probabilities of a batch ``x`` of shape ``(n, *input_shape)`` or ``(n, d)``."""
    x = jnp.asarray(x)
    q = classifier.probabilities(x)
    if q.ndim != 2 or x.ndim == 0 or q.shape[0] != x.shape[0]:
        input_shape = tuple(getattr(classifier, "input_shape", ("...",)))
        expected = f"(n, {', '.join(map(str, input_shape))})"
        if len(input_shape) > 1 and all(isinstance(s, int) for s in input_shape):
            expected += f" or (n, {math.prod(input_shape)})"
        raise ValueError(f"the reward expects samples of shape {expected}, one batch axis; got "
                         f"shape {x.shape}.")
    return q


def class_probability(classifier: Any, class_index: int, *,
                      scale: ArrayLike = 1.0) -> RewardFn:
    """The reward ``scale * q_{class_index}(x)``: a classifier's probability of one class.

    Args:
        classifier: a :class:`selfconsume.classifier.Classifier` with ``C = num_classes``.
        class_index: static class index in ``[0, C)`` (CIFAR-10: 0 is airplane).
        scale: reward scale (may be traced, e.g. swept under ``vmap``).

    Returns:
        ``reward(x: (n, *input_shape) or (n, d)) -> (n,)``.
    """
    num_classes = _check_classifier(classifier)
    if isinstance(class_index, bool) or not isinstance(class_index, numbers.Integral) or not (
            0 <= class_index < num_classes):
        raise ValueError(f"`class_index` must be an integer in [0, num_classes) = [0, "
                         f"{num_classes}); got {class_index!r}.")
    class_index = int(class_index)
    _check_scale(scale)

    def reward(x: Array) -> Array:
        return scale * _class_probabilities(classifier, x)[:, class_index]

    return reward


def confidence(classifier: Any, *, scale: ArrayLike = 1.0) -> RewardFn:
    """The reward ``scale * max_i q_i(x)``: the classifier's confidence in its predicted class.

    Args:
        classifier: a :class:`selfconsume.classifier.Classifier`.
        scale: reward scale (may be traced).

    Returns:
        ``reward(x: (n, *input_shape) or (n, d)) -> (n,)``.
    """
    _check_classifier(classifier)
    _check_scale(scale)

    def reward(x: Array) -> Array:
        return scale * jnp.max(_class_probabilities(classifier, x), axis=1)

    return reward


def log_density(model: Any, params: PyTree, *, scale: ArrayLike = 1.0) -> RewardFn:
    """The reward ``scale * log p_params(x)`` of a generative model with a tractable density.

    Args:
        model: a :class:`selfconsume.models.GenerativeModel` whose ``log_prob`` is not ``None``.
        params: the model's params (closed over; may be traced).
        scale: reward scale (may be traced).

    Returns:
        ``reward(x) -> (n,)`` for the samples ``x`` the model's ``log_prob`` accepts.
    """
    if not hasattr(model, "log_prob"):
        raise ValueError(f"`model` must be a selfconsume.models.GenerativeModel; got "
                         f"{type(model).__name__}.")
    if model.log_prob is None:
        raise ValueError(
            f"`model` ({getattr(model, 'name', type(model).__name__)!r}) has no tractable density "
            "(model.log_prob is None); log_density needs a family with a log_prob, e.g. "
            "gaussian, gmm, kde or categorical.")
    _check_scale(scale)

    def reward(x: Array) -> Array:
        return scale * model.log_prob(params, x)

    return reward


REWARDS = _checks.Registry("reward", {
    "distance": distance, "linear": linear, "table": table,
    "class_probability": class_probability, "confidence": confidence,
    "log_density": log_density})
"""Registry: reward name -> factory (an unknown name raises a ``ValueError`` that is also a
``KeyError``)."""

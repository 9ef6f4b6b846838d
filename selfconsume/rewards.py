r"""Reward functions: pure maps from samples ``(n, ...)`` to rewards ``(n,)``.

* ``distance(center, scale, radius)``: :math:`r(x) = -s \max(0, \|x - c\| - \rho)`, the clipped
  distance reward of the paper's two-dimensional experiments (flat, maximal, inside the ball of
  radius :math:`\rho` around :math:`c`).
* ``linear(direction, scale)``: :math:`r(x) = s \langle d, x \rangle`.
* ``table(values)``: :math:`r(x) = v_x` for categorical states :math:`x \in \{0..M-1\}`.
"""

from __future__ import annotations

from typing import Callable

import jax.numpy as jnp

from selfconsume.types import Array, ArrayLike

__all__ = ["distance", "linear", "table", "REWARDS"]

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

    def reward(x: Array) -> Array:
        x = _check_points(jnp.asarray(x), center.shape[0])
        dist = jnp.sqrt(jnp.sum((x - center[None, :]) ** 2, axis=1))
        return -scale * jnp.maximum(dist - radius, 0.0)

    return reward


def linear(direction: ArrayLike, *, scale: ArrayLike = 1.0) -> RewardFn:
    """The linear reward ``scale * <direction, x>``; returns ``reward(x: (n, d)) -> (n,)``."""
    direction = _vector("direction", direction)

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
        return values[x]

    return reward


REWARDS = {"distance": distance, "linear": linear, "table": table}
"""Registry: reward name -> factory."""

r"""Datasets: two-dimensional toy laws (generated from a key, so they vmap over seeds).

* ``gaussian_ring``: an equal mixture of ``num_modes`` isotropic Gaussians of standard deviation
  ``std`` centred at :math:`c_j = R(\cos 2\pi j/m, \sin 2\pi j/m)`.
* ``gaussian_grid``: an equal mixture of Gaussians centred on a ``side x side`` square grid of
  spacing ``spacing`` centred at the origin.
* ``two_moons``: the two interleaved half circles of scikit-learn's ``make_moons`` (upper moon
  :math:`(\cos t, \sin t)`, lower moon :math:`(1 - \cos t, 1/2 - \sin t)`, :math:`t \sim U[0, \pi]`)
  plus isotropic Gaussian noise.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from selfconsume import _checks
from selfconsume.types import Array, PRNGKey

__all__ = ["gaussian_ring", "gaussian_grid", "two_moons", "ring_centers", "DATASETS"]


def ring_centers(num_modes: int = 8, radius: float = 1.0) -> Array:
    """``(num_modes, 2)`` centres of the ring's modes, counter-clockwise from ``(radius, 0)``."""
    num_modes = _checks.static_int("num_modes", num_modes, minimum=1)
    angles = 2 * math.pi * jnp.arange(num_modes) / num_modes
    return radius * jnp.stack([jnp.cos(angles), jnp.sin(angles)], axis=1)


def _mixture(key: PRNGKey, n: int, centers: Array, std: float) -> tuple[Array, Array]:
    key_mode, key_noise = jax.random.split(key)
    modes = jax.random.randint(key_mode, (n,), 0, centers.shape[0])
    x = centers[modes] + std * jax.random.normal(key_noise, (n, 2), centers.dtype)
    return x, modes


def gaussian_ring(key: PRNGKey, n: int, *, num_modes: int = 8, radius: float = 1.0,
                  std: float = 0.05) -> tuple[Array, Array]:
    """Samples the ring of Gaussians.

    Args:
        key: PRNG key. n: static number of points.
        num_modes: number of modes. radius: ring radius. std: per-mode standard deviation.

    Returns:
        ``(x, centers)``: ``(n, 2)`` points and the ``(num_modes, 2)`` mode centres.
    """
    n = _checks.static_int("n", n, minimum=1)
    centers = ring_centers(num_modes, radius)
    return _mixture(key, n, centers, std)[0], centers


def gaussian_grid(key: PRNGKey, n: int, *, side: int = 5, spacing: float = 1.0,
                  std: float = 0.05) -> tuple[Array, Array]:
    """Samples the square grid of Gaussians.

    Returns:
        ``(x, centers)``: ``(n, 2)`` points and the ``(side**2, 2)`` mode centres.
    """
    n = _checks.static_int("n", n, minimum=1)
    side = _checks.static_int("side", side, minimum=1)
    ticks = spacing * (jnp.arange(side) - (side - 1) / 2)
    gx, gy = jnp.meshgrid(ticks, ticks, indexing="ij")
    centers = jnp.stack([gx.reshape(-1), gy.reshape(-1)], axis=1)
    return _mixture(key, n, centers, std)[0], centers


def two_moons(key: PRNGKey, n: int, *, noise: float = 0.05) -> tuple[Array, Array]:
    """Samples the two moons.

    Returns:
        ``(x, moon)``: ``(n, 2)`` points and the ``(n,)`` int32 moon of each (0 upper, 1 lower).
    """
    n = _checks.static_int("n", n, minimum=1)
    key_moon, key_t, key_noise = jax.random.split(key, 3)
    moon = jax.random.bernoulli(key_moon, 0.5, (n,)).astype(jnp.int32)
    t = jax.random.uniform(key_t, (n,), maxval=math.pi)
    upper = jnp.stack([jnp.cos(t), jnp.sin(t)], axis=1)
    lower = jnp.stack([1.0 - jnp.cos(t), 0.5 - jnp.sin(t)], axis=1)
    x = jnp.where(moon[:, None] == 1, lower, upper)
    return x + noise * jax.random.normal(key_noise, (n, 2)), moon


DATASETS = {"gaussian_ring": gaussian_ring, "gaussian_grid": gaussian_grid, "two_moons": two_moons}
"""Registry: dataset name -> generator ``(key, n, **options)``."""

"""Tests of the toy datasets and the reward functions."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from selfconsume import data, rewards


def test_gaussian_ring_modes_and_spread():
    x, centers = data.gaussian_ring(jax.random.key(0), 8000, num_modes=8, radius=2.0, std=0.1)
    assert x.shape == (8000, 2) and centers.shape == (8, 2)
    np.testing.assert_allclose(np.linalg.norm(centers, axis=1), 2.0, rtol=1e-6)
    np.testing.assert_allclose(centers[2], [0.0, 2.0], atol=1e-6)
    nearest = np.argmin(np.linalg.norm(np.asarray(x)[:, None] - np.asarray(centers)[None], axis=2),
                        axis=1)
    shares = np.bincount(nearest, minlength=8) / 8000
    # each share is Binomial(8000, 1/8)/8000: sd 0.0037; 5 sd = 0.018
    assert np.all(np.abs(shares - 1 / 8) < 0.018)
    resid = np.asarray(x) - np.asarray(centers)[nearest]
    np.testing.assert_allclose(resid.std(axis=0), 0.1, rtol=0.05)  # sd of the sd ~ 0.8%


def test_gaussian_grid_centres():
    x, centers = data.gaussian_grid(jax.random.key(1), 100, side=3, spacing=2.0)
    assert x.shape == (100, 2) and centers.shape == (9, 2)
    np.testing.assert_allclose(sorted(set(np.round(np.asarray(centers)[:, 0], 6))), [-2, 0, 2])


def test_two_moons_geometry():
    x, moon = data.two_moons(jax.random.key(2), 2000, noise=0.0)
    x, moon = np.asarray(x), np.asarray(moon)
    np.testing.assert_allclose(np.linalg.norm(x[moon == 0], axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(x[moon == 1] - [1.0, 0.5], axis=1), 1.0, rtol=1e-5)
    assert abs((moon == 1).mean() - 0.5) < 0.05  # sd 0.011


def test_vmapped_generation():
    xs, _ = jax.vmap(lambda k: data.gaussian_ring(k, 10))(jax.random.split(jax.random.key(3), 4))
    assert xs.shape == (4, 10, 2)


def test_distance_reward_values():
    reward = rewards.distance(jnp.array([1.0, 0.0]), scale=2.0, radius=0.5)
    x = jnp.array([[1.0, 0.0], [1.3, 0.4], [4.0, 4.0], [-1.0, 0.0]])
    np.testing.assert_allclose(reward(x), [0.0, 0.0, -2.0 * (5.0 - 0.5), -2.0 * 1.5], rtol=1e-6)


def test_linear_and_table_rewards():
    np.testing.assert_allclose(rewards.linear(jnp.array([1.0, -1.0]), scale=3.0)(
        jnp.array([[2.0, 1.0], [0.0, 1.0]])), [3.0, -3.0])
    np.testing.assert_allclose(rewards.table(jnp.array([0.5, 1.5, 2.5]))(jnp.array([2, 0])),
                               [2.5, 0.5])


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: rewards.distance(jnp.zeros(2))(jnp.zeros((3, 3))), r"shape \(n, 2\); got shape \(3, 3\)"),
        (lambda: rewards.distance(jnp.zeros((2, 2))), r"`center` must be a non-empty 1-D"),
        (lambda: rewards.linear(jnp.zeros(3))(jnp.zeros(3)), r"shape \(n, 3\)"),
        (lambda: rewards.table(jnp.zeros(3))(jnp.zeros((2, 2), jnp.int32)), r"shape \(n,\)"),
        (lambda: data.gaussian_ring(jax.random.key(0), 0), r"`n` must be >= 1; got 0"),
        (lambda: data.ring_centers(0), r"`num_modes` must be >= 1"),
    ],
)
def test_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_moon_of_recovers_the_generating_moon():
    x, moon = data.two_moons(jax.random.key(4), 5000, noise=0.05)
    # noise 0.05 never carries a point past the midway between the arcs (>= 0.25 away on the arcs)
    np.testing.assert_array_equal(data.moon_of(x), moon)
    np.testing.assert_array_equal(data.moon_of(jnp.array([[0.0, 1.0], [1.0, -0.5]])), [0, 1])
    with pytest.raises(ValueError, match=r"`x` must have shape \(n, 2\)"):
        data.moon_of(jnp.zeros((3, 3)))

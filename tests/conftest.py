"""Test configuration: strict rank promotion and a float64 fixture."""

import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def x64():
    """Runs the test body with float64 enabled."""
    with jax.enable_x64(True):
        yield

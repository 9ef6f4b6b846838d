"""Test configuration: strict rank promotion, a float64 fixture, and compiled programs freed
after each test file."""

import gc

import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def x64():
    """Runs the test body with float64 enabled."""
    with jax.enable_x64(True):
        yield


@pytest.fixture(autouse=True, scope="module")
def _free_compiled_programs():
    """Frees each test file's compiled programs when it ends. XLA's CPU code holds a few memory
    mappings per compiled program, and the kernel caps them per process (``vm.max_map_count``,
    65530 by default): a worker that compiles the whole suite's programs (tens of thousands)
    would crash in the compiler once past it."""
    yield
    jax.clear_caches()
    gc.collect()

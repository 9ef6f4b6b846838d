"""Tests of seeds x grid sweeps (selfconsume.execution): vmapped == looped, compile once, sharding."""

import csv
import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from selfconsume.execution import sweep
from selfconsume.results import SweepResult

NUM_GENERATIONS = 6
NUM_SHARES = 3


def noisy_recursion(key, beta, real_fraction):
    """A small stochastic 'loop': x_{t+1} = (1-a) (x_t + beta * noise_t) with a per-generation
    series, a scalar and a (generation, share) leaf."""

    def step(x, k):
        x = (1.0 - real_fraction) * (x + beta * jax.random.normal(k))
        return x, x

    x0 = jax.random.uniform(key)
    final, series = jax.lax.scan(step, x0, jax.random.split(key, NUM_GENERATIONS))
    shares = jax.nn.softmax(series[:, None] * jnp.arange(NUM_SHARES, dtype=series.dtype)[None, :],
                            axis=-1)
    return {"series": series, "final": final, "stats": {"shares": shares}}


GRID = {"beta": [0.0, 0.5, 2.0], "real_fraction": [0.0, 0.25]}
NUM_SEEDS = 3


@pytest.fixture(scope="module")
def base():
    """One sweep shared by the tests that only read its result."""
    return sweep(jax.random.key(7), noisy_recursion, num_seeds=NUM_SEEDS, grid=GRID)


# ------------------------------------------------------------------------------------------------
# Semantics
# ------------------------------------------------------------------------------------------------


def test_sweep_equals_python_loop(base):
    keys = jax.random.split(jax.random.key(7), NUM_SEEDS)
    one = jax.jit(noisy_recursion)  # one compile for the reference loop; values as 0-d arrays
    assert base.axes == ("seed", "beta", "real_fraction")
    assert base.values["series"].shape == (NUM_SEEDS, 3, 2, NUM_GENERATIONS)
    assert base.values["final"].shape == (NUM_SEEDS, 3, 2)
    assert base.values["stats"]["shares"].shape == (NUM_SEEDS, 3, 2, NUM_GENERATIONS, NUM_SHARES)
    for s in range(NUM_SEEDS):
        for i, beta in enumerate(GRID["beta"]):
            for j, a in enumerate(GRID["real_fraction"]):
                ref = one(keys[s], jnp.float32(beta), jnp.float32(a))
                got = jax.tree.map(lambda v: v[s, i, j], base.values)
                # vmap and a single call compile to different (batched vs scalar) XLA programs,
                # which may round differently in the last bit; the random bits are identical.
                jax.tree.map(lambda g, r: np.testing.assert_allclose(g, r, rtol=1e-6, atol=1e-7),
                             got, ref)
    np.testing.assert_array_equal(base.coords["seed"], np.arange(NUM_SEEDS))
    np.testing.assert_array_equal(base.coords["beta"], GRID["beta"])
    np.testing.assert_array_equal(base.coords["real_fraction"], GRID["real_fraction"])
    assert isinstance(base.values["final"], np.ndarray)
    json.dumps(base.metadata)  # JSON-serialisable


def test_grid_values_reach_fn_at_the_right_place_and_ints_keep_their_dtype():
    def fn(key, beta, num_candidates):
        return {"beta": beta, "k": num_candidates, "u": jax.random.uniform(key)}

    grid = {"beta": [0.5, 1.0, 4.0], "num_candidates": [1, 2, 8, 16]}
    r = sweep(jax.random.key(0), fn, num_seeds=2, grid=grid)
    assert r.values["k"].dtype == jnp.dtype(jax.dtypes.canonicalize_dtype(np.int64))  # int32
    assert r.values["beta"].dtype == jnp.float32
    assert r.coords["num_candidates"].dtype.kind == "i"
    expected_k = np.broadcast_to(np.array(grid["num_candidates"])[None, None, :], (2, 3, 4))
    expected_b = np.broadcast_to(np.float32(grid["beta"])[None, :, None], (2, 3, 4))
    np.testing.assert_array_equal(r.values["k"], expected_k)
    np.testing.assert_array_equal(r.values["beta"], expected_b)


def test_common_random_numbers_across_the_grid():
    def fn(key, beta, ignored):
        return jax.random.normal(key, (4,)) * beta

    r = sweep(jax.random.key(1), fn, num_seeds=4, grid={"beta": [1.0, 3.0], "ignored": [0, 1]})
    v = r.values  # (seed, beta, ignored, 4)
    np.testing.assert_array_equal(v[:, :, 0], v[:, :, 1])  # same key per seed at every point
    np.testing.assert_allclose(v[:, 1], 3.0 * v[:, 0], rtol=1e-6)
    assert not np.allclose(v[0], v[1])  # but different seeds differ


def test_seeds_only_grid():
    def fn(key):
        return jax.random.normal(key, (2,))

    r = sweep(jax.random.key(3), fn, num_seeds=5, grid={})
    assert r.axes == ("seed",) and r.values.shape == (5, 2)
    keys = jax.random.split(jax.random.key(3), 5)
    for s in range(5):
        np.testing.assert_allclose(r.values[s], fn(keys[s]), rtol=1e-6)
    r2 = sweep(jax.random.key(3), fn, num_seeds=5)  # grid=None is the same
    np.testing.assert_array_equal(r.values, r2.values)


@pytest.mark.parametrize("chunk_size", [None, 7])
def test_fn_is_traced_once(chunk_size):
    traces = []

    def fn(key, beta, real_fraction):
        traces.append(None)
        return {"x": jax.random.normal(key) * beta + real_fraction}

    grid = {"beta": [0.1, 0.2, 0.3], "real_fraction": [0.0, 0.1, 0.2, 0.3]}
    r = sweep(jax.random.key(0), fn, num_seeds=5, grid=grid, chunk_size=chunk_size)
    assert len(traces) == 1
    assert r.values["x"].shape == (5, 3, 4)
    if chunk_size is not None:
        assert r.metadata["num_chunks"] == -(-60 // 7)
        unchunked = sweep(jax.random.key(0), fn, num_seeds=5, grid=grid)
        np.testing.assert_array_equal(r.values["x"], unchunked.values["x"])


def test_sel(base):
    sub = base.sel(beta=0.5, seed=2)
    assert sub.axes == ("real_fraction",)
    np.testing.assert_array_equal(sub.values["final"], base.values["final"][2, 1])
    with pytest.raises(ValueError, match="beta"):
        base.sel(beta=0.7)


# ------------------------------------------------------------------------------------------------
# Files
# ------------------------------------------------------------------------------------------------


def _assert_bitwise_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert x.dtype == y.dtype and x.shape == y.shape
        assert x.tobytes() == y.tobytes()


def test_save_load_round_trip_bit_for_bit(base, tmp_path):
    values = dict(base.values)
    values["extra"] = {"half": base.values["final"].astype(jnp.bfloat16),
                       "count": np.arange(NUM_SEEDS * 6, dtype=np.int32).reshape(NUM_SEEDS, 3, 2),
                       "nan": np.full((NUM_SEEDS, 3, 2), np.nan, np.float32)}
    result = SweepResult(values=values, axes=base.axes, coords=base.coords,
                         metadata=base.metadata)
    result.save(tmp_path / "run")
    assert sorted(os.listdir(tmp_path / "run")) == ["result.json", "values.npz"]  # no temp files
    loaded = SweepResult.load(tmp_path / "run")
    _assert_bitwise_equal(loaded.values, result.values)
    assert loaded.axes == result.axes
    assert loaded.coords.keys() == result.coords.keys()
    for name in result.coords:
        _assert_bitwise_equal(loaded.coords[name], result.coords[name])
    assert loaded.metadata == json.loads(json.dumps(result.metadata))

    single = SweepResult(values=base.values["series"], axes=base.axes, coords=base.coords,
                         metadata={})
    single.save(tmp_path / "single")
    _assert_bitwise_equal(SweepResult.load(tmp_path / "single").values, single.values)

    result.save(tmp_path / "named", name="results")  # results.npz + results.json
    assert sorted(os.listdir(tmp_path / "named")) == ["results.json", "results.npz"]
    _assert_bitwise_equal(SweepResult.load(tmp_path / "named", name="results").values,
                          result.values)
    with pytest.raises(ValueError, match="`name` must be a non-empty file stem"):
        result.save(tmp_path / "bad", name="a/b")

    with pytest.raises(ValueError, match="values"):
        SweepResult(values=(base.values["final"],), axes=base.axes, coords=base.coords,
                    metadata={}).save(tmp_path / "tuple")


def test_to_csv_writes_booleans_as_numbers(tmp_path):
    result = SweepResult(values={"ok": np.array([[True, False]])}, axes=("seed",),
                         coords={"seed": np.arange(1)}, metadata={})
    result.to_csv(tmp_path / "b.csv")
    with open(tmp_path / "b.csv", newline="") as fh:
        rows = list(csv.reader(fh))[1:]
    assert [r[-1] for r in rows] == ["1", "0"] and [r[1] for r in rows] == ["0", "1"]


def test_to_csv_is_tidy(base, tmp_path):
    path = tmp_path / "run.csv"
    base.to_csv(path)
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    header, body = rows[0], rows[1:]
    assert header == ["seed", "beta", "real_fraction", "generation", "metric", "index", "value"]
    num_configs = NUM_SEEDS * 3 * 2
    per_config = 1 + NUM_GENERATIONS + NUM_GENERATIONS * NUM_SHARES  # final, series, shares
    assert len(body) == num_configs * per_config
    assert all(len(r) == len(header) for r in body)
    by_metric = {}
    for r in body:
        by_metric.setdefault((r[4], r[5]), []).append(r)
    assert sorted(by_metric) == sorted([("final", ""), ("series", "")] +
                                       [("stats/shares", str(m)) for m in range(NUM_SHARES)])
    assert all(r[3] == "" for r in by_metric[("final", "")])
    for seed, beta, a, gen, metric, index, value in (by_metric[("series", "")]
                                                     + by_metric[("stats/shares", "2")]):
        s = int(seed)
        i = GRID["beta"].index(float(beta))
        j = GRID["real_fraction"].index(float(a))
        leaf = base.values["series"] if metric == "series" else base.values["stats"]["shares"]
        expected = leaf[s, i, j, int(gen)] if metric == "series" else leaf[s, i, j, int(gen), 2]
        assert np.float32(value) == expected  # shortest round-trip text, a number
    assert os.listdir(tmp_path) == ["run.csv"]  # no temp file left


# ------------------------------------------------------------------------------------------------
# Sharding over several (host) devices, in a child process
# ------------------------------------------------------------------------------------------------

_SHARDED_CHILD = textwrap.dedent("""
    import jax, numpy as np
    jax.config.update("jax_numpy_rank_promotion", "raise")
    from selfconsume.execution import sweep
    from tests.test_sweep import noisy_recursion

    assert jax.device_count() == 4, jax.devices()
    grid = {"beta": [0.0, 0.5, 2.0]}
    def fn(key, beta):
        return noisy_recursion(key, beta, 0.25)
    key = jax.random.key(11)
    ref = sweep(key, fn, num_seeds=3, grid=grid, devices=[jax.devices()[0]])
    assert ref.metadata["output_sharding"]["num_devices"] == 1
    for chunk_size in (None, 5):
        r = sweep(key, fn, num_seeds=3, grid=grid, chunk_size=chunk_size)
        info = r.metadata["output_sharding"]
        rows = 12 if chunk_size is None else 8  # 9 configs padded to a multiple of 4 / chunk
        assert r.metadata["devices"] == 4 and r.metadata["num_padded_configs"] == (
            12 if chunk_size is None else 16), r.metadata
        assert info["num_devices"] == 4 and not info["fully_replicated"], info
        assert info["rows"] == rows and info["rows_per_device"] == rows // 4, info
        for a, b in zip(jax.tree.leaves(r.values), jax.tree.leaves(ref.values)):
            assert a.shape == b.shape and a.dtype == b.dtype
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    print("SHARDED-OK")
""")


def test_sharded_over_four_host_devices_matches_single_device():
    """The same sweep sharded over 4 devices equals the single-device run.

    Equality is to rtol 1e-6, not bitwise: the random bits are identical (each configuration
    draws from its own key), but XLA compiles a different program for each per-device batch
    shape (3 vs 12 rows here), and vectorised vs scalar code paths, fusion and FMA contraction may
    round the last bit of floating-point results differently.
    """
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4")
    env["JAX_PLATFORMS"] = "cpu"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-c", _SHARDED_CHILD], env=env, cwd=root,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SHARDED-OK" in proc.stdout


# ------------------------------------------------------------------------------------------------
# Validation
# ------------------------------------------------------------------------------------------------


def _fn(key, beta=1.0, num_candidates=1):
    return jax.random.normal(key) * beta


@pytest.mark.parametrize("kwargs, match", [
    ({"num_seeds": 0}, r"`num_seeds` must be >= 1; got 0"),
    ({"num_seeds": 2.5}, r"`num_seeds` must be an integer .*2\.5"),
    ({"num_seeds": True}, r"`num_seeds` must be an integer .*True"),
    ({"grid": {"beta": []}}, r"`grid\['beta'\]` must have at least one value"),
    ({"grid": {"beta": [[1.0, 2.0]]}}, r"`grid\['beta'\]` must be 1-D; got shape \(1, 2\)"),
    ({"grid": {"beta": 1.0}}, r"`grid\['beta'\]` must be 1-D; got shape \(\)"),
    ({"grid": {"beta": ["a", "b"]}}, r"`grid\['beta'\]` must hold bools, ints or floats"),
    ({"grid": {"seed": [1, 2]}}, r"'seed' is reserved"),
    ({"grid": {"1beta": [1.0]}}, r"must be Python identifiers.*'1beta'"),
    ({"grid": {"lambda": [1.0]}}, r"must be Python identifiers.*'lambda'"),
    ({"grid": {"gamma": [1.0]}}, r"`grid` axis 'gamma' is not an argument that `fn` accepts"),
    ({"grid": {"num_candidates": [2**40]}}, r"`grid\['num_candidates'\]` has integers that "),
    ({"grid": [("beta", [1.0])]}, r"`grid` must be a dict"),
    ({"chunk_size": 0}, r"`chunk_size` must be >= 1; got 0"),
    ({"devices": []}, r"`devices` must list at least one device"),
])
def test_invalid_arguments_raise(kwargs, match):
    kwargs = {"num_seeds": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        sweep(jax.random.key(0), _fn, **kwargs)


def test_invalid_key_and_fn_raise():
    with pytest.raises(ValueError, match="`key` must be a single PRNG key"):
        sweep(jax.random.split(jax.random.key(0), 2), _fn, num_seeds=2)
    with pytest.raises(ValueError, match="`key` must be a single PRNG key"):
        sweep(0, _fn, num_seeds=2)
    with pytest.raises(ValueError, match="`fn` must be callable"):
        sweep(jax.random.key(0), None, num_seeds=2)
    with pytest.raises(ValueError, match="`devices` must not repeat"):
        sweep(jax.random.key(0), _fn, num_seeds=2, devices=jax.devices() * 2)

"""The one executor (selfconsume.execution): Generations programs, chunks, checkpoints, stops,
compile reuse, and the study layer on top of it (CLI == sc.sweep, 1 device == 2 devices)."""

import json
import os
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import selfconsume as sc
from selfconsume.execution import CHECKPOINT_FILE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = sc.models.gaussian(2)
CONFIG = sc.LoopConfig(num_generations=6, num_samples=64, k=4)
REAL = jax.random.normal(jax.random.key(7), (128, 2)) * 0.5 + 1.0
REWARD = sc.rewards.linear(jnp.array([1.0, 0.0]))
GRID = {"beta": [0.5, 2.0], "real_fraction": [0.0, 0.5]}
ONE_DEVICE = jax.devices()[:1]


def _hyper(beta, real_fraction):
    return sc.Hyperparams(beta=beta, real_fraction=real_fraction)


def _init(key, beta, real_fraction):
    return sc.retrain.init_state(MODEL.init(key, REAL), model=MODEL, config=CONFIG,
                                 real_data=REAL)


def _chunk(keys, state, beta, real_fraction):
    return sc.retrain.run_chunk(keys, state, _hyper(beta, real_fraction), REAL, model=MODEL,
                                reward_fn=REWARD, config=CONFIG)


def _final(key, state, beta, real_fraction):
    return sc.retrain.final_record(key, state, _hyper(beta, real_fraction), REAL, model=MODEL,
                                   reward_fn=REWARD, config=CONFIG)


PROGRAM = sc.Generations(_init, _chunk, _final, num_generations=CONFIG.num_generations)


def _plain(key, beta, real_fraction):
    """The same loop as one function: sc.run with the executor's key schedule."""
    key_init, key_loop = jax.random.split(key)
    _, history = sc.run(key_loop, MODEL.init(key_init, REAL), REAL, _hyper(beta, real_fraction),
                        model=MODEL, reward_fn=REWARD, config=CONFIG)
    return history


def _assert_equal(a, b):
    assert set(a) == set(b)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.fixture(scope="module")
def reference():
    return sc.sweep(jax.random.key(3), PROGRAM, num_seeds=3, grid=GRID, devices=ONE_DEVICE)


def test_generations_equal_the_plain_sweep_of_run(reference):
    """The chunked program reproduces sc.run under the documented key schedule, bit for bit."""
    plain = sc.sweep(jax.random.key(3), _plain, num_seeds=3, grid=GRID, devices=ONE_DEVICE)
    _assert_equal(reference.values, plain.values)
    assert reference.values["reward_mean"].shape == (3, 2, 2, CONFIG.num_generations + 1)
    assert reference.metadata["complete"] is True
    assert reference.metadata["num_generations"] == 6 and plain.metadata["num_generations"] is None
    assert set(reference.metadata) == set(plain.metadata)  # one schema for every producer
    assert reference.metadata["devices"] == 1 and isinstance(reference.metadata["device_kind"],
                                                              str)


@pytest.mark.parametrize("chunk", [1, 2, 4])
def test_chunks_give_the_same_values(reference, chunk):
    """Chunks of 1, 2 (divisors) and 4 (a shorter last chunk, compiled once more) of the 6
    generations give the values of one chunk, bit for bit."""
    result = sc.sweep(jax.random.key(3), PROGRAM, num_seeds=3, grid=GRID, devices=ONE_DEVICE,
                      chunk_generations=chunk, chunk_size=5)
    _assert_equal(result.values, reference.values)
    assert result.metadata["chunk_generations"] == chunk


class _Interrupt(Exception):
    pass


def test_checkpoint_resumes_bit_identically(reference, tmp_path):
    calls = []

    def stop_after_first_chunk(done, total):
        calls.append(done)
        if done == 2:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        sc.sweep(jax.random.key(3), PROGRAM, num_seeds=3, grid=GRID, devices=ONE_DEVICE,
                 chunk_generations=2, checkpoint=tmp_path, progress=stop_after_first_chunk)
    with np.load(tmp_path / CHECKPOINT_FILE) as z:
        assert int(z["done"]) == 2
    seen = []
    result = sc.sweep(jax.random.key(3), PROGRAM, num_seeds=3, grid=GRID, devices=ONE_DEVICE,
                      chunk_generations=2, checkpoint=tmp_path,
                      progress=lambda d, t: seen.append(d))
    assert seen == [2, 4, 6]  # continued from the checkpoint
    _assert_equal(result.values, reference.values)
    # the same call again returns at once from the finished checkpoint
    again = sc.sweep(jax.random.key(3), PROGRAM, num_seeds=3, grid=GRID, devices=ONE_DEVICE,
                     chunk_generations=2, checkpoint=tmp_path)
    _assert_equal(again.values, reference.values)
    with pytest.raises(ValueError, match="holds the checkpoint of another sweep"):
        sc.sweep(jax.random.key(4), PROGRAM, num_seeds=3, grid=GRID, devices=ONE_DEVICE,
                 chunk_generations=2, checkpoint=tmp_path)


def test_stop_unless_returns_the_generations_before_the_failure():
    def init(key, **point):
        return jnp.zeros(())

    def chunk(keys, carry, **point):
        def body(c, key):
            return c + 1, {"ok": c < 3, "value": c}
        return jax.lax.scan(body, carry, keys)

    def final(key, carry, **point):
        return {"ok": carry < 3, "value": carry}

    program = sc.Generations(init, chunk, final, num_generations=8)
    result = sc.sweep(jax.random.key(0), program, num_seeds=2, chunk_generations=2,
                      stop_unless="ok")
    assert result.metadata["complete"] is False
    assert result.metadata["stopped_at_generation"] == 3
    np.testing.assert_array_equal(result.values["value"][0], [0, 1, 2, 3])
    with pytest.raises(ValueError, match="`stop_unless` = 'missing' is not an entry"):
        sc.sweep(jax.random.key(0), program, num_seeds=1, stop_unless="missing")


@chex.assert_max_traces(n=1)
def _traced_once(key, scale):
    return {"x": scale * jax.random.normal(key, (3,))}


def test_a_second_sweep_reuses_the_compiled_program():
    """Same function, grid names and shapes: traced (and compiled) once for both calls."""
    chex.clear_trace_counter()
    a = sc.sweep(jax.random.key(0), _traced_once, num_seeds=4, grid={"scale": [1.0, 2.0]})
    b = sc.sweep(jax.random.key(1), _traced_once, num_seeds=4, grid={"scale": [3.0, 4.0]})
    assert not np.array_equal(a.values["x"], b.values["x"])
    assert b.metadata["compile_seconds"] < a.metadata["compile_seconds"]


def test_plain_functions_reject_generation_options():
    for option in ({"chunk_generations": 2}, {"checkpoint": "x"}, {"stop_unless": "ok"},
                   {"checked": True}):
        with pytest.raises(ValueError, match="Generations"):
            sc.sweep(jax.random.key(0), _traced_once, num_seeds=1, grid={"scale": [1.0]},
                     **option)
    with pytest.raises(ValueError, match="`num_generations` must be >= 1; got 0"):
        sc.Generations(_init, _chunk, _final, num_generations=0)


# ------------------------------------------------------------------------------------------------
# The study layer on the executor
# ------------------------------------------------------------------------------------------------

STUDY_SETS = ["loop.num_generations=3", "loop.num_samples=128", "sweep.seeds=3",
              "data.num_points=512", "model.options={num_components=4, dim=2, em_steps=3}",
              "loop.checkpoint_every=1", "metrics.snapshot_points=0", "plots.snapshots=[]",
              "sweep.grid={real_fraction=[0.0, 0.5]}"]


def _cli(out, *extra, env=None):
    args = [sys.executable, "-m", "selfconsume.cli", "demo", "--quiet", "--out", str(out)]
    for s in STUDY_SETS:
        args += ["--set", s]
    proc = subprocess.run(args + list(extra), capture_output=True, text=True, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr
    return sc.SweepResult.load(str(out), name="results")


def test_cli_equals_sweep_of_run_and_shards_over_two_devices(tmp_path):
    """A study from the command line (1 device) equals sc.sweep over sc.run bit for bit; on 2
    host devices it shards (metadata says 2) and matches to the sharded tolerance (XLA may fuse
    and reduce differently per shard: rtol 1e-5 over 3 EM generations in float32)."""
    from selfconsume import study

    one = _cli(tmp_path / "one", "--devices", "1")
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    two = _cli(tmp_path / "two", "--devices", "2", env=env)
    assert one.metadata["devices"] == 1 and two.metadata["devices"] == 2
    assert two.metadata["output_sharding"]["num_devices"] == 2
    for name in ("reward_mean", "rewarded_mode_share", "mode_shares"):
        np.testing.assert_allclose(two.values[name], one.values[name], rtol=1e-5, atol=1e-6)

    cfg = study.load_config(text=study.DEMO, overrides=STUDY_SETS)
    built = study.build(cfg)

    def fn(key, real_fraction):
        key_init, key_loop = jax.random.split(key)
        hyper = sc.Hyperparams(beta=1.0, real_fraction=real_fraction, reward_scale=4.0)
        _, history = sc.run(key_loop, built.model.init(key_init, built.real), built.real, hyper,
                            model=built.model, reward_fn=built.reward_fn, config=built.config,
                            metrics_fn=built.metrics_fn)
        return history

    _, key_seeds = jax.random.split(jax.random.key(cfg["sweep"]["seed"]))
    direct = sc.sweep(key_seeds, fn, num_seeds=3, grid={"real_fraction": [0.0, 0.5]},
                      devices=ONE_DEVICE)
    for name in direct.values:
        np.testing.assert_array_equal(one.values[name], direct.values[name], err_msg=name)
    with open(tmp_path / "one" / "config.toml") as f:
        assert "devices = 1" in f.read()  # resume uses the same layout
    with open(tmp_path / "two" / "summary.json") as f:
        assert json.load(f)["claims"]


def test_cli_uses_one_host_device_per_core_by_default(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    result = _cli(tmp_path / "default", env=env)
    assert result.metadata["devices"] == (os.cpu_count() or 1)

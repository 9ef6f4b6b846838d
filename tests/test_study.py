"""The study package directly: validation, build-time checks, claims, the run folder layout,
and what a new user tripped on (kde with real data, models that do not fit the data, missing
optional dependencies, silent misconfigurations)."""

import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import selfconsume as sc
from selfconsume import cli, study

SMALL = ["loop.num_generations=2", "loop.num_samples=64", "sweep.seeds=2", "data.num_points=256",
         "model.options={num_components=4, dim=2, em_steps=2}", "metrics.snapshot_points=0",
         "plots.snapshots=[]", "sweep.grid={real_fraction=[0.0, 0.5]}", "sweep.devices=1"]


def _cfg(*overrides):
    return study.load_config(text=study.DEMO, overrides=list(SMALL) + list(overrides))


@pytest.mark.parametrize("overrides,message", [
    (["plots.snapshots=[0, 3]", "metrics.snapshot_points=10"],
     "`plots.snapshots` must be a list of generations in [0, loop.num_generations = 2]"),
    (["plots.snapshots=[1]"], "`plots.snapshots` must be empty unless metrics.snapshot_points"),
    (["sweep.devices=-1"], "`sweep.devices` must be an integer >= 0"),
    (["metrics.exact_grid={bins=4}"], "`metrics.exact_grid` must be a table"),
])
def test_validation_errors(overrides, message):
    with pytest.raises(study.ConfigError) as err:
        _cfg(*overrides)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_quick_needs_quick_overrides():
    text = study.DEMO.split("[quick_overrides]")[0]
    with pytest.raises(study.ConfigError, match=r"`quick` = true needs a \[quick_overrides\]"):
        study.load_config(text=text, overrides=["quick=true"])


@pytest.mark.parametrize("overrides,message", [
    (["plots.metrics=['reward_mean', 'colour']"], "`plots.metrics`: 'colour' is not a metric"),
    (["model.name='categorical'", "model.options={num_states=4}"],
     "`model.name`: model 'categorical' does not fit the data of 'gaussian_ring'"),
    (["model.options={num_components=4, dim=3}"],
     "`model.options.dim`: model 'gmm' does not fit the data"),
    (["data.name='two_moons'", "reward.mode=-1", "reward.options={center=[0.0, 0.0]}",
      "metrics.exact=true", "metrics.exact_grid={bins=32, low=-1.5, high=1.5}"],
     "`metrics.exact_grid` = {'bins': 32, 'low': -1.5, 'high': 1.5} leaves"),
])
def test_build_errors_name_the_key(overrides, message):
    with pytest.raises(study.ConfigError) as err:
        study.build(_cfg(*overrides))
    assert message in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_claim_on_unrecorded_metric_is_a_configuration_error():
    text = study.DEMO + '\n[[claims]]\nmetric = "mystery"\ntest = "increases"\n'
    cfg = study.load_config(text=text, overrides=SMALL)
    with pytest.raises(study.ConfigError, match=r"`claims\[2\].metric`: 'mystery' is not"):
        study.build(cfg)


def test_default_exact_grid_covers_the_data():
    cfg = _cfg("data.name='two_moons'", "reward.mode=-1", "reward.options={center=[0.0, 0.0]}",
               "metrics.exact=true", "metrics.mode_shares=false",
               "plots.metrics=['reward_mean']", "claims=[]")
    built = study.build(cfg)
    grid = built.notes["exact_grid"]
    x = np.asarray(built.real)
    assert np.all((x >= grid["low"]) & (x < grid["high"]))
    assert built.exact.shape == (2, 3) and "exact_reward" in built.recorded


def test_digits_without_scikit_learn_is_a_configuration_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    cfg = _cfg("data.name='digits'", "reward.name='confidence'", "reward.mode=-1",
               "reward.options={}", "model.options={num_components=2}")
    with pytest.raises(study.ConfigError, match="`data.name` = 'digits' needs an optional"):
        study.build(cfg)


def test_cli_reports_build_errors_in_one_line(capsys, tmp_path):
    status = cli.main(["demo", "--quiet", "--out", str(tmp_path / "x"), "--set",
                       "model.name='categorical'", "--set", "model.options={num_states=4}"])
    assert status == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "`model.name`" in err
    assert not os.path.exists(tmp_path / "x" / "config.toml")  # nothing written


def test_kde_study_runs_with_real_data(tmp_path):
    """kde holds its training points: the loop conforms params0 to the refits' shape."""
    cfg = _cfg("model.name='kde'", "model.options={}")
    summary = study.run_study(cfg, str(tmp_path), quiet=True)
    assert len(summary["grid"]) == 2
    result = sc.SweepResult.load(str(tmp_path), name="results")
    assert np.all(np.isfinite(result.values["reward_mean"]))


def test_run_folder_layout_and_replot_without_rebuilding(tmp_path, monkeypatch):
    cfg = _cfg("metrics.snapshot_points=50", "plots.snapshots=[0, 2]")
    study.run_study(cfg, str(tmp_path), quiet=True)
    files = set(os.listdir(tmp_path))
    assert {"config.toml", "results.npz", "results.json", "metrics.csv", "summary.json",
            "figures"} == files
    result = sc.SweepResult.load(str(tmp_path), name="results")
    assert result.axes == ("seed", "real_fraction")
    assert result.values["reward_mean"].shape == (2, 2, 3)
    assert result.values["mode_shares"].shape == (2, 2, 3, 8)
    meta = result.metadata
    assert meta["devices"] == 1 and meta["study"] == "demo" and len(meta["centers"]) == 8
    # `plot` draws from the files alone: building the study would fail here
    monkeypatch.setattr(sys.modules["selfconsume.study.build"], "_data",
                        lambda *a: (_ for _ in ()).throw(AssertionError("rebuilt")))
    written = study.replot(str(tmp_path), metrics=["min_mode_share"])
    assert [os.path.basename(p) for p in written] == ["min_mode_share.png", "snapshots.png"]
    with pytest.raises(study.ConfigError, match="`--metrics`: 'nope' is not a metric"):
        study.replot(str(tmp_path), metrics=["nope"])


def test_claims_directly():
    values = {"m": np.array([[0.0, 1.0, 2.0], [0.0, 0.5, 3.0]])[:, None, :].repeat(2, axis=1)}
    values["m"][:, 1] *= -1
    result = sc.SweepResult(values=values, axes=("seed", "real_fraction"),
                            coords={"seed": np.arange(2), "real_fraction": np.array([0.0, 0.5])},
                            metadata={})
    base = {"description": "", "generation": -1, "over": "every_seed", "value": 0.0}
    claims = [dict(base, metric="m", test="increases", where={"real_fraction": 0.0}),
              dict(base, metric="m", test="increases", where={"real_fraction": 0.5}),
              dict(base, metric="m", test="above", value=2.4, over="mean",
                   where={"real_fraction": 0.0}),
              dict(base, metric="m", test="below", value=1.0, generation=1, where={})]
    out = study.evaluate_claims(result, claims)
    assert [c["holds"] for c in out] == [True, False, True, False]
    assert out[0]["observed"] == [2.0, 3.0]
    summary = study.summarize(result, [])
    assert summary["grid"][0]["final"]["m"]["mean"] == 2.5


def test_shipped_studies_run_by_name_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert "mog_curation" in study.shipped_studies()
    path = study.find_study("two_moons")
    assert os.path.isfile(path) and path.endswith("two_moons.toml")
    with pytest.raises(study.ConfigError, match="neither a file nor a shipped study"):
        study.find_study("no_such_study")


def test_cli_version_and_list(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0 and sc.__version__ in capsys.readouterr().out
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "gmm(num_components" in out and "distance(center" in out
    assert "grid axes (sweep.grid): real_fraction, beta" in out
    assert "two_moons: mode_shares" in out and "upper_moon_share" in out


def test_exact_curves_take_the_colour_of_their_configuration():
    from selfconsume import plotting

    values = {"r": np.random.default_rng(0).normal(size=(3, 2, 4)),
              "e": np.zeros((3, 2, 4))}
    result = sc.SweepResult(values=values, axes=("seed", "beta"),
                            coords={"seed": np.arange(3), "beta": np.array([1.0, 2.0])},
                            metadata={})
    fig = plotting.metric_vs_generation(result, "r", reference="e")
    lines = fig.axes[0].get_lines()
    solid = [ln.get_color() for ln in lines if ln.get_linestyle() == "-"]
    dashed = [ln.get_color() for ln in lines if ln.get_linestyle() == "--"]
    assert len(solid) == len(dashed) == 2 and solid == dashed and solid[0] != solid[1]


def test_run_with_real_fraction_needs_real_data():
    model = sc.models.gaussian(2)
    config = sc.LoopConfig(num_generations=2, num_samples=16, k=2)
    params0 = model.init(jax.random.key(0), jnp.zeros((4, 2)) + jnp.arange(4.0)[:, None])
    reward = sc.rewards.linear(jnp.array([1.0, 0.0]))
    with pytest.raises(ValueError, match="`real_fraction` = 0.9 needs `real_data`"):
        sc.run(jax.random.key(1), params0, None, sc.Hyperparams(real_fraction=0.9), model=model,
               reward_fn=reward, config=config)
    # traced: the result is NaN and flagged, never a plausible fully synthetic run
    run = jax.jit(lambda a: sc.run(jax.random.key(1), params0, None,
                                   sc.Hyperparams(real_fraction=a), model=model,
                                   reward_fn=reward, config=config)[1])
    history = run(jnp.float32(0.9))
    assert not history["fit_is_finite"].any()
    assert np.all(np.isnan(history["reward_mean"][1:]))
    assert run(jnp.float32(0.0))["fit_is_finite"].all()


def test_hyperparams_keep_one_tree_structure_and_python_floats_in_metrics():
    a, b = sc.Hyperparams(), sc.Hyperparams(beta=2.0, num_candidates=3, reward_scale=0.5)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    assert [x.dtype for x in jax.tree.leaves(a)] == [x.dtype for x in jax.tree.leaves(b)]
    model = sc.models.categorical(4)
    config = sc.LoopConfig(num_generations=2, num_samples=32, k=3)
    real = jnp.arange(8, dtype=jnp.int32) % 4
    reward = sc.rewards.table(jnp.arange(4.0))
    traces = []

    def metrics(state, info):
        traces.append(1)
        return {"one": 1.0}

    run = jax.jit(sc.run, static_argnames=("model", "reward_fn", "config", "metrics_fn"))
    params0 = model.init(jax.random.key(0), real)
    _, h1 = run(jax.random.key(1), params0, real, a, model=model, reward_fn=reward,
                config=config, metrics_fn=metrics)
    _, h2 = run(jax.random.key(1), params0, real, b, model=model, reward_fn=reward,
                config=config, metrics_fn=metrics)
    assert h1["one"].shape == (3,) and np.all(h1["one"] == 1.0)
    n = len(traces)
    run(jax.random.key(2), params0, real, sc.Hyperparams(beta=3.0), model=model,
        reward_fn=reward, config=config, metrics_fn=metrics)
    assert len(traces) == n  # no retrace for new values
    # reward_scale scales every recorded reward
    _, h3 = run(jax.random.key(1), params0, real, a.replace(reward_scale=jnp.float32(2.0)),
                model=model, reward_fn=reward, config=config, metrics_fn=metrics)
    np.testing.assert_allclose(h3["expected_reward"][0], 2 * h1["expected_reward"][0])

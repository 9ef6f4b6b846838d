"""The study layer with ecosystems and drifting preferences: the ``[ecosystem]`` and
``[preference]`` sections, their grid axes and errors, the model axis of the results, and studies
from the command line against ``sc.sweep`` over ``sc.ecosystem.run`` and ``sc.run``."""

import csv

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import selfconsume as sc
from selfconsume import cli, study
from selfconsume.study import config as study_config

BASE = """
[data]
name = "gaussian_ring"
num_points = 2048
options = { num_modes = 4, radius = 1.0, std = 0.05 }
[model]
name = "histogram"
options = { bins = 12, low = -1.5, high = 1.5, dim = 2 }
[reward]
name = "distance"
mode = 0
options = { scale = 4.0, radius = 0.1 }
[loop]
num_generations = 4
num_samples = 256
k = 4
real_fraction = 0.1
checkpoint_every = 2
"""

ECOSYSTEM = 'name = "eco_test"\n' + BASE + """
[ecosystem]
num_models = 3
coupling = 0.5
betas = [2.0, 0.0, 0.0]
real_fractions = [0.1, 0.2, 0.3]
[sweep]
seeds = 2
grid = { "ecosystem.coupling" = [0.0, 1.0], "ecosystem.betas.0" = [1.0, 3.0] }
[plots]
metrics = ["rewarded_mode_share"]
[[claims]]
description = "the curated model gains mode 0"
metric = "rewarded_mode_share"
where = { "ecosystem.coupling" = 0.0, "ecosystem.betas.0" = 3.0, model = 0 }
test = "increases"
over = "mean"
"""

PREFERENCE = 'name = "pref_test"\n' + BASE + """
[preference]
name = "linear"
options = { eta = 0.5, weights0 = [4.0, 0.0, 0.0, 0.0], features = { name = "radial", bandwidth = 0.3, centers = [[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]] } }
[sweep]
seeds = 2
grid = { "preference.eta" = [0.0, 0.8] }
[plots]
metrics = ["preference_reward_mean"]
"""


def test_sections_round_trip_and_build_their_grid_values():
    cfg = study_config.load_config(text=ECOSYSTEM)
    assert study_config.load_config(text=study_config.to_toml(cfg)) == cfg
    eco = study_config.ecosystem_from(cfg, {"ecosystem.coupling": 0.3})
    assert eco["num_models"] == 3 and eco["betas"] == [2.0, 0.0, 0.0]
    np.testing.assert_allclose(eco["interaction"], np.asarray(sc.ecosystem.coupling(3, 0.3)),
                               rtol=1e-6)
    pref = study_config.preference_from(study_config.load_config(text=PREFERENCE),
                                        {"preference.eta": 0.25})
    assert isinstance(pref, sc.preferences.Linear) and float(pref.eta) == pytest.approx(0.25)
    plain = study_config.load_config(text=study.DEMO)
    assert study_config.ecosystem_from(plain) is None
    assert study_config.preference_from(plain) is None


def test_sweeping_an_entry_of_w_keeps_its_row_stochastic():
    text = ECOSYSTEM.replace("coupling = 0.5\n", "interaction = [[1.0, 0.0, 0.0], [0.0, 1.0, "
                             "0.0], [0.0, 0.0, 1.0]]\n").replace(
        '"ecosystem.coupling" = [0.0, 1.0]', '"ecosystem.interaction.1.0" = [0.0, 0.6]').replace(
        '"ecosystem.coupling" = 0.0, ', '"ecosystem.interaction.1.0" = 0.0, ')
    cfg = study_config.load_config(text=text)
    w = study_config.ecosystem_from(cfg, {"ecosystem.interaction.1.0": 0.6})["interaction"]
    assert w == [[1.0, 0.0, 0.0], [0.6, pytest.approx(0.4), 0.0], [0.0, 0.0, 1.0]]


@pytest.mark.parametrize("edit,match", [
    (("num_models = 3", "num_models = -1"), r"ecosystem.num_models"),
    (("coupling = 0.5", "coupling = 1.5"), r"ecosystem.coupling.*\[0, 1\]"),
    (("coupling = 0.5", "interaction = [[0.5, 0.5], [0.5, 0.5]]"), r"ecosystem.interaction"),
    (("coupling = 0.5", "interaction = [[0.9, 0.9, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]"),
     r"ecosystem.interaction.*summing to one"),
    (("betas = [2.0, 0.0, 0.0]", "betas = [2.0, 0.0]"), r"ecosystem.betas.*one entry per model"),
    (("real_fractions = [0.1, 0.2, 0.3]", "real_fractions = [0.1, 0.2, 1.3]"),
     r"ecosystem.real_fractions"),
    (("betas = [2.0, 0.0, 0.0]", "columns = [0, 1, 0]"), r"ecosystem.columns"),
    (("betas = [2.0, 0.0, 0.0]", 'curators = [{ name = "luce", beta = 1.0 }, { name = "luce", '
      'beta = 0.0 }, { name = "thurstone", sigma = 1.0 }]'), r"ecosystem.curators.*structure"),
    (("model = 0", "model = 3"), r"where.model.*\[0, 2\]"),
    (('"ecosystem.betas.0" = [1.0, 3.0]', '"ecosystem.num_models" = [2]'),
     r"sweep.grid.ecosystem.num_models"),
    (("checkpoint_every = 2", 'checkpoint_every = 2\nregime = "accumulate"'), r"loop.regime"),
])
def test_ecosystem_errors_name_the_key(edit, match):
    assert edit[0] in ECOSYSTEM
    with pytest.raises(study_config.ConfigError, match=match):
        study_config.load_config(text=ECOSYSTEM.replace(*edit))


@pytest.mark.parametrize("edit,match", [
    (('name = "linear"', 'name = "quadratic"'), r"preference.name.*linear"),
    (("eta = 0.5", "eta = 1.5"), r"preference.options.*eta"),
    (("weights0 = [4.0, 0.0, 0.0, 0.0], ", ""), r"preference.options.weights0.*required"),
    (('"preference.eta" = [0.0, 0.8]', '"preference.weights0" = [1.0]'),
     r"sweep.grid.preference.weights0"),
])
def test_preference_errors_name_the_key(edit, match):
    assert edit[0] in PREFERENCE
    with pytest.raises(study_config.ConfigError, match=match):
        study_config.load_config(text=PREFERENCE.replace(*edit))


def test_ecosystem_options_without_models_are_an_error():
    with pytest.raises(study_config.ConfigError, match=r"ecosystem.coupling.*num_models"):
        study_config.load_config(text=study.DEMO + "\n[ecosystem]\ncoupling = 0.2\n")


def _direct(cfg, fn):
    _, key_seeds = jax.random.split(jax.random.key(cfg["sweep"]["seed"]))
    return sc.sweep(key_seeds, fn, num_seeds=cfg["sweep"]["seeds"], grid=cfg["sweep"]["grid"],
                    devices=jax.devices()[:1])


def test_ecosystem_study_from_the_cli_equals_sweep_of_ecosystem_run(tmp_path):
    """Through the CLI (chunks of 2 generations) the study equals sc.sweep over sc.ecosystem.run
    bit for bit, with the model as a result axis and a ``model`` column in metrics.csv."""
    path = tmp_path / "eco.toml"
    path.write_text(ECOSYSTEM)
    out = tmp_path / "run"
    assert cli.main(["run", str(path), "--out", str(out), "--quiet", "--devices", "1"]) == 0
    result = sc.SweepResult.load(str(out), name="results")
    assert result.axes == ("seed", "ecosystem.coupling", "ecosystem.betas.0", "model")
    assert result.values["rewarded_mode_share"].shape == (2, 2, 2, 3, 5)
    with open(out / "metrics.csv") as f:
        header = next(csv.reader(f))
    assert header[:4] == ["seed", "ecosystem.coupling", "ecosystem.betas.0", "model"]

    cfg = study_config.load_config(text=ECOSYSTEM)
    built = study.build(cfg)

    def fn(key, **point):
        key_init, key_loop = jax.random.split(key)
        keys = sc.ecosystem.model_keys(key_init, 3)
        params0 = jax.tree.map(lambda *x: jnp.stack(x), *[built.model.init(keys[i], built.real)
                                                          for i in range(3)])
        c = point["ecosystem.coupling"]
        hyper = sc.Hyperparams(
            beta=jnp.stack([jnp.asarray(point["ecosystem.betas.0"], jnp.float32),
                            jnp.float32(0.0), jnp.float32(0.0)]),
            real_fraction=jnp.array([0.1, 0.2, 0.3], jnp.float32), reward_scale=4.0)
        w = jnp.stack([jnp.stack([jnp.asarray((1 - c) * (i == j) + c / 3, jnp.float32)
                                  for j in range(3)]) for i in range(3)])
        _, history = sc.ecosystem.run(key_loop, params0, built.real, hyper, model=built.model,
                                      reward_fn=built.reward_fn, config=built.config,
                                      metrics_fn=built.metrics_fn, interaction=w)
        return history

    direct = _direct(cfg, fn)
    for name in direct.values:
        np.testing.assert_array_equal(result.values[name],
                                      np.moveaxis(direct.values[name], 4, 3), err_msg=name)


def test_preference_study_from_the_cli_equals_sweep_of_run(tmp_path):
    path = tmp_path / "pref.toml"
    path.write_text(PREFERENCE)
    out = tmp_path / "run"
    assert cli.main(["run", str(path), "--out", str(out), "--quiet", "--devices", "1"]) == 0
    result = sc.SweepResult.load(str(out), name="results")
    assert result.values["reward_params"].shape == (2, 2, 5, 4)

    cfg = study_config.load_config(text=PREFERENCE)
    built = study.build(cfg)

    def fn(key, **point):
        key_init, key_loop = jax.random.split(key)
        pref = study_config.preference_from(cfg, point)
        _, history = sc.run(key_loop, built.model.init(key_init, built.real), built.real,
                            sc.Hyperparams(real_fraction=0.1, reward_scale=4.0),
                            model=built.model, reward_fn=built.reward_fn, config=built.config,
                            metrics_fn=built.metrics_fn, preference=pref)
        return history

    direct = _direct(cfg, fn)
    for name in direct.values:
        np.testing.assert_array_equal(result.values[name], direct.values[name], err_msg=name)
    fixed = result.values["reward_params"][:, 0]  # eta = 0: w stays w_0 at every generation
    np.testing.assert_array_equal(fixed, np.broadcast_to([4.0, 0.0, 0.0, 0.0], fixed.shape))

"""The study layer with a learned reward: the ``[reward_model]`` and ``[feedback]`` sections, their
grid axes, their errors, and a study from the command line against ``sc.sweep`` over ``sc.run``."""

import jax
import numpy as np
import pytest

import selfconsume as sc
from selfconsume import reward_models as RM
from selfconsume import study
from selfconsume.study import config as study_config

STUDY = """
name = "learned_test"
[data]
name = "gaussian_ring"
num_points = 2048
options = { num_modes = 8, radius = 1.0, std = 0.05 }
[model]
name = "histogram"
options = { bins = 16, low = -1.5, high = 1.5, dim = 2 }
[reward]
name = "distance"
mode = 0
options = { scale = 4.0, radius = 0.1 }
[reward_model]
name = "linear"
options = { features = { name = "radial", bandwidth = 0.4, centers = [[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]] } }
[feedback]
num_comparisons = 256
judge = { name = "luce", beta = 2.0 }
eps = 0.1
num_heldout = 64
[loop]
num_generations = 4
num_samples = 512
k = 4
checkpoint_every = 2
[sweep]
seeds = 2
grid = { "feedback.eps" = [0.0, 0.3], "feedback.judge.beta" = [1.0, 3.0] }
[plots]
metrics = ["true_reward_mean", "proxy_reward_mean"]
[[claims]]
description = "clean labels from a sharp judge raise the true reward"
metric = "true_reward_mean"
where = { "feedback.eps" = 0.0, "feedback.judge.beta" = 3.0 }
test = "increases"
over = "mean"
"""


def test_sections_round_trip_and_build_their_grid_values():
    cfg = study_config.load_config(text=STUDY)
    assert study_config.load_config(text=study_config.to_toml(cfg)) == cfg
    rm = study_config.reward_model_from(cfg)
    assert isinstance(rm, RM.Linear) and isinstance(rm.features, RM.Radial)
    fb = study_config.feedback_from(cfg, {"feedback.eps": 0.25, "feedback.judge.beta": 5.0})
    assert isinstance(fb, RM.Feedback) and fb.num_comparisons == 256 and fb.num_heldout == 64
    assert float(fb.eps) == pytest.approx(0.25) and float(fb.judge.beta) == pytest.approx(5.0)
    plain = study_config.load_config(text=study.DEMO)
    assert study_config.reward_model_from(plain) is None
    assert study_config.feedback_from(plain) is None


@pytest.mark.parametrize("edit,match", [
    (('name = "linear"', 'name = "quadratic"'), r"reward_model.name.*tabular"),
    (('eps = 0.1', 'eps = 1.5'), r"feedback.*eps"),
    (('judge = { name = "luce", beta = 2.0 }', 'judge = { name = "top_fraction" }'),
     r"feedback.*judge"),
    (('[feedback]', '[feedback]\nflip = "sideways"'), r"feedback.flip.*random"),
    (('"feedback.eps" = [0.0, 0.3]', '"feedback.num_comparisons" = [8]'),
     r"sweep.grid.feedback.num_comparisons.*numeric option"),
    (('"feedback.eps" = [0.0, 0.3]', '"reward_model.l2" = [0.1]'),
     r"sweep.grid.reward_model.l2.*numeric option"),
    (('[loop]', '[metrics]\nexact = true\n[loop]'), r"metrics.exact.*reward_model"),
    (('mode = 0\n', 'mode = 0\ncolumns = [{ name = "distance", mode = 4 }]\n'),
     r"reward.columns.*reward_model"),
    (('options = { features', 'options = { hidden = 3, features'),
     r"reward_model.options.*linear"),
])
def test_errors_name_the_key(edit, match):
    with pytest.raises(study_config.ConfigError, match=match):
        study_config.load_config(text=STUDY.replace(*edit))


def test_feedback_without_a_reward_model_is_an_error():
    text = study.DEMO + '\n[feedback]\neps = 0.2\n'
    with pytest.raises(study_config.ConfigError, match=r"feedback.eps.*without a \[reward_model\]"):
        study_config.load_config(text=text)


def test_study_from_the_cli_equals_sweep_of_run(tmp_path):
    """Through the CLI (1 device, chunks of 2 generations) the study equals sc.sweep over sc.run
    with the learned reward, bit for bit, and records the learned reward's metrics."""
    from selfconsume import cli

    path = tmp_path / "learned.toml"
    path.write_text(STUDY)
    out = tmp_path / "run"
    assert cli.main(["run", str(path), "--out", str(out), "--quiet", "--devices", "1"]) == 0
    result = sc.SweepResult.load(str(out), name="results")
    assert result.axes == ("seed", "feedback.eps", "feedback.judge.beta")
    assert {"true_reward_mean", "proxy_reward_mean", "reward_gap",
            "reward_model_accuracy"} <= set(result.values)
    assert (out / "figures" / "proxy_reward_mean.png").exists()

    cfg = study_config.load_config(text=STUDY)
    built = study.build(cfg)
    rm = study_config.reward_model_from(cfg)

    def fn(key, **point):
        key_init, key_loop = jax.random.split(key)
        fb = study_config.feedback_from(cfg, point)
        _, history = sc.run(key_loop, built.model.init(key_init, built.real), built.real,
                            sc.Hyperparams(beta=1.0, reward_scale=4.0), model=built.model,
                            reward_fn=built.reward_fn, config=built.config,
                            metrics_fn=built.metrics_fn, reward_model=rm, feedback=fb)
        return history

    _, key_seeds = jax.random.split(jax.random.key(cfg["sweep"]["seed"]))
    direct = sc.sweep(key_seeds, fn, num_seeds=2, grid=cfg["sweep"]["grid"],
                      devices=jax.devices()[:1])
    for name in direct.values:
        np.testing.assert_array_equal(result.values[name], direct.values[name], err_msg=name)

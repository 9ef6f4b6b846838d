"""Tests of studies and the `selfconsume` command (selfconsume.study, selfconsume.cli)."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from selfconsume import cli, study
from selfconsume.files import atomic_write
from selfconsume.results import SweepResult

# The demo at a reduced size; checkpoints after every generation (so a kill lands mid-run).
# One device, so that the runs compared bit for bit below share one layout.
QUICK = ["--quick", "--quiet", "--devices", "1", "--set", "loop.checkpoint_every=1"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("runs") / "demo")
    assert cli.main(["demo", "--out", out] + QUICK) == 0
    return out


def test_demo_writes_every_output(demo_run, capsys):
    files = set(os.listdir(demo_run))
    assert {"config.toml", "results.npz", "results.json", "metrics.csv", "summary.json",
            "figures"} <= files
    assert "checkpoint.npz" not in files  # a finished run keeps only its results
    assert not [f for f in files if f.startswith(".tmp")]
    assert {"reward_mean.png", "rewarded_mode_share.png"} <= set(
        os.listdir(os.path.join(demo_run, "figures")))
    with open(os.path.join(demo_run, "summary.json")) as f:
        summary = json.load(f)
    assert len(summary["grid"]) == 4 and all(c["holds"] for c in summary["claims"])
    final = summary["grid"][0]["final"]["reward_mean"]
    assert final["low"] <= final["mean"] <= final["high"]
    with open(os.path.join(demo_run, "metrics.csv")) as f:
        header = f.readline().strip().split(",")
    assert header == ["seed", "real_fraction", "generation", "metric", "index", "value"]


def test_config_round_trip():
    cfg = study.load_config(text=study.DEMO)
    assert study.load_config(text=study.to_toml(cfg)) == cfg
    quick = study.load_config(text=study.DEMO, overrides=["quick=true", "loop.k=3"])
    assert quick["loop"]["num_generations"] == 4 and quick["loop"]["k"] == 3


@pytest.mark.parametrize(
    "override,message",
    [
        ("colour=1", "unknown section or key `colour`"),
        ("loop.kk=3", "unknown key `loop.kk`; allowed: beta, checkpoint_every, k"),
        ("loop.k=0", "`loop.k` must be an integer >= 1; got 0"),
        ("loop.k='four'", "`loop.k` must be an integer; got 'four'"),
        ("loop.real_fraction=1.5", "`loop.real_fraction` must be in [0, 1]; got 1.5"),
        ("loop.regime='keep'", "`loop.regime` must be one of ['replace', 'accumulate']"),
        ("loop.beta=-1", "`loop.beta` must be a number >= 0 or \"inf\"; got -1"),
        ("model.name='vae'", "`model.name` must be one of"),
        ("data.name='mnist'", "`data.name` must be one of"),
        ("reward.name='joy'", "`reward.name` must be one of"),
        ("sweep.seeds=0", "`sweep.seeds` must be an integer >= 1; got 0"),
        ("sweep.grid={temperature=[1.0]}", "`sweep.grid.temperature` must be one of"),
        ("sweep.grid={real_fraction=[2.0]}", "`sweep.grid.real_fraction` must be values in [0, 1]"),
        ("sweep.grid={num_candidates=[5]}", "`sweep.grid.num_candidates` must be values in [1, 4]"),
        ("sweep.grid={learning_rate=[0.1]}", "`sweep.grid.learning_rate` must be used with"),
        ("data.name='cifar10'", "`data.path` must be the folder holding the CIFAR-10"),
        ("reward.name='confidence'", "`reward.name` must be a reward of point data"),
        ("metrics.exact_grid={bins=0, low=-1, high=1}", "`metrics.exact_grid` must be a table"),
        ("classifier.hidden=[]", "`classifier.hidden` must be a non-empty list"),
        ("data.options={num_modes=0}", "`data.options` do not fit dataset 'gaussian_ring'"),
    ],
)
def test_validation_errors_exit_2_with_one_line(override, message, capsys):
    assert cli.main(["demo", "--quiet", "--set", override]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err, err


def test_bad_files_exit_2(tmp_path, capsys):
    assert cli.main(["run", str(tmp_path / "missing.toml")]) == 2
    assert "missing.toml" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [unclosed")
    assert cli.main(["run", str(bad)]) == 2
    assert "is not valid TOML" in capsys.readouterr().err
    assert cli.main(["resume", str(tmp_path)]) == 2
    assert "is not a run folder" in capsys.readouterr().err


def test_console_script_prints_no_traceback():
    proc = subprocess.run([sys.executable, "-m", "selfconsume.cli", "demo", "--set", "loop.k=0"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "`loop.k`" in proc.stderr


def test_existing_run_folder_needs_force(demo_run, capsys):
    assert cli.main(["demo", "--out", demo_run] + QUICK) == 2
    assert "--force" in capsys.readouterr().err


def test_failing_claim_exits_1_and_keeps_results(tmp_path):
    cfg = study.DEMO + '''
[[claims]]
description = "impossible"
metric = "rewarded_mode_share"
where = { real_fraction = 0.5 }
test = "above"
value = 2.0
'''
    path = tmp_path / "study.toml"
    path.write_text(cfg)
    out = tmp_path / "run"
    assert cli.main(["run", str(path), "--out", str(out)] + QUICK[1:] + ["--set", "quick=true"]) == 1
    with open(out / "summary.json") as f:
        claims = json.load(f)["claims"]
    assert [c["holds"] for c in claims] == [True, True, False]


def _killed_at(point: str, out: str) -> bool:
    """Whether the run writing into ``out`` has reached ``point``: "compiling" (config written,
    no checkpoint yet), "generation N" (checkpoint after N generations), or "outputs" (results
    being written)."""
    if point == "compiling":
        return os.path.exists(os.path.join(out, "config.toml"))
    if point == "outputs":
        return os.path.exists(os.path.join(out, "results.npz"))
    checkpoint = os.path.join(out, "checkpoint.npz")
    if not os.path.exists(checkpoint):
        return False
    with np.load(checkpoint) as z:
        return int(z["done"]) >= int(point.split()[1])


@pytest.mark.parametrize("point", ["compiling", "generation 1", "generation 3", "outputs"])
def test_killed_run_resumes_to_identical_results(demo_run, tmp_path, point):
    """SIGKILL at several points of a run (4 generations, a checkpoint after each), then
    `selfconsume resume`: the results equal those of the uninterrupted run bit for bit."""
    out = str(tmp_path / "killed")
    proc = subprocess.Popen([sys.executable, "-m", "selfconsume.cli", "demo", "--out", out] + QUICK,
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not _killed_at(point, out):
        time.sleep(0.01)
    assert proc.poll() is None, f"the run finished before it could be killed at {point}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not os.path.exists(os.path.join(out, "summary.json"))
    assert cli.main(["resume", out, "--quiet"]) == 0
    assert not [f for f in os.listdir(out) if f.startswith(".tmp") or f == "checkpoint.npz"]
    with np.load(os.path.join(out, "results.npz")) as a, \
            np.load(os.path.join(demo_run, "results.npz")) as b:
        assert set(a.files) == set(b.files)
        for name in a.files:
            np.testing.assert_array_equal(a[name], b[name])
    with open(os.path.join(out, "summary.json")) as f, \
            open(os.path.join(demo_run, "summary.json")) as g:
        assert json.load(f)["claims"] == json.load(g)["claims"]


def test_plot_redraws_figures(demo_run, capsys):
    for png in os.listdir(os.path.join(demo_run, "figures")):
        os.remove(os.path.join(demo_run, "figures", png))
    assert cli.main(["plot", demo_run]) == 0
    assert "reward_mean.png" in os.listdir(os.path.join(demo_run, "figures"))


def test_list_names_registries(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "gaussian_ring" in out and "gmm" in out and "distance" in out and "demo" in out


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    path = tmp_path / "summary.json"
    path.write_text("old")

    def broken(f):
        f.write("half-writ")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(str(path), broken, binary=False)
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["summary.json"]  # no temporary file left behind


def test_matches_claim_needs_reference():
    text = study.DEMO + '\n[[claims]]\nmetric = "reward_mean"\ntest = "matches"\nvalue = 4.0\n'
    with pytest.raises(study.ConfigError, match=r"`claims\[2\].reference` must be"):
        study.load_config(text=text)


def test_matches_claim_holds_within_and_fails_outside_the_band():
    """The `matches` test compares the seed mean with a reference in standard errors."""
    from selfconsume import SweepResult

    rng = np.random.default_rng(0)
    ref = np.linspace(0.0, 1.0, 6)
    noisy = ref + rng.normal(0.0, 0.1, size=(16, 6))  # SE = 0.025
    values = {"exact": np.broadcast_to(ref, (16, 6)).copy(), "near": noisy, "off": noisy + 0.2}
    result = SweepResult(values=values, axes=("seed",), coords={"seed": np.arange(16)},
                         metadata={})
    claims = [{"metric": m, "reference": "exact", "test": "matches", "value": 4.0, "where": {},
               "over": "every_seed", "generation": -1, "description": ""} for m in ("near", "off")]
    near, off = study.evaluate_claims(result, claims)
    assert near["holds"] and max(near["observed"]) < 4.0
    assert not off["holds"] and max(off["observed"]) > 4.0  # 0.2 / 0.025 = 8 standard errors


def test_histogram_study_overlays_the_exact_curve(tmp_path):
    """A small histogram study: the exact population curve is recorded, drawn and matched."""
    path = "mog_curation_histogram"  # a shipped study, by name
    out = tmp_path / "hist"
    sets = ["loop.num_generations=3", "loop.num_samples=512", "sweep.seeds=6",
            "model.options={bins=16, low=-1.5, high=1.5}", "data.num_points=2048",
            "metrics.snapshot_points=0", "plots.snapshots=[]"]
    args = ["run", path, "--out", str(out), "--quiet"]
    for s in sets:
        args += ["--set", s]
    cli.main(args)  # the mode-share claims need the full size; the match claim must hold here
    with open(out / "summary.json") as f:
        claims = {c["test"]: c for c in json.load(f)["claims"]}
    assert claims["matches"]["holds"], claims["matches"]
    result = SweepResult.load(str(out), name="results")
    exact = result.values["exact_reward"]
    assert exact.shape == result.values["reward_mean"].shape == (6, 2, 4)
    assert np.all(exact[0] == exact[1])  # the same curve for every seed
    assert exact[0, 0, -1] > exact[0, 0, 0]  # it moves: the comparison is not vacuous


def _broken_gaussian(dim=2):
    """A Gaussian whose refit turns NaN once the (weighted) data mean passes x1 = 0.8: curation
    towards mode 0 at (1, 0) drives it there after a few generations."""
    import jax
    import jax.numpy as jnp

    from selfconsume import models

    base = models.gaussian(dim)

    def fit(key, params, data, weights=None):
        new = base.fit(key, params, data, weights)
        bad = jnp.average(data[:, 0], weights=weights) > 0.8
        return jax.tree_util.tree_map(lambda x: jnp.where(bad, jnp.nan, x), new)

    return base._replace(name="broken", fit=fit)


def test_non_finite_refit_stops_the_run_and_saves_what_came_before(tmp_path, capsys,
                                                                   monkeypatch):
    from selfconsume import models

    monkeypatch.setitem(models.MODELS, "broken", _broken_gaussian)
    out = tmp_path / "broken"
    status = cli.main(["demo", "--quick", "--quiet", "--out", str(out), "--set",
                       "model.name='broken'", "--set", "model.options={dim=2}", "--set",
                       "loop.num_generations=8", "--set", "loop.checkpoint_every=2"])
    assert status == 3
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert "the refit is not finite for seed" in err and "real_fraction=" in err, err
    assert f"saved in {out}" in err, err
    generation = int(err.split("generation ")[1].split(":")[0])
    assert 0 < generation < 8
    result = SweepResult.load(str(out), name="results")
    assert result.metadata["complete"] is False
    assert result.metadata["stopped_at_generation"] == generation
    assert result.values["reward_mean"].shape[-1] == generation + 1
    assert all(np.all(np.isfinite(v)) for k, v in result.values.items()
               if k in ("reward_mean", "rewarded_mode_share"))
    assert not os.path.exists(out / "summary.json")
    # the checkpoint kept is the last finite one, before the failing chunk
    with np.load(out / "checkpoint.npz") as z:
        assert int(z["done"]) <= generation
        assert all(np.all(np.isfinite(z[k])) for k in z.files if k.startswith("carry/")
                   and np.issubdtype(z[k].dtype, np.floating))


def test_checked_mode_reports_the_operation(tmp_path, capsys, monkeypatch):
    from selfconsume import models

    monkeypatch.setitem(models.MODELS, "broken", _broken_gaussian)
    out = tmp_path / "checked"
    status = cli.main(["demo", "--quick", "--quiet", "--checked", "--out", str(out), "--set",
                       "model.name='broken'", "--set", "model.options={dim=2}", "--set",
                       "loop.num_generations=8", "--set", "loop.checkpoint_every=2"])
    assert status == 3
    err = capsys.readouterr().err.strip()
    assert "checked mode:" in err and "nan generated by primitive" in err.lower(), err


def test_unreadable_config_exits_2(tmp_path, capsys):
    assert cli.main(["run", str(tmp_path)]) == 2  # a folder, not a file
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "cannot be read" in err, err

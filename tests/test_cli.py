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

# The demo at a reduced size; checkpoints after every generation (so a kill lands mid-run).
QUICK = ["--quick", "--quiet", "--set", "loop.checkpoint_every=1"]
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
    assert header == ["seed", "real_fraction", "generation", "metric", "value"]


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


def test_killed_run_resumes_to_identical_results(demo_run, tmp_path):
    out = str(tmp_path / "killed")
    proc = subprocess.Popen([sys.executable, "-m", "selfconsume.cli", "demo", "--out", out] + QUICK,
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = os.path.join(out, "checkpoint.npz")
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if os.path.exists(checkpoint):
            with np.load(checkpoint) as z:
                if int(z["done"]) >= 2:  # killed after two of four generations
                    break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not os.path.exists(os.path.join(out, "summary.json"))
    assert cli.main(["resume", out, "--quiet"]) == 0
    with np.load(os.path.join(out, "results.npz")) as a, \
            np.load(os.path.join(demo_run, "results.npz")) as b:
        assert set(a.files) == set(b.files)
        for name in a.files:
            np.testing.assert_array_equal(a[name], b[name])


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
        study._atomic_write(str(path), broken, binary=False)
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["summary.json"]  # no temporary file left behind

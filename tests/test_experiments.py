"""The studies under experiments/ run in their quick mode and their claims hold."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_exact_dynamics_quick(tmp_path):
    out = tmp_path / "exact"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "experiments", "exact_dynamics.py"),
                           "--quick", "--out", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with open(out / "summary.json") as f:
        claims = json.load(f)["claims"]
    assert claims and all(c["holds"] for c in claims)
    assert {"expected_reward.png", "ring_heatmaps.png"} <= set(os.listdir(out))


@pytest.mark.slow
def test_mog_curation_quick(tmp_path):
    from selfconsume import cli

    out = tmp_path / "mog"
    study = os.path.join(ROOT, "experiments", "mog_curation.toml")
    assert cli.main(["run", study, "--set", "quick=true", "--out", str(out), "--quiet"]) == 0
    with open(out / "summary.json") as f:
        claims = json.load(f)["claims"]
    assert len(claims) == 3 and all(c["holds"] for c in claims)
    assert "snapshots.png" in os.listdir(out / "figures")


@pytest.mark.slow
def test_two_moons_quick(tmp_path):
    from selfconsume import cli

    out = tmp_path / "moons"
    study = os.path.join(ROOT, "experiments", "two_moons.toml")
    assert cli.main(["run", study, "--set", "quick=true", "--out", str(out), "--quiet"]) == 0
    with open(out / "summary.json") as f:
        claims = json.load(f)["claims"]
    assert len(claims) == 3 and all(c["holds"] for c in claims)


@pytest.mark.slow
def test_mog_curation_flow_quick(tmp_path):
    from selfconsume import cli

    out = tmp_path / "flow"
    study = os.path.join(ROOT, "experiments", "mog_curation_flow.toml")
    assert cli.main(["run", study, "--set", "quick=true", "--out", str(out), "--quiet"]) == 0
    with open(out / "summary.json") as f:
        claims = json.load(f)["claims"]
    assert len(claims) == 3 and all(c["holds"] for c in claims)

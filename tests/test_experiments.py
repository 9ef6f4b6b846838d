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
@pytest.mark.parametrize("name", ["mog_curation", "mog_curation_flow", "two_moons"])
def test_toml_study_quick(name, tmp_path):
    from selfconsume import cli

    out = tmp_path / name
    study = os.path.join(ROOT, "experiments", f"{name}.toml")
    assert cli.main(["run", study, "--set", "quick=true", "--out", str(out), "--quiet"]) == 0
    with open(out / "summary.json") as f:
        claims = json.load(f)["claims"]
    assert len(claims) == 3 and all(c["holds"] for c in claims)
    assert "snapshots.png" in os.listdir(out / "figures")

"""The studies under experiments/ run in their quick mode and their claims hold."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
@pytest.mark.parametrize("script,figures", [
    ("exact_dynamics", {"expected_reward.png", "ring_heatmaps.png"}),
    ("phase_diagram", {"phase_diagram.png"}),
    ("pluralistic", {"pluralistic.png"}),
    ("adversarial_curation", {"adversarial_curation.png"}),
    ("curator_zoo", {"curator_zoo.png"}),
    ("reward_model_attack", {"reward_model_attack.png"}),
    ("reward_hacking", {"reward_hacking.png"}),
    ("ecosystem", {"ecosystem.png"}),
    ("drifting_preferences", {"drifting_preferences.png"}),
])
def test_script_study_quick(script, figures, tmp_path):
    out = tmp_path / script
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "experiments", f"{script}.py"),
                           "--quick", "--out", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with open(out / "summary.json") as f:
        claims = json.load(f)["claims"]
    assert claims and all(c["holds"] for c in claims)
    assert figures <= set(os.listdir(out))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mog_curation", "mog_curation_flow", "mog_curation_histogram",
                                  "mog_learned_reward", "mog_ecosystem",
                                  "mog_drifting_preferences", "two_moons", "digits_bias",
                                  "digits_confidence"])
def test_toml_study_quick(name, tmp_path):
    from selfconsume import cli

    out = tmp_path / name
    assert cli.main(["run", name, "--set", "quick=true", "--out", str(out), "--quiet"]) == 0
    with open(out / "summary.json") as f:
        claims = json.load(f)["claims"]
    assert claims and all(c["holds"] for c in claims), claims
    figures = set(os.listdir(out / "figures"))
    assert {"snapshots.png"} <= figures or {"samples.png", "class_proportions.png"} <= figures

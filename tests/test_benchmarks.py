"""Smoke runs of the benchmark scripts at tiny sizes: each writes its JSON with the documented
fields, all finite. No timing assertions (timings depend on the machine)."""

import json
import math
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(script, tmp_path, *flags, timeout=600):
    path = tmp_path / f"{script}.json"
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", f"{script}.py"),
                           *flags, "--json", str(path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(path.read_text())


def _finite(value):
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    if isinstance(value, float):
        return math.isfinite(value)
    return True


def _check_environment(out):
    for field in ("backend", "device", "jax", "cpu", "cpu_count", "date"):
        assert field in out["environment"], field


def test_bench_theory_smoke(tmp_path):
    out = _run("bench_theory", tmp_path, "--smoke")
    _check_environment(out)
    assert {"M", "k", "steady_ms", "compile_s", "ns_per_state", "sum_pH"} <= set(out["rows"][0])
    assert {"exact_tv", "mc_tv", "mc_over_exact_at_equal_accuracy"} <= set(out["monte_carlo"][0])
    assert _finite(out["rows"]) and _finite(out["monte_carlo"])
    assert abs(out["rows"][0]["sum_pH"] - 1.0) < 1e-4


@pytest.mark.slow
def test_bench_curation_smoke(tmp_path):
    out = _run("bench_curation", tmp_path, "--smoke")
    _check_environment(out)
    assert math.isfinite(out["curation_overhead"]) and out["curation_overhead"] > 0
    row = out["rows"][0]
    for field in ("draw_ms", "draw_curate_ms", "inverse_cdf_ms", "gumbel_max_ms", "rng_fraction"):
        assert math.isfinite(row[field]), field
    families = {"luce", "top_m", "top_m_half", "thurstone", "adversarial", "mixture",
                "sequential", "top_fraction"}
    assert set(out["curators"]) == families
    for by_k in out["curators"].values():
        assert set(by_k) == {"4"}
        for field in ("draw_ms", "curate_ms", "draw_curate_ms", "ratio", "overhead"):
            assert math.isfinite(by_k["4"][field]) and by_k["4"][field] > 0, field
        assert isinstance(by_k["4"]["within_target"], bool)
    assert out["curators"]["mixture"]["4"]["reward_columns"] == 2
    assert out["max_ratio"] == max(v["4"]["ratio"] for v in out["curators"].values())
    assert out["max_ratio_at"]["family"] in families and out["max_ratio_at"]["K"] == 4
    assert out["target"]["max_ratio"] == 1.5


@pytest.mark.slow
def test_bench_sweep_smoke(tmp_path):
    out = _run("bench_sweep", tmp_path, "--smoke")
    _check_environment(out)
    for field in ("speedup_vs_sklearn", "speedup_vs_loop", "speedup_vs_sklearn_one_device",
                  "speedup_vs_loop_one_device", "config_generations_per_s"):
        assert math.isfinite(out[field]) and out[field] > 0, field
    assert [r["method"] for r in out["rows"]][-1] == "scikit-learn loop"
    assert _finite(out["rows"])


@pytest.mark.slow
def test_bench_scaling_smoke(tmp_path):
    out = _run("bench_scaling", tmp_path, "--smoke")
    _check_environment(out)
    assert [r["devices"] for r in out["by_devices"]] == [1, 2]
    assert out["memory"]["bytes_per_config"] > 0
    assert out["memory"]["max_configs_chunked"] >= out["memory"]["max_configs_unchunked"] > 0
    assert _finite(out["by_configs"]) and _finite(out["memory"])


@pytest.mark.slow
def test_bench_study_smoke(tmp_path):
    out = _run("bench_study", tmp_path, "--smoke")
    _check_environment(out)
    assert [r["path"] for r in out["rows"]] == ["study", "sweep"]
    assert out["throughput_ratio"] > 0 and out["wall_ratio"] > 0 and _finite(out["rows"])


def test_run_all_is_executable():
    path = os.path.join(ROOT, "benchmarks", "run_all.sh")
    assert os.access(path, os.X_OK)
    text = open(path).read()
    for name in ("theory", "curation", "sweep", "scaling", "study"):
        assert f"bench_{name}" in text or "bench_$name" in text


@pytest.mark.slow
def test_bench_reward_models_smoke(tmp_path):
    out = _run("bench_reward_models", tmp_path, "--smoke")
    _check_environment(out)
    assert out["blas_threads"] == 1 and len(out["load_average_start"]) == 3
    for row in out["loop"]:
        for field in ("s_per_generation", "true_s_per_generation", "ratio", "compile_s"):
            assert math.isfinite(row[field]) and row[field] > 0, field
        assert row["fits_finite"] and 0 <= row["accuracy_0"] <= 1
    assert out["loop_max_ratio"] == max(r["ratio"] for r in out["loop"])
    assert {r["family"] for r in out["fit"]} == {"tabular", "linear"}
    for row in out["fit"]:
        for field in ("jax_s", "hessian_s", "solve_s", "structured_s", "scipy_s", "speedup"):
            assert math.isfinite(row[field]) and row[field] > 0, field
        assert row["iterations"] >= 1 and row["scipy_reached_loss"]
        assert abs(row["scipy_loss_gap"]) <= 1e-8 and row["structured_max_diff"] <= 1e-6
    for row in out["population"]:
        assert math.isfinite(row["ms"]) and row["ms"] > 0 and row["finite"]
    for row in out["trajectory"]:
        assert math.isfinite(row["ms_per_generation"]) and row["ratio"] > 0 and row["finite"]
    for row in out["blas"]:
        assert row["default_ms"] > 0 and row["one_thread_ms"] > 0
    assert _finite(out["loop"]) and _finite(out["population"]) and _finite(out["trajectory"])


@pytest.mark.slow
def test_bench_ecosystem_smoke(tmp_path):
    out = _run("bench_ecosystem", tmp_path, "--smoke")
    _check_environment(out)
    assert {r["problem"] for r in out["loop"]} == {"gmm", "categorical(256)"}
    for row in out["loop"] + out["theory"]:
        for field in ("s_per_generation", "single_s_per_generation", "per_model_ratio"):
            assert math.isfinite(row[field]) and row[field] > 0, field
    assert sorted({r["models"] for r in out["theory"]}) == out["sizes"]["models"]

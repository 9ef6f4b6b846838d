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
                  "speedup_vs_loop_one_device", "config_generations_per_s",
                  "speedup_vs_sklearn_same_cores"):
        assert math.isfinite(out[field]) and out[field] > 0, field
    assert [r["method"] for r in out["rows"]] == [
        "sc.sweep (one program)", "sc.sweep on one device", "sc.sweep on one core",
        "loop of jitted sc.run", "scikit-learn loop"]
    assert set(out["pieces"]) == {"draw", "reward", "curation", "fit", "generation"}
    assert all(_positive(ms) for ms in out["pieces"].values()), out["pieces"]
    per = out["ms_per_config_generation"]
    assert _positive(per["sweep_one_core"]) and _positive(per["sklearn_one_core"])
    assert out["speedup_vs_sklearn_same_cores"] == pytest.approx(
        per["sklearn_one_core"] / per["sweep_one_core"])
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


def _positive(value):
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.mark.slow
def test_device_check_smoke(tmp_path):
    """``device_check.sh --smoke`` on the CPU: every section writes its JSON, with compile times
    apart from positive, finite steady-state times; the flagship's last size does not fit its
    budget and the section records where it stopped."""
    out = tmp_path / "device"
    env = dict(os.environ, JAX_PLATFORMS="cpu", OUT=str(tmp_path / "unused"))
    proc = subprocess.run(["bash", os.path.join(ROOT, "benchmarks", "device_check.sh"),
                           "--smoke", str(out)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert not (tmp_path / "unused").exists()  # the positional folder wins over $OUT
    files = {name: json.loads((out / f"{name}.json").read_text())
             for name in ("flagship", "profile", "curation", "theory", "device_check")}
    for data in files.values():
        _check_environment(data)
        assert "load_average_1min" in data["environment"]

    flagship = files["flagship"]
    compare = flagship["compare"]
    for method in ("sweep", "loop"):
        for field in ("compile_s", "steady_s"):
            assert field in compare[method] and math.isfinite(compare[method][field]), field
        assert _positive(compare[method]["steady_s"]) and compare[method]["compile_s"] >= 0
    assert compare["sweep"]["configs"] == compare["loop"]["configs"] == 4
    assert _positive(compare["loop_over_sweep"]) and compare["target"] == 5.0
    assert compare["loop_matches_sweep_max_abs_diff"] < 1e-3
    assert [r["configs"] for r in flagship["scan"]] == [4, 8]
    for row in flagship["scan"]:
        assert _positive(row["steady_s"]) and _positive(row["config_generations_per_s"])
        assert math.isfinite(row["compile_s"])
    assert flagship["stopped"]["before_configs"] == 10**6 and not flagship["complete"]

    profile = files["profile"]
    for field in ("dispatch_s", "single_run_s", "single_run_per_generation_s",
                  "sweep_per_config_s", "sweep_over_single_run"):
        assert _positive(profile[field]), field
    assert "trace_dir" in profile or "trace_error" in profile

    curation = files["curation"]
    assert curation["complete"] and [r["candidates"] for r in curation["rows"]] == [1000, 10000]
    for row in curation["rows"]:
        for field in ("draw_s", "draw_curate_s", "candidates_per_s", "curation_overhead"):
            assert _positive(row[field]), field
        assert math.isfinite(row["compile_s"]) and math.isfinite(row["draw_compile_s"])

    theory = files["theory"]
    assert theory["complete"] and {r["M"] for r in theory["rows"]} == {1000, 10000}
    for row in theory["rows"]:
        assert _positive(row["steady_s"]) and _positive(row["ns_per_state"])
        assert math.isfinite(row["compile_s"]) and abs(row["sum"] - 1.0) < 1e-3

    summary = files["device_check"]
    assert {s["exit_status"] for s in summary["sections"].values()} == {"0"}
    assert _positive(summary["loop_over_sweep"]["value"])
    assert summary["curation"]["largest_candidates"] == 10000
    assert summary["theory"]["largest_M"] == 10000


@pytest.mark.slow
def test_bench_table_smoke(tmp_path):
    """The table at tiny sizes: the NumPy row, JAX on one core, two processes under
    ``jax.distributed`` (the same values as one process), and the GPU row (not measured on a
    CPU). The all-cores row runs the same code with other flags and is left out for time."""
    out = _run("bench_table", tmp_path, "--smoke", "--rows",
               "numpy,jax_cpu_1core,jax_cpu_2_processes,jax_gpu")
    _check_environment(out)
    rows = {r["name"]: r for r in out["rows"]}
    assert list(rows) == ["numpy", "jax_cpu_1core", "jax_cpu_2_processes", "jax_gpu"]
    for name in ("numpy", "jax_cpu_1core", "jax_cpu_2_processes"):
        row = rows[name]
        assert row["measured"], row
        _check_environment(row)
        for part in ("curate", "flagship"):
            assert _positive(row[part]["s_per_million"]) and _positive(row[part]["steady_s"])
            assert math.isfinite(row[part]["compile_s"]) and len(row[part]["runs_s"]) == 5
    assert rows["jax_cpu_1core"]["flagship"]["devices"] == 1
    mp = rows["jax_cpu_2_processes"]
    assert mp["flagship"]["processes"] == 2 and mp["flagship"]["devices"] == 2
    assert mp["values_equal"] is True, mp["values_checks"]
    assert not rows["jax_gpu"]["measured"] and "cpu" in rows["jax_gpu"]["reason"]
    assert "| JAX, CPU, 1 core |" in out["markdown"]


def test_run_all_lists_the_table():
    text = open(os.path.join(ROOT, "benchmarks", "run_all.sh")).read()
    assert " table" in text or "table " in text

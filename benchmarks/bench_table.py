"""A comparison table: seconds per million curated samples and per million configuration-
generations of the flagship problem, for NumPy / scikit-learn and for JAX on one CPU core, on all
CPU cores, on two local processes, and on a GPU.

The two units of work, both on the flagship problem of ``bench_sweep.py`` (the 8-mode ring, an
8-component GMM, K = 4, beta = 1, the distance reward to mode 0):

* **curated sample**: one kept sample out of K = 4 candidates: drawing the 4 candidates from the
  flagship's GMM (JAX: at the ring's parameters, equal weights, the mode centres, covariance
  0.05^2 I; NumPy: scikit-learn's fit on the ring, which recovers them), their reward, and the
  K-way curation that keeps one;
* **configuration-generation**: one generation of one configuration of the flagship loop: drawing
  ``n`` x 4 candidates (``n`` = 4,096 kept samples), reward, curation, and the 10-step EM refit on
  the kept samples and the real data (``n`` real points; real fraction 0, 0.1, 0.25 or 0.5).

Rows (each JAX row times ``sc.sweep`` over a configuration axis: seeds for the curated samples,
seeds x the 4 real fractions for the flagship):

* ``numpy``: scikit-learn's ``GaussianMixture`` with NumPy rewards and Gumbel-max curation
  (``bench_sweep.py``'s baseline: ``tol=0``, 10 EM steps, warm-started), one process, BLAS held to
  one thread. Its draw includes a permutation of the candidates (``GaussianMixture.sample``
  returns them sorted by component). The flagship is timed on one seed x the 4 fractions (its time
  does not depend on the seed).
* ``jax_cpu_1core``: one CPU device, XLA's intra-op threading off
  (``XLA_FLAGS=--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1``), and the
  process held to one core (Linux ``sched_setaffinity``: one XLA device still runs independent
  operations on other cores).
* ``jax_cpu_all_cores``: one XLA host device per core, the sweep sharded over them.
* ``jax_cpu_2_processes``: two local processes joined by ``jax.distributed.initialize`` on
  127.0.0.1 (CPU collectives over gloo), one host device each, process ``i`` held to core ``i``,
  making the same ``sc.sweep`` call;
  its values are compared with the single-process runs (``values_equal``). Its time is, per run,
  the slower of the two processes.
* ``jax_gpu``: the JAX sweep on the accelerator when JAX's default backend is a GPU (with
  ``--gpu-scale`` times as many configurations, to fill the device); otherwise not measured.

Every JAX row runs in its own process, so that its flags are set before JAX starts. Compile time
is reported apart (``sc.sweep``'s ``compile_seconds`` of the first call); steady-state time is the
median of ``--repeats`` calls after it (``run_seconds``: wall clock, the inputs' placement and the
outputs' transfer to the host included). Every row records the machine and its load
(``_common.environment()``).

    python benchmarks/bench_table.py [--quick | --smoke] [--repeats 5] [--json results/table.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import traceback

ORIGINAL_ENV = dict(os.environ)  # the environment the rows' processes start from
if "--child" not in sys.argv:
    # The main process runs only the NumPy row: it keeps JAX on the CPU, so that an accelerator
    # is left whole to the row that uses it.
    os.environ["JAX_PLATFORMS"] = "cpu"
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import _common  # noqa: E402
import _processes  # noqa: E402

K, BETA, COMPONENTS, EM_STEPS = 4, 1.0, 8, 10
FRACTIONS = [0.0, 0.1, 0.25, 0.5]
ONE_CORE_FLAGS = ("--xla_cpu_multi_thread_eigen=false", "intra_op_parallelism_threads=1")
DEVICE_COUNT_FLAG = "xla_force_host_platform_device_count"

ROWS = {
    "numpy": "NumPy / scikit-learn loop, 1 core",
    "jax_cpu_1core": "JAX, CPU, 1 core",
    "jax_cpu_all_cores": "JAX, CPU, all cores",
    "jax_cpu_2_processes": "JAX, CPU, 2 processes (jax.distributed)",
    "jax_gpu": "JAX, GPU",
}

SIZES = {  # (flagship configs, generations, kept samples n, curated configs, kept per config,
    #           NumPy curated samples, NumPy generations)
    "smoke": dict(configs=4, generations=2, num_samples=64, curate_configs=4,
                  curate_samples=256, numpy_curate_samples=1024, numpy_generations=2,
                  gpu_scale=1, child_timeout=240),
    "quick": dict(configs=16, generations=5, num_samples=4096, curate_configs=16,
                  curate_samples=65536, numpy_curate_samples=2**18, numpy_generations=5,
                  gpu_scale=16, child_timeout=900),
    "full": dict(configs=64, generations=20, num_samples=4096, curate_configs=64,
                 curate_samples=65536, numpy_curate_samples=2**20, numpy_generations=20,
                 gpu_scale=16, child_timeout=3600),
}


# --------------------------------------------------------------------------------------------
# The JAX rows (run in child processes)
# --------------------------------------------------------------------------------------------


def ring_gmm():
    """The flagship's 8-component GMM at the ring's own parameters (equal weights, the mode
    centres, covariance 0.05^2 I; what the fit on the ring recovers), and the flagship's reward.
    The cost of a draw does not depend on the parameters' values."""
    import jax.numpy as jnp

    from selfconsume import data, models, rewards

    centers = data.ring_centers(8, 1.0)
    params = models.GMMParams(weights=jnp.full((COMPONENTS,), 1.0 / COMPONENTS),
                              means=jnp.asarray(centers, jnp.float32),
                              covs=jnp.tile(0.05**2 * jnp.eye(2), (COMPONENTS, 1, 1)))
    model = models.gmm(COMPONENTS, 2, em_steps=EM_STEPS)
    return model, params, rewards.distance(centers[0], scale=4.0, radius=0.1)


def curate_program(num_kept: int):
    """``fn(key)``: draw ``num_kept`` x K candidates from the flagship's GMM, reward them and keep
    one of every K; returns the mean kept sample (so that all of them are computed)."""
    import jax

    import selfconsume as sc

    model, params, reward = ring_gmm()

    def fn(key):
        key_draw, key_curate = jax.random.split(key)
        x = model.sample(key_draw, params, num_kept * K)
        kept = sc.curate(key_curate, x, reward(x), k=K, beta=BETA).samples
        return kept.mean(axis=0)

    return fn


def timed_sweep(fn, num_seeds: int, grid: dict | None, repeats: int) -> tuple[dict, object]:
    """``sc.sweep`` once (compiles), then ``repeats`` times; times from its metadata."""
    import jax

    import selfconsume as sc

    first = sc.sweep(jax.random.key(1), fn, num_seeds=num_seeds, grid=grid)
    runs = []
    for _ in range(max(repeats, 1)):
        meta = sc.sweep(jax.random.key(1), fn, num_seeds=num_seeds, grid=grid).metadata
        runs.append(meta["run_seconds"])
    m = first.metadata
    return {"compile_s": m["compile_seconds"], "first_run_s": m["run_seconds"],
            "steady_s": statistics.median(runs), "min_s": min(runs), "runs_s": runs,
            "configs": m["num_configs"], "devices": m["devices"],
            "processes": m["process_count"], "platform": m["platform"]}, first.values


def child(args) -> None:
    """One JAX row: both sweeps on the devices of this process (or of the distributed job)."""
    pinned = None
    if args.child in ("jax_cpu_1core", "jax_cpu_2_processes") and hasattr(os,
                                                                          "sched_setaffinity"):
        # one core for the 1-core row, core i for process i: every thread JAX starts inherits it
        cpus = sorted(os.sched_getaffinity(0))
        pinned = cpus[(args.process_id or 0) % len(cpus)]
        os.sched_setaffinity(0, {pinned})
    import jax

    t_start = time.perf_counter()

    def log(step):  # progress on stderr, kept in the JSON when a row fails
        print(f"[{args.child} {args.process_id or 0}] {time.perf_counter() - t_start:.1f} s: "
              f"{step}", file=sys.stderr, flush=True)

    if args.child == "jax_cpu_2_processes":
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.config.update("jax_num_cpu_devices", 1)
        jax.distributed.initialize(coordinator_address=f"127.0.0.1:{args.port}",
                                   num_processes=args.num_processes, process_id=args.process_id)
        log("jax.distributed initialised")
    if args.child == "jax_gpu" and jax.default_backend() == "cpu":
        reason = "no accelerator: JAX's default backend is cpu"
        print(_processes.MARK + json.dumps({"measured": False, "reason": reason}), flush=True)
        return
    import numpy as np

    import bench_scaling

    env = _common.environment()
    log(f"{len(jax.devices())} device(s), {jax.process_count()} process(es)")
    program = curate_program(args.curate_samples)
    log("curated-sample program built")
    curate, curate_values = timed_sweep(program, args.curate_configs, None, args.repeats)
    log(f"curated-sample sweeps done (compile {curate['compile_s']:.1f} s)")
    program = bench_scaling.flagship(args.num_samples, args.generations)
    flagship, flagship_values = timed_sweep(
        program, max(args.configs // len(FRACTIONS), 1), {"real_fraction": FRACTIONS},
        args.repeats)
    log(f"flagship sweeps done (compile {flagship['compile_s']:.1f} s)")
    if args.values_out and jax.process_index() == 0:
        np.savez(args.values_out, curate=np.asarray(curate_values),
                 flagship=np.asarray(flagship_values))
    curate["samples"] = curate["configs"] * args.curate_samples
    flagship["config_generations"] = flagship["configs"] * args.generations
    print(_processes.MARK + json.dumps({
        "measured": True, "environment": env, "process_index": jax.process_index(),
        "pinned_cpu": pinned,
        "backend": jax.default_backend(), "curate": curate, "flagship": flagship}), flush=True)


def child_command(args, name: str, scale: int, values_out: str | None) -> list[str]:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", name,
           "--configs", str(args.configs * scale), "--generations", str(args.generations),
           "--num-samples", str(args.num_samples),
           "--curate-configs", str(args.curate_configs * scale),
           "--curate-samples", str(args.curate_samples), "--repeats", str(args.repeats)]
    return cmd + (["--values-out", values_out] if values_out else [])


def child_env(name: str) -> dict:
    """The environment of a row's process, from the one this script started with."""
    pythonpath = os.pathsep.join(p for p in (os.path.dirname(HERE), ORIGINAL_ENV.get(
        "PYTHONPATH")) if p)
    if name == "jax_gpu":
        return _processes.env_with(ORIGINAL_ENV, PYTHONPATH=pythonpath)
    if name == "jax_cpu_1core":
        return _processes.env_with(ORIGINAL_ENV, drop_xla_flags=(DEVICE_COUNT_FLAG,
                                                                 "multi_thread_eigen",
                                                                 "intra_op_parallelism"),
                                   xla_flags=ONE_CORE_FLAGS + (f"--{DEVICE_COUNT_FLAG}=1",),
                                   JAX_PLATFORMS="cpu", PYTHONPATH=pythonpath)
    if name == "jax_cpu_all_cores":
        return _processes.env_with(ORIGINAL_ENV, drop_xla_flags=(DEVICE_COUNT_FLAG,),
                                   xla_flags=(f"--{DEVICE_COUNT_FLAG}={os.cpu_count() or 1}",),
                                   JAX_PLATFORMS="cpu", PYTHONPATH=pythonpath)
    # two processes, one host device each (set by jax_num_cpu_devices in the process)
    return _processes.env_with(ORIGINAL_ENV, drop_xla_flags=(DEVICE_COUNT_FLAG,),
                               JAX_PLATFORMS="cpu", PYTHONPATH=pythonpath)


def failure(name: str, runs: list[dict]) -> dict:
    """A row that did not complete: return codes and the end of every process's output."""
    return {"name": name, "label": ROWS[name], "measured": False,
            "reason": "timed out" if any(r["timed_out"] for r in runs) else "failed",
            "returncodes": [r["rc"] for r in runs],
            "stderr_tails": [r["stderr"][-6000:] for r in runs],
            "stdout_tails": [r["stdout"][-2000:] for r in runs]}


def per_million(part: dict, units: str) -> dict:
    part["s_per_million"] = part["steady_s"] / part[units] * 1e6
    return part


def jax_row(args, name: str, workdir: str) -> dict:
    values_out = os.path.join(workdir, f"{name}.npz")
    scale = args.gpu_scale if name == "jax_gpu" else 1
    cmd = child_command(args, name, scale, values_out)
    env = child_env(name)
    if name == "jax_cpu_2_processes":
        runs = _processes.run_distributed(cmd, 2, env, args.child_timeout)
    else:
        runs = [_processes.run_one(cmd, env, args.child_timeout)]
    results = [_processes.result(r["stdout"]) for r in runs]
    if any(r["rc"] != 0 for r in runs) or any(x is None for x in results):
        return failure(name, runs)
    first = results[0]
    if not first["measured"]:
        return {"name": name, "label": ROWS[name], "measured": False, "reason": first["reason"]}
    row = {"name": name, "label": ROWS[name], "measured": True,
           "environment": first["environment"], "process_wall_s": runs[0]["wall_s"]}
    for part, units in (("curate", "samples"), ("flagship", "config_generations")):
        timing = dict(first[part])
        if len(results) > 1:  # per run, the slower process; then the median
            per_process = [r[part]["runs_s"] for r in results]
            timing["runs_by_process_s"] = per_process
            timing["runs_s"] = [max(xs) for xs in zip(*per_process)]
            timing["steady_s"] = statistics.median(timing["runs_s"])
            timing["min_s"] = min(timing["runs_s"])
            timing["compile_s"] = max(r[part]["compile_s"] for r in results)
        row[part] = per_million(timing, units)
    if name == "jax_gpu":
        row["label"] = f"JAX, {first['environment']['device']}"
    row["values_file"] = values_out
    return row


# --------------------------------------------------------------------------------------------
# The NumPy / scikit-learn row (this process)
# --------------------------------------------------------------------------------------------


def numpy_row(args) -> dict:
    try:
        import warnings

        import numpy as np
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.mixture import GaussianMixture
        from threadpoolctl import threadpool_limits

        import bench_sweep
    except ImportError as exc:
        return {"name": "numpy", "label": ROWS["numpy"], "measured": False,
                "reason": f"not installed: {exc}"}
    real, centers, _ = bench_sweep.problem(args.num_samples)
    reward_np = bench_sweep.reward_numpy(centers)
    n = args.numpy_curate_samples
    with threadpool_limits(limits=1), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm = GaussianMixture(COMPONENTS, covariance_type="full", max_iter=EM_STEPS, tol=0.0,
                             random_state=0).fit(np.asarray(real, np.float64))
        rng = np.random.default_rng(0)

        def curate_once():
            x, _ = gm.sample(n * K)
            x = x[rng.permutation(len(x))]  # sample() returns the candidates sorted by component
            return bench_sweep.curate_numpy(rng, x, reward_np(x), K, BETA)

        curate_once()
        runs = []
        for _ in range(max(args.repeats, 1)):
            t0 = time.perf_counter()
            curate_once()
            runs.append(time.perf_counter() - t0)
    curate = {"compile_s": 0.0, "steady_s": statistics.median(runs), "min_s": min(runs),
              "runs_s": runs, "samples": n, "configs": 1, "devices": 1, "processes": 1}
    loop_args = argparse.Namespace(seeds=1, generations=args.numpy_generations,
                                   num_samples=args.num_samples,
                                   sklearn_configs=len(FRACTIONS))
    runs = [bench_sweep.bench_sklearn(loop_args, real, centers, FRACTIONS)["steady_s"]
            for _ in range(max(args.repeats, 1))]
    flagship = {"compile_s": 0.0, "steady_s": statistics.median(runs), "min_s": min(runs),
                "runs_s": runs, "configs": len(FRACTIONS), "devices": 1, "processes": 1,
                "config_generations": len(FRACTIONS) * args.numpy_generations}
    return {"name": "numpy", "label": ROWS["numpy"], "measured": True,
            "environment": _common.environment() | {"blas_threads": 1},
            "curate": per_million(curate, "samples"),
            "flagship": per_million(flagship, "config_generations")}


# --------------------------------------------------------------------------------------------
# Comparison of values, the table
# --------------------------------------------------------------------------------------------


def compare_values(path_a: str, path_b: str) -> dict:
    import numpy as np

    with np.load(path_a) as a, np.load(path_b) as b:
        out = {}
        for part in ("curate", "flagship"):
            x, y = a[part], b[part]
            same_shape = x.shape == y.shape
            out[part] = {"equal": bool(same_shape and np.array_equal(x, y)),
                         "max_abs_diff": float(np.max(np.abs(x - y))) if same_shape else None}
        out["equal"] = all(out[p]["equal"] for p in ("curate", "flagship"))
        return out


def markdown(rows: list[dict]) -> str:
    base = next((r for r in rows if r["name"] == "numpy" and r["measured"]), None)
    head = ("| row | devices | s / 10^6 curated samples | compile s | "
            "s / 10^6 configuration-generations | compile s | vs NumPy (curated / config-gen) |")
    lines = [head, "|---|---|---|---|---|---|---|"]
    for r in rows:
        if not r["measured"]:
            lines.append(f"| {r['label']} | | not measured ({r['reason']}) | | | | |")
            continue
        c, f = r["curate"], r["flagship"]
        devices = f"{f['devices']}" + (f" ({f['processes']} processes)"
                                       if f.get("processes", 1) > 1 else "")
        ratio = ""
        if base is not None and r is not base:
            ratio = (f"{base['curate']['s_per_million'] / c['s_per_million']:.1f}x / "
                     f"{base['flagship']['s_per_million'] / f['s_per_million']:.1f}x")
        lines.append(f"| {r['label']} | {devices} | {c['s_per_million']:.3g} | "
                     f"{c['compile_s']:.2f} | {f['s_per_million']:.4g} | {f['compile_s']:.2f} | "
                     f"{ratio} |")
    return "\n".join(lines)


def main() -> None:
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes (for the test suite)")
    p.add_argument("--rows", default=",".join(ROWS),
                   help=f"comma-separated rows to run (default all: {','.join(ROWS)})")
    p.add_argument("--gpu-scale", type=int, default=None,
                   help="configurations on the GPU, as a multiple of the CPU rows' (default 16; "
                        "1 with --smoke)")
    p.add_argument("--child", choices=[r for r in ROWS if r != "numpy"], help=argparse.SUPPRESS)
    for name in ("configs", "generations", "num-samples", "curate-configs", "curate-samples",
                 "process-id", "num-processes", "port"):
        p.add_argument(f"--{name}", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--values-out", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    for key, value in SIZES[mode].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    names = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = sorted(set(names) - set(ROWS))
    if unknown:
        p.error(f"unknown rows {unknown}; choose among {list(ROWS)}")
    env = _common.environment()
    print(f"benchmark table ({mode}) on {env['cpu']}, {env['cpu_count']} cores, load average "
          f"{env['load_average_1min']}; flagship: {args.configs} configurations x "
          f"{args.generations} generations, n = {args.num_samples}, K = {K}; curated samples: "
          f"{args.curate_configs} x {args.curate_samples}; median of {args.repeats}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_table_") as workdir:
        for name in names:
            t0 = time.perf_counter()
            if name == "numpy":
                try:
                    row = numpy_row(args)
                except Exception:  # a baseline that breaks leaves the JAX rows to run
                    row = {"name": "numpy", "label": ROWS["numpy"], "measured": False,
                           "reason": "failed", "traceback": traceback.format_exc()}
            else:
                row = jax_row(args, name, workdir)
            row["row_wall_s"] = time.perf_counter() - t0
            rows.append(row)
            shown = (f"{row['curate']['s_per_million']:.3g} s / 10^6 curated samples, "
                     f"{row['flagship']['s_per_million']:.4g} s / 10^6 configuration-generations"
                     if row["measured"] else f"not measured ({row['reason']})")
            print(f"  {ROWS[name]}: {shown} [{row['row_wall_s']:.0f} s]", flush=True)
            if row.get("reason") in ("failed", "timed out"):
                for tail in row.get("stderr_tails", [row.get("traceback", "")]):
                    print("    " + "\n    ".join(tail.strip().splitlines()[-25:]), flush=True)
        by_name = {r["name"]: r for r in rows}
        mp = by_name.get("jax_cpu_2_processes")
        if mp is not None and mp["measured"]:
            refs = [n for n in ("jax_cpu_all_cores", "jax_cpu_1core")
                    if n in by_name and by_name[n]["measured"]]
            mp["values_checks"] = {n: compare_values(mp["values_file"],
                                                     by_name[n]["values_file"]) for n in refs}
            mp["values_equal"] = (all(c["equal"] for c in mp["values_checks"].values())
                                  if refs else None)
            print(f"  two processes give the same values as one process "
                  f"({', '.join(refs) or 'no single-process row to compare'}): "
                  f"{mp['values_equal']}", flush=True)
        for r in rows:
            r.pop("values_file", None)
    table = markdown(rows)
    print(table)
    _common.write_json(args.json, {
        "benchmark": "table", "environment": env, "mode": mode,
        "settings": {k: v for k, v in vars(args).items() if k not in (
            "child", "process_id", "num_processes", "port", "values_out")} | {"k": K},
        "rows": rows, "markdown": table,
        "load_average_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None})


if __name__ == "__main__":
    main()

"""Device check: the flagship scan, curation and the exact map at accelerator sizes, each within a
time budget, and a profile of the sweep against a loop of single-configuration runs.

Sections (``--section``; ``benchmarks/device_check.sh`` runs them in turn, one process each, and
then ``summary``), each writing one JSON file into ``--out``:

* ``flagship`` -> ``flagship.json`` and ``profile.json``. The problem of ``bench_sweep.py`` (the
  8-mode ring, an 8-component GMM, 4,096 kept samples out of 16,384 candidates, K = 4, 10 EM steps
  per fit, 20 generations, real fraction 0, 0.1, 0.25, 0.5). At 64 configurations (16 seeds x the
  4 fractions): ``sc.sweep`` (one compiled program; median of ``--repeats`` runs after the
  compiling one) against a Python loop calling the jitted single-configuration run (``sc.run``)
  once per configuration, its arguments already on the device; ``loop_over_sweep`` is the ratio
  of their steady-state times (target at least 5 on a GPU). Then the sweep's throughput at 256,
  1,024 and 4,096 configurations. The profile: the time of one trivial jitted call (dispatch and
  launch), of one single-configuration run, per generation of it, the sweep's time per
  configuration, the compiled single run's count of fusions and loops, and a ``jax.profiler``
  trace of one run and one sweep under ``<out>/trace`` (last, and skipped, with the reason, if
  the profiler fails or the time is short).
* ``curation`` -> ``curation.json``. Drawing N candidates from the flagship's 8-component GMM (at
  the ring's parameters: equal weights, the mode centres, covariance 0.05^2 I), and the same draw
  followed by ``sc.curate`` with K = 4 and 64 (the rewards are an input), for N = 10^5 to 10^8.
* ``theory`` -> ``theory.json``. ``theory.retrain_map`` (float32, beta = 2) on M = 10^4 to 10^7
  states, k = 2, 64 and infinity.
* ``summary`` -> ``device_check.json``: the headline figures of the three files and the exit
  status of each section.

Times are wall clock (on an accelerator the process's CPU time does not measure the device).
Compile time is reported apart from the steady-state time: a sweep's own ``compile_seconds``; for
a jitted function, the first call's time less the median of the later calls. A section grows its
sizes while its budget (``--budget-s``) allows: before each size it predicts that size's time
from the previous one (its compile time plus three calls, their time scaled linearly with the
size) and stops, recording where and why, if the prediction exceeds what is left; the steady-state
calls of a size (at most ``--repeats``) also stop when the next would not fit. Every file is
rewritten after each size, so a section stopped from outside keeps what it measured. Every file
records the machine and its load (``_common.environment()``). ``--smoke`` runs tiny sizes
(seconds, on a CPU).

    PYTHONPATH=. python benchmarks/bench_device.py --section flagship --out results/device
"""

from __future__ import annotations

import argparse
import functools
import glob
import json
import math
import os
import re
import statistics
import sys
import time

T_START = time.perf_counter()
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import _common  # noqa: E402

FRACTIONS = [0.0, 0.1, 0.25, 0.5]
LOOP_TARGET = 5.0

SIZES = {
    # smoke: the last size never fits its budget (checks that a section stops and says so)
    "flagship": {"smoke": dict(num_samples=64, generations=2, compare=4, scan=[8, 10**6]),
                 "full": dict(num_samples=4096, generations=20, compare=64,
                              scan=[256, 1024, 4096])},
    "curation": {"smoke": dict(sizes=[10**3, 10**4], ks=[4]),
                 "full": dict(sizes=[10**5, 10**6, 10**7, 10**8], ks=[4, 64])},
    "theory": {"smoke": dict(sizes=[10**3, 10**4], ks=[4, math.inf]),
               "full": dict(sizes=[10**4, 10**5, 10**6, 10**7], ks=[2, 64, math.inf])},
}


class Budget:
    """Seconds left to a section, counted from the start of the process."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - T_START)

    def allows(self, predicted: float) -> bool:
        return predicted <= self.left()

    def stops_before(self, payload: dict, last: dict | None, size: int, unit: str) -> bool:
        """Whether the next size (``size`` ``unit``) is predicted not to fit; if so, records
        where the section stopped in ``payload["stopped"]`` and says so."""
        guess = predict(last, size)
        if self.allows(guess):
            return False
        payload["stopped"] = {f"before_{unit}": size, "predicted_s": guess,
                              "left_s": self.left()}
        print(f"  stopped before {unit} = {size}: predicted {guess:.0f} s, {self.left():.0f} s "
              "left", flush=True)
        return True


def predict(last: dict | None, size: int) -> float:
    """The time the next size needs at least (its compile, its first call and one steady call,
    with a margin of one more call), from the last size: the last compile time, and three of its
    steady calls scaled linearly by size."""
    if last is None:
        return 0.0
    per_call = last.get("wall_s", last["steady_s"])  # a sweep's whole call, when known
    return last["compile_s"] + 3.0 * per_call * size / last["size"]


def timed(fn, *args, repeats: int, budget: Budget, keep_output: bool = False) -> dict:
    """The first call of ``fn(*args)`` (compile + run) and up to ``repeats`` further calls while
    the budget allows; wall-clock seconds, each call synchronised. ``measure_s`` is the time spent
    running (all calls, less the compile time)."""
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t0
    if not keep_output:
        out = None
    runs = []
    for _ in range(max(repeats, 1)):
        if runs and not budget.allows(1.5 * max(runs)):
            break
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        runs.append(time.perf_counter() - t0)
    steady = statistics.median(runs)
    compile_s = max(first - steady, 0.0)
    row = {"compile_s": compile_s, "first_s": first, "steady_s": steady, "min_s": min(runs),
           "runs_s": runs, "measure_s": first - compile_s + sum(runs)}
    if keep_output:
        row["_out"] = out
    return row


def public(row: dict) -> dict:
    return {k: v for k, v in row.items() if not k.startswith("_")}


def write(out_dir: str, name: str, payload: dict) -> None:
    path = os.path.join(out_dir, name)
    os.makedirs(out_dir, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=2, default=str)
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------
# flagship: sweep against a loop, throughput, profile
# --------------------------------------------------------------------------------------------


def timed_sweep(fn, configs: int, repeats: int, budget: Budget) -> tuple[dict, np.ndarray]:
    import selfconsume as sc

    seeds = max(configs // len(FRACTIONS), 1)

    def call():
        return sc.sweep(jax.random.key(1), fn, num_seeds=seeds,
                        grid={"real_fraction": FRACTIONS})

    t0 = time.perf_counter()
    first = call()
    first_wall = time.perf_counter() - t0
    runs, walls = [], []
    for _ in range(max(repeats, 1)):
        if runs and not budget.allows(1.5 * max(walls)):
            break
        t0 = time.perf_counter()
        runs.append(call().metadata["run_seconds"])
        walls.append(time.perf_counter() - t0)
    m = first.metadata
    steady = statistics.median(runs)
    return {"size": m["num_configs"], "configs": m["num_configs"], "devices": m["devices"],
            "compile_s": m["compile_seconds"], "first_run_s": m["run_seconds"],
            "first_wall_s": first_wall, "steady_s": steady, "min_s": min(runs), "runs_s": runs,
            "wall_s": statistics.median(walls), "measure_s": m["run_seconds"] + sum(walls),
            "per_config_s": steady / m["num_configs"]}, np.asarray(first.values)


def hlo_counts(compiled) -> dict:
    """Static counts in the optimised program: fusions (kernels, on a GPU), loops, custom
    calls, all instructions."""
    try:
        text = compiled.as_text()
    except Exception as exc:  # not every backend gives its text
        return {"error": repr(exc)}
    body = [line for line in text.splitlines() if " = " in line]
    return {"instructions": len(body),
            "fusions": sum(bool(re.search(r"\bfusion\(", x)) for x in body),
            "while_loops": sum(bool(re.search(r"\bwhile\(", x)) for x in body),
            "custom_calls": sum(bool(re.search(r"\bcustom-call\(", x)) for x in body)}


def section_flagship(args, budget: Budget) -> None:
    import bench_scaling

    s = SIZES["flagship"]["smoke" if args.smoke else "full"]
    n, g, configs = s["num_samples"], s["generations"], s["compare"]
    env = _common.environment()
    payload = {"benchmark": "device_flagship", "environment": env,
               "settings": {"num_samples": n, "generations": g, "k": 4, "em_steps": 10,
                            "fractions": FRACTIONS, "compare_configs": configs,
                            "scan": s["scan"], "repeats": args.repeats,
                            "budget_s": args.budget_s},
               "complete": False, "stopped": None}
    profile = {"benchmark": "device_profile", "environment": env, "settings":
               payload["settings"]}
    fn = bench_scaling.flagship(n, g)
    print(f"flagship on {env['device']} ({env['backend']}): {n} kept samples, {g} generations",
          flush=True)

    # (a) the sweep at `configs` configurations
    sweep, values = timed_sweep(fn, configs, args.repeats, budget)
    payload["compare"] = {"sweep": sweep}
    write(args.out, "flagship.json", payload)
    print(f"  sweep, {configs} configurations: compile {sweep['compile_s']:.2f} s, steady "
          f"{sweep['steady_s']:.3f} s", flush=True)

    # (b) a loop of jitted single-configuration runs over the same configurations
    jitted = jax.jit(fn)
    seeds = max(configs // len(FRACTIONS), 1)
    keys = jax.random.split(jax.random.key(1), seeds)
    calls = [(keys[i], jnp.float32(f)) for i in range(seeds) for f in FRACTIONS]
    jax.block_until_ready(calls)
    t0 = time.perf_counter()
    jax.block_until_ready(jitted(*calls[0]))
    first = time.perf_counter() - t0
    loops, per_call, outs = [], [], []
    for r in range(max(args.repeats, 1)):
        if loops and not budget.allows(1.5 * max(loops)):
            break
        t_loop = time.perf_counter()
        for c in calls:
            t0 = time.perf_counter()
            out = jax.block_until_ready(jitted(*c))
            per_call.append(time.perf_counter() - t0)
            if r == 0:
                outs.append(np.asarray(out))
        loops.append(time.perf_counter() - t_loop)
    call_s = statistics.median(per_call)
    loop = {"configs": len(calls), "devices": 1, "compile_s": max(first - call_s, 0.0),
            "first_s": first, "steady_s": statistics.median(loops), "min_s": min(loops),
            "runs_s": loops, "per_call_s": call_s, "per_config_s": statistics.median(loops)
            / len(calls)}
    loop_values = np.stack(outs).reshape(values.shape)
    ratio = loop["steady_s"] / sweep["steady_s"]
    payload["compare"] |= {"loop": loop, "loop_over_sweep": ratio, "target": LOOP_TARGET,
                           "met": bool(ratio >= LOOP_TARGET),
                           "loop_matches_sweep_max_abs_diff":
                               float(np.max(np.abs(loop_values - values)))}
    write(args.out, "flagship.json", payload)
    print(f"  loop of jitted runs: compile {loop['compile_s']:.2f} s, steady "
          f"{loop['steady_s']:.3f} s; loop / sweep = {ratio:.2f} (target >= {LOOP_TARGET})",
          flush=True)

    # profile: dispatch, one run, per generation, per configuration in the sweep; a trace
    trivial = jax.jit(lambda x: x + 1)
    x = jnp.float32(0)
    jax.block_until_ready(trivial(x))
    ticks = []
    for _ in range(200):
        t0 = time.perf_counter()
        jax.block_until_ready(trivial(x))
        ticks.append(time.perf_counter() - t0)
    dispatch = statistics.median(ticks)
    profile |= {
        "dispatch_s": dispatch,
        "single_run_s": call_s,
        "single_run_per_generation_s": call_s / g,
        "sweep_per_config_s": sweep["per_config_s"],
        "sweep_s": sweep["steady_s"],
        "sweep_over_single_run": sweep["steady_s"] / call_s,
        "loop_over_sweep": ratio,
        "dispatch_share_of_single_run": dispatch / call_s,
        "single_run_program": hlo_counts(jitted.lower(*calls[0]).compile()),
        "reading": ("loop_over_sweep = configs x single_run_s / sweep_s. sweep_over_single_run "
                    "near 1 means that the sweep runs all the configurations in about the time "
                    "of one: one configuration's run is bound by the latency of its sequence of "
                    "small programs (fusions per generation x generations x EM steps), not by "
                    "arithmetic. dispatch_s is the fixed cost of one call from Python."),
    }
    write(args.out, "profile.json", profile)
    print(f"  profile: dispatch {1e6 * dispatch:.0f} us, one run {call_s:.4f} s "
          f"({1e3 * call_s / g:.3f} ms / generation), sweep {sweep['per_config_s']:.5f} s / "
          f"configuration", flush=True)

    # (c) throughput against configurations
    scan, last = [public(sweep) | {"config_generations_per_s": configs * g / sweep["steady_s"]}
                  ], sweep
    payload["scan"] = scan
    for size in s["scan"]:
        if budget.stops_before(payload, last, size, "configs"):
            break
        row, _ = timed_sweep(fn, size, args.repeats, budget)
        row["config_generations_per_s"] = row["configs"] * g / row["steady_s"]
        scan.append(row)
        last = row
        write(args.out, "flagship.json", payload)
        print(f"  sweep, {size} configurations: compile {row['compile_s']:.2f} s, "
              f"{row['config_generations_per_s']:.0f} configuration-generations / s", flush=True)
    # the trace of one run and one sweep (last, optional: only if the time is left)
    trace_dir = os.path.join(args.out, "trace")
    needed = 20.0 + 3.0 * (call_s + sweep["wall_s"])
    if budget.allows(needed):
        try:
            import selfconsume as sc

            with jax.profiler.trace(trace_dir):
                jax.block_until_ready(jitted(*calls[0]))
                sc.sweep(jax.random.key(1), fn, num_seeds=seeds,
                         grid={"real_fraction": FRACTIONS})
            profile["trace_dir"] = trace_dir
            profile["trace_files"] = sorted(
                os.path.relpath(p, args.out) for p in glob.glob(
                    os.path.join(trace_dir, "**", "*"), recursive=True) if os.path.isfile(p))
        except Exception as exc:  # the profiler is optional
            profile["trace_error"] = repr(exc)
    else:
        profile["trace_error"] = f"skipped: {budget.left():.0f} s left, {needed:.0f} s needed"
    write(args.out, "profile.json", profile)
    print(f"  trace: {profile.get('trace_dir', profile.get('trace_error'))}", flush=True)

    largest = scan[-1]
    payload["sweep_throughput"] = {"configs": largest["configs"],
                                   "config_generations_per_s":
                                       largest["config_generations_per_s"]}
    payload["complete"] = payload["stopped"] is None
    payload["compare"]["sweep"] = public(payload["compare"]["sweep"])
    write(args.out, "flagship.json", payload)


# --------------------------------------------------------------------------------------------
# curation: draw, and draw + curate, up to 10^8 candidates
# --------------------------------------------------------------------------------------------


def section_curation(args, budget: Budget) -> None:
    import selfconsume as sc
    from selfconsume import data, models

    s = SIZES["curation"]["smoke" if args.smoke else "full"]
    env = _common.environment()
    payload = {"benchmark": "device_curation", "environment": env,
               "settings": s | {"repeats": args.repeats, "budget_s": args.budget_s,
                                "model": "gmm(8, 2) at the ring's parameters", "beta": 1.0},
               "rows": [], "complete": False, "stopped": None}
    centers = data.ring_centers(8, 1.0)  # the GMM at the ring's parameters (the fit's target)
    params = models.GMMParams(weights=jnp.full((8,), 1.0 / 8), means=centers,
                              covs=jnp.tile(0.05**2 * jnp.eye(2), (8, 1, 1)))
    model = models.gmm(8, 2, em_steps=10)
    key = jax.random.key(2)
    last = None
    for total in s["sizes"]:
        if budget.stops_before(payload, last, total, "candidates"):
            break
        draw = jax.jit(lambda key, total=total: model.sample(key, params, total))
        t_draw = timed(draw, key, repeats=args.repeats, budget=budget)
        spent = {"size": total, "compile_s": t_draw["compile_s"],
                 "steady_s": t_draw["steady_s"]}
        for k in s["ks"]:
            n = total // k
            rewards = jax.block_until_ready(jax.random.normal(jax.random.key(3), (n * k,)))

            def draw_and_curate(key, rewards, n=n, k=k):
                key_draw, key_curate = jax.random.split(key)
                x = model.sample(key_draw, params, n * k)
                return sc.curate(key_curate, x, rewards, k=k, beta=1.0).samples

            t_both = timed(jax.jit(draw_and_curate), key, rewards, repeats=args.repeats,
                           budget=budget)
            del rewards
            row = {"candidates": n * k, "K": k, "kept": n,
                   "draw_s": t_draw["steady_s"], "draw_compile_s": t_draw["compile_s"],
                   "draw_curate_s": t_both["steady_s"], "compile_s": t_both["compile_s"],
                   "runs_s": t_both["runs_s"],
                   "curation_overhead": t_both["steady_s"] / t_draw["steady_s"],
                   "candidates_per_s": n * k / t_both["steady_s"],
                   "ns_per_candidate": 1e9 * t_both["steady_s"] / (n * k)}
            payload["rows"].append(row)
            write(args.out, "curation.json", payload)
            print(f"  {n * k} candidates, K={k}: draw {1e3 * row['draw_s']:.2f} ms, draw + "
                  f"curate {1e3 * row['draw_curate_s']:.2f} ms (compile {row['compile_s']:.2f} "
                  f"s), {row['candidates_per_s']:.3g} candidates / s", flush=True)
            spent["compile_s"] += t_both["compile_s"]
            spent["steady_s"] += t_both["steady_s"]
        last = spent
    rows = payload["rows"]
    payload["largest_candidates"] = max(r["candidates"] for r in rows)
    payload["max_curation_overhead_at_largest"] = max(
        r["curation_overhead"] for r in rows if r["candidates"] == payload["largest_candidates"])
    payload["complete"] = payload["stopped"] is None
    write(args.out, "curation.json", payload)


# --------------------------------------------------------------------------------------------
# theory: the exact map up to 10^7 states
# --------------------------------------------------------------------------------------------


def section_theory(args, budget: Budget) -> None:
    import bench_theory
    from selfconsume import theory

    s = SIZES["theory"]["smoke" if args.smoke else "full"]
    env = _common.environment()
    payload = {"benchmark": "device_theory", "environment": env,
               "settings": {"sizes": s["sizes"], "ks": [str(k) for k in s["ks"]],
                            "beta": bench_theory.BETA, "repeats": args.repeats,
                            "budget_s": args.budget_s, "dtype": "float32"},
               "rows": [], "complete": False, "stopped": None}
    beta = jnp.float32(bench_theory.BETA)
    last = None
    for m in s["sizes"]:
        if budget.stops_before(payload, last, m, "M"):
            break
        p64, r64 = bench_theory.problem(m)
        p, r = jnp.asarray(p64, jnp.float32), jnp.asarray(r64, jnp.float32)
        del p64, r64
        spent = {"size": m, "compile_s": 0.0, "steady_s": 0.0}
        for k in s["ks"]:
            fn = jax.jit(functools.partial(theory.retrain_map, k=k))
            t = timed(lambda p, r, b, fn=fn: fn(p, r, beta=b), p, r, beta, repeats=args.repeats,
                      budget=budget, keep_output=True)
            total = float(jnp.sum(t.pop("_out")))
            row = {"M": m, "k": "inf" if math.isinf(k) else k, "steady_s": t["steady_s"],
                   "compile_s": t["compile_s"], "runs_s": t["runs_s"],
                   "ns_per_state": 1e9 * t["steady_s"] / m, "sum": total}
            payload["rows"].append(row)
            write(args.out, "theory.json", payload)
            print(f"  M = {m}, k = {row['k']}: {1e3 * row['steady_s']:.3f} ms "
                  f"({row['ns_per_state']:.2f} ns / state), compile {row['compile_s']:.2f} s",
                  flush=True)
            spent["compile_s"] += t["compile_s"]
            spent["steady_s"] += t["steady_s"]
        last = spent
    payload["largest_M"] = max(r["M"] for r in payload["rows"])
    payload["complete"] = payload["stopped"] is None
    write(args.out, "theory.json", payload)


# --------------------------------------------------------------------------------------------
# summary
# --------------------------------------------------------------------------------------------


def section_summary(args) -> None:
    def load(name):
        try:
            with open(os.path.join(args.out, name)) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    status = dict(x.split("=", 1) for x in args.status)
    flagship, profile = load("flagship.json"), load("profile.json")
    curation, theory = load("curation.json"), load("theory.json")
    summary = {"benchmark": "device_check", "environment": _common.environment(),
               "smoke": args.smoke, "total_s": args.total_s,
               "sections": {name: {"exit_status": status.get(name),
                                   "file": f"{name}.json" if data else None,
                                   "complete": (data or {}).get("complete"),
                                   "stopped": (data or {}).get("stopped")}
                            for name, data in (("flagship", flagship), ("curation", curation),
                                               ("theory", theory))}}
    if flagship and "compare" in flagship and "loop" in flagship["compare"]:
        c = flagship["compare"]
        summary["loop_over_sweep"] = {"configs": c["sweep"]["configs"],
                                      "value": c["loop_over_sweep"], "target": c["target"],
                                      "met": c["met"], "sweep_s": c["sweep"]["steady_s"],
                                      "sweep_compile_s": c["sweep"]["compile_s"],
                                      "loop_s": c["loop"]["steady_s"],
                                      "loop_compile_s": c["loop"]["compile_s"]}
    if flagship and "sweep_throughput" in flagship:
        summary["sweep_throughput"] = flagship["sweep_throughput"]
    if profile:
        summary["profile"] = {k: profile.get(k) for k in (
            "dispatch_s", "single_run_s", "single_run_per_generation_s", "sweep_per_config_s",
            "sweep_over_single_run", "trace_dir", "trace_error") if k in profile}
    if curation and curation.get("rows"):
        top = max(curation["rows"], key=lambda r: (r["candidates"], -r["K"]))
        summary["curation"] = {"largest_candidates": top["candidates"],
                               "candidates_per_s": top["candidates_per_s"],
                               "draw_curate_s": top["draw_curate_s"],
                               "compile_s": top["compile_s"]}
    if theory and theory.get("rows"):
        top = [r for r in theory["rows"] if r["M"] == max(x["M"] for x in theory["rows"])]
        summary["theory"] = {"largest_M": top[0]["M"],
                             "ns_per_state": {str(r["k"]): r["ns_per_state"] for r in top}}
    write(args.out, "device_check.json", summary)
    print(json.dumps({k: v for k, v in summary.items() if k != "environment"}, indent=1,
                     default=str))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--section", required=True,
                   choices=["flagship", "curation", "theory", "summary"])
    p.add_argument("--out", default="benchmarks/results/device", help="output folder")
    p.add_argument("--smoke", action="store_true", help="tiny sizes (seconds, on a CPU)")
    p.add_argument("--repeats", type=int, default=3, help="steady-state repetitions (at most)")
    p.add_argument("--budget-s", type=float, default=200.0,
                   help="seconds this section may take, from the start of its process")
    p.add_argument("--status", nargs="*", default=[], help=argparse.SUPPRESS)
    p.add_argument("--total-s", type=float, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    if args.section == "summary":
        return section_summary(args)
    budget = Budget(args.budget_s)
    {"flagship": section_flagship, "curation": section_curation,
     "theory": section_theory}[args.section](args, budget)


if __name__ == "__main__":
    main()

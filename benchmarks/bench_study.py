"""A study from the command line against ``sc.sweep`` on the same work: what the study layer costs.

The work: the demo study (the 8-mode ring, an 8-component GMM with 10 EM steps, K = 4, reward on
mode 0), ``--generations`` generations, ``--num-samples`` kept samples, 8 seeds x 4 real-data
fractions, on every device (one host device per core on a CPU).

(a) the study layer: ``selfconsume.study.run_study`` (build, the chunked and checkpointed sweep of
    its ``Generations`` program, every output file: results, CSV, summary, figures);
(b) ``sc.sweep`` of the same loop written as one function over ``sc.run`` (no checkpoints, no
    files), with the same keys.

Each is run ``--repeats`` times; the steady-state figure is the median of the runs after the first
(compile time apart: the first run's extra seconds). ``throughput_ratio`` = (b) / (a) on the
steady-state seconds of the sweep itself (``run_seconds``: the study's chunks with their
checkpoints against one sweep call), and ``wall_ratio`` on whole calls (the study's outputs
included). Target: throughput_ratio >= 0.9.

    python benchmarks/bench_study.py [--quick] [--json results/study.json]
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_"
                               f"device_count={os.cpu_count() or 1}").strip()

import jax  # noqa: E402

import _common  # noqa: E402
import selfconsume as sc  # noqa: E402
from selfconsume import study  # noqa: E402


def main() -> None:
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--generations", type=int, default=20)
    p.add_argument("--num-samples", type=int, default=1024)
    p.add_argument("--smoke", action="store_true", help="tiny sizes (for the test suite)")
    args = p.parse_args()
    if args.quick:
        args.generations, args.num_samples, args.repeats = 8, 256, 3
    if args.smoke:
        args.generations, args.num_samples, args.repeats = 2, 64, 2
    sets = [f"loop.num_generations={args.generations}", f"loop.num_samples={args.num_samples}",
            "metrics.snapshot_points=0", "plots.snapshots=[]"]
    if args.smoke:
        sets += ["sweep.seeds=2", "data.num_points=256"]
    cfg = study.load_config(text=study.DEMO, overrides=sets)
    built = study.build(cfg)
    grid = dict(cfg["sweep"]["grid"])

    def fn(key, real_fraction):
        key_init, key_loop = jax.random.split(key)
        hyper = sc.Hyperparams(beta=1.0, real_fraction=real_fraction, reward_scale=4.0)
        _, history = sc.run(key_loop, built.model.init(key_init, built.real), built.real, hyper,
                            model=built.model, reward_fn=built.reward_fn, config=built.config,
                            metrics_fn=built.metrics_fn)
        return history

    _, key_seeds = jax.random.split(jax.random.key(cfg["sweep"]["seed"]))
    rows = {"study": [], "sweep": []}
    for _ in range(max(args.repeats, 2)):
        with tempfile.TemporaryDirectory() as folder:
            t0 = time.perf_counter()
            study.run_study(cfg, folder, quiet=True)
            wall = time.perf_counter() - t0
            meta = sc.SweepResult.load(folder, name="results").metadata
        rows["study"].append((wall, meta["run_seconds"], meta["compile_seconds"]))
        t0 = time.perf_counter()
        result = sc.sweep(key_seeds, fn, num_seeds=cfg["sweep"]["seeds"], grid=grid)
        wall = time.perf_counter() - t0
        rows["sweep"].append((wall, result.metadata["run_seconds"],
                              result.metadata["compile_seconds"]))
    summary = []
    for name, runs in rows.items():
        steady = runs[1:]
        summary.append({"path": name, "wall_s": statistics.median(r[0] for r in steady),
                        "run_s": statistics.median(r[1] for r in steady),
                        "compile_s": runs[0][2], "first_wall_s": runs[0][0]})
    study_row, sweep_row = summary
    configs = cfg["sweep"]["seeds"] * 4
    gens = configs * args.generations
    for row in summary:
        row["ms_per_config_generation"] = 1e3 * row["run_s"] / gens
    print(f"{configs} configurations x {args.generations} generations, "
          f"{len(jax.devices())} device(s)")
    print(_common.table(summary, [("path", ""), ("first_wall_s", ".2f"), ("compile_s", ".2f"),
                                  ("run_s", ".3f"), ("wall_s", ".2f"),
                                  ("ms_per_config_generation", ".3f")]))
    ratio = sweep_row["run_s"] / study_row["run_s"]
    wall_ratio = sweep_row["wall_s"] / study_row["wall_s"]
    print(f"throughput_ratio (sweep run_s / study run_s) = {ratio:.3f}; wall_ratio = "
          f"{wall_ratio:.3f}")
    _common.write_json(args.json, {"environment": _common.environment(), "rows": summary,
                                   "throughput_ratio": ratio, "wall_ratio": wall_ratio,
                                   "generations": args.generations,
                                   "num_samples": args.num_samples, "configs": configs})


if __name__ == "__main__":
    main()

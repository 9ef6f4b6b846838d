"""The ``selfconsume`` command: run studies from TOML files, resume them, list and plot.

    selfconsume demo [--out DIR] [--quick] [--set section.key=value ...] [--devices N]
                     [--quiet] [--force] [--checked] [PROCESSES]
    selfconsume run CONFIG.toml|NAME [the same options]
    selfconsume resume RUN_DIR [--quiet] [--checked] [PROCESSES]
    selfconsume list
    selfconsume plot RUN_DIR [--metrics a,b]
    selfconsume --version

Studies run on :func:`selfconsume.sweep`, sharded over ``--devices N`` devices (default: every
device; on a CPU, one host device per core); ``resume`` uses the count the run started with.

PROCESSES: one study over several processes or machines (``jax.distributed``). Start the same
command in every process with ``--coordinator HOST:PORT --num-processes N --process-id I`` (the
address of process 0, reachable by all), or with ``--distributed`` alone under a launcher that
JAX detects (SLURM, Open MPI, Kubernetes). On CPUs the processes exchange results through the
gloo collectives. The study is sharded over every process's devices (``--devices`` counts them
all); process 0 writes the run folder and prints the report; every process exits with the same
status.

Exit status: 0 on success, 1 when a study's claim does not hold (results are saved), 2 for an
invalid configuration or command line (one line on stderr, no traceback), 3 when a run turns
non-finite (one line naming the generation and grid point; the generations before it are saved).
``--checked`` compiles the run with ``jax.experimental.checkify`` float and index checks, so the
first operation that produces a NaN or inf is reported with its source location.
"""

from __future__ import annotations

import argparse
import os
import sys

from selfconsume import __version__


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="selfconsume", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"selfconsume {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def run_options(q):
        q.add_argument("--quick", action="store_true",
                       help="the study at a reduced size (its [quick_overrides])")
        q.add_argument("--out", help="run folder (default runs/<name>-<timestamp>)")
        q.add_argument("--set", dest="overrides", action="append", default=[],
                       metavar="SECTION.KEY=VALUE", help="override a configuration value")
        q.add_argument("--quiet", action="store_true", help="no progress bar")
        q.add_argument("--force", action="store_true", help="overwrite an existing run folder")
        q.add_argument("--checked", action="store_true",
                       help="report the first NaN/inf-producing operation (slower)")
        q.add_argument("--devices", type=int, metavar="N",
                       help="devices to shard over (default: all; one per core on a CPU)")

    def process_options(q):
        g = q.add_argument_group("several processes (jax.distributed)")
        g.add_argument("--coordinator", metavar="HOST:PORT",
                       help="address of process 0, the same in every process")
        g.add_argument("--num-processes", type=int, metavar="N", help="number of processes")
        g.add_argument("--process-id", type=int, metavar="I", help="this process, 0..N-1")
        g.add_argument("--distributed", action="store_true",
                       help="initialise from the launcher's environment (SLURM, Open MPI, "
                            "Kubernetes); the three options above override what it detects")

    demo = sub.add_parser("demo", help="run the built-in demo study (no file, no download)")
    run_options(demo)
    process_options(demo)
    run = sub.add_parser("run", help="run a study from a TOML configuration")
    run.add_argument("config", help="a TOML file, or the name of a shipped study")
    run_options(run)
    process_options(run)
    res = sub.add_parser("resume", help="continue an interrupted run from its last checkpoint")
    res.add_argument("run_dir")
    res.add_argument("--quiet", action="store_true")
    res.add_argument("--checked", action="store_true",
                     help="report the first NaN/inf-producing operation (slower)")
    process_options(res)
    sub.add_parser("list", help="datasets, models, rewards and studies, with their options")
    plot = sub.add_parser("plot", help="redraw the figures of a saved run")
    plot.add_argument("run_dir")
    plot.add_argument("--metrics", help="comma-separated metrics to draw (default: the study's)")
    return p


def _use_devices(count: int | None) -> None:
    """Exposes ``count`` (default: one per core) host devices before JAX starts its backends;
    XLA_FLAGS set by the user win. Too late once a backend runs (in-process reuse): then the
    devices that exist are used."""
    if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
        return
    import jax

    try:
        jax.config.update("jax_num_cpu_devices", max(count or 0, os.cpu_count() or 1))
    except RuntimeError:  # backends already initialised
        pass


def _join_processes(args) -> str | None:
    """Joins ``jax.distributed`` when asked (before any JAX backend starts); returns an error
    message for a bad combination of options, else None."""
    given = {"--coordinator": args.coordinator, "--num-processes": args.num_processes,
             "--process-id": args.process_id}
    if not args.distributed and all(v is None for v in given.values()):
        return None
    if not args.distributed:
        missing = [name for name, value in given.items() if value is None]
        if missing:
            return (f"`{missing[0]}` is needed with --coordinator, --num-processes and "
                    f"--process-id (give all three, or --distributed to detect them)")
    n = args.num_processes
    if n is not None and n < 1:
        return f"`--num-processes` must be an integer >= 1; got {n}"
    if args.process_id is not None and (args.process_id < 0 or (n is not None and
                                                                args.process_id >= n)):
        allowed = ">= 0" if n is None else f"in 0..{n - 1} (--num-processes {n})"
        return f"`--process-id` must be {allowed}; got {args.process_id}"
    if args.coordinator is not None:
        host, _, port = args.coordinator.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            return (f"`--coordinator` must be HOST:PORT (a port in 1..65535); got "
                    f"{args.coordinator!r}")
    import jax

    if getattr(jax.distributed, "is_initialized", lambda: False)():
        return None  # joined by an earlier command in this Python process
    if "JAX_CPU_COLLECTIVES_IMPLEMENTATION" not in os.environ:  # CPU devices talk through gloo
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(coordinator_address=args.coordinator, num_processes=n,
                                   process_id=args.process_id)
    except (RuntimeError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return f"could not join the processes (jax.distributed.initialize): {first}"
    return None


def _fail(message: str, status: int = 2):
    print(f"selfconsume: error: {message}", file=sys.stderr)
    return status


def _report(summary: dict, run_dir: str, metrics) -> int:
    """Prints the summary (process 0 only; ``metrics()`` gives the metrics to show); returns
    the exit status, the same in every process."""
    from selfconsume._processes import is_writer

    failed = [c for c in summary["claims"] if not c["holds"]]
    if not is_writer():
        return 1 if failed else 0
    rows = summary["grid"]
    metrics = metrics()
    metrics = [m for m in metrics if rows and m in rows[0]["final"]]
    print(f"\nfinal generation, mean [95% interval] over seeds ({run_dir}):")
    for row in rows:
        point = ", ".join(f"{k}={v:g}" for k, v in row["point"].items()) or "all"
        cells = "  ".join(f"{m}={row['final'][m]['mean']:.3f} [{row['final'][m]['low']:.3f}, "
                          f"{row['final'][m]['high']:.3f}]" for m in metrics)
        print(f"  {point:<22} {cells}")
    for c in summary["claims"]:
        print(f"  claim {'holds' if c['holds'] else 'FAILS'}: {c['description'] or c['metric']}")
    figures = summary.get("figures", [])
    if figures:
        print(f"figures: {os.path.dirname(figures[0])}")
    return 1 if failed else 0


def _list() -> None:
    import inspect

    from selfconsume import curators, data, models, preferences, reward_models, rewards
    from selfconsume.study import config

    def options(factory):
        params = inspect.signature(factory).parameters.values()
        return ", ".join(p.name if p.default is inspect.Parameter.empty else
                         f"{p.name}={p.default!r}" for p in params
                         if p.kind is not inspect.Parameter.VAR_KEYWORD)

    print("datasets (metrics each records besides the loop's):")
    for name in sorted(data.DATASETS):
        extra = "mode_shares, min_mode_share, rewarded_mode_share (with reward.mode)"
        if name == "two_moons":
            extra += ", upper_moon_share"
        print(f"  {name}: {extra}")
    for name in sorted(data.IMAGE_DATASETS):
        print(f"  {name} (images): class_shares, class_entropy, rewarded_class_share (with a "
              "classifier reward)")
    print("models (model.options):")
    for name in sorted(models.MODELS):
        print(f"  {name}({options(models.MODELS[name])})")
    print("rewards (reward.options):")
    for name in sorted(rewards.REWARDS):
        print(f"  {name}({options(rewards.REWARDS[name])})")
    print("curators (curator.options; nested curators as { name = ..., ... }):")
    for name in sorted(curators.CURATORS):
        print(f"  {name}({options(curators.CURATORS[name])})")
    print("reward models (reward_model.options; [feedback]: "
          f"{options(reward_models.feedback)}):")
    for name in sorted(reward_models.REWARD_MODELS):
        print(f"  {name}({options(reward_models.REWARD_MODELS[name])})")
    print("preferences (preference.options; features: states, a table, coordinates, "
          "{ name = \"radial\", ... }):")
    for name in sorted(preferences.PREFERENCES):
        print(f"  {name}({options(preferences.PREFERENCES[name])})")
    print("ecosystem ([ecosystem]): " + ", ".join(config.SCHEMA["ecosystem"]) + " (a model axis "
          "in the results)")
    print("loop metrics: reward_mean, reward_std, reward_q05..q95, reward_nan_fraction, "
          "kept_reward_mean, is_finite, fit_is_finite; categorical: expected_reward, entropy, "
          "kl_data, tv_data; metrics.exact: exact_reward; [reward_model]: true_reward_mean, "
          "proxy_reward_mean, reward_gap, reward_model_accuracy; [preference]: "
          "preference_reward_mean, reward_params")
    print("grid axes (sweep.grid): " + ", ".join(config.GRID_AXES) + ", curator.<option> (with "
          "a [curator]: curator.beta, curator.base.beta, curator.weights.0, ...), "
          "reward_model.<option>, feedback.eps, feedback.judge.<option> (with a "
          "[reward_model]), preference.eta (with a [preference]), ecosystem.coupling, "
          "ecosystem.interaction.<i>.<j>, ecosystem.real_fractions.<i>, ecosystem.betas.<i> "
          "(with an [ecosystem])")
    print("studies: " + ", ".join(config.shipped_studies()))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command in ("demo", "run", "resume"):
        _use_devices(getattr(args, "devices", None))
        error = _join_processes(args)
        if error is not None:
            return _fail(error)
    from selfconsume import study  # heavy imports after argument parsing
    from selfconsume._processes import from_writer

    try:
        if args.command == "list":
            _list()
            return 0
        if args.command == "plot":
            metrics = None if args.metrics is None else [
                m.strip() for m in args.metrics.split(",") if m.strip()]
            for path in study.replot(args.run_dir, metrics=metrics):
                print(path)
            return 0
        if args.command == "resume":
            summary = study.resume(args.run_dir, quiet=args.quiet, checked=args.checked)
            return _report(summary, args.run_dir, lambda: study.load_config(
                os.path.join(args.run_dir, "config.toml"))["plots"]["metrics"])
        overrides = list(args.overrides)
        if args.devices is not None:
            if args.devices < 1:
                return _fail(f"`--devices` must be an integer >= 1; got {args.devices}")
            overrides.append(f"sweep.devices={args.devices}")
        if args.quick:
            overrides.append("quick=true")
        if args.command == "demo":
            cfg = study.load_config(text=study.DEMO, overrides=overrides)
        else:  # process 0 reads the file; the others need no copy
            cfg = from_writer(lambda: study.load_config(study.find_study(args.config),
                                                        overrides=overrides))
        run_dir = study.new_run_dir(cfg, args.out, force=args.force)
        summary = study.run_study(cfg, run_dir, quiet=args.quiet, checked=args.checked)
        return _report(summary, run_dir, lambda: cfg["plots"]["metrics"])
    except (study.ConfigError, FileExistsError, FileNotFoundError) as err:
        return _fail(str(err))
    except study.NumericalError as err:
        return _fail(str(err), status=3)


if __name__ == "__main__":
    sys.exit(main())

"""The ``selfconsume`` command: run studies from TOML files, resume them, list and plot.

    selfconsume demo [--out DIR] [--quick] [--set section.key=value ...] [--quiet] [--force]
    selfconsume run CONFIG.toml [--out DIR] [--set section.key=value ...] [--quiet] [--force]
                                [--checked]
    selfconsume resume RUN_DIR [--quiet] [--checked]
    selfconsume list
    selfconsume plot RUN_DIR

Exit status: 0 on success, 1 when a study's claim does not hold (results are saved), 2 for an
invalid configuration or command line (one line on stderr, no traceback), 3 when a run turns
non-finite (one line naming the generation and grid point; the generations before it are saved).
``--checked`` compiles the run with ``jax.experimental.checkify`` float and index checks, so the
first operation that produces a NaN or inf is reported with its source location.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys

# Studies shipped with the repository (found from a checkout, or from the working directory).
EXPERIMENTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "experiments")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="selfconsume", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    def run_options(q):
        q.add_argument("--out", help="run folder (default runs/<name>-<timestamp>)")
        q.add_argument("--set", dest="overrides", action="append", default=[],
                       metavar="SECTION.KEY=VALUE", help="override a configuration value")
        q.add_argument("--quiet", action="store_true", help="no progress bar")
        q.add_argument("--force", action="store_true", help="overwrite an existing run folder")
        q.add_argument("--checked", action="store_true",
                       help="report the first NaN/inf-producing operation (slower)")

    demo = sub.add_parser("demo", help="run the built-in demo study (no file, no download)")
    demo.add_argument("--quick", action="store_true", help="the demo at a reduced size")
    run_options(demo)
    run = sub.add_parser("run", help="run a study from a TOML configuration")
    run.add_argument("config")
    run_options(run)
    res = sub.add_parser("resume", help="continue an interrupted run from its last checkpoint")
    res.add_argument("run_dir")
    res.add_argument("--quiet", action="store_true")
    res.add_argument("--checked", action="store_true",
                     help="report the first NaN/inf-producing operation (slower)")
    sub.add_parser("list", help="registered datasets, models, rewards and studies")
    plot = sub.add_parser("plot", help="redraw the figures of a saved run")
    plot.add_argument("run_dir")
    return p


def _fail(message: str, status: int = 2):
    print(f"selfconsume: error: {message}", file=sys.stderr)
    return status


def _report(summary: dict, run_dir: str) -> int:
    rows = summary["grid"]
    metrics = [m for m in ("reward_mean", "expected_reward", "rewarded_mode_share")
               if rows and m in rows[0]["final"]]
    print(f"\nfinal generation, mean [95% interval] over seeds ({run_dir}):")
    for row in rows:
        point = ", ".join(f"{k}={v:g}" for k, v in row["point"].items()) or "all"
        cells = "  ".join(f"{m}={row['final'][m]['mean']:.3f} [{row['final'][m]['low']:.3f}, "
                          f"{row['final'][m]['high']:.3f}]" for m in metrics)
        print(f"  {point:<22} {cells}")
    failed = [c for c in summary["claims"] if not c["holds"]]
    for c in summary["claims"]:
        print(f"  claim {'holds' if c['holds'] else 'FAILS'}: {c['description'] or c['metric']}")
    figures = summary.get("figures", [])
    if figures:
        print(f"figures: {os.path.dirname(figures[0])}")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from selfconsume import study  # heavy imports after argument parsing

    try:
        if args.command == "list":
            from selfconsume import data, models, rewards
            print("datasets:", ", ".join(sorted(data.DATASETS)))
            print("models:  ", ", ".join(sorted(models.MODELS)))
            print("rewards: ", ", ".join(sorted(rewards.REWARDS)))
            folders = {EXPERIMENTS, os.path.join(os.getcwd(), "experiments")}
            names = sorted({os.path.splitext(os.path.basename(f))[0] for folder in folders
                            for f in glob.glob(os.path.join(folder, "*.toml"))})
            print("studies: ", ", ".join(["demo (built in)"] + names))
            return 0
        if args.command == "plot":
            for path in study.replot(args.run_dir):
                print(path)
            return 0
        if args.command == "resume":
            summary = study.resume(args.run_dir, quiet=args.quiet, checked=args.checked)
            return _report(summary, args.run_dir)
        overrides = list(args.overrides)
        if args.command == "demo":
            if args.quick:
                overrides.append("quick=true")
            cfg = study.load_config(text=study.DEMO, overrides=overrides)
        else:
            cfg = study.load_config(args.config, overrides=overrides)
        run_dir = study.new_run_dir(cfg, args.out, force=args.force)
        summary = study.run_study(cfg, run_dir, quiet=args.quiet, checked=args.checked)
        return _report(summary, run_dir)
    except (study.ConfigError, FileExistsError) as err:
        return _fail(str(err))
    except FileNotFoundError as err:
        return _fail(str(err))
    except study.NumericalError as err:
        return _fail(str(err), status=3)


if __name__ == "__main__":
    sys.exit(main())

"""Running a study on the package's one executor, :func:`selfconsume.sweep`.

:func:`run_study` builds the study (:mod:`selfconsume.study.build`) and sweeps its
:class:`selfconsume.Generations` program over ``sweep.seeds`` seeds and the grid, with the key
``split(key(sweep.seed))[1]`` (the first half drew the real data), sharded over ``sweep.devices``
devices (0: every device; on a CPU the command line exposes one host device per core), a chunk of
``loop.checkpoint_every`` generations at a time with a checkpoint in the run folder after each.
:func:`resume` continues from that checkpoint with identical results. A refit that turns
non-finite stops the run at that generation (:class:`NumericalError`) after saving the
generations before it.

Under ``jax.distributed`` every process calls the same function with the same arguments: the
devices are every process's, process 0 alone reads and writes the run folder, and every process
returns the same summary (:mod:`selfconsume._processes`).
"""

from __future__ import annotations

import datetime
import json
import os

import jax
import numpy as np

from selfconsume._processes import from_writer, is_writer
from selfconsume.execution import CHECKPOINT_FILE, sweep
from selfconsume.files import atomic_write, remove_stale
from selfconsume.results import SweepResult
from selfconsume.study.build import Study, build
from selfconsume.study.config import ConfigError, NumericalError, load_config, to_toml
from selfconsume.study.outputs import RESULTS, SUMMARY, figures, write_outputs

__all__ = ["run_study", "resume", "replot", "new_run_dir", "execute", "select_devices",
           "chunk_generations"]


def new_run_dir(cfg: dict, out: str | None, *, force: bool) -> str:
    """``out`` or ``runs/<name>-<timestamp>``; refuses an existing non-empty folder without
    ``force``. (Process 0 decides and creates it; every process returns its name.)"""

    def make():
        folder = out
        if folder is None:
            stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
            folder = os.path.join("runs", f"{cfg['name']}-{stamp}")
        if os.path.isdir(folder) and os.listdir(folder) and not force:
            raise FileExistsError(f"run folder {folder!r} exists and is not empty; pass --force "
                                  "to overwrite it")
        os.makedirs(folder, exist_ok=True)
        return folder

    return from_writer(make)


def select_devices(count: int) -> list:
    """The first ``count`` devices (0: all of them); raises :class:`ConfigError` if there are
    fewer."""
    devices = jax.devices()
    if count == 0:
        return devices
    if count > len(devices):
        raise ConfigError(f"`sweep.devices` (--devices) must be at most the {len(devices)} "
                          f"available {devices[0].platform} devices; got {count}")
    return devices[:count]


def chunk_generations(cfg: dict) -> int:
    """Generations per chunk: the largest divisor of ``T`` not above ``loop.checkpoint_every``
    (0: ``T // 4``), so every chunk has one compiled shape."""
    t = cfg["loop"]["num_generations"]
    want = min(cfg["loop"]["checkpoint_every"] or max(1, t // 4), t)
    return max(c for c in range(1, want + 1) if t % c == 0)


def execute(study: Study, run_dir: str | None, *, quiet: bool = True,
            checked: bool = False) -> SweepResult:
    """Sweeps a built study (checkpointed in ``run_dir`` unless it is ``None``).

    Returns:
        The results, with the exact curve (``exact_reward``) added when configured.

    Raises:
        NumericalError: a refit (or, ``checked``, any operation) turned non-finite; the
            generations before it are saved in ``run_dir`` first.
    """
    cfg = study.cfg
    sw = cfg["sweep"]
    _, key_seeds = jax.random.split(jax.random.key(sw["seed"]))
    bar = _Progress(cfg["name"], quiet or not is_writer())
    try:
        result = sweep(key_seeds, study.program, num_seeds=sw["seeds"], grid=study.grid,
                       devices=select_devices(sw["devices"]),
                       chunk_generations=chunk_generations(cfg), checkpoint=run_dir,
                       stop_unless="fit_is_finite", checked=checked, progress=bar)
    finally:
        bar.close()
    values = dict(result.values)
    num_gens = next(iter(values.values())).shape[len(result.axes)]
    if study.exact is not None:
        exact = np.broadcast_to(study.exact.reshape(result.shape[1:] + (-1,)),
                                result.shape + study.exact.shape[-1:])
        values["exact_reward"] = np.ascontiguousarray(exact[..., :num_gens])
    metadata = dict(result.metadata, study=cfg["name"], checkpoint_every=chunk_generations(cfg),
                    **study.notes)
    axes, coords = result.axes, result.coords
    models = cfg["ecosystem"]["num_models"]
    if models:  # an ecosystem's records are (..., T + 1, M, ...): the model becomes an axis
        values = {k: np.moveaxis(v, len(axes) + 1, len(axes)) for k, v in values.items()}
        axes, coords = axes + ("model",), dict(coords, model=np.arange(models))
    result = SweepResult(values=values, axes=axes, coords=coords, metadata=metadata)
    if not metadata["complete"]:
        _stop(result, run_dir)
    return result


def _stop(result: SweepResult, run_dir: str | None):
    meta = result.metadata
    generation = meta["stopped_at_generation"]
    if next(iter(result.values.values())).shape[len(result.axes)] > 0 and run_dir is not None:
        from_writer(lambda: result.save(run_dir, name=RESULTS))
        saved = (f"generations 0..{generation} are saved in "
                 f"{os.path.join(run_dir, RESULTS + '.npz')}")
    else:
        saved = "nothing was computed before it"
    if meta.get("stop_config") is not None:  # fit_is_finite was False
        raise NumericalError(f"generation {generation}: the refit is not finite for "
                             f"{_describe(result, meta['stop_config'])} ({meta['stop_reason']})"
                             f"; {saved}")
    raise NumericalError(f"{meta['stop_reason']}; {saved}")  # checked mode: names the operation


def _describe(result: SweepResult, index: int) -> str:
    """"seed s, real_fraction=0.1, ..." for a flat configuration index."""
    axes = [a for a in result.axes if a != "model"]  # the executor's configurations
    position = np.unravel_index(index, result.shape[:len(axes)])
    parts = [f"seed {position[0]}"]
    parts += [f"{a}={result.coords[a][i].item():g}" for a, i in zip(result.axes[1:],
                                                                     position[1:])]
    return ", ".join(parts)


def run_study(cfg: dict, run_dir: str, *, quiet: bool = False, checked: bool = False) -> dict:
    """Runs a validated study into ``run_dir`` (which must exist) and writes every output.

    Args:
        cfg: a validated configuration (:func:`selfconsume.study.load_config`).
        run_dir: the run folder.
        quiet: no progress bar.
        checked: compile with ``jax.experimental.checkify`` float and index checks, so that the
            first operation producing a NaN or inf (or indexing out of bounds) stops the run with
            its location (slower; for debugging).

    Returns:
        The summary (also ``run_dir/summary.json``).

    Raises:
        ConfigError: the configuration does not fit the data or the devices.
        NumericalError: a refit (or, in checked mode, any operation) turned non-finite; the
            results of the generations before it are saved.
    """
    cfg = dict(cfg, sweep=dict(cfg["sweep"], devices=len(select_devices(cfg["sweep"]["devices"]))))
    study = build(cfg)  # before writing anything: configuration errors leave no files

    def start():
        atomic_write(os.path.join(run_dir, "config.toml"), lambda f: f.write(to_toml(cfg)),
                     binary=False)
        for stale in (CHECKPOINT_FILE, SUMMARY):
            if os.path.exists(os.path.join(run_dir, stale)):
                os.remove(os.path.join(run_dir, stale))

    from_writer(start)
    return _finish(study, run_dir, quiet=quiet, checked=checked)


def _finish(study: Study, run_dir: str, *, quiet: bool, checked: bool) -> dict:
    result = execute(study, run_dir, quiet=quiet, checked=checked)

    def write():
        summary = write_outputs(result, study.cfg, run_dir)
        os.remove(os.path.join(run_dir, CHECKPOINT_FILE))
        return summary

    return from_writer(write)


def resume(run_dir: str, *, quiet: bool = False, checked: bool = False) -> dict:
    """Continues an interrupted run from its last checkpoint (or from the start if none), on the
    same number of devices; a finished run returns its summary."""

    def look():  # process 0 reads the folder; every process gets (config, finished summary)
        cfg = _run_config(run_dir)
        for folder in (run_dir, os.path.join(run_dir, "figures")):  # left by a killed write
            remove_stale(folder)
        if os.path.exists(os.path.join(run_dir, SUMMARY)) and not os.path.exists(
                os.path.join(run_dir, CHECKPOINT_FILE)):
            with open(os.path.join(run_dir, SUMMARY)) as f:
                return cfg, json.load(f)  # already complete
        return cfg, None

    cfg, summary = from_writer(look)
    if summary is not None:
        return summary
    return _finish(build(cfg), run_dir, quiet=quiet, checked=checked)


def _run_config(run_dir: str) -> dict:
    """The configuration of a run folder; raises :class:`ConfigError` if it is not one."""
    path = os.path.join(run_dir, "config.toml")
    if not os.path.exists(path):
        raise ConfigError(f"{run_dir!r} is not a run folder: {path!r} is missing")
    return load_config(path)


def replot(run_dir: str, *, metrics: list[str] | None = None) -> list[str]:
    """Redraws the figures of a finished run from its saved files alone (no data, no training).

    Args:
        run_dir: the run folder.
        metrics: the per-generation metrics to draw (default: the study's ``plots.metrics``).
    """
    cfg = _run_config(run_dir)
    if not os.path.exists(os.path.join(run_dir, RESULTS + ".json")):
        raise ConfigError(f"{run_dir!r} has no results yet ({RESULTS}.json is missing); "
                          "finish it with `selfconsume resume`")
    result = SweepResult.load(run_dir, name=RESULTS)
    return figures(result, cfg, run_dir, metrics=metrics)


class _Progress:
    """A tqdm bar fed by the executor's ``progress(done, total)``."""

    def __init__(self, name: str, quiet: bool):
        self.name, self.quiet, self.bar, self.done = name, quiet, None, 0

    def __call__(self, done: int, total: int) -> None:
        if self.quiet:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=done, desc=self.name, unit="gen")
        else:
            self.bar.update(done - self.done)
        self.done = done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

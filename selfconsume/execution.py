r"""Execution: seeds x grids as one compiled program sharded over devices, with checkpoints.

This module is the one executor of the package: :func:`sweep` (the API) and the studies of the
command line (:mod:`selfconsume.study`) both run here, so the key schedule, the flattening of the
grid, the sharding and the result metadata are defined once.

**Configurations.** A sweep evaluates a program on the product of ``num_seeds`` seeds and a grid
of named 1-D axes :math:`g_1, \dots, g_A` of sizes :math:`n_1, \dots, n_A`:

.. math::
    \text{values}[s, i_1, \dots, i_A] = \mathrm{fn}\big(k_s,\; g_1 = g_1[i_1], \dots,
    g_A = g_A[i_A]\big), \qquad (k_0, \dots, k_{S-1}) = \texttt{jax.random.split(key, S)}.

Seed :math:`s` uses the same key :math:`k_s` at every grid point (*common random numbers*). The
:math:`S \prod_a n_a` configurations are flattened in C order (seed outermost, then the grid axes
in insertion order) into one *configuration axis*; keys and grid values become arrays along it
(array leaves, never constants baked into the program, so the program is traced once whatever the
grid) and ``jax.vmap`` runs over it inside ``jax.jit``. The axis is laid out over a 1-D
:class:`jax.sharding.Mesh` named ``"config"`` (``PartitionSpec("config")``), padded to a multiple
of the device count by repeating the last configuration (the padding is dropped). With
``chunk_size`` the axis is cut into equal calls of one compiled executable.

**Generations.** A :class:`Generations` program (``init``, ``chunk``, ``final``) is run a chunk of
generations at a time, all configurations together. Its key schedule, for configuration key
:math:`k` and :math:`T` generations (:func:`generation_keys`):

.. math::
    (k_{\rm init}, k_{\rm loop}) = \texttt{split}(k), \qquad
    (\kappa_0, \dots, \kappa_T) = \texttt{split}(k_{\rm loop}, T + 1),

``init`` receives :math:`k_{\rm init}`, generation :math:`t < T` uses :math:`\kappa_t` and the
record of the final state uses :math:`\kappa_T`, exactly as :func:`selfconsume.run` called with
:math:`k_{\rm loop}`: so ``fn(key) = run(split(key)[1], init(split(key)[0]), ...)`` swept as a
plain function gives the same values. After each chunk the carry and the records so far are
written atomically to ``<checkpoint>/checkpoint.npz``; a later call with the same arguments and
folder continues from it with bit-identical results.

Compiled programs are reused: a second :func:`sweep` call with the same function (the same
Python object), grid names, shapes and devices traces and compiles nothing.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import keyword
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from selfconsume import _checks
from selfconsume._processes import from_writer, is_writer
from selfconsume.files import atomic_write
from selfconsume.results import SweepResult
from selfconsume.types import PRNGKey, PyTree

__all__ = ["sweep", "Generations", "generation_keys", "CHECKPOINT_FILE"]

CHECKPOINT_FILE = "checkpoint.npz"
_MESH_AXIS = "config"


@dataclasses.dataclass(frozen=True)
class Generations:
    """A program run generation by generation (checkpointed and resumable by :func:`sweep`).

    Every function receives the grid point as keyword arguments (traced 0-d arrays) and works on
    one configuration; :func:`sweep` vmaps it over the configuration axis. The instance is
    hashable (by its functions' identity), so a second sweep with the same program reuses the
    compiled chunks.

    Attributes:
        init: ``init(key, **point) -> carry``, the state before generation 0.
        chunk: ``chunk(keys, carry, **point) -> (carry, records)`` runs ``len(keys)`` generations
            (one key each, e.g. with ``lax.scan``); every leaf of ``records`` has leading axis
            ``len(keys)``, entry ``i`` describing the carry *before* the ``i``-th of them.
        final: ``final(key, carry, **point) -> record``, the record of the final carry (one entry
            of ``records`` without the leading axis).
        num_generations: ``T >= 1``; the records have ``T + 1`` entries, ``0..T``.

    Example (the loop of :func:`selfconsume.run`, chunked)::

        def init(key, beta):
            return sc.retrain.init_state(model.init(key, real), model=model, config=config)

        def chunk(keys, state, beta):
            return sc.retrain.run_chunk(keys, state, sc.Hyperparams(beta=beta), real,
                                        model=model, reward_fn=reward, config=config)

        def final(key, state, beta):
            return sc.retrain.final_record(key, state, sc.Hyperparams(beta=beta), real,
                                           model=model, reward_fn=reward, config=config)

        program = sc.Generations(init, chunk, final, num_generations=config.num_generations)
        result = sc.sweep(key, program, num_seeds=8, grid={"beta": [0.5, 1.0]},
                          chunk_generations=5, checkpoint="runs/beta")
    """

    init: Callable[..., PyTree]
    chunk: Callable[..., tuple[PyTree, PyTree]]
    final: Callable[..., PyTree]
    num_generations: int

    def __post_init__(self):
        for name in ("init", "chunk", "final"):
            if not callable(getattr(self, name)):
                raise ValueError(f"`Generations.{name}` must be callable; got "
                                 f"{getattr(self, name)!r}.")
        _checks.static_int("num_generations", self.num_generations, minimum=1)


def generation_keys(key: PRNGKey, num_generations: int) -> tuple[PRNGKey, jax.Array]:
    """The key schedule of a configuration (module docstring).

    Args:
        key: the configuration's key (seed ``s``: ``jax.random.split(sweep_key, S)[s]``).
        num_generations: ``T``.

    Returns:
        ``(key_init, keys)``: the key of ``init`` and the ``(T + 1,)`` keys of the generations
        (``keys[T]`` draws the final record).
    """
    key_init, key_loop = jax.random.split(key)
    return key_init, jax.random.split(key_loop, num_generations + 1)


# --------------------------------------------------------------------------------------------
# The sweep
# --------------------------------------------------------------------------------------------


def sweep(
    key: PRNGKey,
    fn: Callable[..., PyTree] | Generations,
    *,
    num_seeds: int,
    grid: Mapping[str, Any] | None = None,
    devices: Sequence[jax.Device] | None = None,
    chunk_size: int | None = None,
    chunk_generations: int | None = None,
    checkpoint: str | os.PathLike | None = None,
    stop_unless: str | None = None,
    checked: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> SweepResult:
    """Evaluates ``fn`` on every seed x grid point in one compiled program sharded over devices.

    Seed ``s`` uses ``jax.random.split(key, num_seeds)[s]`` at every grid point (common random
    numbers). ``fn`` is traced once: the grid values reach it as traced 0-d arrays, so it may not
    use them as shapes or in Python control flow (close over shape-setting integers with
    ``functools.partial``; an effective K is swept through ``Hyperparams.num_candidates``).
    Integer axes are passed as int32 (int64 with x64), float axes as float32 (float64 with x64).

    Example::

        def fn(key, beta, real_fraction):
            hyper = sc.Hyperparams(beta=beta, real_fraction=real_fraction)
            final, history = sc.run(key, params0, data, hyper, model=model,
                                    reward_fn=reward, config=config)
            return {"reward": history["reward_mean"], "final_kl": history["kl_data"][-1]}

        result = sc.sweep(jax.random.key(0), fn, num_seeds=16,
                          grid={"beta": [0.5, 1.0, 2.0], "real_fraction": [0.0, 0.1, 0.5]})
        result.values["reward"].shape   # (16, 3, 3, num_generations + 1)

    With a :class:`Generations` program, the generations run ``chunk_generations`` at a time;
    with ``checkpoint`` the state after each chunk is saved, and a later call with the same
    arguments continues from it (``checkpoint.npz`` stays after the last chunk, so a repeated
    call returns at once; delete it to start over).

    **Several processes.** Call ``jax.distributed.initialize(...)`` in every process first, then
    make the same ``sweep`` call in every process. The default ``devices`` is ``jax.devices()``
    (every process's devices); each process computes the configurations of its own devices and
    the outputs are all-gathered, so every process returns the full result. Only process 0
    reads and writes the checkpoint (the others receive what it read), so ``checkpoint`` need
    not be on a shared file system. With the same global device count the values are those of
    one process, bit for bit.

    Args:
        key: a single PRNG key (``jax.random.key``; a legacy ``uint32[2]`` key also works and
            ``fn`` then receives legacy keys).
        fn: ``fn(key, **point) -> pytree`` of arrays, or a :class:`Generations` program.
        num_seeds: number of seeds ``S >= 1``.
        grid: axis name -> 1-D non-empty sequence of numbers (bool, int or float), in the order
            the result's axes should have. Names must be Python identifiers other than
            ``"seed"`` that ``fn`` accepts as keyword arguments. ``None`` or ``{}``: seeds only.
        devices: devices to shard the configuration axis over (default ``jax.devices()``).
        chunk_size: optional maximum number of configurations per device call, rounded up to a
            multiple of the device count; ``None`` runs all configurations in one call.
        chunk_generations: with a :class:`Generations` program, generations per compiled chunk
            (default: all; a last, shorter chunk compiles once more).
        checkpoint: with a :class:`Generations` program, a folder for ``checkpoint.npz``.
        stop_unless: with a :class:`Generations` program, the name of a boolean record entry
            (e.g. ``"fit_is_finite"``): at the first generation where it is False for any
            configuration the sweep stops and returns generations ``0..t`` with
            ``metadata["complete"] = False`` (the checkpoint keeps the last good chunk).
        checked: with a :class:`Generations` program, compile the chunks with
            ``jax.experimental.checkify`` float and index checks: the first operation that
            produces a NaN or inf stops the sweep (as ``stop_unless``) with its source location in
            ``metadata["stop_reason"]``. Slower; for debugging.
        progress: optional ``progress(done, total)`` called before the first chunk (``done`` > 0
            after a checkpoint) and after each chunk of generations.

    Returns:
        :class:`~selfconsume.results.SweepResult` whose ``values`` leaves have shape
        ``(S, *grid sizes, ...)`` (``(S, *grid sizes, T + 1, ...)`` for a :class:`Generations`
        program; a PRNG key output is returned as its ``jax.random.key_data``). Its metadata
        (one schema for every producer): ``devices`` (the count), ``device_kind``,
        ``platform``, ``process_count``, ``num_seeds``, ``grid``, ``grid_shape``,
        ``num_configs``, ``num_padded_configs``, ``chunk_size``, ``configs_per_call``,
        ``num_chunks``, ``num_generations`` and ``chunk_generations`` (``None`` for a plain
        function), ``complete``, ``key_impl``, ``output_sharding``, ``jax_version``,
        ``compile_seconds``, ``run_seconds``, ``wall_seconds``; when stopped also
        ``stopped_at_generation``, ``stop_reason`` and ``stop_config`` (flat index).

    Raises:
        ValueError: if ``num_seeds`` is not an integer >= 1, ``key`` is not a single key, ``fn``
            is not callable or does not accept a grid name, a grid axis is empty, not 1-D, not
            numeric, has ints that do not fit the integer dtype, or a bad name, ``chunk_size``
            or ``chunk_generations`` is not an integer >= 1, ``devices`` is empty or repeats a
            device, a generations-only option is given with a plain function, or ``checkpoint``
            holds the checkpoint of another sweep.
    """
    t_start = time.perf_counter()
    layout = _Layout.build(key, fn, num_seeds=num_seeds, grid=grid, devices=devices,
                           chunk_size=chunk_size)
    if isinstance(fn, Generations):
        return _run_generations(layout, fn, chunk_generations=chunk_generations,
                                checkpoint=checkpoint, stop_unless=stop_unless, checked=checked,
                                progress=progress, t_start=t_start)
    given = {"chunk_generations": chunk_generations, "checkpoint": checkpoint,
             "stop_unless": stop_unless, "progress": progress}
    for name, value in given.items():
        if value is not None:
            raise ValueError(f"`{name}` needs a selfconsume.Generations program as `fn`; got "
                             f"{name}={value!r} with a plain function.")
    if checked:
        raise ValueError("`checked=True` needs a selfconsume.Generations program as `fn`.")
    return _run_plain(layout, fn, t_start=t_start)


def _run_plain(layout: _Layout, fn, *, t_start: float) -> SweepResult:
    jitted = layout.jit(_evaluate, static=(fn, layout.names, layout.impl))
    t0 = time.perf_counter()
    first = layout.call_inputs(0)
    compiled = jitted.lower(fn, layout.names, layout.impl, *first).compile()
    compile_seconds = time.perf_counter() - t0

    t0 = time.perf_counter()
    host_chunks, pending, out_sharding = [], None, None
    for c in range(layout.num_calls):
        out = compiled(*(first if c == 0 else layout.call_inputs(c)))
        if c == 0:
            first, out_sharding = None, _describe_sharding(out)
        if pending is not None:  # fetch the previous call's outputs while this one runs
            host_chunks.append(jax.tree.map(_to_host, pending))
        pending = out
    host_chunks.append(jax.tree.map(_to_host, pending))
    run_seconds = time.perf_counter() - t0

    values = jax.tree.map(lambda *xs: layout.unflatten(np.concatenate(xs, axis=0)), *host_chunks)
    metadata = layout.metadata(output_sharding=out_sharding, compile_seconds=compile_seconds,
                               run_seconds=run_seconds, t_start=t_start)
    return SweepResult(values=values, axes=layout.axes, coords=layout.all_coords,
                       metadata=metadata)


def _run_generations(layout: _Layout, program: Generations, *, chunk_generations, checkpoint,
                     stop_unless, checked, progress, t_start: float) -> SweepResult:
    t = program.num_generations
    g = t if chunk_generations is None else _checks.static_int(
        "chunk_generations", chunk_generations, minimum=1)
    g = min(g, t)
    if stop_unless is not None and not isinstance(stop_unless, str):
        raise ValueError(f"`stop_unless` must be the name of a boolean record entry or None; got "
                         f"{stop_unless!r}.")
    static = (program, layout.names, layout.impl)
    inputs = [layout.call_inputs(c) for c in range(layout.num_calls)]

    t0 = time.perf_counter()
    init = layout.jit(_init, static=static).lower(*static, *inputs[0]).compile()
    carry_spec = _shapes(init.out_info)  # the compiled program's outputs: no second trace
    chunk_fn = _chunk if not checked else _checked_chunk
    compiled_chunks: dict[int, Any] = {}

    def chunk_executable(size):
        if size not in compiled_chunks:
            jitted = layout.jit(chunk_fn, static=static + (size,), lead="cs",
                                sharded_out=not checked)
            compiled_chunks[size] = jitted.lower(
                *static, size, carry_spec_sharded(), np.int32(0), *inputs[0]).compile()
        return compiled_chunks[size]

    def carry_spec_sharded():
        return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype,
                                                           sharding=layout.sharding), carry_spec)

    final = layout.jit(_final, static=static, lead="c").lower(
        *static, carry_spec_sharded(), *inputs[0]).compile()
    chunk_executable(g)
    compile_seconds = time.perf_counter() - t0

    store = _Checkpoint(checkpoint, layout, t, g) if checkpoint is not None else None
    t0 = time.perf_counter()
    history: list[PyTree] = []  # host records per chunk, (num_configs, chunk, ...)
    done, carries = 0, None
    if store is not None:
        records_spec = _shapes(chunk_executable(g).out_info)
        records_spec = records_spec[1][1] if checked else records_spec[1]
        done, carries, saved = store.load(carry_spec, records_spec)
        if done:
            history.append(saved)
    if carries is None:
        carries = [init(*inputs[c]) for c in range(layout.num_calls)]
    stop = None
    out_sharding = None
    if progress is not None:
        progress(done, t)
    while done < t and stop is None:
        size = min(g, t - done)
        executable = chunk_executable(size)
        outs = [executable(carries[c], np.int32(done), *inputs[c])
                for c in range(layout.num_calls)]
        if checked:
            messages = [err.get() for err, _ in outs]
            outs = [out for _, out in outs]
            message = next((m for m in messages if m is not None), None)
            if message is not None:
                first_line = message.strip().splitlines()[0]
                stop = (done - 1, f"checked mode: {first_line} (during generations {done}.."
                                  f"{done + size - 1})", None)
                break
        if out_sharding is None:
            out_sharding = _describe_sharding(outs[0][1])
        records = layout.gather([r for _, r in outs])
        if stop_unless is not None:
            bad = _invalid(records, stop_unless)  # (num_configs, size)
            if bad.any():
                step = int(np.argmax(bad.any(axis=0)))
                config = int(np.flatnonzero(bad[:, step])[0])
                history.append(jax.tree.map(lambda x: x[:, : step + 1], records))
                stop = (done + step, f"`{stop_unless}` is False for {int(bad[:, step].sum())} of "
                                     f"{layout.num_configs} configurations", config)
                break
        history.append(records)
        carries = [c for c, _ in outs]
        done += size
        if store is not None:
            store.save(done, carries, history)
        if progress is not None:
            progress(done, t)
    if stop is None:
        last = layout.gather([final(carries[c], *inputs[c]) for c in range(layout.num_calls)])
        last = jax.tree.map(lambda x: x[:, None], last)
        if stop_unless is not None and _invalid(last, stop_unless).any():
            config = int(np.flatnonzero(_invalid(last, stop_unless)[:, 0])[0])
            stop = (t, f"`{stop_unless}` is False for the final state", config)
        history.append(last)
    run_seconds = time.perf_counter() - t0

    if history:
        records = jax.tree.map(lambda *xs: np.concatenate(xs, axis=1), *history)
    else:  # stopped before the first chunk finished: no generation to return
        spec = _shapes(final.out_info)
        records = jax.tree.map(
            lambda s: np.zeros((layout.num_configs, 0) + s.shape[1:], _host_dtype(s)), spec)
    values = jax.tree.map(layout.unflatten, records)
    metadata = layout.metadata(output_sharding=out_sharding, compile_seconds=compile_seconds,
                               run_seconds=run_seconds, t_start=t_start, num_generations=t,
                               chunk_generations=g, complete=stop is None)
    if stop is not None:
        metadata.update(stopped_at_generation=stop[0], stop_reason=stop[1],
                        stop_config=stop[2])
    return SweepResult(values=values, axes=layout.axes, coords=layout.all_coords,
                       metadata=metadata)


def _shapes(info):
    """Plain shape/dtype structs of a compiled program's ``out_info`` (shardings dropped)."""
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype), info)


def _invalid(records, name: str) -> np.ndarray:
    if not isinstance(records, Mapping) or name not in records:
        available = sorted(records) if isinstance(records, Mapping) else type(records).__name__
        raise ValueError(f"`stop_unless` = {name!r} is not an entry of the records; available: "
                         f"{available}.")
    return ~np.asarray(records[name]).astype(bool)


# --------------------------------------------------------------------------------------------
# The programs (module level, so that jit's caches reuse them across calls)
# --------------------------------------------------------------------------------------------


def _point(names, point):
    return dict(zip(names, point))


def _strip_keys(tree):
    return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, tree)


def _evaluate(fn, names, impl, keys, *point):
    one = lambda k, *p: fn(k, **_point(names, p))  # noqa: E731
    return _strip_keys(jax.vmap(one)(_wrap(keys, impl), *point))


def _init(program, names, impl, keys, *point):
    def one(k, *p):
        key_init, _ = generation_keys(k, program.num_generations)
        return program.init(key_init, **_point(names, p))

    return jax.vmap(one)(_wrap(keys, impl), *point)


def _chunk(program, names, impl, size, carry, start, keys, *point):
    def one(c, k, *p):
        _, gen = generation_keys(k, program.num_generations)
        return program.chunk(lax.dynamic_slice_in_dim(gen, start, size), c, **_point(names, p))

    carry, records = jax.vmap(one)(carry, _wrap(keys, impl), *point)
    return carry, _strip_keys(records)


def _checked_chunk(program, names, impl, size, carry, start, keys, *point):
    from jax.experimental import checkify

    checks = checkify.float_checks | checkify.index_checks
    return checkify.checkify(lambda c, s, k, *p: _chunk(program, names, impl, size, c, s, k, *p),
                             errors=checks)(carry, start, keys, *point)


def _final(program, names, impl, carry, keys, *point):
    def one(c, k, *p):
        _, gen = generation_keys(k, program.num_generations)
        return program.final(gen[program.num_generations], c, **_point(names, p))

    return _strip_keys(jax.vmap(one)(carry, _wrap(keys, impl), *point))


def _wrap(keys, impl):
    return keys if impl is None else jax.random.wrap_key_data(keys, impl=impl)


# --------------------------------------------------------------------------------------------
# The configuration axis
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Layout:
    """The flattened, padded and sharded configuration axis of one sweep."""

    num_seeds: int
    names: tuple[str, ...]
    sizes: tuple[int, ...]
    coords: dict[str, np.ndarray]
    host_inputs: list[np.ndarray]  # keys data then grid values, (total,) rows each
    impl: Any  # key implementation name for wrap_key_data, or None for legacy keys
    key_kind: str
    devices: list
    per_call: int
    num_calls: int
    chunk_size: int | None
    mesh: Mesh
    sharding: NamedSharding

    @classmethod
    def build(cls, key, fn, *, num_seeds, grid, devices, chunk_size) -> _Layout:
        num_seeds = _checks.static_int("num_seeds", num_seeds, minimum=1)
        if not callable(fn) and not isinstance(fn, Generations):
            raise ValueError(f"`fn` must be callable as fn(key, **point) or a "
                             f"selfconsume.Generations program; got {fn!r}.")
        coords, fed = _check_grid(grid, fn.init if isinstance(fn, Generations) else fn)
        if chunk_size is not None:
            chunk_size = _checks.static_int("chunk_size", chunk_size, minimum=1)
        devices = _check_devices(devices)
        key_data, impl, key_kind = _split_keys(key, num_seeds)
        names = tuple(fed)
        sizes = tuple(len(v) for v in fed.values())
        num_configs = num_seeds * math.prod(sizes)
        full = _round_up(num_configs, len(devices))
        per_call = full if chunk_size is None else min(_round_up(chunk_size, len(devices)), full)
        num_calls = -(-num_configs // per_call)
        total = num_calls * per_call
        grid_index = np.indices((num_seeds, *sizes)).reshape(1 + len(sizes), -1)
        rows = np.minimum(np.arange(total), num_configs - 1)  # the padding repeats the last one
        host = [key_data[grid_index[0, rows]]]
        host += [fed[n][grid_index[1 + a, rows]] for a, n in enumerate(names)]
        mesh = _mesh(devices)
        return cls(num_seeds=num_seeds, names=names, sizes=sizes, coords=coords,
                   host_inputs=host, impl=impl, key_kind=key_kind, devices=devices,
                   per_call=per_call, num_calls=num_calls, chunk_size=chunk_size, mesh=mesh,
                   sharding=NamedSharding(mesh, PartitionSpec(_MESH_AXIS)))

    @property
    def num_configs(self) -> int:
        return self.num_seeds * math.prod(self.sizes)

    @property
    def axes(self) -> tuple[str, ...]:
        return ("seed", *self.names)

    @property
    def all_coords(self) -> dict[str, np.ndarray]:
        return {"seed": np.arange(self.num_seeds), **self.coords}

    def call_inputs(self, c: int) -> list[jax.Array]:
        sl = slice(c * self.per_call, (c + 1) * self.per_call)
        return [_put(h[sl], self.sharding) for h in self.host_inputs]

    def jit(self, fun, *, static: tuple, lead: str = "", sharded_out: bool = True):
        """``jax.jit(fun)`` with ``static`` leading arguments, then the arguments named by
        ``lead`` (``"c"``: a carry sharded along the configuration axis, ``"s"``: a replicated
        scalar), then the keys and grid values (sharded)."""
        replicated = NamedSharding(self.mesh, PartitionSpec())
        shardings = [replicated if kind == "s" else self.sharding for kind in lead]
        shardings += [self.sharding] * len(self.host_inputs)
        return jax.jit(fun, static_argnums=tuple(range(len(static))),
                       in_shardings=tuple(shardings),
                       out_shardings=self.sharding if sharded_out else None)

    def gather(self, outs: list[PyTree]) -> PyTree:
        """The host copy of the per-call outputs, concatenated and stripped of the padding."""
        host = [jax.tree.map(_to_host, o) for o in outs]
        return jax.tree.map(lambda *xs: np.concatenate(xs, axis=0)[: self.num_configs], *host)

    def unflatten(self, x: np.ndarray) -> np.ndarray:
        return x[: self.num_configs].reshape((self.num_seeds, *self.sizes) + x.shape[1:])

    def metadata(self, *, output_sharding, compile_seconds, run_seconds, t_start,
                 num_generations=None, chunk_generations=None, complete=True) -> dict:
        return {
            "num_seeds": self.num_seeds,
            "grid": {n: self.coords[n].tolist() for n in self.names},
            "grid_shape": list(self.sizes),
            "num_configs": self.num_configs,
            "num_padded_configs": self.num_calls * self.per_call,
            "chunk_size": self.chunk_size,
            "configs_per_call": self.per_call,
            "num_chunks": self.num_calls,
            "num_generations": num_generations,
            "chunk_generations": chunk_generations,
            "complete": complete,
            "devices": len(self.devices),
            "device_kind": self.devices[0].device_kind,
            "platform": self.devices[0].platform,
            "process_count": jax.process_count(),
            "key_impl": self.key_kind,
            "output_sharding": output_sharding,
            "jax_version": jax.__version__,
            "compile_seconds": compile_seconds,
            "run_seconds": run_seconds,
            "wall_seconds": time.perf_counter() - t_start,
        }


class _Checkpoint:
    """``<folder>/checkpoint.npz``: the carry after ``done`` generations and the records so far,
    with a fingerprint of the sweep it belongs to."""

    def __init__(self, folder, layout: _Layout, num_generations: int, chunk: int):
        self.folder = os.fspath(folder)
        self.path = os.path.join(self.folder, CHECKPOINT_FILE)
        self.layout = layout
        self.fingerprint = json.dumps({
            "num_seeds": layout.num_seeds, "grid": {n: layout.coords[n].tolist()
                                                    for n in layout.names},
            "keys": np.asarray(layout.host_inputs[0][:1]).tolist(),
            "num_generations": num_generations, "chunk_generations": chunk,
            "padded_configs": layout.num_calls * layout.per_call})

    def save(self, done: int, carries: list, history: list) -> None:
        # every process gathers (a collective on several processes); process 0 writes
        carry = jax.tree.map(lambda *xs: np.concatenate([_to_host(x) for x in xs], axis=0),
                             *[_strip_keys(c) for c in carries])
        if not is_writer():
            return
        arrays = {f"carry/{i}": x for i, x in enumerate(jax.tree.leaves(carry))}
        records = jax.tree.map(lambda *xs: np.concatenate(xs, axis=1), *history)
        arrays.update({f"records/{i}": x for i, x in enumerate(jax.tree.leaves(records))})
        arrays["done"] = np.asarray(done)
        arrays["fingerprint"] = np.asarray(self.fingerprint)
        os.makedirs(self.folder, exist_ok=True)
        atomic_write(self.path, lambda f: np.savez(f, **arrays), binary=True)

    def _read(self, num_carry: int, num_records: int):
        """Process 0's view of the file: None, or (done, carry leaves, record leaves)."""
        if not os.path.exists(self.path):
            return None
        with np.load(self.path) as z:
            if str(z["fingerprint"]) != self.fingerprint:
                raise ValueError(f"`checkpoint` folder {self.folder!r} holds the checkpoint of "
                                 "another sweep (different keys, grid or generations); remove "
                                 f"{self.path!r} or choose another folder.")
            return (int(z["done"]), [z[f"carry/{i}"] for i in range(num_carry)],
                    [z[f"records/{i}"] for i in range(num_records)])

    def load(self, carry_spec, records_spec):
        """``(done, carries per call, records)`` from the checkpoint (read by process 0 and
        broadcast), or ``(0, None, None)`` when there is none."""
        leaves = jax.tree.leaves(carry_spec)
        saved = from_writer(lambda: self._read(len(leaves), len(jax.tree.leaves(records_spec))))
        if saved is None:
            return 0, None, None
        done, host, records = saved
        records = jax.tree.unflatten(jax.tree.structure(records_spec), records)
        layout = self.layout
        carries = []
        for c in range(layout.num_calls):
            sl = slice(c * layout.per_call, (c + 1) * layout.per_call)
            parts = []
            for spec, x in zip(leaves, host):
                x = x[sl]
                if _is_key(spec):  # keys in the carry use the sweep's key implementation
                    parts.append(jax.random.wrap_key_data(_put(x, layout.sharding),
                                                          impl=layout.impl or "threefry2x32"))
                else:
                    parts.append(_put(x.astype(spec.dtype), layout.sharding))
            carries.append(jax.tree.unflatten(jax.tree.structure(carry_spec), parts))
        return done, carries, records


# --------------------------------------------------------------------------------------------
# Validation and helpers
# --------------------------------------------------------------------------------------------


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def _is_key(x) -> bool:
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _host_dtype(spec):
    return np.uint32 if _is_key(spec) else spec.dtype


def _split_keys(key, num_seeds):
    """Splits ``key`` per seed; returns the host key data, the key impl (None: legacy) and a tag."""
    if _is_key(key):
        if jnp.ndim(key) != 0:
            raise ValueError(f"`key` must be a single PRNG key; got a key array of shape "
                             f"{jnp.shape(key)}.")
        impl = jax.random.key_impl(key)
        data = np.asarray(jax.random.key_data(jax.random.split(key, num_seeds)))
        return data, str(impl), str(impl)
    arr = np.asarray(key) if isinstance(key, (jax.Array, np.ndarray)) else None
    if arr is None or arr.ndim != 1 or arr.dtype != np.uint32:
        shown = f"shape {np.shape(key)} {getattr(key, 'dtype', type(key).__name__)}"
        raise ValueError(f"`key` must be a single PRNG key (jax.random.key(seed), or a legacy "
                         f"uint32 key from jax.random.PRNGKey); got {shown}.")
    data = np.asarray(jax.random.split(jnp.asarray(arr), num_seeds))
    return data, None, "raw"


def _check_grid(grid, fn):
    """Validates the grid; returns (coords as given, values as fed to fn in JAX dtypes)."""
    if grid is None:
        grid = {}
    if not isinstance(grid, Mapping):
        raise ValueError(f"`grid` must be a dict of axis name -> 1-D values; got "
                         f"{type(grid).__name__}.")
    accepted = _keyword_names(fn)
    coords, fed = {}, {}
    for name, values in grid.items():
        if not isinstance(name, str) or not name or (accepted is not None and (
                not name.isidentifier() or keyword.iskeyword(name))):
            raise ValueError(f"`grid` axis names must be Python identifiers (they are passed as "
                             f"keyword arguments to fn; any non-empty string when fn takes "
                             f"**kwargs); got {name!r}.")
        if name == "seed":
            raise ValueError("`grid` axis name 'seed' is reserved for the seed axis; rename it.")
        if accepted is not None and name not in accepted:
            raise ValueError(f"`grid` axis {name!r} is not an argument that `fn` accepts by "
                             f"keyword; fn accepts {sorted(accepted)}.")
        try:
            array = np.asarray(values)
        except Exception as err:  # ragged lists and the like
            raise ValueError(f"`grid[{name!r}]` must be a 1-D sequence of numbers; got "
                             f"{values!r}.") from err
        if array.ndim != 1:
            raise ValueError(f"`grid[{name!r}]` must be 1-D; got shape {array.shape}.")
        if array.size == 0:
            raise ValueError(f"`grid[{name!r}]` must have at least one value; got an empty "
                             "sequence.")
        if array.dtype.kind not in "biuf":
            raise ValueError(f"`grid[{name!r}]` must hold bools, ints or floats; got dtype "
                             f"{array.dtype}.")
        jax_array = array.astype(jax.dtypes.canonicalize_dtype(array.dtype))
        if array.dtype.kind in "iu" and not np.array_equal(jax_array, array):
            raise ValueError(f"`grid[{name!r}]` has integers that do not fit "
                             f"{jax_array.dtype} (enable x64 for int64); got "
                             f"{_checks.show(array)}.")
        coords[name], fed[name] = array, jax_array
    return coords, fed


def _keyword_names(fn):
    """Names ``fn`` accepts by keyword after its key, or None when anything goes (or unknown)."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    positional = [p for p in params if p.kind in (inspect.Parameter.POSITIONAL_ONLY,
                                                  inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    key_param = positional[0].name if positional else None
    return {p.name for p in params
            if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
            and p.name != key_param}


def _check_devices(devices):
    if devices is None:
        return list(jax.devices())
    devices = list(devices)
    if not devices:
        raise ValueError("`devices` must list at least one device (or be None for "
                         "jax.devices()); got an empty sequence.")
    if len(set(devices)) != len(devices):
        raise ValueError(f"`devices` must not repeat a device; got {devices}.")
    return devices


def _mesh(devices) -> Mesh:
    """A 1-D mesh named ``"config"`` in Auto mode (the partitioner propagates shardings)."""
    axis_type = getattr(jax.sharding, "AxisType", None)
    array = np.empty(len(devices), dtype=object)
    array[:] = devices
    if axis_type is None:  # older JAX: Auto is the only mode
        return Mesh(array, (_MESH_AXIS,))
    return Mesh(array, (_MESH_AXIS,), axis_types=(axis_type.Auto,))


def _put(host: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """Places a host array identical on every process; each process fills its own devices."""
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def _to_host(x) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return x
    if _is_key(x):
        x = jax.random.key_data(x)
    if getattr(x, "is_fully_addressable", True):
        return np.asarray(x)
    from jax.experimental import multihost_utils  # multi-process only

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def _describe_sharding(out) -> dict[str, Any] | None:
    """How the first output leaf was laid out on the devices (before moving to the host)."""
    leaves = jax.tree.leaves(out)
    if not leaves:
        return None
    leaf = leaves[0]
    s = leaf.sharding
    return {
        "num_devices": len(s.device_set),
        "rows_per_device": int(s.shard_shape(leaf.shape)[0]),
        "rows": int(leaf.shape[0]),
        "fully_replicated": bool(s.is_fully_replicated),
        "spec": str(getattr(s, "spec", None)),
    }

r"""Seeds x hyperparameter grids as one compiled, sharded program.

A sweep evaluates a user function ``fn(key, **point) -> pytree`` on the product of ``num_seeds``
seeds and a grid of named 1-D axes :math:`g_1, \dots, g_A` of sizes :math:`n_1, \dots, n_A`:

.. math::
    \text{values}[s, i_1, \dots, i_A] = \mathrm{fn}\big(k_s,\; g_1 = g_1[i_1], \dots,
    g_A = g_A[i_A]\big), \qquad (k_0, \dots, k_{S-1}) = \texttt{jax.random.split(key, S)}.

Seed :math:`s` uses the same key :math:`k_s` at every grid point (*common random numbers*), so
differences between grid points are not blurred by independent sampling noise.

**Execution.** The :math:`S \prod_a n_a` configurations are flattened in C order (seed outermost,
then the grid axes in insertion order) into one *configuration axis*; the keys and the grid values
become arrays along it and ``jax.vmap(fn)`` runs over it inside one ``jax.jit``. Grid values are
array leaves (never Python constants baked into the program), so ``fn`` is traced exactly once
per :func:`sweep` call whatever the grid size. The configuration axis is laid out over a 1-D
:class:`jax.sharding.Mesh` named ``"config"`` with ``NamedSharding(mesh, PartitionSpec("config"))``;
it is padded to a multiple of the device count by repeating the last configuration and the padding
is dropped from the result. With ``chunk_size`` the axis is cut into equal chunks evaluated one
after the other by the same compiled executable (the last chunk padded), bounding device memory;
the chunks' outputs are concatenated on the host.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import inspect
import json
import keyword
import math
import os
import tempfile
import time
import zipfile
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from selfconsume import _checks
from selfconsume.types import PRNGKey, PyTree

__all__ = ["sweep", "SweepResult"]

_MESH_AXIS = "config"
_VALUES_FILE = "values.npz"
_RESULT_FILE = "result.json"
_CSV_FIXED = ("generation", "metric", "value")


# --------------------------------------------------------------------------------------------
# Result container
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class SweepResult:
    """The outputs of :func:`sweep` on the host, with their coordinates.

    Attributes:
        values: the pytree returned by ``fn``, each leaf a NumPy array of shape
            ``(num_seeds, *grid sizes, *leaf shape)``.
        axes: names of the leading axes, ``("seed", *grid names)``.
        coords: name -> 1-D NumPy array of the values along that axis (``"seed"`` ->
            ``np.arange(num_seeds)``; grid axes hold the values as given, e.g. float64 for Python
            floats, while ``fn`` received them in JAX's default dtype, float32 unless x64 is on).
        metadata: JSON-serialisable dict describing the run (grid, chunking, devices, JAX version,
            compile and run wall times, how the output was sharded).

    Persistence (:meth:`save` / :meth:`load`, :meth:`to_csv`) supports ``values`` that are a single
    array or a dict, possibly nested, of arrays with string keys (the keys must not contain
    ``"/"``, which joins nested keys in the files). Other pytrees stay usable in memory.
    """

    values: PyTree
    axes: tuple[str, ...]
    coords: dict[str, np.ndarray]
    metadata: dict[str, Any]

    def __repr__(self) -> str:
        shape = tuple(len(self.coords[a]) for a in self.axes)
        leaves = ", ".join(f"{name}: {a.dtype}{list(a.shape[len(shape):])}"
                           for name, a in _named_leaves(self.values))
        return f"SweepResult(axes={self.axes}, shape={shape}, values={{{leaves}}})"

    @property
    def shape(self) -> tuple[int, ...]:
        """Sizes of the leading axes, ``(num_seeds, *grid sizes)``."""
        return tuple(len(self.coords[a]) for a in self.axes)

    # ---------------------------------------------------------------- selection

    def sel(self, **coords) -> SweepResult:
        """Selects one coordinate value along some axes, dropping those axes.

        Example: ``result.sel(beta=1.0, seed=0).values`` holds the outputs at ``beta = 1.0`` for
        seed 0, with the remaining axes leading.

        Args:
            **coords: axis name -> one value of ``self.coords[name]`` (matched exactly).

        Returns:
            A :class:`SweepResult` without the selected axes (same metadata).

        Raises:
            ValueError: if a name is not an axis or the value is not among its coordinates.
        """
        index: list[Any] = [slice(None)] * len(self.axes)
        for name, value in coords.items():
            if name not in self.axes:
                raise ValueError(f"`{name}` is not an axis of this result; the axes are "
                                 f"{self.axes}.")
            hits = np.flatnonzero(self.coords[name] == value)
            if hits.size == 0:
                raise ValueError(f"`{name}`={value!r} is not one of its coordinates "
                                 f"{self.coords[name].tolist()}.")
            index[self.axes.index(name)] = int(hits[0])
        index_t = tuple(index)
        keep = tuple(a for a in self.axes if a not in coords)
        return SweepResult(
            values=jax.tree.map(lambda x: x[index_t], self.values),
            axes=keep,
            coords={a: self.coords[a] for a in keep},
            metadata=self.metadata,
        )

    # ---------------------------------------------------------------- persistence

    def save(self, path: str | os.PathLike, *, name: str | None = None) -> None:
        """Writes the result to the folder ``path`` (created if needed).

        Files: ``values.npz`` (one entry per leaf, named by its dict keys joined with ``"/"``,
        or ``"value"`` for a single array) and ``result.json`` (axes, coordinates with their
        dtypes, metadata and the tree layout); with ``name``, ``<name>.npz`` and
        ``<name>.json`` instead (read back with ``load(path, name=name)``). Each file is written to a temporary file in the
        same folder and moved into place with ``os.replace``, so a reader never sees a partial
        file; ``result.json`` is written last.

        Raises:
            ValueError: if ``values`` is not a single array or a (nested) dict of arrays with
                string keys free of ``"/"``.
        """
        layout, named = _layout(self.values)
        folder = os.fspath(path)
        os.makedirs(folder, exist_ok=True)

        def write_npz(fh):
            with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
                for name, array in named:
                    with zf.open(name + ".npy", "w", force_zip64=True) as member:
                        np.lib.format.write_array(member, np.asarray(array), allow_pickle=False)

        values_file, result_file = _file_names(name)
        _atomic_write(os.path.join(folder, values_file), write_npz, binary=True)
        doc = {
            "format": "selfconsume.SweepResult/1",
            "axes": list(self.axes),
            "coords": {a: {"dtype": _dtype_name(c.dtype), "values": np.asarray(c).tolist()}
                       for a, c in self.coords.items()},
            "layout": layout,
            "metadata": self.metadata,
        }
        text = json.dumps(doc, indent=1)
        _atomic_write(os.path.join(folder, result_file), lambda fh: fh.write(text), binary=False)

    @classmethod
    def load(cls, path: str | os.PathLike, *, name: str | None = None) -> SweepResult:
        """Reads a result written by :meth:`save`: same tree, values bit for bit, same dtypes."""
        folder = os.fspath(path)
        values_file, result_file = _file_names(name)
        with open(os.path.join(folder, result_file), encoding="utf-8") as fh:
            doc = json.load(fh)
        layout = doc["layout"]
        with np.load(os.path.join(folder, values_file), allow_pickle=False) as npz:
            def read(name):
                array = npz[name]
                dtype = jnp.dtype(layout["dtypes"][name])  # knows ml_dtypes such as bfloat16
                return array if array.dtype == dtype else array.view(dtype)

            if layout["kind"] == "array":
                values = read("value")
            else:
                values = _unflatten_dict(layout["tree"], "", read)
        coords = {a: np.asarray(c["values"], dtype=jnp.dtype(c["dtype"]))
                  for a, c in doc["coords"].items()}
        for a, c in coords.items():  # an empty JSON list loses its rank
            coords[a] = c.reshape(-1)
        return cls(values=values, axes=tuple(doc["axes"]), coords=coords,
                   metadata=doc["metadata"])

    def to_csv(self, path: str | os.PathLike) -> None:
        """Writes a tidy long CSV: ``seed, <grid axes...>, generation, metric, value``.

        One row per seed, grid point, generation and metric. For a leaf of shape
        ``(*leading, *extra)``:

        * no extra axis: one row per configuration, ``generation`` empty;
        * one extra axis: a per-generation series, ``generation`` = index along it;
        * two or more: the first extra axis is the generation, the others are flattened into the
          metric name, e.g. ``shares[3]`` or ``w[1,0]``.

        Metric names are the dict keys joined with ``"/"`` (``"value"`` for a single array).
        Numbers are written in their shortest round-trip form for their dtype. The file is
        written atomically (temporary file in the same folder, then ``os.replace``).

        Raises:
            ValueError: if a grid axis is named like a fixed column (``generation``, ``metric``,
                ``value``).
        """
        clash = [a for a in self.axes if a in _CSV_FIXED]
        if clash:
            raise ValueError(f"axis names {clash} clash with the fixed CSV columns {_CSV_FIXED}; "
                             "rename the grid axes to write a CSV.")
        shape = self.shape
        num_configs = math.prod(shape)
        grid_index = np.indices(shape).reshape(len(shape), -1)  # (num_axes, num_configs)
        coord_text = [self.coords[a].astype(str)[grid_index[i]] for i, a in enumerate(self.axes)]

        blocks = []
        for name, leaf in _named_leaves(self.values):
            leaf = np.asarray(leaf)
            extra = leaf.shape[len(shape):]
            if not extra:
                gens, suffixes = np.array([""]), [""]
            else:
                gens = np.arange(extra[0]).astype(str)
                suffixes = (["[" + ",".join(map(str, i)) + "]" for i in np.ndindex(*extra[1:])]
                            if len(extra) > 1 else [""])
            per_config = len(gens) * len(suffixes)
            if per_config == 0 or num_configs == 0:
                continue
            cols = [np.repeat(c, per_config) for c in coord_text]
            cols.append(np.tile(np.repeat(gens, len(suffixes)), num_configs))
            cols.append(np.tile(np.array([name + s for s in suffixes]), num_configs * len(gens)))
            cols.append(leaf.reshape(-1).astype(str))
            blocks.append(cols)

        def write(fh):
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow([*self.axes, *_CSV_FIXED])
            for cols in blocks:
                writer.writerows(zip(*(c.tolist() for c in cols)))

        _atomic_write(os.fspath(path), write, binary=False)


# --------------------------------------------------------------------------------------------
# The sweep
# --------------------------------------------------------------------------------------------


def sweep(
    key: PRNGKey,
    fn: Callable[..., PyTree],
    *,
    num_seeds: int,
    grid: Mapping[str, Any] | None = None,
    devices: Sequence[jax.Device] | None = None,
    chunk_size: int | None = None,
) -> SweepResult:
    """Evaluates ``fn`` on every seed x grid point in one compiled program sharded over devices.

    Seed ``s`` uses ``jax.random.split(key, num_seeds)[s]`` at every grid point (common random
    numbers). ``fn`` is traced once per call: the grid values reach it as traced 0-d arrays, so
    it may not use them as shapes or in Python control flow (close over shape-setting integers
    with ``functools.partial``; an effective K can be swept through ``curate``'s traced
    ``num_candidates``). Integer axes are passed as int32 (int64 with x64), float axes as float32
    (float64 with x64).

    Example::

        def fn(key, beta, real_fraction):
            final, history = sc.run(key, params0, data, sc.Hyperparams(beta=beta,
                                    real_fraction=real_fraction), model=model, ...)
            return {"reward": history["mean_reward"], "final_kl": history["kl"][-1]}

        result = sc.sweep(jax.random.key(0), fn, num_seeds=16,
                          grid={"beta": [0.5, 1.0, 2.0], "real_fraction": [0.0, 0.1, 0.5]})
        result.values["reward"].shape   # (16, 3, 3, num_generations + 1)

    **Multi-host.** Call ``jax.distributed.initialize()`` in every process first, then make the
    same ``sweep`` call (same key, ``fn`` and grid) in every process. The default ``devices`` is
    ``jax.devices()``, i.e. all devices of all processes; each process supplies the input shards
    of its own devices (``jax.make_array_from_callback``) and the outputs are all-gathered, so
    every process returns the full result. Write files from one process only
    (``if jax.process_index() == 0: result.save(...)``).

    Args:
        key: a single PRNG key (``jax.random.key``; a legacy ``uint32[2]`` key also works and
            ``fn`` then receives legacy keys).
        fn: ``fn(key, **point) -> pytree`` of arrays, with ``point`` one value per grid axis.
        num_seeds: number of seeds ``S >= 1``.
        grid: axis name -> 1-D non-empty sequence of numbers (bool, int or float), in the order
            the result's axes should have. Names must be Python identifiers other than
            ``"seed"`` that ``fn`` accepts as keyword arguments. ``None`` or ``{}`` sweeps seeds
            only.
        devices: devices to shard the configuration axis over (default ``jax.devices()``).
        chunk_size: optional maximum number of configurations per device call, rounded up to a
            multiple of the device count; ``None`` runs all configurations in one call. At most
            two chunks' outputs are on the devices at a time.

    Returns:
        :class:`SweepResult` whose ``values`` leaves have shape ``(S, *grid sizes, ...)`` (a
        PRNG key output is returned as its ``jax.random.key_data``).

    Raises:
        ValueError: if ``num_seeds`` is not an integer >= 1, ``key`` is not a single key, ``fn``
            is not callable or does not accept a grid name, a grid axis is empty, not 1-D, not
            numeric, has ints that do not fit the integer dtype, or a bad name, ``chunk_size`` is
            not an integer >= 1, or ``devices`` is empty or repeats a device.
    """
    t_start = time.perf_counter()
    num_seeds = _checks.static_int("num_seeds", num_seeds, minimum=1)
    if not callable(fn):
        raise ValueError(f"`fn` must be callable as fn(key, **point); got {fn!r}.")
    coords, fed = _check_grid(grid, fn)
    if chunk_size is not None:
        chunk_size = _checks.static_int("chunk_size", chunk_size, minimum=1)
    devices = _check_devices(devices)
    key_data, wrap, key_kind = _split_keys(key, num_seeds)

    names = tuple(fed)
    sizes = tuple(len(v) for v in fed.values())
    num_configs = num_seeds * math.prod(sizes)
    num_devices = len(devices)
    full = _round_up(num_configs, num_devices)
    per_chunk = full if chunk_size is None else min(_round_up(chunk_size, num_devices), full)
    num_chunks = -(-num_configs // per_chunk)
    total = num_chunks * per_chunk

    # Host-side inputs along the (padded) configuration axis; the padding repeats the last one.
    grid_index = np.indices((num_seeds, *sizes)).reshape(1 + len(sizes), -1)
    rows = np.minimum(np.arange(total), num_configs - 1)
    host_inputs = [key_data[grid_index[0, rows]]]
    host_inputs += [fed[n][grid_index[1 + a, rows]] for a, n in enumerate(names)]

    mesh = _mesh(devices)
    sharding = NamedSharding(mesh, PartitionSpec(_MESH_AXIS))

    def one(k, *point):
        return fn(k, **dict(zip(names, point)))

    def batched(keys, *point):
        out = jax.vmap(one)(wrap(keys), *point)
        return jax.tree.map(
            lambda x: jax.random.key_data(x) if _is_key(x) else x, out)

    jitted = jax.jit(batched, in_shardings=(sharding,) * len(host_inputs),
                     out_shardings=sharding)

    def chunk_inputs(c):
        sl = slice(c * per_chunk, (c + 1) * per_chunk)
        return [_put(h[sl], sharding) for h in host_inputs]

    t0 = time.perf_counter()
    first = chunk_inputs(0)
    compiled = jitted.lower(*first).compile()  # traces fn once; every chunk reuses it
    compile_seconds = time.perf_counter() - t0

    t0 = time.perf_counter()
    host_chunks, pending, out_sharding = [], None, None
    for c in range(num_chunks):
        out = compiled(*(first if c == 0 else chunk_inputs(c)))
        if c == 0:
            first, out_sharding = None, _describe_sharding(out)
        if pending is not None:  # fetch the previous chunk while this one runs
            host_chunks.append(jax.tree.map(_to_host, pending))
        pending = out
    host_chunks.append(jax.tree.map(_to_host, pending))
    run_seconds = time.perf_counter() - t0

    lead = (num_seeds, *sizes)
    values = jax.tree.map(
        lambda *xs: np.concatenate(xs, axis=0)[:num_configs].reshape(lead + xs[0].shape[1:]),
        *host_chunks)

    metadata = {
        "num_seeds": num_seeds,
        "grid": {n: coords[n].tolist() for n in names},
        "grid_shape": list(sizes),
        "num_configs": num_configs,
        "num_padded_configs": total,
        "chunk_size": chunk_size,
        "configs_per_call": per_chunk,
        "num_chunks": num_chunks,
        "num_devices": num_devices,
        "device_kind": devices[0].device_kind,
        "platform": devices[0].platform,
        "process_count": jax.process_count(),
        "key_impl": key_kind,
        "output_sharding": out_sharding,
        "jax_version": jax.__version__,
        "compile_seconds": compile_seconds,
        "run_seconds": run_seconds,
        "wall_seconds": time.perf_counter() - t_start,
    }
    all_coords = {"seed": np.arange(num_seeds), **coords}
    return SweepResult(values=values, axes=("seed", *names), coords=all_coords, metadata=metadata)


# --------------------------------------------------------------------------------------------
# Validation and helpers
# --------------------------------------------------------------------------------------------


def _file_names(name: str | None) -> tuple[str, str]:
    if name is None:
        return _VALUES_FILE, _RESULT_FILE
    if not isinstance(name, str) or not name or os.sep in name:
        raise ValueError(f"`name` must be a non-empty file stem without {os.sep!r}; got {name!r}.")
    return f"{name}.npz", f"{name}.json"


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def _is_key(x) -> bool:
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _split_keys(key, num_seeds):
    """Splits ``key`` per seed; returns the host key data, a re-wrapping function and a tag."""
    if _is_key(key):
        if jnp.ndim(key) != 0:
            raise ValueError(f"`key` must be a single PRNG key; got a key array of shape "
                             f"{jnp.shape(key)}.")
        impl = jax.random.key_impl(key)
        data = np.asarray(jax.random.key_data(jax.random.split(key, num_seeds)))
        return data, (lambda d: jax.random.wrap_key_data(d, impl=impl)), str(impl)
    arr = np.asarray(key) if isinstance(key, (jax.Array, np.ndarray)) else None
    if arr is None or arr.ndim != 1 or arr.dtype != np.uint32:
        shown = f"shape {np.shape(key)} {getattr(key, 'dtype', type(key).__name__)}"
        raise ValueError(f"`key` must be a single PRNG key (jax.random.key(seed), or a legacy "
                         f"uint32 key from jax.random.PRNGKey); got {shown}.")
    data = np.asarray(jax.random.split(jnp.asarray(arr), num_seeds))
    return data, (lambda d: d), "raw"


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
        if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
            raise ValueError(f"`grid` axis names must be Python identifiers (they are passed as "
                             f"keyword arguments to fn); got {name!r}.")
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
                             f"{_checks._show(array)}.")
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


def _dtype_name(dtype) -> str:
    return jnp.dtype(dtype).name


def _path_name(entry) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def _named_leaves(tree) -> list[tuple[str, Any]]:
    """(name, leaf) pairs; names join the path entries with "/", a bare leaf is "value"."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [("/".join(_path_name(e) for e in path) or "value", leaf) for path, leaf in flat]


def _layout(values):
    """JSON layout and (name, array) pairs of a single array or a nested dict of arrays."""
    if isinstance(values, (np.ndarray, jax.Array)):
        return {"kind": "array", "dtypes": {"value": _dtype_name(values.dtype)}}, [
            ("value", values)]
    if not isinstance(values, dict):
        raise ValueError(f"`values` must be an array or a (nested) dict of arrays to be saved; "
                         f"got {type(values).__name__}.")
    named, dtypes = [], {}

    def walk(node, prefix):
        tree = {}
        for k, v in node.items():
            if not isinstance(k, str) or not k or "/" in k:
                raise ValueError(f"`values` dict keys must be non-empty strings without '/' to "
                                 f"be saved; got {k!r}.")
            name = prefix + k
            if isinstance(v, dict):
                tree[k] = walk(v, name + "/")
            elif isinstance(v, (np.ndarray, jax.Array)):
                tree[k] = None
                named.append((name, v))
                dtypes[name] = _dtype_name(v.dtype)
            else:
                raise ValueError(f"`values[{name!r}]` must be an array or a dict to be saved; "
                                 f"got {type(v).__name__}.")
        return tree

    return {"kind": "dict", "tree": walk(values, ""), "dtypes": dtypes}, named


def _unflatten_dict(tree, prefix, read):
    return {k: (read(prefix + k) if sub is None else _unflatten_dict(sub, prefix + k + "/", read))
            for k, sub in tree.items()}


def _atomic_write(path: str, write: Callable[[Any], Any], *, binary: bool) -> None:
    """Writes ``path`` via a temporary file in the same folder and ``os.replace``."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".",
                               suffix=".tmp")
    try:
        if binary:
            fh = os.fdopen(fd, "wb")
        else:
            fh = os.fdopen(fd, "w", encoding="utf-8", newline="")
        with fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise

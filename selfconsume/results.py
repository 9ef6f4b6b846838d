"""The result of a sweep on the host: values with named axes and coordinates, and its files.

A :class:`SweepResult` holds a pytree of NumPy arrays whose leaves share leading axes
``("seed", *grid axes)``, the coordinates along those axes and a JSON metadata dict. It is what
:func:`selfconsume.sweep` returns, what a study writes into its run folder and what the figures
read. Files (:meth:`SweepResult.save` / :meth:`SweepResult.load`): ``<name>.npz`` (one uncompressed
``.npy`` member per leaf, named by its dict keys joined with ``"/"``) and ``<name>.json`` (axes,
coordinates with their dtypes, tree layout, metadata), each written atomically
(:func:`selfconsume.files.atomic_write`), the JSON last; :meth:`SweepResult.to_csv` writes a tidy
long table.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import zipfile
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from selfconsume.files import atomic_write
from selfconsume.types import PyTree

__all__ = ["SweepResult", "named_leaves"]

_VALUES_FILE = "values.npz"
_RESULT_FILE = "result.json"
_CSV_FIXED = ("generation", "metric", "index", "value")


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
                           for name, a in named_leaves(self.values))
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
        atomic_write(os.path.join(folder, values_file), write_npz, binary=True)
        doc = {
            "format": "selfconsume.SweepResult/1",
            "axes": list(self.axes),
            "coords": {a: {"dtype": _dtype_name(c.dtype), "values": np.asarray(c).tolist()}
                       for a, c in self.coords.items()},
            "layout": layout,
            "metadata": self.metadata,
        }
        text = json.dumps(doc, indent=1)
        atomic_write(os.path.join(folder, result_file), lambda fh: fh.write(text), binary=False)

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
        """Writes a tidy long CSV: ``seed, <grid axes...>, generation, metric, index, value``.

        One row per seed, grid point, generation, metric and entry. For a leaf of shape
        ``(*leading, *extra)``:

        * no extra axis: one row per configuration, ``generation`` and ``index`` empty;
        * one extra axis: a per-generation series, ``generation`` = index along it;
        * two or more: the first extra axis is the generation, the others are the entry's
          ``index`` (``3``, or ``1,0`` for a matrix), e.g. one row per mode of ``mode_shares``.

        ``value`` is always a number: booleans are written 0/1, other numbers in their shortest
        round-trip form for their dtype. Metric names are the dict keys joined with ``"/"``
        (``"value"`` for a single array). The file is written atomically.

        Raises:
            ValueError: if a grid axis is named like a fixed column (``generation``, ``metric``,
                ``index``, ``value``).
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
        for name, leaf in named_leaves(self.values):
            leaf = np.asarray(leaf)
            if leaf.dtype == np.bool_:
                leaf = leaf.astype(np.int8)
            extra = leaf.shape[len(shape):]
            if not extra:
                gens, entries = np.array([""]), [""]
            else:
                gens = np.arange(extra[0]).astype(str)
                entries = ([",".join(map(str, i)) for i in np.ndindex(*extra[1:])]
                           if len(extra) > 1 else [""])
            per_config = len(gens) * len(entries)
            if per_config == 0 or num_configs == 0:
                continue
            cols = [np.repeat(c, per_config) for c in coord_text]
            cols.append(np.tile(np.repeat(gens, len(entries)), num_configs))
            cols.append(np.full(num_configs * per_config, name))
            cols.append(np.tile(np.array(entries), num_configs * len(gens)))
            cols.append(leaf.reshape(-1).astype(str))
            blocks.append(cols)

        def write(fh):
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow([*self.axes, *_CSV_FIXED])
            for cols in blocks:
                writer.writerows(zip(*(c.tolist() for c in cols)))

        atomic_write(os.fspath(path), write, binary=False)


def _file_names(name: str | None) -> tuple[str, str]:
    if name is None:
        return _VALUES_FILE, _RESULT_FILE
    if not isinstance(name, str) or not name or os.sep in name:
        raise ValueError(f"`name` must be a non-empty file stem without {os.sep!r}; got {name!r}.")
    return f"{name}.npz", f"{name}.json"


def _dtype_name(dtype) -> str:
    return jnp.dtype(dtype).name


def _path_name(entry) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def named_leaves(tree) -> list[tuple[str, Any]]:
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



"""Studies from configuration files: validation, chunked and resumable execution, outputs.

A study is a TOML document (read with ``tomllib``) with sections ``[data]``, ``[model]``,
``[reward]``, ``[loop]``, ``[sweep]``, ``[metrics]``, ``[plots]``, an optional ``[quick]`` table of
dotted overrides applied when ``quick = true``, and ``[[claims]]``. Every configuration
``(seed s, grid point g)`` runs the loop of :func:`selfconsume.run` with

* real data drawn once from ``sweep.seed`` (shared by every configuration);
* ``key_init, key_loop = split(split(key_seeds, seeds)[s])``; generation ``t`` uses
  ``split(key_loop, T + 1)[t]`` exactly as :func:`selfconsume.run` does,

so the seeds are common random numbers across the grid. All configurations advance together, a
chunk of generations at a time, in one compiled program (``vmap`` over configurations, ``scan``
over the chunk's generations); after each chunk the state and the history so far are checkpointed
atomically, and :func:`resume` continues from the last checkpoint with identical results.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import glob
import json
import math
import os
import tomllib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from selfconsume import data as data_lib
from selfconsume import metrics as metrics_lib
from selfconsume import models as models_lib
from selfconsume import retrain
from selfconsume import rewards as rewards_lib
from selfconsume.sweep import SweepResult, _atomic_write

__all__ = ["ConfigError", "ClaimFailed", "NumericalError", "load_config", "validate", "run_study", "resume",
           "replot", "DEMO", "to_toml"]


class ConfigError(ValueError):
    """An invalid study configuration; the message names the key and the allowed values."""


class ClaimFailed(RuntimeError):
    """A study's claim did not hold (the results are saved)."""


class NumericalError(RuntimeError):
    """A run turned non-finite; the message names the generation and grid point, and the results
    computed before it are saved (``results.npz`` with ``metadata["complete"] = False``)."""


CLASSIFIER_REWARDS = ("class_probability", "confidence")
GRID_AXES = ("real_fraction", "beta", "num_candidates", "reward_scale", "learning_rate")
_REQUIRED = object()

# section -> key -> (kind, default); kinds: str, int, float, bool, table, list, "float_or_inf"
SCHEMA: dict[str, dict[str, tuple[str, Any]]] = {
    "": {"name": ("str", _REQUIRED), "description": ("str", ""), "quick": ("bool", False)},
    "data": {"name": ("str", _REQUIRED), "num_points": ("int", 4096), "options": ("table", {}),
             "path": ("str", "")},
    "classifier": {"steps": ("int", 2000), "hidden": ("list", [256, 128]), "seed": ("int", 0)},
    "model": {"name": ("str", _REQUIRED), "options": ("table", {})},
    "reward": {"name": ("str", _REQUIRED), "mode": ("int", -1), "options": ("table", {})},
    "loop": {"num_generations": ("int", 20), "num_samples": ("int", 1024), "k": ("int", 4),
             "regime": ("str", "replace"), "beta": ("float_or_inf", 1.0),
             "real_fraction": ("float", 0.0), "num_candidates": ("int", 0),
             "checkpoint_every": ("int", 0)},
    "sweep": {"seeds": ("int", 8), "seed": ("int", 0), "grid": ("table", {})},
    "metrics": {"mode_shares": ("bool", True), "snapshot_points": ("int", 0),
                "exact": ("bool", False), "exact_grid": ("table", {"bins": 128, "low": -1.5,
                                                                  "high": 1.5})},
    "plots": {"metrics": ("list", ["reward_mean"]), "snapshots": ("list", [])},
    "claims": {},
}
CLAIM_KEYS = {"description": "str", "metric": "str", "where": "table", "test": "str",
              "value": "float", "generation": "int", "over": "str", "reference": "str"}
CLAIM_TESTS = ("increases", "decreases", "above", "below", "matches")


# ------------------------------------------------------------------------------------------------
# Configuration
# ------------------------------------------------------------------------------------------------


def _parse_value(text: str):
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _set_dotted(cfg: dict, dotted: str, value) -> None:
    parts = dotted.split(".")
    node = cfg
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"`{dotted}`: `{part}` is not a section")
    node[parts[-1]] = value


def load_config(path: str | None = None, *, text: str | None = None,
                overrides: list[str] = ()) -> dict:
    """Reads a study (file or text), applies ``section.key=value`` overrides, validates it."""
    try:
        if text is None:
            with open(path, "rb") as f:
                cfg = tomllib.load(f)
        else:
            cfg = tomllib.loads(text)
    except FileNotFoundError:
        raise ConfigError(f"configuration file {path!r} does not exist") from None
    except OSError as err:  # a folder, no permission, ...
        raise ConfigError(f"configuration file {path!r} cannot be read: "
                          f"{err.strerror or err}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"configuration {path or '<text>'!r} is not valid TOML: {err}") from None
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects section.key=value; got {item!r}")
        key, value = item.split("=", 1)
        _set_dotted(cfg, key.strip(), _parse_value(value.strip()))
    return validate(cfg)


def _check_kind(where: str, value, kind: str):
    ok = {
        "str": isinstance(value, str),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, (int, float)) and not isinstance(value, bool),
        "float_or_inf": (isinstance(value, (int, float)) and not isinstance(value, bool)) or
                        value == "inf",
        "bool": isinstance(value, bool),
        "table": isinstance(value, dict),
        "list": isinstance(value, list),
    }[kind]
    if not ok:
        names = {"str": "a string", "int": "an integer", "float": "a number", "bool": "true/false",
                 "float_or_inf": 'a number or "inf"', "table": "a table", "list": "a list"}
        raise ConfigError(f"`{where}` must be {names[kind]}; got {value!r}")
    if kind == "float_or_inf" and value == "inf":
        return math.inf
    return float(value) if kind == "float" else value


def _need(where: str, ok: bool, allowed: str, value) -> None:
    if not ok:
        raise ConfigError(f"`{where}` must be {allowed}; got {value!r}")


def validate(cfg: dict) -> dict:
    """Checks every section and key and fills in defaults; raises :class:`ConfigError`."""
    cfg = copy.deepcopy(cfg)
    if cfg.get("quick") is True:  # the same study at a reduced size
        for dotted, value in dict(cfg.get("quick_overrides", {})).items():
            _set_dotted(cfg, dotted, value)
    unknown = set(cfg) - set(SCHEMA) - set(SCHEMA[""]) - {"quick_overrides"}
    if unknown:
        allowed = sorted(set(SCHEMA) - {""} | set(SCHEMA[""]) | {"quick_overrides"})
        raise ConfigError(f"unknown section or key `{sorted(unknown)[0]}`; allowed: "
                          f"{', '.join(allowed)}")
    out: dict[str, Any] = {}
    for section, keys in SCHEMA.items():
        if section == "claims":
            continue
        given = cfg if section == "" else cfg.get(section, {})
        if section and not isinstance(given, dict):
            raise ConfigError(f"`{section}` must be a table; got {given!r}")
        target = out if section == "" else out.setdefault(section, {})
        if section:
            extra = set(given) - set(keys)
            if extra:
                raise ConfigError(f"unknown key `{section}.{sorted(extra)[0]}`; allowed: "
                                  f"{', '.join(sorted(keys))}")
        for key, (kind, default) in keys.items():
            where = f"{section}.{key}" if section else key
            if key in given:
                target[key] = _check_kind(where, given[key], kind)
            elif default is _REQUIRED:
                raise ConfigError(f"`{where}` is required")
            else:
                target[key] = copy.deepcopy(default)
    if "quick_overrides" in cfg:
        out["quick_overrides"] = cfg["quick_overrides"]
    d, m, r, lp, sw = out["data"], out["model"], out["reward"], out["loop"], out["sweep"]
    datasets = sorted(data_lib.DATASETS) + sorted(data_lib.IMAGE_DATASETS)
    _need("data.name", d["name"] in datasets, f"one of {datasets}", d["name"])
    _need("data.path", d["name"] != "cifar10" or d["path"] != "", "the folder holding the CIFAR-10 "
          "python batches (with data.name = \"cifar10\")", d["path"])
    _need("data.options", d["name"] not in data_lib.IMAGE_DATASETS or not d["options"],
          "empty for an image dataset", d["options"])
    _need("reward.name", r["name"] not in CLASSIFIER_REWARDS or d["name"] in
          data_lib.IMAGE_DATASETS, f"a reward of point data (the classifier rewards "
          f"{list(CLASSIFIER_REWARDS)} need data.name in {sorted(data_lib.IMAGE_DATASETS)})",
          r["name"])
    c = out["classifier"]
    _need("classifier.steps", c["steps"] >= 1, "an integer >= 1", c["steps"])
    _need("classifier.hidden", len(c["hidden"]) >= 1 and all(
        isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in c["hidden"]),
        "a non-empty list of integers >= 1", c["hidden"])
    _need("model.name", m["name"] in models_lib.MODELS, f"one of {sorted(models_lib.MODELS)}",
          m["name"])
    _need("reward.name", r["name"] in rewards_lib.REWARDS, f"one of {sorted(rewards_lib.REWARDS)}",
          r["name"])
    _need("data.num_points", d["num_points"] >= 1, "an integer >= 1", d["num_points"])
    for key in ("num_generations", "num_samples", "k"):
        _need(f"loop.{key}", lp[key] >= 1, "an integer >= 1", lp[key])
    _need("loop.regime", lp["regime"] in retrain.REGIMES, f"one of {list(retrain.REGIMES)}",
          lp["regime"])
    _need("loop.beta", lp["beta"] >= 0, 'a number >= 0 or "inf"', lp["beta"])
    _need("loop.real_fraction", 0 <= lp["real_fraction"] <= 1, "in [0, 1]", lp["real_fraction"])
    _need("loop.num_candidates", 0 <= lp["num_candidates"] <= lp["k"],
          f"in [1, loop.k = {lp['k']}] (0 = k)", lp["num_candidates"])
    _need("loop.checkpoint_every", lp["checkpoint_every"] >= 0, "an integer >= 0 (0 = automatic)",
          lp["checkpoint_every"])
    _need("sweep.seeds", sw["seeds"] >= 1, "an integer >= 1", sw["seeds"])
    for axis, values in sw["grid"].items():
        _need(f"sweep.grid.{axis}", axis in GRID_AXES, f"one of {list(GRID_AXES)}", axis)
        _need(f"sweep.grid.{axis}", isinstance(values, list) and len(values) > 0 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in values),
            "a non-empty list of numbers", values)
        lo, hi = {"real_fraction": (0, 1), "beta": (0, math.inf), "num_candidates": (1, lp["k"]),
                  "reward_scale": (-math.inf, math.inf), "learning_rate": (0, math.inf)}[axis]
        _need(f"sweep.grid.{axis}", all(lo <= v <= hi for v in values), f"values in [{lo}, {hi}]",
              values)
        if axis == "num_candidates":
            _need(f"sweep.grid.{axis}", all(isinstance(v, int) for v in values), "integers",
                  values)
        if axis == "learning_rate":
            _need("sweep.grid.learning_rate", m["name"] == "flow_matching",
                  "used with model.name = \"flow_matching\" only", m["name"])
    _need("metrics.snapshot_points", out["metrics"]["snapshot_points"] >= 0, "an integer >= 0",
          out["metrics"]["snapshot_points"])
    grid = out["metrics"]["exact_grid"]
    _need("metrics.exact_grid", set(grid) == {"bins", "low", "high"} and isinstance(
        grid["bins"], int) and grid["bins"] >= 1 and all(
        isinstance(grid[b], (int, float)) and not isinstance(grid[b], bool) for b in ("low", "high"))
        and grid["low"] < grid["high"], "a table { bins = integer >= 1, low = number, high = "
        "number > low }", grid)
    claims = cfg.get("claims", [])
    _need("claims", isinstance(claims, list), "an array of tables [[claims]]", claims)
    out["claims"] = []
    for i, claim in enumerate(claims):
        where = f"claims[{i}]"
        _need(where, isinstance(claim, dict), "a table", claim)
        extra = set(claim) - set(CLAIM_KEYS)
        if extra:
            raise ConfigError(f"unknown key `{where}.{sorted(extra)[0]}`; allowed: "
                              f"{', '.join(sorted(CLAIM_KEYS))}")
        c = {"description": "", "where": {}, "generation": -1, "over": "every_seed",
             "value": 0.0}
        for key, kind in CLAIM_KEYS.items():
            if key in claim:
                c[key] = _check_kind(f"{where}.{key}", claim[key], kind)
        for key in ("metric", "test"):
            if key not in c:
                raise ConfigError(f"`{where}.{key}` is required")
        _need(f"{where}.test", c["test"] in CLAIM_TESTS, f"one of {list(CLAIM_TESTS)}", c["test"])
        if c["test"] == "matches":
            _need(f"{where}.reference", "reference" in c, "the metric to match (with test = "
                  '"matches")', c.get("reference"))
            _need(f"{where}.value", c["value"] > 0, "a number of standard errors > 0 (with test "
                  '= "matches")', c["value"])
        _need(f"{where}.over", c["over"] in ("every_seed", "mean"), '"every_seed" or "mean"',
              c["over"])
        for axis in c["where"]:
            _need(f"{where}.where", axis in sw["grid"], f"keys among the grid axes "
                  f"{list(sw['grid'])}", axis)
        out["claims"].append(c)
    return out


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "inf" if math.isinf(v) and v > 0 else repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot write {v!r} as TOML")


def to_toml(cfg: dict) -> str:
    """Writes a validated configuration back as TOML (``load_config`` of it gives it back)."""
    lines = [f"{k} = {_toml_value(cfg[k])}" for k in SCHEMA[""] if k in cfg]
    for section in SCHEMA:
        if section in ("", "claims"):
            continue
        lines += ["", f"[{section}]"] + [f"{k} = {_toml_value(v)}" for k, v in cfg[section].items()]
    if cfg.get("quick_overrides"):
        lines += ["", "[quick_overrides]"] + [f"{json.dumps(k)} = {_toml_value(v)}"
                                              for k, v in cfg["quick_overrides"].items()]
    for claim in cfg.get("claims", []):
        lines += ["", "[[claims]]"] + [f"{k} = {_toml_value(v)}" for k, v in claim.items()]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------
# Building and running
# ------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Plan:
    cfg: dict
    real: jax.Array
    centers: jax.Array | None
    seed_keys: jax.Array  # (num_configs,) keys: seed s at every grid point
    points: dict[str, np.ndarray]  # axis -> (num_configs,)
    grid_names: tuple[str, ...]
    grid_shape: tuple[int, ...]
    config: retrain.LoopConfig
    chunk: int
    init_fn: Any
    chunk_fn: Any
    final_fn: Any
    exact: np.ndarray | None = None  # (num_configs, T + 1) exact expected reward, or None
    notes: dict = dataclasses.field(default_factory=dict)  # e.g. the classifier's accuracy
    checked: bool = False
    class_names: tuple[str, ...] | None = None


def _load_images(d: dict, seed: int):
    """``(real, train, test, class_names)``: the loop's real images, flattened, and the
    classifier's 80/20 split of the whole labelled set (one fixed permutation of ``seed``)."""
    try:
        if d["name"] == "cifar10":
            ds = data_lib.load_cifar10(d["path"])
            names = data_lib.CIFAR10_CLASSES
        else:
            ds = data_lib.load_digits()
            names = tuple(str(i) for i in range(10))
    except (FileNotFoundError, ValueError) as err:
        raise ConfigError(f"`data.path` = {d['path']!r}: {err}") from None
    x = np.asarray(ds.x, np.float32).reshape(ds.x.shape[0], -1)
    perm = np.random.default_rng(seed).permutation(x.shape[0])
    cut = int(0.8 * x.shape[0])
    real = jnp.asarray(x[perm[: min(d["num_points"], x.shape[0])]])
    train = (x[perm[:cut]], ds.labels[perm[:cut]])
    test = (x[perm[cut:]], ds.labels[perm[cut:]])
    return real, train, test, names


def _train_classifier(cfg: dict, train, test):
    from selfconsume import classifier as classifier_lib

    c = cfg["classifier"]
    clf = classifier_lib.train(jax.random.key(c["seed"]), train[0], train[1], num_classes=10,
                               hidden=tuple(c["hidden"]), steps=c["steps"])
    return clf, float(clf.accuracy(test[0], test[1]))


def _build(cfg: dict, *, checked: bool = False) -> _Plan:
    d, m, r, lp, sw, me = (cfg[k] for k in ("data", "model", "reward", "loop", "sweep",
                                             "metrics"))
    key_data, key_seeds = jax.random.split(jax.random.key(sw["seed"]))
    classifier, notes, class_names = None, {}, None
    if d["name"] in data_lib.IMAGE_DATASETS:
        real, train, test, class_names = _load_images(d, sw["seed"])
        centers = None
        if r["name"] in CLASSIFIER_REWARDS:
            classifier, notes["classifier_test_accuracy"] = _train_classifier(cfg, train, test)
    else:
        try:
            real, extra = data_lib.DATASETS[d["name"]](key_data, d["num_points"], **d["options"])
        except (TypeError, ValueError) as err:
            raise ConfigError(f"`data.options` do not fit dataset {d['name']!r}: {err}") from None
        centers = extra if (extra.ndim == 2 and extra.shape[-1] == real.shape[-1]) else None
    m_opts = dict(m["options"])
    if "dim" not in m_opts and m["name"] in ("gaussian", "gmm", "kde", "flow_matching",
                                             "histogram"):
        m_opts["dim"] = int(real.shape[-1])  # the data's dimension unless given
    try:
        model = models_lib.MODELS[m["name"]](**m_opts)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"`model.options` do not fit model {m['name']!r}: {err}") from None
    r_opts = dict(r["options"])
    if classifier is not None:
        r_opts["classifier"] = classifier
    if r["mode"] >= 0:
        _need("reward.mode", centers is not None and r["mode"] < centers.shape[0],
              f"a mode index of dataset {d['name']!r}", r["mode"])
        r_opts["center"] = centers[r["mode"]]
    factory = rewards_lib.REWARDS[r["name"]]
    base_scale = float(r_opts.pop("scale", 1.0))
    try:
        factory(**r_opts, scale=base_scale)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"`reward.options` do not fit reward {r['name']!r}: {err}") from None
    config = retrain.LoopConfig(num_generations=lp["num_generations"],
                                num_samples=lp["num_samples"], k=lp["k"], regime=lp["regime"])
    t = lp["num_generations"]
    want = min(lp["checkpoint_every"] or max(1, t // 4), t)
    chunk = max(c for c in range(1, want + 1) if t % c == 0)  # one compiled chunk shape

    grid_names = tuple(sw["grid"])
    grid_shape = tuple(len(v) for v in sw["grid"].values())
    num_points = int(np.prod(grid_shape)) if grid_shape else 1
    mesh = np.meshgrid(*[np.asarray(v) for v in sw["grid"].values()], indexing="ij")
    points = {name: np.tile(g.reshape(-1), sw["seeds"]) for name, g in zip(grid_names, mesh)}
    seed_keys = jnp.repeat(jax.random.split(key_seeds, sw["seeds"]), num_points, axis=0)
    real_data, real_weights = retrain.prepare_real(
        jax.eval_shape(lambda k: model.init(k, real), jax.random.key(0)), real, None,
        model=model, config=config)

    def pieces(point):
        scale = point.get("reward_scale", base_scale)
        reward_fn = factory(**r_opts, scale=scale)
        num_cand = point.get("num_candidates", lp["num_candidates"] or None)
        hyper = retrain.Hyperparams(beta=point.get("beta", lp["beta"]),
                                    real_fraction=point.get("real_fraction", lp["real_fraction"]),
                                    num_candidates=num_cand)

        def extra_metrics(state, info):
            out = {}
            if me["mode_shares"] and centers is not None:
                shares = metrics_lib.mode_shares(info.candidates, centers)
                out["mode_shares"] = shares
                out["min_mode_share"] = jnp.min(shares)
                if r["mode"] >= 0:
                    out["rewarded_mode_share"] = shares[r["mode"]]
            if d["name"] == "two_moons":
                out["upper_moon_share"] = jnp.mean(data_lib.moon_of(info.candidates) == 0)
            if classifier is not None:  # class proportions of the model, by the classifier
                shares = jnp.mean(jax.nn.one_hot(classifier.predict(info.candidates),
                                                 classifier.num_classes), axis=0)
                out["class_shares"] = shares
                out["class_entropy"] = metrics_lib.entropy(shares)
                if "class_index" in r_opts:
                    out["rewarded_class_share"] = shares[r_opts["class_index"]]
            if me["snapshot_points"]:
                out["samples"] = info.candidates[: me["snapshot_points"]]
            return out

        record = retrain.recorder(model=model, reward_fn=reward_fn, real_data=real_data,
                                  real_weights=real_weights, metrics_fn=extra_metrics)
        kw = dict(model=model, reward_fn=reward_fn, config=config, record=record)
        return hyper, kw

    def init_one(seed_key, point):
        key_init, _ = jax.random.split(seed_key)
        if "learning_rate" in point:
            params0 = model.init(key_init, real_data, learning_rate=point["learning_rate"])
        else:
            params0 = model.init(key_init, real_data)
        return retrain.init_state(params0, model=model, config=config)

    def loop_keys(seed_key):
        return jax.random.split(jax.random.split(seed_key)[1], t + 1)

    def chunk_one(state, seed_key, start, point):
        hyper, kw = pieces(point)
        keys = jax.lax.dynamic_slice_in_dim(loop_keys(seed_key), start, chunk)
        return retrain.scan_generations(keys, state, hyper, real_data, real_weights, **kw)

    def final_one(state, seed_key, point):
        hyper, kw = pieces(point)
        return retrain.final_record(loop_keys(seed_key)[-1], state, hyper, **kw)

    init_fn = jax.jit(jax.vmap(init_one))
    chunk_fn = jax.vmap(chunk_one, in_axes=(0, 0, None, 0))
    if checked:  # NaN/inf produced by any operation, out-of-bounds indexing: readable errors
        from jax.experimental import checkify

        chunk_fn = checkify.checkify(chunk_fn, errors=checkify.float_checks |
                                     checkify.index_checks)
    chunk_fn = jax.jit(chunk_fn)
    final_fn = jax.jit(jax.vmap(final_one))
    exact = None
    if me["exact"]:
        exact = np.tile(_exact_rewards(cfg, model, real, lambda scale: factory(**r_opts,
                                                                                scale=scale),
                                       base_scale, {n: v[:num_points] for n, v in points.items()},
                                       num_points), (sw["seeds"], 1))
    return _Plan(cfg, real, centers, seed_keys, points, grid_names, grid_shape, config, chunk,
                 init_fn, chunk_fn, final_fn, exact=exact, notes=notes, class_names=class_names,
                 checked=checked)


def _exact_rewards(cfg, model, real, reward_factory, base_scale, points, num_points):
    """The expected reward of the population dynamics (:mod:`selfconsume.theory`) for each grid
    point, ``(num_points, T + 1)``: the real data's histogram on a grid is ``p_0`` and ``p_data``,
    the rewards are those of the cell centres (with ``model.name = "histogram"`` the model's own
    grid, so the sample-based loop follows exactly these dynamics up to sampling noise)."""
    from selfconsume import theory

    m, lp = cfg["model"], cfg["loop"]
    if m["name"] == "histogram":
        defaults = {"low": -1.5, "high": 1.5}
        grid = {"bins": m["options"].get("bins"), **{b: m["options"].get(b, defaults[b])
                                                     for b in defaults}}
    else:
        grid = cfg["metrics"]["exact_grid"]
    _need("metrics.exact", real.ndim == 2 and grid["bins"] ** real.shape[1] <= 2 ** 22,
          f"used with 2-D point data on at most 2**22 grid cells (data shape {real.shape}, "
          f"{grid['bins']} bins per axis)", True)
    hist = models_lib.histogram(grid["bins"], grid["low"], grid["high"], real.shape[1])
    p0 = hist.init(jax.random.key(0), real).probs
    cells = models_lib.histogram_centers(grid["bins"], grid["low"], grid["high"], real.shape[1])
    out = []
    for g in range(num_points):
        point = {n: v[g].item() for n, v in points.items()}
        rewards = reward_factory(point.get("reward_scale", base_scale))(cells)
        k = point.get("num_candidates", lp["num_candidates"] or lp["k"])
        traj = theory.trajectory(p0, rewards, num_generations=lp["num_generations"], k=int(k),
                                 beta=point.get("beta", lp["beta"]), p_data=p0,
                                 real_fraction=point.get("real_fraction", lp["real_fraction"]))
        out.append(np.asarray(traj @ rewards))
    return np.stack(out)


def _save_checkpoint(run_dir: str, done: int, state, history: dict) -> None:
    leaves = jax.tree_util.tree_leaves(state)
    arrays = {f"state/{i}": np.asarray(jax.random.key_data(x) if jnp.issubdtype(
        x.dtype, jax.dtypes.prng_key) else x) for i, x in enumerate(leaves)}
    arrays.update({f"history/{k}": v for k, v in history.items()})
    arrays["done"] = np.asarray(done)
    _atomic_write(os.path.join(run_dir, "checkpoint.npz"),
                  lambda f: np.savez(f, **arrays), binary=True)


def _load_checkpoint(run_dir: str, plan: _Plan):
    with np.load(os.path.join(run_dir, "checkpoint.npz")) as z:
        done = int(z["done"])
        shapes = jax.eval_shape(plan.init_fn, plan.seed_keys, _point_arrays(plan))
        treedef = jax.tree_util.tree_structure(shapes)
        leaves = [jnp.asarray(z[f"state/{i}"]) for i in range(treedef.num_leaves)]
        history = {k.split("/", 1)[1]: z[k] for k in z.files if k.startswith("history/")}
    return done, jax.tree_util.tree_unflatten(treedef, leaves), history


def _point_arrays(plan: _Plan) -> dict:
    out = {}
    for name, values in plan.points.items():
        dtype = jnp.int32 if name == "num_candidates" else jnp.float32
        out[name] = jnp.asarray(values, dtype)
    return out


def _progress(total: int, initial: int, quiet: bool, name: str):
    if quiet:
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return None
    return tqdm(total=total, initial=initial, desc=name, unit="gen")


def _result(plan: _Plan, history: dict, *, complete: bool = True) -> SweepResult:
    """The history (configuration axis first) as a seed-leading :class:`SweepResult`."""
    if plan.exact is not None:
        num_gens = next(iter(history.values())).shape[1]
        history = dict(history, exact_reward=plan.exact[:, :num_gens])
    seeds = plan.cfg["sweep"]["seeds"]
    values = {k: v.reshape((seeds,) + plan.grid_shape + v.shape[1:]) for k, v in history.items()}
    coords = {"seed": np.arange(seeds)}
    coords.update({k: np.asarray(v) for k, v in plan.cfg["sweep"]["grid"].items()})
    metadata = {"study": plan.cfg["name"], "num_generations": plan.config.num_generations,
                "checkpoint_every": plan.chunk, "complete": complete, "jax": jax.__version__,
                "device": jax.devices()[0].device_kind, **plan.notes}
    return SweepResult(values=values, axes=("seed",) + plan.grid_names, coords=coords,
                       metadata=metadata)


def _describe_config(plan: _Plan, index: int) -> str:
    """"seed s, real_fraction=0.1, ..." for a flat configuration index."""
    num_points = len(plan.seed_keys) // plan.cfg["sweep"]["seeds"]
    point = ", ".join(f"{name}={values[index]:g}" for name, values in plan.points.items())
    return f"seed {index // num_points}" + (f", {point}" if point else "")


def _stop(plan: _Plan, run_dir: str, history: dict, generation: int, what: str):
    """Saves the results of generations ``0..generation`` and raises :class:`NumericalError`."""
    kept = {k: v[:, : generation + 1] for k, v in history.items()}
    if kept and next(iter(kept.values())).shape[1] > 0:
        result = _result(plan, kept, complete=False)
        result.metadata["stopped_at_generation"] = generation
        result.save(run_dir, name="results")
        saved = f"generations 0..{generation} are saved in {os.path.join(run_dir, 'results.npz')}"
    else:
        saved = "nothing was computed before it"
    raise NumericalError(f"generation {generation}: {what}; {saved}")


def _execute(plan: _Plan, run_dir: str, *, quiet: bool, start=None) -> SweepResult:
    points = _point_arrays(plan)
    t, chunk = plan.config.num_generations, plan.chunk
    if start is None:
        done, state, history = 0, plan.init_fn(plan.seed_keys, points), {}
    else:
        done, state, history = start
    bar = _progress(t, done, quiet, plan.cfg["name"])
    try:
        while done < t:
            out = plan.chunk_fn(state, plan.seed_keys, jnp.int32(done), points)
            if plan.checked:
                err, out = out
                message = err.get()
                if message is not None:
                    first = message.strip().splitlines()[0]
                    _stop(plan, run_dir, history, done - 1,
                          f"checked mode: {first} (during generations {done}..{done + chunk - 1})")
            state, hist = out
            hist = jax.tree_util.tree_map(np.asarray, hist)
            bad = ~hist["fit_is_finite"].astype(bool)  # (configs, chunk)
            merged = {k: np.concatenate([history[k], v], axis=1) if k in history else v
                      for k, v in hist.items()}
            if bad.any():  # the last checkpoint (all finite) is kept
                step = int(np.argmax(bad.any(axis=0)))
                configs = np.flatnonzero(bad[:, step])
                _stop(plan, run_dir, merged, done + step,
                      f"the refit is not finite for {_describe_config(plan, int(configs[0]))} "
                      f"({len(configs)} of {bad.shape[0]} configurations)")
            history = merged
            done += chunk
            _save_checkpoint(run_dir, done, state, history)
            if bar is not None:
                bar.update(chunk)
    finally:
        if bar is not None:
            bar.close()
    last = jax.tree_util.tree_map(np.asarray, plan.final_fn(state, plan.seed_keys, points))
    if not last["fit_is_finite"].all():
        configs = np.flatnonzero(~last["fit_is_finite"].astype(bool))
        _stop(plan, run_dir, history, t - 1, f"the final params are not finite for "
              f"{_describe_config(plan, int(configs[0]))} ({len(configs)} configurations)")
    history = {k: np.concatenate([history[k], last[k][:, None]], axis=1) for k in history}
    return _result(plan, history)


# ------------------------------------------------------------------------------------------------
# Summaries, claims, figures, entry points
# ------------------------------------------------------------------------------------------------


def _select(result: SweepResult, metric: str, where: dict) -> np.ndarray:
    """``values[metric]`` at the grid values in ``where``: shape ``(seeds, rest..., T + 1, ...)``."""
    if metric not in result.values:
        raise ConfigError(f"claim metric {metric!r} is not recorded; available: "
                          f"{', '.join(sorted(result.values))}")
    values = result.values[metric]
    for axis in reversed(result.axes[1:]):
        i = result.axes.index(axis)
        if axis in where:
            hits = np.flatnonzero(np.isclose(result.coords[axis], where[axis]))
            if hits.size == 0:
                raise ConfigError(f"claim: {axis} = {where[axis]} is not a grid value; grid: "
                                  f"{result.coords[axis].tolist()}")
            values = np.take(values, hits[0], axis=i)
    return values


def evaluate_claims(result: SweepResult, claims: list[dict]) -> list[dict]:
    """Evaluates each claim: its per-seed (or mean) value and whether it holds."""
    out = []
    for claim in claims:
        v = _select(result, claim["metric"], claim["where"])  # (seeds, [other grid], T + 1)
        v = v.reshape(v.shape[0], -1, v.shape[-1]) if v.ndim >= 2 else v[:, None, None]
        if claim["over"] == "mean":
            v = v.mean(axis=0, keepdims=True)
        test, value, gen = claim["test"], claim["value"], claim["generation"]
        if test == "matches":  # |seed mean - reference| <= value standard errors, every generation
            ref = _select(result, claim["reference"], claim["where"])
            ref = ref.reshape(ref.shape[0], -1, ref.shape[-1]).mean(axis=0)
            v = _select(result, claim["metric"], claim["where"])
            v = v.reshape(v.shape[0], -1, v.shape[-1])
            se = v.std(axis=0, ddof=1) / np.sqrt(v.shape[0]) if v.shape[0] > 1 else np.inf
            z = np.abs(v.mean(axis=0) - ref) / np.maximum(se, 1e-12)
            out.append(dict(claim, holds=bool(np.all(z <= value)),
                            observed=z.max(axis=-1).tolist()))
            continue
        if test == "increases":
            ok, stat = v[..., -1] > v[..., 0], v[..., -1] - v[..., 0]
        elif test == "decreases":
            ok, stat = v[..., -1] < v[..., 0], v[..., -1] - v[..., 0]
        elif test == "above":
            ok, stat = v[..., gen] > value, v[..., gen]
        else:
            ok, stat = v[..., gen] < value, v[..., gen]
        out.append(dict(claim, holds=bool(np.all(ok)), observed=stat.reshape(-1).tolist()))
    return out


def summarize(result: SweepResult, claims: list[dict]) -> dict:
    """Final-generation metrics per grid point (mean and 95% interval over seeds) and claims."""
    from selfconsume import plotting

    rows = []
    grid_axes = result.axes[1:]
    shape = tuple(len(result.coords[a]) for a in grid_axes)
    for index in np.ndindex(*shape):
        point = {a: result.coords[a][i].item() for a, i in zip(grid_axes, index)}
        final = {}
        for name, v in result.values.items():
            v = v[(slice(None),) + index]
            if v.ndim != 2:  # scalar-per-generation metrics only
                continue
            mean, low, high = plotting.mean_and_interval(v[:, -1].astype(np.float64))
            final[name] = {"mean": float(mean), "low": float(low), "high": float(high)}
        rows.append({"point": point, "final": final})
    return {"grid": rows, "claims": evaluate_claims(result, claims)}


def _figures(result: SweepResult, cfg: dict, run_dir: str, plan: _Plan | None = None) -> list:
    from selfconsume import plotting

    folder = os.path.join(run_dir, "figures")
    written = []
    title = cfg["name"]
    for metric in cfg["plots"]["metrics"]:
        if metric in result.values:
            path = os.path.join(folder, f"{metric}.png")
            reference = ("exact_reward" if metric == "reward_mean" and "exact_reward" in
                         result.values else None)
            plotting.metric_vs_generation(result, metric, path=path, title=title,
                                          reference=reference)
            written.append(path)
    if len(result.axes) == 3:
        for metric in cfg["plots"]["metrics"][:1]:
            if metric in result.values:
                path = os.path.join(folder, f"{metric}_heatmap.png")
                plotting.heatmap(result, metric, path=path, title=title)
                written.append(path)
    if "class_shares" in result.values:
        path = os.path.join(folder, "class_proportions.png")
        plotting.class_proportions(result, path=path, title=title, class_names=None if plan is None
                                   else plan.class_names)
        written.append(path)
    gens = [g for g in cfg["plots"]["snapshots"] if 0 <= g <= cfg["loop"]["num_generations"]]
    samples = result.values.get("samples")
    grid_axes = result.axes[1:]
    labels = [", ".join(f"{a}={result.coords[a][i].item():g}" for a, i in zip(grid_axes, idx))
              for idx in np.ndindex(*[len(result.coords[a]) for a in grid_axes])] or [""]
    image_shape = data_lib.IMAGE_SHAPES.get(cfg["data"]["name"])
    if gens and samples is not None and image_shape is not None:
        rows = samples[0].reshape((-1,) + samples.shape[-3:])  # seed 0: (points, T + 1, n, d)
        path = os.path.join(folder, "samples.png")
        plotting.image_samples(rows[:, gens], gens, image_shape, row_labels=labels, path=path,
                               title=title)
        written.append(path)
    elif gens and samples is not None and samples.shape[-1] == 2:
        rows = samples[0].reshape((-1,) + samples.shape[-3:])  # seed 0: (points, T + 1, n, 2)
        reward_fn = None
        if plan is not None:
            r = cfg["reward"]
            opts = dict(r["options"])
            if r["mode"] >= 0:
                opts["center"] = plan.centers[r["mode"]]
            fn = rewards_lib.REWARDS[r["name"]](**opts)
            reward_fn = lambda x: np.asarray(fn(jnp.asarray(x, jnp.float32)))  # noqa: E731
        path = os.path.join(folder, "snapshots.png")
        plotting.snapshots(rows[:, gens], gens, reward_fn=reward_fn,
                           centers=None if plan is None or plan.centers is None
                           else np.asarray(plan.centers),
                           path=path, title=title, row_labels=labels)
        written.append(path)
    return written


def _write_outputs(result: SweepResult, cfg: dict, run_dir: str, plan: _Plan | None) -> dict:
    result.save(run_dir, name="results")  # results.npz + results.json
    scalar = SweepResult(values={k: v for k, v in result.values.items()
                                 if v.ndim == len(result.axes) + 1},
                         axes=result.axes, coords=result.coords, metadata=result.metadata)
    scalar.to_csv(os.path.join(run_dir, "metrics.csv"))
    summary = summarize(result, cfg["claims"])
    summary["figures"] = _figures(result, cfg, run_dir, plan)
    _atomic_write(os.path.join(run_dir, "summary.json"),
                  lambda f: json.dump(summary, f, indent=2, default=float), binary=False)
    return summary


def new_run_dir(cfg: dict, out: str | None, *, force: bool) -> str:
    """``out`` or ``runs/<name>-<timestamp>``; refuses an existing non-empty folder without
    ``force``."""
    if out is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = os.path.join("runs", f"{cfg['name']}-{stamp}")
    if os.path.isdir(out) and os.listdir(out) and not force:
        raise FileExistsError(f"run folder {out!r} exists and is not empty; pass --force to "
                              "overwrite it")
    os.makedirs(out, exist_ok=True)
    return out


def run_study(cfg: dict, run_dir: str, *, quiet: bool = False, checked: bool = False) -> dict:
    """Runs a validated study into ``run_dir`` (which must exist) and writes every output.

    Args:
        cfg: a validated configuration (:func:`load_config`).
        run_dir: the run folder.
        quiet: no progress bar.
        checked: compile with ``jax.experimental.checkify`` float and index checks, so that the
            first operation producing a NaN or inf (or indexing out of bounds) stops the run with
            its location (slower; for debugging).

    Returns:
        The summary (also ``run_dir/summary.json``).

    Raises:
        NumericalError: a refit (or, in checked mode, any operation) turned non-finite; the
            results of the generations before it are saved.
    """
    _atomic_write(os.path.join(run_dir, "config.toml"), lambda f: f.write(to_toml(cfg)),
                  binary=False)
    for stale in ("checkpoint.npz", "summary.json"):
        if os.path.exists(os.path.join(run_dir, stale)):
            os.remove(os.path.join(run_dir, stale))
    plan = _build(cfg, checked=checked)
    result = _execute(plan, run_dir, quiet=quiet)
    summary = _write_outputs(result, cfg, run_dir, plan)
    os.remove(os.path.join(run_dir, "checkpoint.npz"))
    return summary


def resume(run_dir: str, *, quiet: bool = False, checked: bool = False) -> dict:
    """Continues an interrupted run from its last checkpoint (or from the start if none)."""
    path = os.path.join(run_dir, "config.toml")
    if not os.path.exists(path):
        raise ConfigError(f"{run_dir!r} is not a run folder: {path!r} is missing")
    cfg = load_config(path)
    for folder in (run_dir, os.path.join(run_dir, "figures")):  # left by a write that was killed
        for stale in glob.glob(os.path.join(folder, ".*.tmp")):
            os.remove(stale)
    if os.path.exists(os.path.join(run_dir, "summary.json")) and not os.path.exists(
            os.path.join(run_dir, "checkpoint.npz")):
        with open(os.path.join(run_dir, "summary.json")) as f:
            return json.load(f)  # already complete
    plan = _build(cfg, checked=checked)
    start = None
    if os.path.exists(os.path.join(run_dir, "checkpoint.npz")):
        start = _load_checkpoint(run_dir, plan)
    result = _execute(plan, run_dir, quiet=quiet, start=start)
    summary = _write_outputs(result, cfg, run_dir, plan)
    os.remove(os.path.join(run_dir, "checkpoint.npz"))
    return summary


def replot(run_dir: str) -> list:
    """Redraws the figures of a finished run from its saved results."""
    cfg = load_config(os.path.join(run_dir, "config.toml"))
    result = SweepResult.load(run_dir, name="results")
    plan = None
    try:
        plan = _build(cfg)
    except ConfigError:
        pass
    return _figures(result, cfg, run_dir, plan)


DEMO = """
name = "demo"
description = "Curated retraining of a GMM on the 8-mode ring, K = 4, reward on mode 0"

[data]
name = "gaussian_ring"
num_points = 4096

[model]
name = "gmm"
options = { num_components = 8, dim = 2, em_steps = 10 }

[reward]
name = "distance"
mode = 0
options = { scale = 4.0, radius = 0.1 }

[loop]
num_generations = 20
num_samples = 1024
k = 4
beta = 1.0
checkpoint_every = 5

[sweep]
seeds = 8
grid = { real_fraction = [0.0, 0.1, 0.25, 0.5] }

[metrics]
snapshot_points = 1000

[plots]
metrics = ["reward_mean", "rewarded_mode_share"]
snapshots = [0, 5, 10, 20]

[quick_overrides]
"loop.num_generations" = 4
"loop.num_samples" = 256
"sweep.seeds" = 2
"data.num_points" = 1024

[[claims]]
description = "without real data the expected reward rises for every seed"
metric = "reward_mean"
where = { real_fraction = 0.0 }
test = "increases"

[[claims]]
description = "without real data the rewarded mode ends above 90% of the mass (seed mean)"
metric = "rewarded_mode_share"
where = { real_fraction = 0.0 }
test = "above"
value = 0.9
over = "mean"
"""

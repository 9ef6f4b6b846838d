"""Study configuration: the TOML schema, its validation and its round trip.

A study is a TOML document with sections ``[data]``, ``[model]``, ``[reward]``, ``[curator]``,
``[reward_model]``, ``[feedback]``, ``[preference]``, ``[ecosystem]``, ``[loop]``, ``[sweep]``,
``[metrics]``, ``[plots]``, ``[classifier]`` (image rewards), an optional
``[quick_overrides]`` table of dotted keys applied when ``quick = true`` (``--quick``), and
``[[claims]]``. :func:`load_config` reads it, applies ``section.key=value`` overrides and
:func:`validate` checks every key, filling in defaults; every problem is a :class:`ConfigError`
whose one-line message names the key, the value and what is allowed. What can only be checked
against the data (a model that does not fit them, a metric the study does not record) is checked
when the study is built (:mod:`selfconsume.study.build`), before anything is compiled.

Studies shipped with the package (``selfconsume/study/studies/*.toml``) run by name from any
folder (:func:`find_study`).

``[curator]`` names a choice rule of :mod:`selfconsume.curators` and its options (nested curators
as inline tables with a ``name``); empty, the loop keeps 1 of ``loop.k`` with
``softmax(loop.beta * r)``. Its numeric options are grid axes ``curator.<option>`` (dotted into
nested curators, ``curator.base.beta``; list entries by index, ``curator.weights.0``; sweeping
entry 0 of a two-component mixture's weights sets ``weights = [q, 1 - q]``). ``reward.columns``
adds reward functions (tables like ``[reward]``: ``name``, ``mode``, ``options``) as columns 1, 2,
... after the main reward (column 0), for curators that read several; the reward metrics of
column j are recorded as ``<metric>_<j>`` (``reward_mean_1``), the main reward's keep their
names.

``[reward_model]`` (``name``: a family of :mod:`selfconsume.reward_models`, ``options``) makes
the curator read a learned reward, refitted from comparisons judged on ``[reward]``;
``[feedback]`` says how (``num_comparisons``, ``k``, ``judge`` as a curator table, ``eps``,
``flip``, ``refit_every``, ``num_heldout``: :func:`selfconsume.reward_models.feedback`). Grid
axes ``reward_model.<option>`` (numeric options: ``l2``, ``learning_rate``), ``feedback.eps``
and ``feedback.judge.<option>`` sweep them.

``[preference]`` (``name``: ``"linear"``, ``options``: ``features``, ``weights0``, ``eta``) makes
the curator read a drifting preference (:mod:`selfconsume.preferences`); ``[reward]`` stays the
reference reward of the reward metrics. Grid axis ``preference.eta``.

``[ecosystem]`` with ``num_models = M >= 1`` runs M models retrained on each other's curated
samples (:mod:`selfconsume.ecosystem`): ``interaction`` (an M x M list of rows summing to one)
or, empty, ``coupling`` c (:math:`W = (1 - c) I + c / M`); per-model ``real_fractions``,
``betas`` (the default Luce rule), ``curators`` (tables of one structure) and ``columns``
(reward columns), each empty for the loop's value for every model. Grid axes
``ecosystem.coupling``, ``ecosystem.interaction.<i>.<j>`` (the row's diagonal entry takes up the
difference, so the row still sums to one), ``ecosystem.real_fractions.<i>`` and
``ecosystem.betas.<i>``. The results gain a ``model`` axis after the grid axes (a ``model``
column in ``metrics.csv``, one line per model in the figures; claims select one with
``where = { model = i }``).
"""

from __future__ import annotations

import copy
import glob
import json
import math
import os
import tomllib
from typing import Any

from selfconsume import curators as curators_lib
from selfconsume import data as data_lib
from selfconsume import models as models_lib
from selfconsume import preferences as preferences_lib
from selfconsume import retrain
from selfconsume import reward_models as reward_models_lib
from selfconsume import rewards as rewards_lib

__all__ = ["ConfigError", "ClaimFailed", "NumericalError", "load_config", "validate", "to_toml",
           "curator_from", "reward_model_from", "feedback_from", "preference_from",
           "ecosystem_from",
           "find_study", "shipped_studies", "DEMO", "SCHEMA", "GRID_AXES", "CLAIM_TESTS",
           "STUDIES_DIR"]

STUDIES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "studies")


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
    "reward": {"name": ("str", _REQUIRED), "mode": ("int", -1), "options": ("table", {}),
               "columns": ("list", [])},
    "curator": {"name": ("str", ""), "options": ("table", {})},
    "reward_model": {"name": ("str", ""), "options": ("table", {})},
    "feedback": {"num_comparisons": ("int", 1024), "k": ("int", 2), "judge": ("table", {}),
                 "eps": ("float", 0.0), "flip": ("str", "random"), "refit_every": ("int", 1),
                 "num_heldout": ("int", 256)},
    "preference": {"name": ("str", ""), "options": ("table", {})},
    "ecosystem": {"num_models": ("int", 0), "interaction": ("list", []),
                  "coupling": ("float", 0.0), "real_fractions": ("list", []),
                  "betas": ("list", []), "curators": ("list", []), "columns": ("list", [])},
    "loop": {"num_generations": ("int", 20), "num_samples": ("int", 1024), "k": ("int", 4),
             "regime": ("str", "replace"), "beta": ("float_or_inf", 1.0),
             "real_fraction": ("float", 0.0), "num_candidates": ("int", 0),
             "checkpoint_every": ("int", 0)},
    "sweep": {"seeds": ("int", 8), "seed": ("int", 0), "grid": ("table", {}),
              "devices": ("int", 0)},
    "metrics": {"mode_shares": ("bool", True), "snapshot_points": ("int", 0),
                "exact": ("bool", False), "exact_grid": ("table", {})},
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
        if not isinstance(cfg.get("quick_overrides"), dict) or not cfg["quick_overrides"]:
            raise ConfigError("`quick` = true needs a [quick_overrides] table of dotted keys "
                              "(the reduced sizes); this study has none")
        for dotted, value in dict(cfg["quick_overrides"]).items():
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
    _need("sweep.devices", sw["devices"] >= 0, "an integer >= 0 (0 = every device: one per core "
          "on a CPU)", sw["devices"])
    _validate_reward_columns(r)
    curated_by = _validate_curator(out, len(r["columns"]) + 1)
    _validate_reward_model(out)
    _validate_preference(out)
    _validate_ecosystem(out)
    for axis, values in sw["grid"].items():
        if axis.split(".")[0] in _OPTION_AXES and "." in axis:
            _validate_option_axis(out, axis, values)
            continue
        _need(f"sweep.grid.{axis}", axis in GRID_AXES, f"one of {list(GRID_AXES)}, "
              "curator.<option> (with a [curator]), reward_model.<option>, feedback.eps or "
              "feedback.judge.<option> (with a [reward_model]), preference.eta (with a "
              "[preference]) or ecosystem.<option> (with an [ecosystem])", axis)
        _need(f"sweep.grid.{axis}", not curated_by or axis not in ("beta", "num_candidates"),
              f"a curator option with [curator] name = {curated_by!r} (sweep curator.<option>; "
              "loop.beta and num_candidates belong to the default Luce rule)", axis)
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
    _need("metrics.exact_grid", not grid or (set(grid) == {"bins", "low", "high"} and isinstance(
        grid["bins"], int) and grid["bins"] >= 1 and all(
        isinstance(grid[b], (int, float)) and not isinstance(grid[b], bool) for b in ("low", "high"))
        and grid["low"] < grid["high"]), "a table { bins = integer >= 1, low = number, high = "
        "number > low } (or {} for a grid that covers the data)", grid)
    t = lp["num_generations"]
    snaps = out["plots"]["snapshots"]
    _need("plots.snapshots", all(isinstance(g, int) and not isinstance(g, bool) and 0 <= g <= t
                                 for g in snaps),
          f"a list of generations in [0, loop.num_generations = {t}]", snaps)
    _need("plots.snapshots", not snaps or out["metrics"]["snapshot_points"] > 0,
          "empty unless metrics.snapshot_points > 0 (the snapshots draw recorded samples)", snaps)
    _need("plots.metrics", all(isinstance(m, str) for m in out["plots"]["metrics"]),
          "a list of metric names", out["plots"]["metrics"])
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
        eco = out["ecosystem"]["num_models"]
        for axis, value in c["where"].items():
            _need(f"{where}.where", axis in sw["grid"] or (eco and axis == "model"),
                  f"keys among the grid axes {list(sw['grid'])}"
                  + (" and model" if eco else ""), axis)
            if axis == "model":
                _need(f"{where}.where.model", isinstance(value, int) and 0 <= value < eco,
                      f"a model index in [0, {eco - 1}]", value)
        out["claims"].append(c)
    return out


def _validate_reward_columns(r: dict) -> None:
    for i, col in enumerate(r["columns"]):
        where = f"reward.columns[{i}]"
        _need(where, isinstance(col, dict) and "name" in col and set(col) <= {
            "name", "mode", "options"}, "a table { name = ..., mode = ..., options = {...} }", col)
        _need(f"{where}.name", col["name"] in rewards_lib.REWARDS and col["name"] not in
              CLASSIFIER_REWARDS, f"one of {sorted(set(rewards_lib.REWARDS) - set(CLASSIFIER_REWARDS))}",
              col["name"])
        _need(f"{where}.mode", isinstance(col.get("mode", -1), int), "an integer",
              col.get("mode"))
        _need(f"{where}.options", isinstance(col.get("options", {}), dict), "a table",
              col.get("options"))


def _validate_curator(out: dict, num_columns: int) -> str:
    """Checks ``[curator]`` by building it; returns its name ('' for the default Luce rule)."""
    cur, lp = out["curator"], out["loop"]
    if not cur["name"]:
        _need("curator.options", not cur["options"], "empty without a curator.name",
              cur["options"])
        return ""
    _need("curator.name", cur["name"] in curators_lib.CURATORS,
          f"one of {sorted(curators_lib.CURATORS)}", cur["name"])
    built = curator_from(cur)
    for column in built.columns():
        _need("curator.options", column is None and num_columns == 1 or column is not None
              and column < num_columns, f"reward columns in [0, {num_columns - 1}] (column 0 is "
              f"[reward], 1.. are reward.columns; `column` is required with several)", cur["options"])
    try:
        kept = built.kept(lp["k"])
    except ValueError as err:
        raise ConfigError(f"`curator.options`: {err}") from None
    _need("loop.num_samples", lp["num_samples"] % kept == 0, f"a multiple of the {kept} samples "
          f"the curator keeps per group", lp["num_samples"])
    _need("loop.num_candidates", lp["num_candidates"] == 0, "0 with a [curator] (it applies to "
          "the default Luce rule)", lp["num_candidates"])
    return cur["name"]


def curator_from(section: dict, point: dict | None = None):
    """The curator of a ``[curator]`` section with the grid values of ``point`` (keys
    ``curator.<option>``) substituted; ``None`` without a name. Raises :class:`ConfigError`."""
    if not section["name"]:
        return None
    options = _substituted(section["options"], point, "curator.")
    try:
        return curators_lib.get(section["name"], **options)
    except ValueError as err:
        raise ConfigError(f"`curator.options` do not fit curator {section['name']!r}: "
                          f"{str(err).splitlines()[0]}") from None


def _set_option(options, path: list[str], value) -> None:
    node = options
    for part in path[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    last = path[-1]
    if isinstance(node, list):
        node[int(last)] = value
        if path[-2:-1] == ["weights"] and len(node) == 2 and last == "0":
            node[1] = 1 - value  # a two-component mixture swept by its first weight
        if len(path) == 3 and path[0] == "interaction" and path[1] != last:
            i = int(path[1])  # an entry of W: the diagonal takes up the rest of the row
            node[i] = 1 - sum(v for j, v in enumerate(node) if j != i)
    else:
        node[last] = value


def _validate_reward_model(out: dict) -> None:
    """Checks ``[reward_model]`` and ``[feedback]`` by building them."""
    rm, fb = out["reward_model"], out["feedback"]
    defaults = {key: default for key, (_, default) in SCHEMA["feedback"].items()}
    if not rm["name"]:
        _need("reward_model.options", not rm["options"], "empty without a reward_model.name",
              rm["options"])
        changed = sorted(key for key in fb if fb[key] != defaults[key])
        _need(f"feedback.{changed[0]}" if changed else "feedback", not changed,
              "left at its default without a [reward_model] name", fb[changed[0]]
              if changed else None)
        return
    _need("reward_model.name", rm["name"] in reward_models_lib.REWARD_MODELS,
          f"one of {sorted(reward_models_lib.REWARD_MODELS)}", rm["name"])
    _need("feedback.flip", fb["flip"] in reward_models_lib.FLIPS,
          f"one of {list(reward_models_lib.FLIPS)}", fb["flip"])
    _need("reward.columns", not out["reward"]["columns"], "empty with a [reward_model] (the judge "
          "reads the one true reward)", out["reward"]["columns"])
    _need("metrics.exact", not out["metrics"]["exact"], "false with a [reward_model] (the exact "
          "dynamics of a learned reward are sc.theory.reward_model_trajectory, tabular only)",
          out["metrics"]["exact"])
    reward_model_from(out)
    feedback_from(out)


def reward_model_from(cfg: dict, point: dict | None = None):
    """The reward model of ``[reward_model]`` with the grid values of ``point`` (keys
    ``reward_model.<option>``) substituted; ``None`` without a name. Raises :class:`ConfigError`."""
    section = cfg["reward_model"]
    if not section["name"]:
        return None
    options = _substituted(section["options"], point, "reward_model.")
    try:
        return reward_models_lib.get(section["name"], **options)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"`reward_model.options` do not fit reward model {section['name']!r}: "
                          f"{str(err).splitlines()[0]}") from None


def feedback_from(cfg: dict, point: dict | None = None):
    """The :func:`selfconsume.reward_models.feedback` of ``[feedback]`` with the grid values of
    ``point`` (``feedback.eps``, ``feedback.judge.<option>``) substituted; ``None`` without a
    ``[reward_model]``. Raises :class:`ConfigError`."""
    if not cfg["reward_model"]["name"]:
        return None
    options = _substituted(cfg["feedback"], point, "feedback.")
    judge = options.pop("judge")
    try:
        if judge:
            judge = dict(judge)
            judge = curators_lib.get(judge.pop("name", ""), **judge)
        return reward_models_lib.feedback(judge=judge or None, **options)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"`feedback` does not give a feedback protocol: "
                          f"{str(err).splitlines()[0]}") from None


def _validate_preference(out: dict) -> None:
    """Checks ``[preference]`` by building it."""
    pref = out["preference"]
    if not pref["name"]:
        _need("preference.options", not pref["options"], "empty without a preference.name",
              pref["options"])
        return
    _need("preference.name", pref["name"] in preferences_lib.PREFERENCES,
          f"one of {sorted(preferences_lib.PREFERENCES)}", pref["name"])
    _need("reward_model.name", not out["reward_model"]["name"], "empty with a [preference] (the "
          "curator reads one reward)", out["reward_model"]["name"])
    _need("metrics.exact", not out["metrics"]["exact"], "false with a [preference] (the exact "
          "dynamics of a drifting preference are sc.theory.drift_trajectory)",
          out["metrics"]["exact"])
    preference_from(out)


def preference_from(cfg: dict, point: dict | None = None):
    """The drifting preference of ``[preference]`` with ``preference.eta`` of ``point``
    substituted; ``None`` without a name. Raises :class:`ConfigError`."""
    section = cfg["preference"]
    if not section["name"]:
        return None
    options = _substituted(section["options"], point, "preference.")
    if "weights0" not in options:
        raise ConfigError("`preference.options.weights0` is required: the initial weights w_0 "
                          "of the preference (one per feature)")
    try:
        return preferences_lib.get(section["name"], **options)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"`preference.options` do not fit preference {section['name']!r}: "
                          f"{str(err).splitlines()[0]}") from None


def _per_model_list(eco: dict, key: str, m: int, kind: str, low=None, high=None) -> None:
    values = eco[key]
    _need(f"ecosystem.{key}", not values or len(values) == m, f"empty or one entry per model "
          f"({m})", values)
    for v in values:
        if kind == "int":
            good = isinstance(v, int) and not isinstance(v, bool) and v >= 0
        elif kind == "table":
            good = isinstance(v, dict) and isinstance(v.get("name"), str)
        else:
            good = isinstance(v, (int, float)) and not isinstance(v, bool) and (
                low is None or v >= low) and (high is None or v <= high)
        allowed = {"int": "integers >= 0", "table": "curator tables { name = ..., ... }"}.get(
            kind, f"numbers in [{low}, {high}]")
        _need(f"ecosystem.{key}", good, allowed, values)


def _validate_ecosystem(out: dict) -> None:
    """Checks ``[ecosystem]`` by building it."""
    eco, lp = out["ecosystem"], out["loop"]
    m = eco["num_models"]
    defaults = {key: default for key, (_, default) in SCHEMA["ecosystem"].items()}
    if m == 0:
        changed = sorted(key for key in eco if eco[key] != defaults[key])
        _need(f"ecosystem.{changed[0]}" if changed else "ecosystem", not changed,
              "left at its default without ecosystem.num_models >= 1",
              eco[changed[0]] if changed else None)
        return
    _need("ecosystem.num_models", m >= 1, "an integer >= 1 (0: no ecosystem)", m)
    _need("loop.regime", lp["regime"] == "replace", '"replace" with an [ecosystem]',
          lp["regime"])
    _need("reward_model.name", not out["reward_model"]["name"], "empty with an [ecosystem] "
          "(its curators read the [reward] columns)", out["reward_model"]["name"])
    _need("metrics.exact", not out["metrics"]["exact"], "false with an [ecosystem] (its exact "
          "dynamics are sc.theory.ecosystem_trajectory)", out["metrics"]["exact"])
    _need("ecosystem.coupling", 0 <= eco["coupling"] <= 1, "in [0, 1]", eco["coupling"])
    _per_model_list(eco, "real_fractions", m, "float", 0, 1)
    _per_model_list(eco, "betas", m, "float", 0, math.inf)
    _per_model_list(eco, "columns", m, "int")
    _per_model_list(eco, "curators", m, "table")
    _need("ecosystem.curators", not eco["curators"] or not out["curator"]["name"],
          "empty with a [curator] (that curator is every model's)", eco["curators"])
    _need("ecosystem.betas", not eco["betas"] or not (out["curator"]["name"] or eco["curators"]),
          "empty with curators (betas set the default Luce rule)", eco["betas"])
    columns = len(out["reward"]["columns"]) + 1
    _need("ecosystem.columns", all(c < columns for c in eco["columns"]),
          f"reward column indices in [0, {columns - 1}] ([reward] then reward.columns)",
          eco["columns"])
    _need("ecosystem.columns", bool(eco["columns"]) or columns == 1, "one column per model "
          "with reward.columns", eco["columns"])
    ecosystem_from(out)


def ecosystem_from(cfg: dict, point: dict | None = None, *, check: bool = True) -> dict | None:
    """The ecosystem of ``[ecosystem]`` with the grid values of ``point`` (``ecosystem.<...>``)
    substituted: ``{"num_models", "interaction" (M x M nested lists), "real_fractions",
    "betas", "curators", "columns"}`` (lists of M, ``None`` where the loop's value applies);
    ``None`` without one. Raises :class:`ConfigError` (``check=False``: traced grid values, not
    checked here; the loop poisons invalid ones)."""
    eco = cfg["ecosystem"]
    m = eco["num_models"]
    if not m:
        return None
    eco = _substituted(eco, point, "ecosystem.")
    w = eco["interaction"]
    if not w:
        c = eco["coupling"]
        w = [[(1 - c) * (i == j) + c / m for j in range(m)] for i in range(m)]
    _need("ecosystem.interaction", not check or isinstance(w, list) and len(w) == m and all(
        isinstance(row, list) and len(row) == m and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in row)
        and abs(sum(row) - 1) <= 1e-9 for row in w),
        f"an {m} x {m} list of rows of non-negative numbers, each summing to one", w)
    curators = None
    if eco["curators"]:
        curators = [curator_from({"name": c["name"], "options": {
            k: v for k, v in c.items() if k != "name"}}) for c in eco["curators"]]
        try:
            curators_lib.stack(curators, num=m)
        except ValueError as err:
            raise ConfigError(f"`ecosystem.curators`: {err}") from None
    return {"num_models": m, "interaction": w, "real_fractions": eco["real_fractions"] or None,
            "betas": eco["betas"] or None, "curators": curators,
            "columns": tuple(eco["columns"]) or None}


def _substituted(options: dict, point: dict | None, prefix: str) -> dict:
    options = copy.deepcopy(options)
    for axis, value in (point or {}).items():
        if axis.startswith(prefix):
            _set_option(options, axis.split(".")[1:], value)
    return options


# axis prefix -> (the table its path starts in, the section that must be present, examples)
_OPTION_AXES = {
    "curator": (lambda out: out["curator"]["options"], "curator",
                "curator.beta, curator.base.beta, curator.weights.0"),
    "reward_model": (lambda out: out["reward_model"]["options"], "reward_model",
                     "reward_model.l2, reward_model.learning_rate"),
    "feedback": (lambda out: out["feedback"], "reward_model",
                 "feedback.eps, feedback.judge.beta"),
    "preference": (lambda out: out["preference"]["options"], "preference", "preference.eta"),
    "ecosystem": (lambda out: out["ecosystem"], "ecosystem",
                  "ecosystem.coupling, ecosystem.interaction.0.1, ecosystem.real_fractions.0, "
                  "ecosystem.betas.0"),
}


def _validate_option_axis(out: dict, axis: str, values) -> None:
    where = f"sweep.grid.{axis}"
    root, needs, examples = _OPTION_AXES[axis.split(".")[0]]
    present = out["ecosystem"]["num_models"] > 0 if needs == "ecosystem" else out[needs]["name"]
    _need(where, bool(present), f"an axis of a study with a[n] [{needs}]", axis)
    node = root(out)
    path = axis.split(".")[1:]
    try:
        for part in path:
            node = node[int(part)] if isinstance(node, list) else node[part]
        ok = isinstance(node, (int, float)) and not isinstance(node, bool)
    except (KeyError, IndexError, ValueError, TypeError):
        ok = False
    if axis.startswith("feedback."):
        ok = ok and (path == ["eps"] or path[0] == "judge")
    if axis.startswith("preference."):
        ok = ok and path == ["eta"]
    if axis.startswith("ecosystem."):
        eco = out["ecosystem"]
        ok = path == ["coupling"] and not eco["interaction"] or (
            ok and path[0] in ("interaction", "real_fractions", "betas"))
    _need(where, ok, f"a numeric option given in the study (e.g. {examples})", axis)
    _need(where, isinstance(values, list) and len(values) > 0 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in values),
        "a non-empty list of numbers", values)
    for v in values:  # each value must build
        point = {axis: v}
        if axis.startswith("curator."):
            curator_from(out["curator"], point)
        elif axis.startswith("preference."):
            preference_from(out, point)
        elif axis.startswith("ecosystem."):
            ecosystem_from(out, point)
        else:
            reward_model_from(out, point)
            feedback_from(out, point)


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


def shipped_studies() -> dict[str, str]:
    """Name -> path of the studies shipped with the package (``demo`` included)."""
    return {os.path.splitext(os.path.basename(f))[0]: f
            for f in sorted(glob.glob(os.path.join(STUDIES_DIR, "*.toml")))}


def find_study(name_or_path: str) -> str:
    """The TOML file of a study: an existing path, else the shipped study of that name.

    Raises:
        ConfigError: if it is neither a file nor a shipped study's name.
    """
    shipped = shipped_studies()
    if os.path.exists(name_or_path) or os.sep in name_or_path or name_or_path.endswith(".toml"):
        return name_or_path  # a path: load_config says what is wrong with it
    if name_or_path in shipped:
        return shipped[name_or_path]
    raise ConfigError(f"configuration {name_or_path!r} is neither a file nor a shipped study; "
                      f"shipped studies: {', '.join(shipped)}")


with open(os.path.join(STUDIES_DIR, "demo.toml"), encoding="utf-8") as _f:
    DEMO = _f.read()
"""The demo study's TOML text (``selfconsume demo``; ``studies/demo.toml``)."""


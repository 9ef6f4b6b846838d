r"""Building a study: data, model, reward and classifier, and the loop as a program to sweep.

From a validated configuration (:mod:`selfconsume.study.config`), :func:`build` makes

* the real data, drawn once from ``sweep.seed`` (``key_data, key_seeds = split(key(seed))``) and
  shared by every configuration, and the dataset's mode centres;
* the model family, the reward (built with ``scale = 1``: the configured scale, or the grid's
  ``reward_scale``, is the array leaf ``Hyperparams.reward_scale``, so the reward is
  :math:`r = s\, r_1(x)`) and, for the image rewards, the classifier (trained here, once);
* a :class:`selfconsume.Generations` program whose generations are those of
  :func:`selfconsume.run`: with the configuration key :math:`k` of seed :math:`s`,
  ``params0 = model.init(split(k)[0], real)`` and ``run(split(k)[1], params0, ...)``, so a study
  equals :func:`selfconsume.sweep` over that function;
* with ``metrics.exact = true``, the exact population curve of :mod:`selfconsume.theory` on a grid
  that covers the data (the expected main reward, column 0, under the study's curator).

Everything that can only be checked against the data (a model that does not fit them, a metric the
study does not record, data outside the exact grid) raises :class:`ConfigError` here, before
anything is compiled.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from selfconsume import data as data_lib
from selfconsume import ecosystem as ecosystem_lib
from selfconsume import metrics as metrics_lib
from selfconsume import models as models_lib
from selfconsume import retrain
from selfconsume import rewards as rewards_lib
from selfconsume.execution import Generations
from selfconsume.study.config import (ConfigError, curator_from, ecosystem_from, feedback_from,
                                       preference_from, reward_model_from)

__all__ = ["Study", "build", "reward_function", "CLASSIFIER_REWARDS", "exact_grid"]

CLASSIFIER_REWARDS = ("class_probability", "confidence")
_EXACT_MAX_CELLS = 2 ** 22


@dataclasses.dataclass
class Study:
    """A built study: what :mod:`selfconsume.study.execute` sweeps.

    Attributes:
        cfg: the validated configuration.
        real: ``(N, ...)`` the real data.
        centers: ``(modes, d)`` the dataset's mode centres, or ``None``.
        model: the model family.
        reward_fn: the reward at scale 1 (``r_1``).
        metrics_fn: the study's metrics beyond the loop's defaults, ``metrics_fn(state, info)``.
        config: the static :class:`selfconsume.LoopConfig`.
        program: the :class:`selfconsume.Generations` program.
        grid: the sweep grid (axis -> values).
        recorded: the names of the metrics the study records.
        exact: ``(num grid points, T + 1)`` the exact expected reward per grid point, or ``None``.
        notes: metadata saved with the results (classifier accuracy, class names, centres, ...).
    """

    cfg: dict
    real: jax.Array
    centers: np.ndarray | None
    model: models_lib.GenerativeModel
    reward_fn: Any
    metrics_fn: Any
    config: retrain.LoopConfig
    program: Generations
    grid: dict
    recorded: tuple[str, ...]
    exact: np.ndarray | None = None
    notes: dict = dataclasses.field(default_factory=dict)


def reward_function(cfg: dict, centers, classifier=None):
    """The study's reward at scale 1 from its ``[reward]`` section and the dataset's centres; with
    ``reward.columns``, a function returning ``(n, 1 + len(columns))`` rewards (column 0 is
    ``[reward]``)."""
    r = cfg["reward"]
    main = _one_reward(r["name"], r["mode"], r["options"], cfg, centers, "reward", classifier)
    if not r["columns"]:
        return main
    others = [_one_reward(col["name"], col.get("mode", -1), col.get("options", {}), cfg,
                          centers, f"reward.columns[{i}]") for i, col in enumerate(r["columns"])]
    fns = [main] + others

    def columns(x):
        return jnp.stack([f(x) for f in fns], axis=-1)

    return columns


def _one_reward(name, mode, options, cfg, centers, where, classifier=None):
    options = dict(options)
    options.pop("scale", None)
    if classifier is not None:
        options["classifier"] = classifier
    if mode >= 0:
        if centers is None or mode >= len(centers):
            raise ConfigError(f"`{where}.mode` must be a mode index of dataset "
                              f"{cfg['data']['name']!r}; got {mode!r}")
        options["center"] = np.asarray(centers[mode])
    try:
        return rewards_lib.REWARDS[name](**options, scale=1.0)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"`{where}.options` do not fit reward {name!r}: {err}") from None


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
    except ImportError as err:
        raise ConfigError(f"`data.name` = {d['name']!r} needs an optional dependency: "
                          f"{str(err).splitlines()[0]}") from None
    except (FileNotFoundError, ValueError) as err:
        raise ConfigError(f"`data.path` = {d['path']!r}: {err}") from None
    x = np.asarray(ds.x, np.float32).reshape(ds.x.shape[0], -1)
    perm = np.random.default_rng(seed).permutation(x.shape[0])
    cut = int(0.8 * x.shape[0])
    real = jnp.asarray(x[perm[: min(d["num_points"], x.shape[0])]])
    return real, (x[perm[:cut]], ds.labels[perm[:cut]]), (x[perm[cut:]], ds.labels[perm[cut:]]), \
        names


def _data(cfg: dict, key_data):
    """``(real, centers, classifier, notes)``."""
    d, r = cfg["data"], cfg["reward"]
    notes: dict[str, Any] = {}
    if d["name"] in data_lib.IMAGE_DATASETS:
        real, train, test, names = _load_images(d, cfg["sweep"]["seed"])
        notes["class_names"] = list(names)
        notes["image_shape"] = list(data_lib.IMAGE_SHAPES[d["name"]])
        classifier = None
        if r["name"] in CLASSIFIER_REWARDS:
            from selfconsume import classifier as classifier_lib

            c = cfg["classifier"]
            classifier = classifier_lib.train(jax.random.key(c["seed"]), train[0], train[1],
                                              num_classes=10, hidden=tuple(c["hidden"]),
                                              steps=c["steps"])
            notes["classifier_test_accuracy"] = float(classifier.accuracy(test[0], test[1]))
        return real, None, classifier, notes
    try:
        real, extra = data_lib.DATASETS[d["name"]](key_data, d["num_points"], **d["options"])
    except (TypeError, ValueError) as err:
        raise ConfigError(f"`data.options` do not fit dataset {d['name']!r}: {err}") from None
    centers = np.asarray(extra) if (extra.ndim == 2 and extra.shape[-1] == real.shape[-1]) \
        else None
    if centers is not None:
        notes["centers"] = centers.tolist()
    return real, centers, None, notes


def _model(cfg: dict, real):
    m = cfg["model"]
    options = dict(m["options"])
    if "dim" not in options and m["name"] in ("gaussian", "gmm", "kde", "flow_matching",
                                              "histogram") and real.ndim == 2:
        options["dim"] = int(real.shape[-1])  # the data's dimension unless given
    try:
        model = models_lib.MODELS[m["name"]](**options)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"`model.options` do not fit model {m['name']!r}: {err}") from None
    try:
        jax.eval_shape(model.init, jax.random.key(0), real)
    except (TypeError, ValueError) as err:
        where = "model.options.dim" if "dim" in m["options"] else "model.name"
        raise ConfigError(f"`{where}`: model {m['name']!r} does not fit the data of "
                          f"{cfg['data']['name']!r} (shape {tuple(real.shape)}): "
                          f"{str(err).splitlines()[0]}") from None
    return model


def build(cfg: dict) -> Study:
    """Builds a validated study (module docstring); raises :class:`ConfigError`."""
    lp, sw, me = cfg["loop"], cfg["sweep"], cfg["metrics"]
    key_data, _ = jax.random.split(jax.random.key(sw["seed"]))
    real, centers, classifier, notes = _data(cfg, key_data)
    model = _model(cfg, real)
    reward_fn = reward_function(cfg, centers, classifier)
    config = retrain.LoopConfig(num_generations=lp["num_generations"],
                                num_samples=lp["num_samples"], k=lp["k"], regime=lp["regime"])
    base_scale = float(cfg["reward"]["options"].get("scale", 1.0))
    mode = cfg["reward"]["mode"]
    class_index = cfg["reward"]["options"].get("class_index")
    centers_j = None if centers is None else jnp.asarray(centers, jnp.float32)
    is_moons = cfg["data"]["name"] == "two_moons"

    def hyper(point) -> retrain.Hyperparams:
        beta = point.get("beta", lp["beta"])
        real_fraction = point.get("real_fraction", lp["real_fraction"])
        eco = ecosystem_from(cfg, point, check=False)
        if eco is not None:  # per-model values where the ecosystem gives them
            if eco["betas"] is not None:
                beta = jnp.stack([jnp.asarray(b, jnp.float32) for b in eco["betas"]])
            if eco["real_fractions"] is not None:
                real_fraction = jnp.stack([jnp.asarray(a, jnp.float32)
                                           for a in eco["real_fractions"]])
        return retrain.Hyperparams(
            beta=beta, real_fraction=real_fraction,
            num_candidates=point.get("num_candidates", lp["num_candidates"]),
            reward_scale=point.get("reward_scale", base_scale))

    def study_metrics(state, info):
        out = {}
        if me["mode_shares"] and centers_j is not None:
            shares = metrics_lib.mode_shares(info.candidates, centers_j)
            out["mode_shares"] = shares
            out["min_mode_share"] = jnp.min(shares)
            if mode >= 0:
                out["rewarded_mode_share"] = shares[mode]
        if is_moons:
            out["upper_moon_share"] = jnp.mean(data_lib.moon_of(info.candidates) == 0)
        if classifier is not None:  # class proportions of the model, by the classifier
            shares = jnp.mean(jax.nn.one_hot(classifier.predict(info.candidates),
                                             classifier.num_classes), axis=0)
            out["class_shares"] = shares
            out["class_entropy"] = metrics_lib.entropy(shares)
            if class_index is not None:
                out["rewarded_class_share"] = shares[class_index]
        if me["snapshot_points"]:
            out["samples"] = info.candidates[: me["snapshot_points"]]
        return out

    options = dict(model=model, reward_fn=reward_fn, config=config, metrics_fn=study_metrics)

    eco = ecosystem_from(cfg)

    def params_init(key, point):
        if "learning_rate" in point:
            return model.init(key, real, learning_rate=point["learning_rate"])
        return model.init(key, real)

    def init(key, **point):
        if eco is not None:  # model 0 starts as the single-model study would
            keys = ecosystem_lib.model_keys(key, eco["num_models"])
            params0 = jax.tree.map(lambda *xs: jnp.stack(xs), *[
                params_init(keys[i], point) for i in range(eco["num_models"])])
            return ecosystem_lib.init_state(params0, model=model, config=config, real_data=real,
                                            preference=preference_from(cfg, point))
        return retrain.init_state(params_init(key, point), model=model, config=config,
                                  real_data=real, reward_model=reward_model_from(cfg, point),
                                  key=jax.random.fold_in(key, 1),
                                  preference=preference_from(cfg, point))

    def rules(point):  # what curates: the curator, and the learned reward or preference it reads
        if eco is not None:
            this = ecosystem_from(cfg, point, check=False)
            w = jnp.stack([jnp.stack([jnp.asarray(v, jnp.float32) for v in row])
                           for row in this["interaction"]])
            return dict(curator=this["curators"] or curator_from(cfg["curator"], point),
                        interaction=w, columns=this["columns"],
                        preference=preference_from(cfg, point))
        return dict(curator=curator_from(cfg["curator"], point),
                    reward_model=reward_model_from(cfg, point),
                    feedback=feedback_from(cfg, point), preference=preference_from(cfg, point))

    columns = 0 if eco is not None and eco["columns"] else len(cfg["reward"]["columns"])
    loop = ecosystem_lib if eco is not None else retrain

    def chunk(keys, state, **point):
        state, history = loop.run_chunk(keys, state, hyper(point), real, **rules(point),
                                        **options)
        return state, _split_columns(history, columns)

    def final(key, state, **point):
        return _split_columns(loop.final_record(
            key, state, hyper(point), real, **rules(point), **options), columns)

    program = Generations(init=init, chunk=chunk, final=final,
                          num_generations=lp["num_generations"])
    grid = dict(sw["grid"])
    try:
        recorded = _recorded(program, grid)
    except ValueError as err:
        raise ConfigError(f"the study cannot be built: {str(err).splitlines()[0]}") from None
    exact = None
    if me["exact"]:
        exact, notes["exact_grid"] = _exact_rewards(cfg, real, reward_fn, base_scale, grid)
        recorded = recorded + ("exact_reward",)
    _check_metric_names(cfg, recorded)
    return Study(cfg=cfg, real=real, centers=centers, model=model, reward_fn=reward_fn,
                 metrics_fn=study_metrics, config=config, program=program, grid=grid, recorded=recorded, exact=exact,
                 notes=notes)


_REWARD_METRICS = ("kept_reward_mean", "expected_reward")


def _split_columns(record: dict, columns: int) -> dict:
    """With ``reward.columns``, the loop's reward metrics are vectors (main reward, then each
    column): the main reward keeps the metric's name and column j is ``<name>_<j>``."""
    if not columns:
        return record
    out = dict(record)
    for name, value in record.items():
        if name.startswith("reward_") or name in _REWARD_METRICS:
            out[name] = value[..., 0]
            for j in range(1, columns + 1):
                out[f"{name}_{j}"] = value[..., j]
    return out


def _recorded(program: Generations, grid: dict) -> tuple[str, ...]:
    """The record names of the program, by abstract evaluation (nothing is compiled)."""
    point = {name: jnp.asarray(values[0]) for name, values in grid.items()}

    def one(key):
        return program.final(key, program.init(key, **point), **point)

    return tuple(jax.eval_shape(one, jax.random.key(0)))


def _check_metric_names(cfg: dict, recorded) -> None:
    known = sorted(set(recorded) - {"samples"})
    for metric in cfg["plots"]["metrics"]:
        if metric not in recorded or metric == "samples":
            raise ConfigError(f"`plots.metrics`: {metric!r} is not a metric of this study; "
                              f"recorded: {', '.join(known)}")
    for i, claim in enumerate(cfg["claims"]):
        for key in ("metric", "reference"):
            if key in claim and claim[key] not in recorded:
                raise ConfigError(f"`claims[{i}].{key}`: {claim[key]!r} is not a metric of this "
                                  f"study; recorded: {', '.join(known)}")


def exact_grid(cfg: dict, real) -> dict:
    """The grid of the exact population curve: the histogram model's own grid, else
    ``metrics.exact_grid``, else (``{}``) 128 bins per axis over the data's range plus 5%."""
    m = cfg["model"]
    if m["name"] == "histogram":
        defaults = {"low": -1.5, "high": 1.5}
        return {"bins": m["options"].get("bins"), **{b: m["options"].get(b, defaults[b])
                                                     for b in defaults}}
    if cfg["metrics"]["exact_grid"]:
        return dict(cfg["metrics"]["exact_grid"])
    x = np.asarray(real, np.float64)
    low, high = float(x.min()), float(x.max())
    pad = 0.05 * max(high - low, 1e-6)
    return {"bins": 128, "low": low - pad, "high": high + pad}


def _exact_rewards(cfg, real, reward_fn, base_scale, grid_axes):
    """The expected reward of the population dynamics (:mod:`selfconsume.theory`) per grid point,
    ``(num_points, T + 1)``: the real data's histogram on a grid is ``p_0`` and ``p_data``, the
    rewards are those of the cell centres (with ``model.name = "histogram"`` the model's own grid,
    so the sample-based loop follows exactly these dynamics up to sampling noise)."""
    from selfconsume import theory

    lp = cfg["loop"]
    grid = exact_grid(cfg, real)
    where = "model.options" if cfg["model"]["name"] == "histogram" else "metrics.exact_grid"
    if not (real.ndim == 2 and grid["bins"] ** real.shape[1] <= _EXACT_MAX_CELLS):
        raise ConfigError(f"`metrics.exact` must be used with point data on at most 2**22 grid "
                          f"cells (data shape {tuple(real.shape)}, {grid['bins']} bins per axis); "
                          "got true")
    x = np.asarray(real)
    outside = float(np.mean(np.any((x < grid["low"]) | (x >= grid["high"]), axis=1)))
    if outside > 0:
        raise ConfigError(f"`{where}` = {grid} leaves {100 * outside:.1f}% of the real data "
                          f"outside the exact grid; widen it (metrics.exact_grid = {{}} covers "
                          "the data)")
    hist = models_lib.histogram(grid["bins"], grid["low"], grid["high"], real.shape[1])
    p0 = hist.init(jax.random.key(0), real).probs
    cells = models_lib.histogram_centers(grid["bins"], grid["low"], grid["high"], real.shape[1])
    base = np.asarray(reward_fn(cells))
    mesh = np.meshgrid(*[np.asarray(v) for v in grid_axes.values()], indexing="ij")
    points = [dict(zip(grid_axes, vals)) for vals in zip(*[g.reshape(-1) for g in mesh])] or [{}]
    out = []
    for point in points:
        scale = float(point.get("reward_scale", base_scale))
        k = int(point.get("num_candidates", lp["num_candidates"] or lp["k"]) or lp["k"])
        curator = curator_from(cfg["curator"], {a: float(v) for a, v in point.items()})
        rule = dict(beta=float(point.get("beta", lp["beta"]))) if curator is None else dict(
            curator=curator)
        traj = theory.trajectory(p0, jnp.asarray(scale * base, p0.dtype),
                                 num_generations=lp["num_generations"], k=k, p_data=p0,
                                 real_fraction=float(point.get("real_fraction",
                                                               lp["real_fraction"])), **rule)
        first = base if base.ndim == 1 else base[:, 0]  # the main reward, column 0
        out.append(np.asarray(traj) @ (scale * first))
    return np.stack(out), grid

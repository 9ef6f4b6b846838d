r"""The loop's types and the parts of a generation shared by its drivers.

A generation of curated retraining from model :math:`p_t`: draw ``n * k`` candidates
:math:`x \sim p_t` and their rewards, curate them (:func:`draw_and_curate`; the curator may read
a learned reward, refitted first by :func:`feedback_step`), and refit on real and kept samples.
:mod:`selfconsume.retrain` drives one model through it, :mod:`selfconsume.ecosystem` M models
that refit on each other's kept samples; both record :func:`default_metrics` with
:func:`recorder`. The public types (:class:`LoopConfig`, :class:`Hyperparams`,
:class:`RetrainState`, :class:`RetrainInfo`) are exported by :mod:`selfconsume.retrain`.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
from flax import struct
from jax import lax

from selfconsume import _checks
from selfconsume import curators as curators_lib
from selfconsume import metrics as metrics_lib
from selfconsume import preferences as preferences_lib
from selfconsume import reward_models as reward_models_lib
from selfconsume.curation import curate
from selfconsume.models import GenerativeModel
from selfconsume.types import Array, ArrayLike, Curated, PyTree

REGIMES = ("replace", "accumulate")


@dataclasses.dataclass(frozen=True)
class LoopConfig:
    """Static settings of the loop (hashable: a valid static argument of ``jax.jit``).

    Attributes:
        num_generations: number of retraining generations T >= 1.
        num_samples: kept samples per generation n >= 1 (``n * k`` candidates are drawn).
        k: candidates per curated group, >= 1 (1 = no curation).
        regime: ``"replace"`` or ``"accumulate"``.
    """

    num_generations: int
    num_samples: int
    k: int = 1
    regime: str = "replace"

    def __post_init__(self):
        _checks.static_int("num_generations", self.num_generations, minimum=1)
        _checks.static_int("num_samples", self.num_samples, minimum=1)
        _checks.static_int("k", self.k, minimum=1)
        if self.regime not in REGIMES:
            raise ValueError(f"`regime` must be one of {REGIMES}; got {self.regime!r}.")


@struct.dataclass
class Hyperparams:
    """Swept values: array leaves, so ``vmap`` batches them without recompiling.

    Python floats are stored as arrays of JAX's default float dtype and ``num_candidates``
    defaults to an int32 array, so ``Hyperparams()`` and ``Hyperparams(beta=2.0,
    num_candidates=3)`` have the same tree structure and dtypes: a jitted loop compiles once for
    both.

    Attributes:
        beta: curator inverse temperature ``>= 0`` (``jnp.inf`` = best-of-k).
        real_fraction: fraction ``a`` in ``[0, 1]`` of real data in each ``replace`` refit.
        num_candidates: effective number of candidates in ``[1, LoopConfig.k]``, an int32 scalar
            (possibly traced); ``0`` (the default) means ``k``. The unused candidates are drawn
            and ignored, so K can be swept inside one compiled program.
        reward_scale: factor ``s`` applied to every reward, ``r = s * reward_fn(x)`` (the curator
            sees ``beta * s * reward_fn(x)``; the recorded rewards are scaled too). Sweep it here
            rather than by rebuilding the reward function.
    """

    beta: ArrayLike = 1.0
    real_fraction: ArrayLike = 0.0
    num_candidates: ArrayLike | None = None
    reward_scale: ArrayLike = 1.0

    def __post_init__(self):
        for name in ("beta", "real_fraction", "reward_scale"):
            value = getattr(self, name)
            if isinstance(value, float):
                object.__setattr__(self, name, jnp.asarray(value, jnp.result_type(float)))
        if self.num_candidates is None:
            object.__setattr__(self, "num_candidates", jnp.zeros((), jnp.int32))
        elif isinstance(self.num_candidates, int) and not isinstance(self.num_candidates, bool):
            object.__setattr__(self, "num_candidates", jnp.asarray(self.num_candidates,
                                                                   jnp.int32))


@struct.dataclass
class RetrainState:
    """Carried from one generation to the next.

    Attributes:
        params: the model's params pytree.
        generation: int32 scalar, the number of refits done so far.
        pool: ``(T * n, ...)`` kept samples of past generations (``accumulate``), else ``None``.
        pool_weights: ``(T * n,)`` 1 for filled rows of ``pool``, 0 otherwise, or ``None``.
        reward_params: the learned reward model's params (with a ``reward_model``) or the
            drifting preference's (with a ``preference``), else ``None``.
    """

    params: PyTree
    generation: Array
    pool: Array | None = None
    pool_weights: Array | None = None
    reward_params: PyTree | None = None


@struct.dataclass
class RetrainInfo:
    """Per-generation diagnostics (not carried).

    Attributes:
        candidates: ``(n * k, ...)`` the fresh candidates drawn from the model.
        candidate_rewards: ``(n * k,)`` their rewards.
        kept: the curated samples (:class:`~selfconsume.Curated`, ``n`` rows).
        fit_is_finite: bool scalar, whether every leaf of the refitted params is finite.
        hyper: the :class:`Hyperparams` of the generation (e.g. ``hyper.reward_scale``).
        proxy_rewards: ``(n * k,)`` the learned reward of the candidates (what the curator
            read), with a ``reward_model``; else ``None``.
        reward_model_accuracy: scalar, the learned reward's accuracy on held-out comparisons
            (:func:`selfconsume.reward_models.accuracy`), with a ``reward_model``; else ``None``.
        preference_rewards: ``(n * k,)`` the drifting preference's rewards of the candidates
            (what the curator read), with a ``preference``; else ``None``.
    """

    candidates: Array
    candidate_rewards: Array
    kept: Curated
    fit_is_finite: Array
    hyper: Hyperparams
    proxy_rewards: Array | None = None
    reward_model_accuracy: Array | None = None
    preference_rewards: Array | None = None


def check_hyper(hyper: Hyperparams, config: LoopConfig, real_data) -> Array:
    """Checks the hyperparameters (concrete: ``ValueError``); returns the traced validity."""
    if not isinstance(hyper, Hyperparams):
        raise ValueError(f"`hyper` must be a selfconsume.Hyperparams; got {type(hyper).__name__}.")
    _checks.scalar("beta", hyper.beta, minimum=0.0)
    _checks.scalar("real_fraction", hyper.real_fraction, minimum=0.0, maximum=1.0)
    if jnp.ndim(hyper.num_candidates) != 0:
        raise ValueError(f"`num_candidates` must be a scalar; got shape "
                         f"{jnp.shape(hyper.num_candidates)}.")
    if _checks.is_concrete(hyper.num_candidates) and not (
            0 <= int(hyper.num_candidates) <= config.k):
        raise ValueError(f"`num_candidates` must be in [1, {config.k}] (or 0 for k = "
                         f"{config.k}); got {int(hyper.num_candidates)}.")
    _checks.scalar("reward_scale", hyper.reward_scale)
    _checks.finite("reward_scale", hyper.reward_scale)
    if not jnp.issubdtype(jnp.result_type(hyper.num_candidates), jnp.integer):
        raise ValueError(f"`num_candidates` must be an integer in [1, k] (0 = k); got dtype "
                         f"{jnp.result_type(hyper.num_candidates)}.")
    uses_real = config.regime == "replace"
    if real_data is None and uses_real and _checks.is_concrete(hyper.real_fraction) and float(
            hyper.real_fraction) != 0.0:
        raise ValueError(f"`real_fraction` = {float(hyper.real_fraction):g} needs `real_data`; "
                         "got real_data=None (pass the real samples, or real_fraction=0).")
    ok = (_checks.scalar_ok(hyper.beta, minimum=0.0)
          & _checks.scalar_ok(hyper.real_fraction, minimum=0.0, maximum=1.0)
          & _checks.scalar_ok(hyper.num_candidates, minimum=0, maximum=config.k)
          & jnp.isfinite(hyper.reward_scale))
    if real_data is None and uses_real:
        ok = ok & (jnp.asarray(hyper.real_fraction) == 0)
    return ok


def check_curator(curator, hyper: Hyperparams, config: LoopConfig):
    """Checks the curator against the loop (concrete: ``ValueError``); the traced validity of its
    rates, and of ``num_candidates``, which only the default Luce rule uses (0 or k with a
    curator)."""
    if curator is None:
        return True
    curators_lib.check(curator)
    groups(config, curator)
    nc = hyper.num_candidates
    if _checks.is_concrete(nc):
        if int(nc) not in (0, config.k):
            raise ValueError(f"`num_candidates` applies to the default Luce rule only; got "
                             f"num_candidates={int(nc)} with the curator {curator.name!r}.")
        return curator.ok()
    return curator.ok() & ((nc == 0) | (nc == config.k))


def check_learned(reward_model, feedback, preference=None):
    """What the curator reads instead of ``reward_fn``, checked: ``(reward_model, feedback)``
    (``feedback=None``: the default protocol), a drifting ``preference``, or ``None``; and its
    traced validity."""
    if preference is not None:
        if reward_model is not None or feedback is not None:
            raise ValueError("`preference` cannot be combined with a `reward_model` or "
                             "`feedback`: the curator reads one reward; pass one of them.")
        if not isinstance(preference, preferences_lib.Preference):
            raise ValueError(f"`preference` must be a selfconsume.preferences preference (e.g. "
                             f"sc.preferences.linear('states', r, eta=0.1)); got "
                             f"{type(preference).__name__}.")
        return preference, preference.ok()
    if reward_model is None:
        if feedback is not None:
            raise ValueError("`feedback` was given without a `reward_model`; pass both (e.g. "
                             "reward_model=sc.reward_models.tabular(M)) or neither.")
        return None, True
    if not isinstance(reward_model, reward_models_lib.RewardModel):
        raise ValueError(f"`reward_model` must be a selfconsume.reward_models model (e.g. "
                         f"sc.reward_models.tabular(M)); got {type(reward_model).__name__}.")
    feedback = reward_models_lib.feedback() if feedback is None else feedback
    if not isinstance(feedback, reward_models_lib.Feedback):
        raise ValueError(f"`feedback` must be made by sc.reward_models.feedback(...); got "
                         f"{type(feedback).__name__}.")
    return (reward_model, feedback), reward_model.ok() & feedback.ok()


def all_finite(tree: PyTree) -> Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)
              if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def check_loop_args(model, reward_fn, config) -> None:
    """Checks the static arguments of :func:`run` and :func:`retrain_step`."""
    if not isinstance(config, LoopConfig):
        raise ValueError(f"`config` must be a selfconsume.LoopConfig; got {type(config).__name__}.")
    if not isinstance(model, GenerativeModel):
        raise ValueError(f"`model` must be a selfconsume.models.GenerativeModel (e.g. "
                         f"sc.models.get('gaussian', dim=2)); got {type(model).__name__}.")
    if not callable(reward_fn):
        raise ValueError(f"`reward_fn` must be callable as reward_fn(samples) -> (n,) rewards; got "
                         f"{type(reward_fn).__name__}.")


def sample_spec(model: GenerativeModel, params, config: LoopConfig):
    return jax.eval_shape(lambda key, p: model.sample(key, p, config.num_samples),
                          jax.random.key(0), params)


def check_real(real_data, real_weights, spec, config: LoopConfig):
    """Checks the real data against the model's sample shape; returns (data, normalised weights)."""
    if real_data is None:
        if real_weights is not None:
            raise ValueError(f"`real_weights` was given without `real_data` (got real_data=None "
                             f"and real_weights of shape {jnp.shape(real_weights)}); pass both or "
                             "neither.")
        return None, None
    real_data = jnp.asarray(real_data)
    if real_data.ndim != len(spec.shape) or real_data.shape[1:] != spec.shape[1:] or (
            real_data.shape[0] == 0):
        raise ValueError(
            f"`real_data` must have shape (N, {', '.join(map(str, spec.shape[1:]))}) with N >= 1 "
            f"like the model's samples; got shape {real_data.shape}."
            if len(spec.shape) > 1 else
            f"`real_data` must have shape (N,) with N >= 1 like the model's samples; got shape "
            f"{real_data.shape}.")
    _checks.finite("real_data", real_data)
    n_real = real_data.shape[0]
    if real_weights is None:
        weights = jnp.full((n_real,), 1.0 / n_real)
    else:
        weights = jnp.asarray(real_weights, jnp.result_type(float))
        if weights.shape != (n_real,):
            raise ValueError(f"`real_weights` must have shape ({n_real},); got {weights.shape}.")
        _checks.weights("real_weights", weights)
        weights = weights / jnp.sum(weights)
    return real_data.astype(spec.dtype), weights


def groups(config: LoopConfig, curator) -> int:
    """The number of groups of ``k`` candidates drawn per generation: ``num_samples / m`` for a
    curator that keeps m per group (``num_samples`` kept samples in all)."""
    m = 1 if curator is None else curator.kept(config.k)
    if config.num_samples % m:
        raise ValueError(f"`num_samples`={config.num_samples} must be a multiple of the {m} "
                         f"samples the curator {curator.name!r} keeps per group.")
    return config.num_samples // m


def scaled_rewards(reward_fn, samples, hyper, *, columns: bool):
    """``reward_scale * reward_fn(samples)``, checked: ``(n,)``, or ``(n, R)`` with ``columns``."""
    n = samples.shape[0]
    raw = jnp.asarray(reward_fn(samples))
    if raw.shape[:1] != (n,) or raw.ndim not in (1, 2) or (not columns and raw.ndim != 1):
        allowed = f"({n},) or ({n}, R)" if columns else (
            f"({n},) (several reward columns need a `curator` that says which it reads, and a "
            "learned reward model reads one)")
        raise ValueError(f"`reward_fn` must map ({n}, ...) samples to rewards of shape {allowed}; "
                         f"got shape {raw.shape}.")
    return jnp.asarray(hyper.reward_scale, raw.dtype) * raw


def kept_rows(kept: Curated, config: LoopConfig, curator) -> Array:
    """The candidate row of every kept sample."""
    if curator is not None and not curator.per_group:
        return kept.index
    per_group = 1 if curator is None else curator.kept(config.k)
    groups = kept.index.shape[0] // per_group
    return jnp.repeat(jnp.arange(groups, dtype=jnp.int32), per_group) * config.k + kept.index


def reader(state, learned=None):
    """What the curator reads in place of ``reward_fn``, as ``read(candidates) -> (rewards,
    reward_params)``: ``None`` without ``learned``; for a learned reward model
    (``learned = (reward_model, feedback)``) its reward at ``state.reward_params``; for a drifting
    preference (``learned`` a preference) its reward after the parameters are moved by the
    candidates (from generation 1 on)."""
    if learned is None:
        return None
    if isinstance(learned, tuple):
        return lambda x: (learned[0].apply(state.reward_params, x), state.reward_params)

    def read(x):
        moved = learned.drift(state.reward_params, x)
        w = jax.tree.map(lambda a, b: jnp.where(state.generation > 0, a, b), moved,
                         state.reward_params)
        return learned.apply(w, x), w

    return read


def draw_and_curate(key, params, hyper, *, model, reward_fn, config, curator=None, read=None):
    """``(candidates, rewards, kept, read_rewards, reward_params)``: the candidates, their
    (scaled) ``reward_fn`` rewards and the kept samples; with a ``read`` (:func:`reader`), the
    rewards the curator read instead and the reward params they came from (the kept samples
    still carry their ``reward_fn`` rewards), else ``None`` twice."""
    key_sample, key_curate = jax.random.split(key)
    n = groups(config, curator) * config.k
    candidates = model.sample(key_sample, params, n)
    rewards = scaled_rewards(reward_fn, candidates, hyper,
                             columns=curator is not None and read is None)
    proxy, reward_params = (None, None) if read is None else read(candidates)
    shown = rewards if proxy is None else proxy
    if curator is None:
        num_candidates = jnp.where(hyper.num_candidates > 0, hyper.num_candidates, config.k)
        kept = curate(key_curate, candidates, shown, k=config.k, beta=hyper.beta,
                      num_candidates=num_candidates)
    else:
        kept = curate(key_curate, candidates, shown, k=config.k, curator=curator)
    if proxy is not None:
        kept = kept.replace(rewards=rewards[kept_rows(kept, config, curator)])
    return candidates, rewards, kept, proxy, reward_params


def generation(key, state, hyper, *, model, reward_fn, config, curator=None, learned=None):
    """Everything of a generation but the refit: with a learned reward model, refit it when due
    (:func:`feedback_step`); draw and curate the candidates of ``state.params``, the curator
    reading ``reward_fn``, the learned reward or the drifting preference (moved first).

    Returns:
        ``(state, candidates, rewards, kept, read)``: ``state`` with the reward params that
        curated this generation, and ``read`` the :class:`RetrainInfo` fields of what the curator
        read (``proxy_rewards`` and ``reward_model_accuracy``, or ``preference_rewards``).
    """
    read = {}
    if isinstance(learned, tuple):  # a learned reward model, refitted first when due
        key, key_feedback = jax.random.split(key)
        reward_params, accuracy = feedback_step(key_feedback, state, hyper, model=model,
                                                reward_fn=reward_fn, learned=learned)
        state = state.replace(reward_params=reward_params)
        read["reward_model_accuracy"] = accuracy
    candidates, rewards, kept, proxy, reward_params = draw_and_curate(
        key, state.params, hyper, model=model, reward_fn=reward_fn, config=config,
        curator=curator, read=reader(state, learned))
    if learned is not None:
        state = state.replace(reward_params=reward_params)
        read["proxy_rewards" if isinstance(learned, tuple) else "preference_rewards"] = proxy
    return state, candidates, rewards, kept, read


def feedback_step(key, state, hyper, *, model, reward_fn, learned):
    """Refits the learned reward on fresh comparisons when due; ``(reward_params, held-out
    accuracy)``."""
    reward_model, fb = learned
    key_draw, key_judge, key_fit, key_held = jax.random.split(key, 4)

    def judged(key_x, key_j, groups, **poison):
        x = model.sample(key_x, state.params, groups * fb.k)
        true = scaled_rewards(reward_fn, x, hyper, columns=False)
        return reward_models_lib.compare(key_j, x, true, k=fb.k, judge=fb.judge, **poison)

    def refit(params):
        comparisons = judged(key_draw, key_judge, fb.num_comparisons, eps=fb.eps, flip=fb.flip,
                             reward_model=reward_model)
        return reward_model.fit(key_fit, params, comparisons)

    params = lax.cond(fb.due(state.generation), refit, lambda p: p, state.reward_params)
    held = judged(*jax.random.split(key_held), fb.num_heldout)
    acc = reward_models_lib.accuracy(
        reward_models_lib.group_rewards(reward_model, params, held), held)
    return params, acc


def per_column(fn, rewards):
    """``fn`` of ``(n,)`` rewards, or of each column of ``(n, R)`` rewards stacked into ``(R,)``
    entries (R is static: one call per column)."""
    if rewards.ndim == 1:
        return fn(rewards)
    columns = [fn(rewards[:, j]) for j in range(rewards.shape[1])]
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *columns)


def default_metrics(
    *,
    model: GenerativeModel,
    reward_fn: Callable[[Array], Array],
    real_data: ArrayLike | None = None,
    real_weights: ArrayLike | None = None,
    holdout: ArrayLike | None = None,
) -> Callable[[RetrainState, RetrainInfo], dict[str, Array]]:
    """The metrics :func:`run` records by default, as a ``metrics_fn(state, info) -> dict``.

    * ``reward_mean``, ``reward_std``, ``reward_q05`` ... ``reward_q95``, ``reward_nan_fraction``:
      the (scaled) rewards of the fresh candidates drawn from the model;
    * ``kept_reward_mean``: the mean reward of the curated samples;
    * with a learned ``reward_model``: ``true_reward_mean`` (``reward_mean``, named against the
      proxy), ``proxy_reward_mean`` (the learned reward of the same candidates, on the reward
      model's own scale: a Bradley–Terry fit recovers the judge's utility, e.g. ``beta * r``, up
      to the additive constant its ridge fixes), ``reward_gap`` (proxy minus true) and
      ``reward_model_accuracy`` (on held-out comparisons, judged but never flipped);
    * with a drifting ``preference``: ``preference_reward_mean`` (the mean drifting reward of the
      candidates, what the curator read) and ``reward_params`` (its parameters :math:`w_t`);
    * with several reward columns (``reward_fn`` returning ``(n, R)``) each of these, and
      ``expected_reward``, is a vector of R, one entry per column;
    * ``is_finite``: whether every leaf of the model's params is finite;
    * ``holdout_nll``: mean negative log-likelihood of ``holdout`` (where ``log_prob`` exists);
    * for ``categorical``: the exact ``expected_reward``, and, with real data,
      ``kl_data`` = KL(p_data || p_t), ``tv_data`` (total variation) and ``entropy``.
    """
    p_data = None
    if model.name == "categorical" and real_data is not None:
        p_data = model.init(jax.random.key(0), real_data, real_weights).probs

    def metrics(state: RetrainState, info: RetrainInfo) -> dict[str, Array]:
        out = {f"reward_{name}": value for name, value in
               per_column(metrics_lib.reward_summary, info.candidate_rewards).items()}
        out["kept_reward_mean"] = jnp.nanmean(info.kept.rewards, axis=0)
        if info.proxy_rewards is not None:
            true = jnp.nanmean(info.candidate_rewards)
            proxy = jnp.nanmean(info.proxy_rewards)
            out.update(true_reward_mean=true, proxy_reward_mean=proxy, reward_gap=proxy - true,
                       reward_model_accuracy=info.reward_model_accuracy)
        if info.preference_rewards is not None:
            out["preference_reward_mean"] = jnp.nanmean(info.preference_rewards)
            out["reward_params"] = state.reward_params
        out["is_finite"] = all_finite(state.params)
        if holdout is not None and model.log_prob is not None:
            out["holdout_nll"] = -jnp.mean(model.log_prob(state.params, holdout))
        if model.name == "categorical":
            probs = state.params.probs
            states = jnp.arange(probs.shape[0], dtype=jnp.int32)
            rewards = jnp.asarray(info.hyper.reward_scale, probs.dtype) * reward_fn(states)
            out["expected_reward"] = per_column(
                lambda r: metrics_lib.expected_reward(probs, r), rewards)
            out["entropy"] = metrics_lib.entropy(probs)
            if p_data is not None:
                out["kl_data"] = metrics_lib.kl_divergence(p_data, probs)
                out["tv_data"] = metrics_lib.total_variation(p_data, probs)
        return out

    return metrics


def recorder(*, model, reward_fn, real_data, real_weights, metrics_fn=None, default=True,
              holdout=None):
    """The per-generation ``record(state, info) -> dict``: the default metrics (unless
    ``default=False``), then ``metrics_fn``'s (Python numbers become arrays), then
    ``fit_is_finite``."""
    if metrics_fn is None and not default:
        raise ValueError("`default=False` needs a `metrics_fn`; got metrics_fn=None.")
    base = default_metrics(model=model, reward_fn=reward_fn, real_data=real_data,
                           real_weights=real_weights, holdout=holdout) if default else None

    def record(state, info):
        out = dict(base(state, info)) if base is not None else {}
        if metrics_fn is not None:
            extra = metrics_fn(state, info)
            if not isinstance(extra, dict):
                raise ValueError(f"`metrics_fn` must return a dict of name -> array; got "
                                 f"{type(extra).__name__}.")
            out.update({k: jax.tree.map(jnp.asarray, v) for k, v in extra.items()})
        out["fit_is_finite"] = info.fit_is_finite
        return out

    return record

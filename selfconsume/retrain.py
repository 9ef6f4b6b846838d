r"""The iterated retraining loop on curated samples.

One generation, from model :math:`p_t` (params :math:`\theta_t`):

1. draw ``num_samples * k`` candidates :math:`x \sim p_t` and their rewards :math:`r(x)` (one
   column, or R columns for curators that read several);
2. curate: keep one candidate per group of ``k`` with probability
   :math:`\operatorname{softmax}(\beta r)` (:func:`selfconsume.curate`), or by any ``curator`` of
   :mod:`selfconsume.curators` (one that keeps m per group sees ``num_samples / m`` groups),
   giving ``num_samples`` kept samples :math:`\tilde x_1..\tilde x_n`;
3. refit by weighted maximum likelihood. Regime ``replace`` (the paper's loop):

   .. math:: \theta_{t+1} = \arg\max_\theta\; \frac{a}{\sum_j v_j} \sum_j v_j \log p_\theta(y_j)
             + \frac{1-a}{n} \sum_i \log p_\theta(\tilde x_i),

   with real data :math:`y_j` (optional weights :math:`v_j`) and ``real_fraction`` :math:`a`; for a
   fully expressive model this is :math:`p_{t+1} = a\, p_{\rm data} + (1-a)\, \hat p^{\rm kept}_t`,
   the sample version of :func:`selfconsume.theory.retrain_map`. Regime ``accumulate``
   (Gerstgrasser et al., 2024): fit on the real data plus the kept samples of every generation so
   far, each sample weighted equally (``real_fraction`` is unused).

:func:`run` iterates it with ``lax.scan`` (keys as ``xs``) and records metrics of every
generation :math:`t = 0..T`, where generation ``t`` describes :math:`p_t` and the curation of its
candidates.
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
from selfconsume import reward_models as reward_models_lib
from selfconsume.curation import curate
from selfconsume.curators import Curator
from selfconsume.models import GenerativeModel
from selfconsume.types import Array, ArrayLike, Curated, PRNGKey, PyTree

__all__ = ["LoopConfig", "Hyperparams", "RetrainState", "RetrainInfo", "init_state",
           "retrain_step", "run", "run_chunk", "final_record", "default_metrics", "REGIMES"]

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
        reward_params: the learned reward model's params (with a ``reward_model``), else
            ``None``.
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
    """

    candidates: Array
    candidate_rewards: Array
    kept: Curated
    fit_is_finite: Array
    hyper: Hyperparams
    proxy_rewards: Array | None = None
    reward_model_accuracy: Array | None = None


def _all_finite(tree: PyTree) -> Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)
              if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def _check_loop_args(model, reward_fn, config) -> None:
    """Checks the static arguments of :func:`run` and :func:`retrain_step`."""
    if not isinstance(config, LoopConfig):
        raise ValueError(f"`config` must be a selfconsume.LoopConfig; got {type(config).__name__}.")
    if not isinstance(model, GenerativeModel):
        raise ValueError(f"`model` must be a selfconsume.models.GenerativeModel (e.g. "
                         f"sc.models.get('gaussian', dim=2)); got {type(model).__name__}.")
    if not callable(reward_fn):
        raise ValueError(f"`reward_fn` must be callable as reward_fn(samples) -> (n,) rewards; got "
                         f"{type(reward_fn).__name__}.")


def _check_hyper(hyper: Hyperparams, config: LoopConfig, real_data) -> Array:
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


def _check_curator(curator, hyper: Hyperparams, config: LoopConfig):
    """Checks the curator against the loop (concrete: ``ValueError``); the traced validity of its
    rates, and of ``num_candidates``, which only the default Luce rule uses (0 or k with a
    curator)."""
    if curator is None:
        return True
    curators_lib.check(curator)
    _groups(config, curator)
    nc = hyper.num_candidates
    if _checks.is_concrete(nc):
        if int(nc) not in (0, config.k):
            raise ValueError(f"`num_candidates` applies to the default Luce rule only; got "
                             f"num_candidates={int(nc)} with the curator {curator.name!r}.")
        return curator.ok()
    return curator.ok() & ((nc == 0) | (nc == config.k))


def _sample_spec(model: GenerativeModel, params, config: LoopConfig):
    return jax.eval_shape(lambda key, p: model.sample(key, p, config.num_samples),
                          jax.random.key(0), params)


def _check_real(real_data, real_weights, spec, config: LoopConfig):
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


def _fit_data_spec(real_data, spec, config: LoopConfig):
    """Shape of the data every refit of the loop receives (real rows first)."""
    n_real = 0 if real_data is None else real_data.shape[0]
    kept = config.num_samples if config.regime == "replace" else (
        config.num_generations * config.num_samples)
    return jax.ShapeDtypeStruct((n_real + kept,) + spec.shape[1:], spec.dtype)


def init_state(params0: PyTree, *, model: GenerativeModel, config: LoopConfig,
               real_data: ArrayLike | None = None,
               reward_model: reward_models_lib.RewardModel | None = None,
               key: PRNGKey | None = None) -> RetrainState:
    """The loop's initial state: ``params0`` at generation 0 (with an empty pool for
    ``accumulate``).

    A family whose params grow with the data (``kde`` holds its training points) gets ``params0``
    conformed to the shape of the loop's refits (``model.conform``: the same distribution with
    zero-weight padding), so the state keeps one shape over generations; pass the loop's
    ``real_data`` (or ``None``) so that shape is known. With a ``reward_model`` the state also
    holds its initial params, ``reward_model.init(key, samples)`` (``key`` defaults to
    ``jax.random.key(0)``; :func:`run` passes ``fold_in(key, 1)`` of its own key).

    Raises:
        ValueError: if the loop's refits change the params' shapes and the family cannot conform
            ``params0`` to them.
    """
    spec = _sample_spec(model, params0, config)
    if real_data is not None:
        real_data = jnp.asarray(real_data)
    data = _fit_data_spec(real_data, spec, config)
    weights = jax.ShapeDtypeStruct(data.shape[:1], jnp.result_type(float))
    like = jax.eval_shape(model.fit, jax.random.key(0), params0, data, weights)
    shapes = lambda tree: jax.tree.map(lambda x: (jnp.shape(x), jnp.result_type(x)), tree)  # noqa
    if jax.tree.structure(like) != jax.tree.structure(params0) or shapes(like) != shapes(params0):
        conform = getattr(model, "conform", None)
        if conform is None:
            raise ValueError(
                f"`model` {model.name!r} refits params of another shape than `params0` "
                f"({jax.tree.map(jnp.shape, params0)} -> {jax.tree.map(jnp.shape, like)}) and "
                "cannot conform them; a lax.scan over generations needs one shape.")
        params0 = conform(params0, like)
    reward_params = None
    if reward_model is not None:
        key = jax.random.key(0) if key is None else key
        reward_params = reward_model.init(key, jnp.zeros(spec.shape, spec.dtype))
    state = RetrainState(params=params0, generation=jnp.zeros((), jnp.int32),
                         reward_params=reward_params)
    if config.regime == "accumulate":
        rows = config.num_generations * config.num_samples
        pool = jnp.zeros((rows,) + spec.shape[1:], spec.dtype)
        return state.replace(pool=pool,
                             pool_weights=jnp.zeros((rows,), jnp.result_type(float)))
    return state


def _groups(config: LoopConfig, curator) -> int:
    """The number of groups of ``k`` candidates drawn per generation: ``num_samples / m`` for a
    curator that keeps m per group (``num_samples`` kept samples in all)."""
    m = 1 if curator is None else curator.kept(config.k)
    if config.num_samples % m:
        raise ValueError(f"`num_samples`={config.num_samples} must be a multiple of the {m} "
                         f"samples the curator {curator.name!r} keeps per group.")
    return config.num_samples // m


def _rewards(reward_fn, samples, hyper, *, columns: bool):
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


def _kept_rows(kept: Curated, config: LoopConfig, curator) -> Array:
    """The candidate row of every kept sample."""
    if curator is not None and not curator.per_group:
        return kept.index
    per_group = 1 if curator is None else curator.kept(config.k)
    groups = kept.index.shape[0] // per_group
    return jnp.repeat(jnp.arange(groups, dtype=jnp.int32), per_group) * config.k + kept.index


def _draw_and_curate(key, params, hyper, *, model, reward_fn, config, curator=None,
                     learned=None, reward_params=None):
    """Candidates, their (true) rewards, the kept samples and, with a learned reward model, the
    proxy rewards the curator read (the kept samples then carry their true rewards)."""
    key_sample, key_curate = jax.random.split(key)
    n = _groups(config, curator) * config.k
    candidates = model.sample(key_sample, params, n)
    rewards = _rewards(reward_fn, candidates, hyper,
                       columns=curator is not None and learned is None)
    proxy = None if learned is None else learned[0].apply(reward_params, candidates)
    read = rewards if proxy is None else proxy
    if curator is None:
        num_candidates = jnp.where(hyper.num_candidates > 0, hyper.num_candidates, config.k)
        kept = curate(key_curate, candidates, read, k=config.k, beta=hyper.beta,
                      num_candidates=num_candidates)
    else:
        kept = curate(key_curate, candidates, read, k=config.k, curator=curator)
    if proxy is not None:
        kept = kept.replace(rewards=rewards[_kept_rows(kept, config, curator)])
    return candidates, rewards, kept, proxy


def _feedback_step(key, state, hyper, *, model, reward_fn, learned):
    """Refits the learned reward on fresh comparisons when due; ``(reward_params, held-out
    accuracy)``."""
    reward_model, fb = learned
    key_draw, key_judge, key_fit, key_held = jax.random.split(key, 4)

    def judged(key_x, key_j, groups, **poison):
        x = model.sample(key_x, state.params, groups * fb.k)
        return reward_models_lib.compare(key_j, x, _rewards(reward_fn, x, hyper, columns=False),
                                         k=fb.k, judge=fb.judge, **poison)

    def refit(params):
        comparisons = judged(key_draw, key_judge, fb.num_comparisons, eps=fb.eps, flip=fb.flip,
                             reward_model=reward_model)
        return reward_model.fit(key_fit, params, comparisons)

    params = lax.cond(fb.due(state.generation), refit, lambda p: p, state.reward_params)
    held = judged(*jax.random.split(key_held), fb.num_heldout)
    acc = reward_models_lib.accuracy(
        reward_models_lib.group_rewards(reward_model, params, held), held)
    return params, acc


def _refit(key, state, kept, hyper, real_data, real_weights, *, model, config):
    n = config.num_samples
    if config.regime == "replace":
        data, weights = kept.samples, jnp.full((n,), 1.0 / n)
        if real_data is not None:
            a = jnp.asarray(hyper.real_fraction, weights.dtype)
            data = jnp.concatenate([real_data, data], axis=0)
            weights = jnp.concatenate([a * real_weights, (1.0 - a) * weights])
        return state.replace(params=model.fit(key, state.params, data, weights),
                             generation=state.generation + 1)
    start = state.generation * n
    pool = lax.dynamic_update_slice_in_dim(state.pool, kept.samples, start, axis=0)
    pool_weights = lax.dynamic_update_slice_in_dim(
        state.pool_weights, jnp.ones((n,), state.pool_weights.dtype), start, axis=0)
    data, weights = pool, pool_weights
    if real_data is not None:  # each real sample counts as one sample, like each kept one
        data = jnp.concatenate([real_data, pool], axis=0)
        weights = jnp.concatenate([real_weights * real_data.shape[0], pool_weights])
    params = model.fit(key, state.params, data, weights)
    return state.replace(params=params, generation=state.generation + 1, pool=pool,
                         pool_weights=pool_weights)


def retrain_step(
    key: PRNGKey,
    state: RetrainState,
    hyper: Hyperparams,
    real_data: ArrayLike | None,
    *,
    model: GenerativeModel,
    reward_fn: Callable[[Array], Array],
    config: LoopConfig,
    real_weights: ArrayLike | None = None,
    curator: Curator | None = None,
    reward_model: reward_models_lib.RewardModel | None = None,
    feedback: reward_models_lib.Feedback | None = None,
) -> tuple[RetrainState, RetrainInfo]:
    """One generation: draw candidates from the model, curate them, refit.

    Args:
        key: PRNG key, consumed.
        state: the current :class:`RetrainState` (see :func:`init_state`).
        hyper: :class:`Hyperparams` (array leaves; may be traced).
        real_data: ``(N, ...)`` real samples shaped like the model's samples, or ``None``.
        model: the :class:`~selfconsume.models.GenerativeModel`.
        reward_fn: maps ``(m, ...)`` samples to ``(m,)`` rewards; pure.
        config: the static :class:`LoopConfig`.
        real_weights: optional ``(N,)`` non-negative weights of the real samples.
        curator: the choice rule (:mod:`selfconsume.curators`), a pytree whose rates may be
            traced; ``None`` keeps 1 of k with ``softmax(hyper.beta * r)``.
        reward_model, feedback: a learned reward (as in :func:`run`); ``state`` must come from
            :func:`init_state` with the same ``reward_model``.

    Returns:
        ``(new_state, info)``; ``info`` describes the candidates drawn from ``state`` and whether
        the refit stayed finite. Traced invalid hyperparameters (``beta < 0``, ``real_fraction``
        outside ``[0, 1]`` or non-zero without real data, ...) give NaN params and
        ``fit_is_finite = False`` (the rule of :mod:`selfconsume._checks`).

    Raises:
        ValueError: for structural problems and concrete invalid values.
    """
    real_data, real_weights, ok, learned = _prepare(
        state.params, hyper, real_data, real_weights, model=model, reward_fn=reward_fn,
        config=config, curator=curator, reward_model=reward_model, feedback=feedback)
    _check_state(state, learned)
    return _step(key, state, hyper, real_data, real_weights, ok, model=model,
                 reward_fn=reward_fn, config=config, curator=curator, learned=learned)


def _check_state(state: RetrainState, learned) -> None:
    if (learned is None) != (state.reward_params is None):
        raise ValueError(
            "`state` must come from init_state(..., reward_model=...) with the loop's "
            "`reward_model`; got a state " + ("without" if learned else "with")
            + " reward params " + ("and a reward_model." if learned else "and no reward_model."))


def _step(key, state, hyper, real_data, real_weights, ok, *, model, reward_fn, config,
          curator=None, learned=None):
    accuracy = None
    if learned is not None:
        key, key_feedback = jax.random.split(key)
        reward_params, accuracy = _feedback_step(key_feedback, state, hyper, model=model,
                                                 reward_fn=reward_fn, learned=learned)
        state = state.replace(reward_params=reward_params)
    key_draw, key_fit = jax.random.split(key)
    candidates, rewards, kept, proxy = _draw_and_curate(
        key_draw, state.params, hyper, model=model, reward_fn=reward_fn, config=config,
        curator=curator, learned=learned, reward_params=state.reward_params)
    new_state = _refit(key_fit, state, kept, hyper, real_data, real_weights, model=model,
                       config=config)
    new_state = new_state.replace(params=_checks.poison(ok, new_state.params),
                                  reward_params=_checks.poison(ok, new_state.reward_params))
    info = RetrainInfo(candidates=candidates, candidate_rewards=rewards, kept=kept,
                       fit_is_finite=_all_finite((new_state.params, new_state.reward_params)),
                       hyper=hyper, proxy_rewards=proxy, reward_model_accuracy=accuracy)
    return new_state, info


def _check_learned(reward_model, feedback):
    """``(reward_model, feedback)`` checked (``feedback=None``: the default protocol), or
    ``None`` without a reward model; and their traced validity."""
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


def _prepare(params, hyper, real_data, real_weights, *, model, reward_fn, config, curator=None,
             reward_model=None, feedback=None):
    """The checks of every entry point: ``(real data, normalised weights, traced validity,
    learned)``, ``learned`` the checked ``(reward_model, feedback)`` or ``None``."""
    _check_loop_args(model, reward_fn, config)
    real_data, real_weights = _check_real(real_data, real_weights,
                                          _sample_spec(model, params, config), config)
    learned, learned_ok = _check_learned(reward_model, feedback)
    ok = (_check_hyper(hyper, config, real_data) & _check_curator(curator, hyper, config)
          & learned_ok)
    return real_data, real_weights, ok, learned


def _per_column(fn, rewards):
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
               _per_column(metrics_lib.reward_summary, info.candidate_rewards).items()}
        out["kept_reward_mean"] = jnp.nanmean(info.kept.rewards, axis=0)
        if info.proxy_rewards is not None:
            true = jnp.nanmean(info.candidate_rewards)
            proxy = jnp.nanmean(info.proxy_rewards)
            out.update(true_reward_mean=true, proxy_reward_mean=proxy, reward_gap=proxy - true,
                       reward_model_accuracy=info.reward_model_accuracy)
        out["is_finite"] = _all_finite(state.params)
        if holdout is not None and model.log_prob is not None:
            out["holdout_nll"] = -jnp.mean(model.log_prob(state.params, holdout))
        if model.name == "categorical":
            probs = state.params.probs
            states = jnp.arange(probs.shape[0], dtype=jnp.int32)
            rewards = jnp.asarray(info.hyper.reward_scale, probs.dtype) * reward_fn(states)
            out["expected_reward"] = _per_column(
                lambda r: metrics_lib.expected_reward(probs, r), rewards)
            out["entropy"] = metrics_lib.entropy(probs)
            if p_data is not None:
                out["kl_data"] = metrics_lib.kl_divergence(p_data, probs)
                out["tv_data"] = metrics_lib.total_variation(p_data, probs)
        return out

    return metrics


def _recorder(*, model, reward_fn, real_data, real_weights, metrics_fn=None, default=True,
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


def _loop_parts(params, hyper, real_data, real_weights, *, model, reward_fn, config, metrics_fn,
                default, holdout, curator=None, reward_model=None, feedback=None):
    """What every entry point of the loop checks and builds once: ``(real data, normalised
    weights, traced validity, record, curator, learned)``."""
    real_data, real_weights, ok, learned = _prepare(
        params, hyper, real_data, real_weights, model=model, reward_fn=reward_fn, config=config,
        curator=curator, reward_model=reward_model, feedback=feedback)
    record = _recorder(model=model, reward_fn=reward_fn, real_data=real_data,
                       real_weights=real_weights, metrics_fn=metrics_fn, default=default,
                       holdout=holdout)
    return real_data, real_weights, ok, record, curator, learned


def run_chunk(
    keys: PRNGKey,
    state: RetrainState,
    hyper: Hyperparams,
    real_data: ArrayLike | None,
    *,
    model: GenerativeModel,
    reward_fn: Callable[[Array], Array],
    config: LoopConfig,
    metrics_fn: Callable[[RetrainState, RetrainInfo], dict] | None = None,
    default: bool = True,
    real_weights: ArrayLike | None = None,
    holdout: ArrayLike | None = None,
    curator: Curator | None = None,
    reward_model: reward_models_lib.RewardModel | None = None,
    feedback: reward_models_lib.Feedback | None = None,
) -> tuple[RetrainState, dict[str, Array]]:
    """Runs ``len(keys)`` generations from ``state`` with ``lax.scan``: a chunk of :func:`run`.

    :func:`run` is ``init_state``, ``run_chunk`` over ``split(key, T + 1)[:T]`` and
    :func:`final_record` with the last key, so a loop run in chunks (e.g. by
    :func:`selfconsume.sweep` with a :class:`selfconsume.Generations` program, with checkpoints
    in between) reproduces :func:`run` exactly. Arguments as :func:`run`.

    Returns:
        ``(state, history)`` with history entries of leading axis ``len(keys)``, entry ``i``
        describing the state *before* the ``i``-th generation of the chunk.
    """
    parts = _loop_parts(state.params, hyper, real_data, real_weights, model=model,
                        reward_fn=reward_fn, config=config, metrics_fn=metrics_fn,
                        default=default, holdout=holdout, curator=curator,
                        reward_model=reward_model, feedback=feedback)
    return _scan(keys, state, hyper, parts, model=model, reward_fn=reward_fn, config=config)


def _scan(keys, state, hyper, parts, *, model, reward_fn, config):
    real_data, real_weights, ok, record, curator, learned = parts
    _check_state(state, learned)

    def body(state, key):
        new_state, info = _step(key, state, hyper, real_data, real_weights, ok, model=model,
                                reward_fn=reward_fn, config=config, curator=curator,
                                learned=learned)
        # the record sees the reward model that curated this generation (refitted when due)
        return new_state, record(state.replace(reward_params=new_state.reward_params), info)

    return lax.scan(body, state, keys)


def final_record(
    key: PRNGKey,
    state: RetrainState,
    hyper: Hyperparams,
    real_data: ArrayLike | None,
    *,
    model: GenerativeModel,
    reward_fn: Callable[[Array], Array],
    config: LoopConfig,
    metrics_fn: Callable[[RetrainState, RetrainInfo], dict] | None = None,
    default: bool = True,
    real_weights: ArrayLike | None = None,
    holdout: ArrayLike | None = None,
    curator: Curator | None = None,
    reward_model: reward_models_lib.RewardModel | None = None,
    feedback: reward_models_lib.Feedback | None = None,
) -> dict[str, Array]:
    """The history entry of the last state: its candidates are drawn and curated, not refitted
    (``fit_is_finite`` says whether the state's params are finite). Arguments as :func:`run`."""
    parts = _loop_parts(state.params, hyper, real_data, real_weights, model=model,
                        reward_fn=reward_fn, config=config, metrics_fn=metrics_fn,
                        default=default, holdout=holdout, curator=curator,
                        reward_model=reward_model, feedback=feedback)
    return _final(key, state, hyper, parts, model=model, reward_fn=reward_fn, config=config)


def _final(key, state, hyper, parts, *, model, reward_fn, config):
    _, _, ok, record, curator, learned = parts
    _check_state(state, learned)
    accuracy = None
    if learned is not None:  # the reward model of the last generation (refitted when due)
        key, key_feedback = jax.random.split(key)
        reward_params, accuracy = _feedback_step(key_feedback, state, hyper, model=model,
                                                 reward_fn=reward_fn, learned=learned)
        state = state.replace(reward_params=reward_params)
    candidates, rewards, kept, proxy = _draw_and_curate(
        key, state.params, hyper, model=model, reward_fn=reward_fn, config=config,
        curator=curator, learned=learned, reward_params=state.reward_params)
    finite = _all_finite((state.params, state.reward_params)) & ok
    return record(state, RetrainInfo(candidates=candidates, candidate_rewards=rewards, kept=kept,
                                     fit_is_finite=finite, hyper=hyper, proxy_rewards=proxy,
                                     reward_model_accuracy=accuracy))


def run(
    key: PRNGKey,
    params0: PyTree,
    real_data: ArrayLike | None,
    hyper: Hyperparams,
    *,
    model: GenerativeModel,
    reward_fn: Callable[[Array], Array],
    config: LoopConfig,
    metrics_fn: Callable[[RetrainState, RetrainInfo], dict] | None = None,
    default: bool = True,
    real_weights: ArrayLike | None = None,
    holdout: ArrayLike | None = None,
    curator: Curator | None = None,
    reward_model: reward_models_lib.RewardModel | None = None,
    feedback: reward_models_lib.Feedback | None = None,
) -> tuple[RetrainState, dict[str, Array]]:
    """Runs ``config.num_generations`` generations of curated retraining with ``lax.scan``.

    Jit it once at the outermost call, with the model, reward, config and metrics as static
    arguments: ``jax.jit(sc.run, static_argnames=("model", "reward_fn", "config",
    "metrics_fn"))``; ``hyper`` stays an array argument, so sweeps over it never recompile.

    Generation ``t`` uses ``jax.random.split(key, num_generations + 1)[t]`` (the last key draws
    the final generation's candidates), so a loop run in chunks with :func:`run_chunk` and
    :func:`final_record` on slices of those keys reproduces this function exactly.

    Args:
        key: PRNG key, consumed (one subkey per generation).
        params0: the initial model's params (e.g. ``model.init(key, real_data)``).
        real_data: ``(N, ...)`` real samples shaped like the model's samples, or ``None``.
        hyper: :class:`Hyperparams`.
        model: the :class:`~selfconsume.models.GenerativeModel`.
        reward_fn: maps ``(m, ...)`` samples to ``(m,)`` rewards; pure.
        config: the static :class:`LoopConfig`.
        metrics_fn: optional ``metrics_fn(state, info) -> dict`` of arrays (or Python numbers),
            evaluated at every generation; its entries extend the defaults (or replace them with
            ``default=False``).
        default: whether to record :func:`default_metrics`.
        real_weights: optional ``(N,)`` weights of the real samples.
        holdout: optional held-out real samples for ``holdout_nll``.
        curator: the choice rule (:mod:`selfconsume.curators`; its rates are array leaves, so
            pass it as an array argument under ``jit``); ``None`` keeps 1 of k with
            ``softmax(hyper.beta * r)``. ``config.num_samples`` counts the kept samples: a curator
            that keeps m per group sees ``num_samples / m`` groups of k. With a curator,
            ``reward_fn`` may return ``(n, R)`` rewards (R reward functions; the curator's
            ``column`` says which it reads) and the reward metrics become vectors of R.
        reward_model: a learned reward (:mod:`selfconsume.reward_models`, a pytree: pass it as
            an array argument under ``jit``). Each generation ``t`` due for a refit
            (``feedback.refit_every``) draws ``feedback.num_comparisons`` groups of
            ``feedback.k`` fresh samples of the current model, has ``feedback.judge`` rank them
            on the true reward ``reward_fn`` (poisoned at rate ``feedback.eps``) and refits the
            reward model from its current params; the curator then reads the learned reward,
            and the history adds ``true_reward_mean``, ``proxy_reward_mean``, ``reward_gap``
            and ``reward_model_accuracy`` (:func:`default_metrics`).
        feedback: :func:`selfconsume.reward_models.feedback` (default ``feedback()``): how
            comparisons are made; its ``eps`` and judge's rates are array leaves.

    Returns:
        ``(final_state, history)``: the :class:`RetrainState` after the last generation
        (``final_state.params`` are the final params) and a dict of arrays with leading axis
        ``num_generations + 1``; entry ``t`` describes generation ``t`` (``t = 0`` is
        ``params0``), including ``fit_is_finite`` (whether the refit from generation ``t`` stayed
        finite; at ``t = T``, whether the final params are finite).

    Raises:
        ValueError: for structural problems and concrete invalid values (``real_fraction`` > 0
            without ``real_data`` among them). Traced invalid values give NaN params and
            ``fit_is_finite = False`` instead (:mod:`selfconsume._checks`).
    """
    parts = _loop_parts(params0, hyper, real_data, real_weights, model=model, reward_fn=reward_fn,
                        config=config, metrics_fn=metrics_fn, default=default, holdout=holdout,
                        curator=curator, reward_model=reward_model, feedback=feedback)
    loop = dict(model=model, reward_fn=reward_fn, config=config)
    keys = jax.random.split(key, config.num_generations + 1)
    state0 = init_state(params0, model=model, config=config, real_data=parts[0],
                        reward_model=reward_model, key=jax.random.fold_in(key, 1))
    final, history = _scan(keys[:-1], state0, hyper, parts, **loop)
    last = _final(keys[-1], final, hyper, parts, **loop)
    history = jax.tree_util.tree_map(lambda h, x: jnp.concatenate([h, x[None]]), history, last)
    return final, history

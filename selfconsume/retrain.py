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

from typing import Callable

import jax
import jax.numpy as jnp
from jax import lax

from selfconsume import _checks, _loop
from selfconsume import preferences as preferences_lib
from selfconsume import reward_models as reward_models_lib
from selfconsume._loop import (
    REGIMES,
    Hyperparams,
    LoopConfig,
    RetrainInfo,
    RetrainState,
    default_metrics,
)
from selfconsume.curators import Curator
from selfconsume.models import GenerativeModel
from selfconsume.types import Array, ArrayLike, PRNGKey, PyTree

__all__ = ["LoopConfig", "Hyperparams", "RetrainState", "RetrainInfo", "init_state",
           "retrain_step", "run", "run_chunk", "final_record", "default_metrics", "REGIMES"]


def _fit_data_spec(real_data, spec, config: LoopConfig):
    """Shape of the data every refit of the loop receives (real rows first)."""
    n_real = 0 if real_data is None else real_data.shape[0]
    kept = config.num_samples if config.regime == "replace" else (
        config.num_generations * config.num_samples)
    return jax.ShapeDtypeStruct((n_real + kept,) + spec.shape[1:], spec.dtype)


def init_state(params0: PyTree, *, model: GenerativeModel, config: LoopConfig,
               real_data: ArrayLike | None = None,
               reward_model: reward_models_lib.RewardModel | None = None,
               key: PRNGKey | None = None,
               preference: preferences_lib.Preference | None = None) -> RetrainState:
    """The loop's initial state: ``params0`` at generation 0 (with an empty pool for
    ``accumulate``).

    A family whose params grow with the data (``kde`` holds its training points) gets ``params0``
    conformed to the shape of the loop's refits (``model.conform``: the same distribution with
    zero-weight padding), so the state keeps one shape over generations; pass the loop's
    ``real_data`` (or ``None``) so that shape is known. With a ``reward_model`` the state also
    holds its initial params, ``reward_model.init(key, samples)`` (``key`` defaults to
    ``jax.random.key(0)``; :func:`run` passes ``fold_in(key, 1)`` of its own key); with a
    drifting ``preference``, its initial parameters ``preference.init()``.

    Raises:
        ValueError: if the loop's refits change the params' shapes and the family cannot conform
            ``params0`` to them.
    """
    spec = _loop.sample_spec(model, params0, config)
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
    elif preference is not None:
        reward_params = preference.init()
    state = RetrainState(params=params0, generation=jnp.zeros((), jnp.int32),
                         reward_params=reward_params)
    if config.regime == "accumulate":
        rows = config.num_generations * config.num_samples
        pool = jnp.zeros((rows,) + spec.shape[1:], spec.dtype)
        return state.replace(pool=pool,
                             pool_weights=jnp.zeros((rows,), jnp.result_type(float)))
    return state


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
    preference: preferences_lib.Preference | None = None,
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
        config=config, curator=curator, reward_model=reward_model, feedback=feedback,
        preference=preference)
    _check_state(state, learned)
    return _step(key, state, hyper, real_data, real_weights, ok, model=model,
                 reward_fn=reward_fn, config=config, curator=curator, learned=learned)


def _check_state(state: RetrainState, learned) -> None:
    if (learned is None) != (state.reward_params is None):
        given = "a reward_model or preference" if learned is not None else "neither"
        raise ValueError(
            "`state` must come from init_state(..., reward_model=...) (or preference=...) with "
            f"the loop's reward model or preference; got a state "
            f"{'without' if learned is not None else 'with'} reward params and {given}.")


def _step(key, state, hyper, real_data, real_weights, ok, *, model, reward_fn, config,
          curator=None, learned=None):
    key_draw, key_fit = jax.random.split(key)
    state, candidates, rewards, kept, read = _loop.generation(
        key_draw, state, hyper, model=model, reward_fn=reward_fn, config=config, curator=curator,
        learned=learned)
    new_state = _refit(key_fit, state, kept, hyper, real_data, real_weights, model=model,
                       config=config)
    new_state = new_state.replace(params=_checks.poison(ok, new_state.params),
                                  reward_params=_checks.poison(ok, new_state.reward_params))
    info = RetrainInfo(candidates=candidates, candidate_rewards=rewards, kept=kept,
                       fit_is_finite=_loop.all_finite((new_state.params, new_state.reward_params)),
                       hyper=hyper, **read)
    return new_state, info


def _prepare(params, hyper, real_data, real_weights, *, model, reward_fn, config, curator=None,
             reward_model=None, feedback=None, preference=None):
    """The checks of every entry point: ``(real data, normalised weights, traced validity,
    learned)``, ``learned`` the checked ``(reward_model, feedback)``, preference or ``None``."""
    _loop.check_loop_args(model, reward_fn, config)
    real_data, real_weights = _loop.check_real(real_data, real_weights,
                                               _loop.sample_spec(model, params, config), config)
    learned, learned_ok = _loop.check_learned(reward_model, feedback, preference)
    ok = (_loop.check_hyper(hyper, config, real_data)
          & _loop.check_curator(curator, hyper, config) & learned_ok)
    return real_data, real_weights, ok, learned


def _loop_parts(params, hyper, real_data, real_weights, *, model, reward_fn, config, metrics_fn,
                default, holdout, curator=None, reward_model=None, feedback=None,
                preference=None):
    """What every entry point of the loop checks and builds once: ``(real data, normalised
    weights, traced validity, record, curator, learned)``."""
    real_data, real_weights, ok, learned = _prepare(
        params, hyper, real_data, real_weights, model=model, reward_fn=reward_fn, config=config,
        curator=curator, reward_model=reward_model, feedback=feedback, preference=preference)
    record = _loop.recorder(model=model, reward_fn=reward_fn, real_data=real_data,
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
    preference: preferences_lib.Preference | None = None,
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
                        reward_model=reward_model, feedback=feedback, preference=preference)
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
    preference: preferences_lib.Preference | None = None,
) -> dict[str, Array]:
    """The history entry of the last state: its candidates are drawn and curated, not refitted
    (``fit_is_finite`` says whether the state's params are finite). Arguments as :func:`run`."""
    parts = _loop_parts(state.params, hyper, real_data, real_weights, model=model,
                        reward_fn=reward_fn, config=config, metrics_fn=metrics_fn,
                        default=default, holdout=holdout, curator=curator,
                        reward_model=reward_model, feedback=feedback, preference=preference)
    return _final(key, state, hyper, parts, model=model, reward_fn=reward_fn, config=config)


def _final(key, state, hyper, parts, *, model, reward_fn, config):
    _, _, ok, record, curator, learned = parts
    _check_state(state, learned)
    state, candidates, rewards, kept, read = _loop.generation(
        key, state, hyper, model=model, reward_fn=reward_fn, config=config, curator=curator,
        learned=learned)
    finite = _loop.all_finite((state.params, state.reward_params)) & ok
    return record(state, RetrainInfo(candidates=candidates, candidate_rewards=rewards, kept=kept,
                                     fit_is_finite=finite, hyper=hyper, **read))


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
    preference: preferences_lib.Preference | None = None,
) -> tuple[RetrainState, dict[str, Array]]:
    """Runs ``config.num_generations`` generations of curated retraining with ``lax.scan``.

    Jit it once at the outermost call, with the model, reward, config and metrics as static
    arguments: ``jax.jit(sc.run, static_argnames=("model", "reward_fn", "config",
    "metrics_fn", "default"))``; ``hyper`` stays an array argument, so sweeps over it never recompile.

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
        preference: a drifting preference (:mod:`selfconsume.preferences`, a pytree: pass it as
            an array argument under ``jit``): the curator reads ``preference.apply(w_t, x)``,
            the parameters ``w_t`` moving with each generation's candidates from generation 1
            on, and the history adds ``preference_reward_mean`` and ``reward_params``
            (:math:`w_t`); ``reward_fn`` stays the reference reward of the reward metrics.

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
                        curator=curator, reward_model=reward_model, feedback=feedback,
                        preference=preference)
    loop = dict(model=model, reward_fn=reward_fn, config=config)
    keys = jax.random.split(key, config.num_generations + 1)
    state0 = init_state(params0, model=model, config=config, real_data=parts[0],
                        reward_model=reward_model, preference=preference,
                        key=jax.random.fold_in(key, 1))
    final, history = _scan(keys[:-1], state0, hyper, parts, **loop)
    last = _final(keys[-1], final, hyper, parts, **loop)
    history = jax.tree_util.tree_map(lambda h, x: jnp.concatenate([h, x[None]]), history, last)
    return final, history

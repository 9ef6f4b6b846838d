r"""Ecosystems: M generative models retrained on each other's curated samples.

M models of one family, their params stacked on a leading model axis. Each generation, model
:math:`i` draws ``n * k`` candidates, its own curator keeps ``n`` of them on its own reward
(column :math:`c_i` of ``reward_fn``), and every model refits on real data and on the kept
samples of all the models, mixed by the interaction matrix :math:`W` (rows sum to one):

.. math:: \theta^i_{t+1} = \arg\max_\theta\; a_i \sum_j v_j \log p_\theta(y_j)
          + (1 - a_i) \sum_j W_{ij}\, \frac1n \sum_l \log p_\theta(\tilde x^j_l),

the sample version of :math:`p^i_{t+1} = a_i\, p_{\rm data} + (1 - a_i) \sum_j W_{ij}\,
p^j_t H^j_{p^j_t}` (:func:`selfconsume.theory.ecosystem_map`). Every model fits the same
``N + M n`` rows (real first, then model 0's kept samples, model 1's, ...) with its own
weights: one weighted fit per model, vmapped over models. :math:`W` is an array leaf, as are the
per-model rates (``Hyperparams`` leaves of shape ``(M,)``, the curators' rates stacked by
:func:`selfconsume.curators.stack`), so a sweep over the coupling compiles once. ``W = I`` is M
independent loops; ``W = (1 - c) I + c / M`` couples them with strength :math:`c`.

**Keys.** Generation :math:`t` uses ``split(key, T + 1)[t]`` as :func:`selfconsume.run` does;
model 0 draws with that key itself and model :math:`i > 0` with ``fold_in(key_t, i)``, so an
ecosystem of one model is :func:`selfconsume.run`, bit for bit (and any model's stream stays the
same when models are added after it).

**History.** Every metric of :func:`selfconsume.retrain.default_metrics` (and ``metrics_fn``'s)
is recorded per model: entries have shape ``(T + 1, M, ...)``.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from selfconsume import _checks, _loop
from selfconsume import curators as curators_lib
from selfconsume import preferences as preferences_lib
from selfconsume._loop import Hyperparams, LoopConfig, RetrainInfo, RetrainState
from selfconsume.curators import Curator
from selfconsume.models import GenerativeModel
from selfconsume.retrain import init_state as _init_one
from selfconsume.types import Array, ArrayLike, PRNGKey, PyTree

__all__ = ["run", "run_chunk", "final_record", "init_state", "coupling", "model_keys",
           "num_models"]


def coupling(num_models: int, strength: ArrayLike) -> Array:
    r"""The interaction matrix :math:`W = (1 - c) I + \frac{c}{M} \mathbf{1}\mathbf{1}^\top`:
    each model keeps :math:`1 - c + c/M` of its own kept samples and takes :math:`c/M` from each
    other model (:math:`c = 0`: independent loops, :math:`c = 1`: one shared pool).

    Args:
        num_models: static M >= 1.
        strength: :math:`c \in [0, 1]` (possibly traced: vmap over it).

    Returns:
        ``(M, M)`` row-stochastic matrix.
    """
    m = _checks.static_int("num_models", num_models, minimum=1)
    _checks.scalar("strength", strength, minimum=0.0, maximum=1.0)
    c = jnp.asarray(strength, jnp.result_type(float)) if isinstance(strength, (int, float)) \
        else jnp.asarray(strength)
    return (1.0 - c) * jnp.eye(m, dtype=c.dtype) + c / m


def model_keys(key: PRNGKey, num_models: int) -> PRNGKey:
    """The generation keys of the M models: ``key`` itself for model 0, ``fold_in(key, i)`` for
    model ``i > 0``; ``(M,)`` keys."""
    rest = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(1, num_models))
    return jnp.concatenate([key[None], rest])


def num_models(params: PyTree) -> int:
    """The number of models of stacked params (the leading axis of every leaf)."""
    leaves = jax.tree_util.tree_leaves(params)
    if not leaves or any(jnp.ndim(x) == 0 for x in leaves) or len(
            {jnp.shape(x)[0] for x in leaves}) != 1:
        raise ValueError(f"`params` must be M models' params stacked on a leading axis (every "
                         f"leaf of shape (M, ...)); got leaf shapes "
                         f"{[jnp.shape(x) for x in leaves]}.")
    return int(jnp.shape(leaves[0])[0])


def _over_models(fn, m: int):
    """``jax.vmap(fn)`` over the model axis; for one model, ``fn`` itself on the unstacked
    arguments (a batch of one is not always computed bit for bit like no batch)."""
    if m > 1:
        return jax.vmap(fn)

    def single(*args):
        return jax.tree.map(lambda x: x[None], fn(*jax.tree.map(lambda x: x[0], args)))

    return single


def _unstack(tree, i: int):
    return jax.tree.map(lambda x: x[i], tree)


def _stack(trees):
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _per_model_hyper(hyper: Hyperparams, m: int) -> Hyperparams:
    """``hyper`` with every leaf broadcast to ``(M,)`` (scalars: the same value for all)."""
    if not isinstance(hyper, Hyperparams):
        raise ValueError(f"`hyper` must be a selfconsume.Hyperparams; got {type(hyper).__name__}.")
    out = {}
    for name in ("beta", "real_fraction", "num_candidates", "reward_scale"):
        value = jnp.asarray(getattr(hyper, name))
        if value.ndim > 1 or (value.ndim == 1 and value.shape[0] != m):
            raise ValueError(f"`hyper.{name}` must be a scalar or one value per model ({m},); "
                             f"got shape {value.shape}.")
        out[name] = jnp.broadcast_to(value, (m,))
    return Hyperparams(**out)


def _check_interaction(interaction, m: int):
    """``W`` as a float array, checked: concrete problems raise, traced ones give the validity."""
    w = jnp.asarray(interaction)
    if w.shape != (m, m):
        raise ValueError(f"`interaction` must be an (M, M) = ({m}, {m}) matrix for the {m} "
                         f"models; got shape {w.shape}.")
    if not jnp.issubdtype(w.dtype, jnp.floating):
        w = w.astype(jnp.result_type(float))
    tol = 1e-6 if jnp.finfo(w.dtype).bits <= 32 else 1e-12
    if _checks.is_concrete(w):
        v = np.asarray(w)
        if not np.all(np.isfinite(v)) or np.any(v < 0) or np.any(
                np.abs(v.sum(axis=1) - 1.0) > tol * m):
            raise ValueError(f"`interaction` must be finite and non-negative with rows summing to "
                             f"one (row i: how model i mixes the models' kept samples); got "
                             f"{_checks.show(w)} with row sums {_checks.show(v.sum(axis=1))}.")
        return w, True
    ok = jnp.all(jnp.isfinite(w)) & jnp.all(w >= 0) & jnp.all(
        jnp.abs(jnp.sum(w, axis=1) - 1.0) <= tol * m)
    return w, ok


def _check_columns(columns, m: int):
    if columns is None:
        return None
    columns = tuple(columns)
    if len(columns) != m or not all(isinstance(c, (int, np.integer)) and not isinstance(
            c, bool) and c >= 0 for c in columns):
        raise ValueError(f"`columns` must be None or one reward column index >= 0 per model "
                         f"({m} integers); got {columns!r}.")
    return tuple(int(c) for c in columns)


def _curators(curator, m: int):
    """``(per-model curators, stacked curator)``, ``(None, None)`` for the default Luce rule."""
    if curator is None:
        return None, None
    if isinstance(curator, Curator):
        curator = [curator] * m
    if not isinstance(curator, Sequence) or isinstance(curator, str):
        raise ValueError(f"`curator` must be None, a curator, or one curator per model; got "
                         f"{type(curator).__name__}.")
    try:
        stacked = curators_lib.stack(curator, num=m)
    except ValueError as err:  # name this function's argument, `curator`
        raise ValueError(str(err).replace("`curators", "`curator")) from None
    for i, c in enumerate(curator):
        if any(col is not None for col in c.columns()):
            raise ValueError(f"`curator[{i}]` reads its model's reward column (`columns`), so its "
                             f"own `column` must be None; got {c.columns()}.")
    return list(curator), stacked


def _column_reward(reward_fn, column):
    """Model ``i``'s reward: ``reward_fn`` or its column ``column`` (possibly traced)."""
    if column is None:
        return reward_fn

    def reward(x):
        table = jnp.asarray(reward_fn(x))
        if table.ndim != 2:
            raise ValueError(f"`reward_fn` must return (n, R) rewards with `columns`; got shape "
                             f"{table.shape}.")
        return jnp.take(table, column, axis=1)

    return reward


def _parts(params, hyper, real_data, real_weights, interaction, *, model, reward_fn, config,
           curator, columns, preference, metrics_fn, default, holdout):
    """Every check of an entry point, once: a dict of what the loop needs."""
    m = num_models(params)
    _loop.check_loop_args(model, reward_fn, config)
    if config.regime != "replace":
        raise ValueError(f"`config.regime` must be 'replace' for an ecosystem (each model refits "
                         f"on this generation's kept samples); got {config.regime!r}.")
    spec = _loop.sample_spec(model, _unstack(params, 0), config)
    real_data, real_weights = _loop.check_real(real_data, real_weights, spec, config)
    hyper = _per_model_hyper(hyper, m)
    w, w_ok = _check_interaction(interaction, m)
    columns = _check_columns(columns, m)
    listed, stacked = _curators(curator, m)
    learned, learned_ok = _loop.check_learned(None, None, preference)
    shape = jax.eval_shape(lambda x: reward_fn(x),  # any callable, weak-referable or not
                           jax.ShapeDtypeStruct(spec.shape, spec.dtype)).shape
    if columns is not None and (len(shape) != 2 or max(columns) >= shape[1]):
        raise ValueError(f"`columns` {columns} must index the reward columns of `reward_fn`, "
                         f"which returns shape {shape}.")
    if columns is None and len(shape) == 2 and shape[1] != 1:
        raise ValueError(f"`reward_fn` returns {shape[1]} reward columns (shape {shape}): pass "
                         f"`columns`, the column each of the {m} models reads.")
    ok = []
    for i in range(m):
        hyper_i = _unstack(hyper, i)
        ok.append(_loop.check_hyper(hyper_i, config, real_data)
                  & _loop.check_curator(None if listed is None else listed[i], hyper_i, config)
                  & w_ok & learned_ok)
    ok = jnp.stack([jnp.asarray(x) for x in ok])
    for _ in range(m - 1):  # a model refitting on a poisoned model's samples is poisoned too
        ok = ok & jnp.all((w == 0) | ok[None, :], axis=1)
    col = None if columns is None else jnp.asarray(columns, jnp.int32)
    def record(state_i, info_i, column):  # built in the trace: the column may be traced
        fn = _loop.recorder(model=model, reward_fn=_column_reward(reward_fn, column),
                            real_data=real_data, real_weights=real_weights,
                            metrics_fn=metrics_fn, default=default, holdout=holdout)
        return fn(state_i, info_i)

    return dict(m=m, real_data=real_data, real_weights=real_weights, hyper=hyper, w=w, ok=ok,
                curator=stacked, col=col, learned=learned, record=record)


def _check_state(state, parts):
    if not isinstance(state, RetrainState):
        raise ValueError(f"`state` must be a RetrainState from sc.ecosystem.init_state; got "
                         f"{type(state).__name__}.")
    if jnp.shape(state.generation) != (parts["m"],):
        raise ValueError(f"`state` must hold {parts['m']} models (generation of shape "
                         f"({parts['m']},)); got generation of shape "
                         f"{jnp.shape(state.generation)}.")
    if (parts["learned"] is None) != (state.reward_params is None):
        raise ValueError("`state` must come from sc.ecosystem.init_state with the loop's "
                         "`preference` (reward params with one, none without).")


def _curate_all(key, state, parts, *, model, reward_fn, config, refit=True):
    """Every model draws and curates (vmapped): ``(state, candidates, rewards, kept, read,
    fit keys)``, each with a leading model axis (``refit=False``: the final record, whose key
    draws and curates, as in :func:`selfconsume.run`)."""
    keys = model_keys(key, parts["m"])
    col = parts["col"]

    def one(key_i, state_i, hyper_i, curator_i, col_i):
        key_draw, key_fit = jax.random.split(key_i) if refit else (key_i, key_i)
        state_i, candidates, rewards, kept, read = _loop.generation(
            key_draw, state_i, hyper_i, model=model, reward_fn=_column_reward(reward_fn, col_i),
            config=config, curator=curator_i, learned=parts["learned"])
        return state_i, candidates, rewards, kept, read, key_fit

    return _over_models(one, parts["m"])(keys, state, parts["hyper"], parts["curator"], col)


def _refit_all(keys, state, kept, parts, *, model, config):
    """Model ``i`` refits on the real data and every model's kept samples, weighted by row ``i``
    of ``W`` (vmapped over models)."""
    m, n, real = parts["m"], config.num_samples, parts["real_data"]
    pooled = kept.samples.reshape((m * n,) + kept.samples.shape[2:])
    data = pooled if real is None else jnp.concatenate([real, pooled], axis=0)

    def one(key_i, state_i, hyper_i, row):
        if m == 1:  # W = [[1]]: the weights of sc.run, computed as it does
            weights = jnp.full((n,), 1.0 / n)
        else:
            weights = (row.astype(jnp.result_type(float))[:, None]
                       * jnp.full((m, n), 1.0 / n)).reshape(-1)
        if real is not None:
            a = jnp.asarray(hyper_i.real_fraction, weights.dtype)
            weights = jnp.concatenate([a * parts["real_weights"], (1.0 - a) * weights])
        params = model.fit(key_i, state_i.params, data, weights)
        return state_i.replace(params=params, generation=state_i.generation + 1)

    return _over_models(one, m)(keys, state, parts["hyper"], parts["w"])


def _records(state, info, parts):
    return _over_models(parts["record"], parts["m"])(state, info, parts["col"])


def _info(candidates, rewards, kept, finite, hyper, read):
    return RetrainInfo(candidates=candidates, candidate_rewards=rewards, kept=kept,
                       fit_is_finite=finite, hyper=hyper, **read)


def _scan(keys, state, parts, *, model, reward_fn, config):
    _check_state(state, parts)
    poison = _over_models(_checks.poison, parts["m"])
    finite = _over_models(_loop.all_finite, parts["m"])

    def body(state, key):
        curated, candidates, rewards, kept, read, keys_fit = _curate_all(
            key, state, parts, model=model, reward_fn=reward_fn, config=config)
        new = _refit_all(keys_fit, curated, kept, parts, model=model, config=config)
        new = new.replace(params=poison(parts["ok"], new.params),
                          reward_params=poison(parts["ok"], new.reward_params))
        info = _info(candidates, rewards, kept, finite((new.params, new.reward_params)),
                     parts["hyper"], read)
        return new, _records(state.replace(reward_params=new.reward_params), info, parts)

    return lax.scan(body, state, keys)


def _final(key, state, parts, *, model, reward_fn, config):
    _check_state(state, parts)
    state, candidates, rewards, kept, read, _ = _curate_all(
        key, state, parts, model=model, reward_fn=reward_fn, config=config, refit=False)
    finite = _over_models(_loop.all_finite, parts["m"])((state.params, state.reward_params))
    finite = finite & parts["ok"]
    return _records(state, _info(candidates, rewards, kept, finite, parts["hyper"], read), parts)


def init_state(params0: PyTree, *, model: GenerativeModel, config: LoopConfig,
               real_data: ArrayLike | None = None,
               preference: preferences_lib.Preference | None = None) -> RetrainState:
    """The ecosystem's initial state: :func:`selfconsume.retrain.init_state` of every model,
    stacked (``generation`` of shape ``(M,)``).

    Args:
        params0: the M models' params stacked on a leading axis (e.g.
            ``jax.vmap(lambda k: model.init(k, real))(jax.random.split(key, M))``).
        model, config, real_data, preference: as in :func:`run`.
    """
    m = num_models(params0)
    return _stack([_init_one(_unstack(params0, i), model=model, config=config,
                             real_data=real_data, preference=preference) for i in range(m)])


def run_chunk(
    keys: PRNGKey,
    state: RetrainState,
    hyper: Hyperparams,
    real_data: ArrayLike | None,
    *,
    model: GenerativeModel,
    reward_fn: Callable[[Array], Array],
    config: LoopConfig,
    interaction: ArrayLike,
    curator: Curator | Sequence[Curator] | None = None,
    columns: Sequence[int] | None = None,
    preference: preferences_lib.Preference | None = None,
    metrics_fn: Callable[[RetrainState, RetrainInfo], dict] | None = None,
    default: bool = True,
    real_weights: ArrayLike | None = None,
    holdout: ArrayLike | None = None,
) -> tuple[RetrainState, dict[str, Array]]:
    """Runs ``len(keys)`` generations of the ecosystem from ``state``: a chunk of :func:`run`
    (``run`` is :func:`init_state`, ``run_chunk`` over ``split(key, T + 1)[:T]`` and
    :func:`final_record` with the last key). Arguments as :func:`run`.

    Returns:
        ``(state, history)``, history entries of shape ``(len(keys), M, ...)``.
    """
    parts = _parts(state.params, hyper, real_data, real_weights, interaction, model=model,
                   reward_fn=reward_fn, config=config, curator=curator, columns=columns,
                   preference=preference, metrics_fn=metrics_fn, default=default,
                   holdout=holdout)
    return _scan(keys, state, parts, model=model, reward_fn=reward_fn, config=config)


def final_record(
    key: PRNGKey,
    state: RetrainState,
    hyper: Hyperparams,
    real_data: ArrayLike | None,
    *,
    model: GenerativeModel,
    reward_fn: Callable[[Array], Array],
    config: LoopConfig,
    interaction: ArrayLike,
    curator: Curator | Sequence[Curator] | None = None,
    columns: Sequence[int] | None = None,
    preference: preferences_lib.Preference | None = None,
    metrics_fn: Callable[[RetrainState, RetrainInfo], dict] | None = None,
    default: bool = True,
    real_weights: ArrayLike | None = None,
    holdout: ArrayLike | None = None,
) -> dict[str, Array]:
    """The history entry of the last state (candidates drawn and curated, not refitted), per
    model: entries of shape ``(M, ...)``. Arguments as :func:`run`."""
    parts = _parts(state.params, hyper, real_data, real_weights, interaction, model=model,
                   reward_fn=reward_fn, config=config, curator=curator, columns=columns,
                   preference=preference, metrics_fn=metrics_fn, default=default,
                   holdout=holdout)
    return _final(key, state, parts, model=model, reward_fn=reward_fn, config=config)


def run(
    key: PRNGKey,
    params0: PyTree,
    real_data: ArrayLike | None,
    hyper: Hyperparams,
    *,
    model: GenerativeModel,
    reward_fn: Callable[[Array], Array],
    config: LoopConfig,
    interaction: ArrayLike,
    curator: Curator | Sequence[Curator] | None = None,
    columns: Sequence[int] | None = None,
    preference: preferences_lib.Preference | None = None,
    metrics_fn: Callable[[RetrainState, RetrainInfo], dict] | None = None,
    default: bool = True,
    real_weights: ArrayLike | None = None,
    holdout: ArrayLike | None = None,
) -> tuple[RetrainState, dict[str, Array]]:
    """Runs ``config.num_generations`` generations of M models retrained on each other's curated
    samples (module docstring), with ``lax.scan`` over generations and ``vmap`` over models.

    Jit it once at the outermost call with ``model``, ``reward_fn``, ``config``, ``columns``,
    ``metrics_fn`` and ``default`` static; ``hyper``, ``interaction``, the curators and the
    preference are array arguments (sweeps over them never recompile).

    Args:
        key: PRNG key, consumed (see the module docstring for the per-model streams).
        params0: the M models' initial params, stacked on a leading axis.
        real_data: ``(N, ...)`` real samples shared by all models, or ``None``.
        hyper: :class:`selfconsume.Hyperparams` whose leaves are scalars (shared) or ``(M,)``
            (per model): ``real_fraction`` is :math:`a_i`, ``beta`` the default Luce rule's.
        model, reward_fn, config: as in :func:`selfconsume.run` (``config.regime`` must be
            ``"replace"``); ``reward_fn`` may return ``(n, R)`` rewards with ``columns``.
        interaction: ``(M, M)`` :math:`W`, non-negative, rows summing to one (an array leaf).
        curator: ``None`` (Luce with ``hyper.beta``), one curator for every model, or a sequence
            of M curators of one structure (their rates may differ; the curators read their
            model's reward, so their own ``column`` must be ``None``).
        columns: static, one reward column per model (``reward_fn`` returning ``(n, R)``), or
            ``None``: every model reads ``reward_fn`` as it is.
        preference: a drifting preference (:mod:`selfconsume.preferences`) shared by the
            models' curators, each model's parameters drifting with its own candidates.
        metrics_fn, default, real_weights, holdout: as in :func:`selfconsume.run`, evaluated per
            model.

    Returns:
        ``(final_state, history)``: the stacked :class:`selfconsume.RetrainState` and a dict of
        arrays of shape ``(T + 1, M, ...)``; entry ``[t, i]`` describes model ``i`` at
        generation ``t``.

    Raises:
        ValueError: for structural problems and concrete invalid values (traced invalid values
            give NaN params and ``fit_is_finite = False`` for the models they concern).
    """
    parts = _parts(params0, hyper, real_data, real_weights, interaction, model=model,
                   reward_fn=reward_fn, config=config, curator=curator, columns=columns,
                   preference=preference, metrics_fn=metrics_fn, default=default,
                   holdout=holdout)
    loop = dict(model=model, reward_fn=reward_fn, config=config)
    keys = jax.random.split(key, config.num_generations + 1)
    state0 = init_state(params0, model=model, config=config, real_data=parts["real_data"],
                        preference=preference)
    final, history = _scan(keys[:-1], state0, parts, **loop)
    last = _final(keys[-1], final, parts, **loop)
    history = jax.tree_util.tree_map(lambda h, x: jnp.concatenate([h, x[None]]), history, last)
    return final, history

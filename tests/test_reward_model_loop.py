"""The retraining loop with a learned reward model (``sc.run(..., reward_model=, feedback=)``).

* The categorical loop with a tabular reward model tracks the exact dynamics with infinitely many
  comparisons, ``sc.theory.reward_model_trajectory``, within its Monte-Carlo error (random and
  margin flips, real data, refits every generation, every other generation and once); a clean,
  sharp judge with a hard curator curates like the true reward.
* ``feedback.refit_every``: when the reward params change; the chunked loop (``init_state``,
  ``run_chunk``, ``final_record``) reproduces ``run``; what ``metrics_fn`` sees (the
  learned reward that curated each generation); ``vmap`` over ``eps``, the judge's rate and ``real_fraction`` equals
  single runs, and one compiled program serves every ``eps``.
* Without a reward model the loop is the plain one (same random stream, no reward-model metrics).
* Other families (``gmm`` with ``linear`` and ``mlp`` reward models, ``replace`` and
  ``accumulate``) stay finite and raise their (proxy and true) rewards.
* Bad input raises ``ValueError`` naming the argument; traced invalid values poison the loop.

Statistical tests run a fixed set of seeds (fixed keys: deterministic) and state their tolerance:
``Z`` standard errors of the seed mean (seed std / sqrt(seeds)) plus, where stated, an allowance
for a measured O(1/num_comparisons) or O(1/num_samples) bias.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import selfconsume as sc
from selfconsume import curators as C
from selfconsume import reward_models as RM

M = 6
R = np.linspace(0.0, 1.0, M).astype(np.float32)
P0 = np.asarray([0.3, 0.25, 0.2, 0.12, 0.08, 0.05], np.float32)
P_DATA = np.asarray([0.05, 0.1, 0.15, 0.2, 0.25, 0.25], np.float32)
K = 4
# |seed mean - exact| <= Z standard errors of the seed mean. With 16 seeds the t statistic has 15
# degrees of freedom: two-sided level about 1.6e-4 per comparison (the keys are fixed, so each
# test is deterministic; the level says how unlucky a fixed key would have to be).
Z = 5.0
REWARD_MODEL_KEYS = {"true_reward_mean", "proxy_reward_mean", "reward_gap",
                     "reward_model_accuracy"}


def _table(r=R):
    table = jnp.asarray(r)
    return lambda x: table[x]


def _categorical(m=M, p0=P0):
    model = sc.models.categorical(m)
    params0 = model.init(jax.random.key(0), jnp.arange(m), None if p0 is None else jnp.asarray(p0))
    return model, params0


def _last_refit(refit_every, num_generations):
    """The last generation < T whose refit ``final.reward_params`` holds."""
    due = [t for t in range(num_generations)
           if (t == 0 if refit_every == 0 else t % refit_every == 0)]
    return due[-1]


def _pair_accuracy(p, u, r, judge_beta):
    """Expected held-out accuracy of rewards ``u`` on pairs drawn iid from ``p`` and labelled by a
    Luce judge (x first with probability sigma(beta (r_x - r_y))): a hit when u ranks the labelled
    first higher, 1/2 for equal u (the same state); summed over ordered pairs (x, y),
    p_x p_y [2 sigma(beta (r_x - r_y)) 1{u_x > u_y} + 1/2 1{u_x = u_y}]."""
    p, u, r = (np.asarray(v, np.float64) for v in (p, u, r))
    prefer = 1.0 / (1.0 + np.exp(-judge_beta * (r[:, None] - r[None, :])))
    hit = np.where(u[:, None] > u[None, :], 2.0 * prefer,
                   np.where(u[:, None] == u[None, :], 0.5, 0.0))
    return float(np.sum(p[:, None] * p[None, :] * hit))


# --------------------------------------------------------------------------------------------
# 1. The sampled loop tracks the exact dynamics
# --------------------------------------------------------------------------------------------


def _setting(eps, *, judge_beta=1.0, beta=1.0, a=0.0, like_true_reward=False):
    """One point of a vmapped sweep: the flip budget, the Luce judge's rate, the curator's beta,
    the real fraction; ``like_true_reward``: the learned reward ranks the states like r and the
    curator is hard, so the exact dynamics are those of hard curation on r."""
    return {"eps": eps, "judge_beta": judge_beta, "beta": beta, "a": a,
            "like_true_reward": like_true_reward}


def _picks_true_best(state, info):
    """metrics_fn: the share of the curation groups (of K) whose candidate of largest learned
    reward has the largest true reward."""
    del state
    proxy, true = info.proxy_rewards.reshape(-1, K), info.candidate_rewards.reshape(-1, K)
    chosen = jnp.take_along_axis(true, jnp.argmax(proxy, axis=1)[:, None], axis=1)[:, 0]
    return {"picks_true_best": jnp.mean(chosen == jnp.max(true, axis=1))}


def _loop_vs_theory(*, m, num_generations, num_samples, num_comparisons, seeds, flip,
                    refit_every, settings, judge=None, seed=0):
    """Runs ``seeds`` loops for every setting (one program, vmapped over the settings and the
    seeds; categorical model, tabular reward, real data ``arange(m)`` weighted by a law p_data !=
    p0, judge ``luce(judge_beta)`` unless ``judge`` is given) and checks them against
    ``sc.theory.reward_model_trajectory``.

    Tolerances (Z standard errors of the seed mean, plus):

    * expected reward at generation t: ``t (1/Nc + 0.25/N)``. The finite-sample fit makes the
      curation of generation 1 biased by about c/Nc: measured with 1024 seeds (M = 6, k = 4, beta
      = 1), c = 0.55 +- 0.12 for random flips at eps = 0.1 and 0.30 +- 0.10 for margin flips at
      eps = 0.2 (Nc = 125, 500, 2000: Nc x bias constant); the kept samples add a bias of at most
      0.15/N per generation (measured with 4096 seeds at N = 100 and 400: N x bias >= -0.6 at
      generation 4). Both accumulate at most linearly over generations.
    * the learned reward and the proxy reward mean: ``20/Nc`` (the seed mean of the fitted tabular
      rewards minus the population fit, times Nc, measured within +-14 +- 6 per state).
    * the held-out accuracy (random flips and a Luce judge only, whose population rewards are
      monotone on the states that carry mass, with gaps far above the fit's noise, so that the
      sample fit ranks the states like the population fit): ``1/N`` for its curvature in p_t,
      plus ``3/(seeds H)`` (H held-out pairs per generation) for a law so concentrated that every
      seed drew only ties (se = 0): a mass q of other pairs goes unseen with probability
      (1 - q)^(seeds H), above e^-6 for q <= 6/(seeds H), and moves the accuracy by at most q/2.

    Returns the largest |seed mean - exact| / standard error per setting and quantity.
    """
    check_accuracy = flip == "random" and judge is None  # the formula is for a Luce judge
    r = jnp.asarray(np.linspace(0.0, 1.0, m), jnp.float32)
    r64 = np.asarray(r, np.float64)
    rng = np.random.default_rng(m)
    p0 = P0 if m == M else rng.dirichlet(4.0 * np.ones(m)).astype(np.float32)
    p_data = P_DATA if m == M else rng.dirichlet(4.0 * np.ones(m)).astype(np.float32)
    model, params0 = _categorical(m, p0)
    p0 = params0.probs
    rm = RM.tabular(m)
    config = sc.LoopConfig(num_generations=num_generations, num_samples=num_samples, k=K)
    reward_fn = _table(r)

    def feedback(eps, judge_beta):
        return RM.feedback(num_comparisons, judge=C.luce(judge_beta) if judge is None else judge,
                           eps=eps, flip=flip, refit_every=refit_every)

    def one(key, eps, judge_beta, beta, a):
        final, history = sc.run(key, params0, jnp.arange(m),
                                sc.Hyperparams(beta=beta, real_fraction=a), model=model,
                                reward_fn=reward_fn, config=config, real_weights=p_data,
                                reward_model=rm, feedback=feedback(eps, judge_beta),
                                metrics_fn=_picks_true_best)
        return final.reward_params, history

    keys = jax.random.split(jax.random.key(seed), seeds)
    swept = {name: jnp.asarray([s[name] for s in settings], jnp.float32)
             for name in ("eps", "judge_beta", "beta", "a")}
    batched = jax.jit(jax.vmap(jax.vmap(one, in_axes=(0, None, None, None, None)),
                               in_axes=(None, 0, 0, 0, 0)))
    u, history = batched(keys, swept["eps"], swept["judge_beta"], swept["beta"], swept["a"])
    t = np.arange(num_generations + 1)
    report = []
    for i, s in enumerate(settings):
        fb = feedback(s["eps"], s["judge_beta"])
        ps, us = sc.theory.reward_model_trajectory(
            p0, r, num_generations=num_generations, k=K, reward_model=rm, feedback=fb,
            beta=s["beta"], p_data=jnp.asarray(p_data), real_fraction=s["a"])
        ps, us = np.asarray(ps, np.float64), np.asarray(us, np.float64)
        h = {name: np.asarray(v[i], np.float64) for name, v in history.items()}
        assert np.all(h["fit_is_finite"] == 1.0)
        # the reward-model metrics: true = the candidates' reward, gap = proxy - true
        np.testing.assert_array_equal(h["true_reward_mean"], h["reward_mean"])
        np.testing.assert_allclose(h["reward_gap"], h["proxy_reward_mean"] - h["true_reward_mean"],
                                   atol=1e-6)
        # expected reward of p_t
        exact = ps @ r64
        got = h["expected_reward"]  # (seeds, T + 1)
        np.testing.assert_allclose(got[:, 0], exact[0], atol=1e-6)  # generation 0 is p0
        se = got.std(axis=0, ddof=1) / math.sqrt(seeds)
        allowance = t * (1.0 / num_comparisons + 0.25 / num_samples)
        error = np.abs(got.mean(axis=0) - exact)
        assert np.all((error <= Z * se + allowance)[1:]), (s, got.mean(axis=0), exact, se)
        true_curation = np.asarray(sc.theory.trajectory(
            p0, r, num_generations=num_generations, k=K, beta=s["beta"],
            p_data=jnp.asarray(p_data), real_fraction=s["a"]), np.float64) @ r64
        if s["like_true_reward"]:
            # the population fits rank the states of mass >= 5% like r (the rarer ones sit near
            # the ridge's centre 0, above the worst common ones: too rare to change hard curation
            # by more than 1e-4), so hard curation on them is hard curation on r
            for p_t, u_t in zip(ps, us):
                assert np.all(np.diff(u_t[p_t >= 0.05]) > 0), (ps, us)
            np.testing.assert_allclose(exact, true_curation, atol=1e-4)
            assert exact[-1] > exact[0] + 0.3  # and it moved the law
            # every seed's learned reward picks the truly best candidate of (almost) every group
            assert np.all(h["picks_true_best"] >= 0.99), h["picks_true_best"].min(axis=0)
        else:
            # the test tells the learned reward from the true one: the trajectory of curation on
            # r lies outside the tolerance (by 2 more standard errors) at some generation
            assert np.any((np.abs(true_curation - exact) > (Z + 2) * se + allowance)[1:]), (
                s, true_curation, exact, se)
        # the proxy reward mean: the learned reward u_t of p_t's candidates
        proxy, proxy_exact = h["proxy_reward_mean"], np.sum(ps * us, axis=1)
        se_proxy = proxy.std(axis=0, ddof=1) / math.sqrt(seeds)
        error_proxy = np.abs(proxy.mean(axis=0) - proxy_exact)
        assert np.all(error_proxy <= Z * se_proxy + 20.0 / num_comparisons), (
            s, proxy.mean(axis=0), proxy_exact, se_proxy)
        # the learned reward of the last refit before T (final.reward_params), on the states the
        # exact p of that generation gives mass (elsewhere the ridge pulls a fit toward 0)
        last = _last_refit(refit_every, num_generations)
        seen = ps[last] > 0.02
        fitted = np.asarray(u[i], np.float64)[:, seen]
        se_u = fitted.std(axis=0, ddof=1) / math.sqrt(seeds)
        error_u = np.abs(fitted.mean(axis=0) - us[last][seen])
        assert np.all(error_u <= Z * se_u + 20.0 / num_comparisons), (
            s, fitted.mean(axis=0), us[last], se_u)
        if refit_every == 0:  # fitted once, on p0: every generation reads us[0]
            np.testing.assert_allclose(us, np.broadcast_to(us[0], us.shape))
        if check_accuracy:
            acc = h["reward_model_accuracy"]
            acc_exact = np.asarray([_pair_accuracy(ps[g], us[g], r, s["judge_beta"]) for g in t])
            se_acc = acc.std(axis=0, ddof=1) / math.sqrt(seeds)
            allowance_acc = 1.0 / num_samples + 3.0 / (seeds * fb.num_heldout)
            assert np.all(np.abs(acc.mean(axis=0) - acc_exact) <= Z * se_acc + allowance_acc), (
                s, acc.mean(axis=0), acc_exact, se_acc)
        def z(err, std):  # where the seeds vary (not where curation has settled every seed)
            return float(np.max(err[std > 1e-4] / std[std > 1e-4], initial=0.0))

        report.append({"expected": z(error[1:], se[1:]), "proxy": z(error_proxy, se_proxy),
                       "reward": z(error_u, se_u)})
    return report


FAST = {"m": M, "num_generations": 4, "num_samples": 2000, "num_comparisons": 4000, "seeds": 16}
CASES = {
    # (a) random flips, refitted every generation, without and (c) with real data; and item 3: a
    # clean (eps = 0), sharp judge (beta = 50, Delta r = 0.2: each label right with probability
    # sigma(10) or more) and a hard curator: the loop follows hard curation on the true reward
    "random": {"flip": "random", "refit_every": 1, "settings": [
        _setting(0.1), _setting(0.1, a=0.3),
        _setting(0.0, judge_beta=50.0, beta=jnp.inf, like_true_reward=True)]},
    # (b) margin flips, (c) with real data, (d) refitted every other generation (refit_every = 0:
    # the slow test, and its exact semantics in test_reward_params_change_...)
    "margin_every_2": {"flip": "margin", "refit_every": 2, "settings": [
        _setting(0.2, a=0.3), _setting(0.1, judge_beta=3.0, beta=0.5)]},
}


@pytest.mark.parametrize("case", list(CASES))
def test_categorical_loop_with_a_tabular_reward_tracks_the_exact_dynamics(case):
    """M = 6, T = 4, N = 2000 kept samples, Nc = 4000 pairs per refit, 16 seeds; tolerances in
    :func:`_loop_vs_theory`."""
    _loop_vs_theory(**FAST, **CASES[case])


SLOW_CASES = {
    "random": {"flip": "random", "refit_every": 1, "settings": [
        _setting(0.1), _setting(0.1, a=0.3), _setting(0.3, judge_beta=2.0, beta=2.0),
        _setting(0.0, judge_beta=50.0, beta=jnp.inf, like_true_reward=True)]},
    "margin": {"flip": "margin", "refit_every": 1, "settings": [
        _setting(0.2), _setting(0.2, a=0.3), _setting(0.05, judge_beta=3.0, beta=0.5)]},
    "random_every_2": {"flip": "random", "refit_every": 2, "settings": [
        _setting(0.1), _setting(0.2, a=0.3)]},
    "margin_every_3": {"flip": "margin", "refit_every": 3, "settings": [_setting(0.1, a=0.3)]},
    "fit_once": {"flip": "random", "refit_every": 0, "settings": [
        _setting(0.2), _setting(0.1, a=0.3)]},
    "fit_once_margin": {"flip": "margin", "refit_every": 0, "settings": [_setting(0.2, a=0.3)]},
    "thurstone_judge": {"flip": "random", "refit_every": 1, "judge": C.thurstone(0.5),
                        "settings": [_setting(0.1, beta=2.0, a=0.3)]},
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(SLOW_CASES))
def test_categorical_loop_with_a_tabular_reward_tracks_the_exact_dynamics_large(case):
    """M = 8, T = 6, N = 8000, Nc = 20000, 16 seeds; tolerances as in the fast test."""
    _loop_vs_theory(m=8, num_generations=6, num_samples=8000, num_comparisons=20000, seeds=16,
                    seed=1, **SLOW_CASES[case])


# --------------------------------------------------------------------------------------------
# 2. refit_every, and chunks
# --------------------------------------------------------------------------------------------


def test_reward_model_fitted_once_never_changes_after_generation_0():
    """refit_every = 0: ``retrain_step`` refits the reward model at generation 0 (from the zeros
    of ``init_state``) and never again; the held-out accuracy is measured at every generation.
    (refit_every = 3: :func:`test_chunks_reproduce_run_exactly`.)"""
    model, params0 = _categorical(p0=None)
    config = sc.LoopConfig(num_generations=5, num_samples=64, k=2)
    rm = RM.tabular(M)
    fb = RM.feedback(128, eps=0.1, refit_every=0, num_heldout=16)
    step = jax.jit(functools.partial(sc.retrain_step, model=model, reward_fn=_table(),
                                     config=config, reward_model=rm, feedback=fb))
    state = sc.retrain.init_state(params0, model=model, config=config, reward_model=rm)
    np.testing.assert_array_equal(state.reward_params, np.zeros(M))
    for g, key in enumerate(jax.random.split(jax.random.key(3), config.num_generations)):
        new_state, info = step(key, state, sc.Hyperparams(), None)
        assert int(new_state.generation) == g + 1
        changed = not np.array_equal(new_state.reward_params, state.reward_params)
        assert changed == (g == 0), (g, state.reward_params, new_state.reward_params)
        assert bool(info.fit_is_finite) and 0.0 <= float(info.reward_model_accuracy) <= 1.0
        state = new_state


# The small loop of the chunk and metrics tests: categorical states read by an mlp reward (dim 1),
# whose init, unlike the tabular zeros, depends on its key; refitted at generations 0, 3 and 6.
SMALL_T, SMALL_REFIT = 6, 3


@functools.cache
def _small_loop():
    model, params0 = _categorical()
    config = sc.LoopConfig(num_generations=SMALL_T, num_samples=64, k=K)
    rm = RM.mlp(1, (8,), steps=10)
    fb = RM.feedback(64, eps=0.1, refit_every=SMALL_REFIT, num_heldout=16)

    def metrics_fn(state, info):
        return {"reward_params": state.reward_params,
                "proxy_from_state": jnp.mean(rm.apply(state.reward_params, info.candidates))}

    loop = {"model": model, "reward_fn": _table(), "config": config, "reward_model": rm,
            "feedback": fb, "metrics_fn": metrics_fn}
    hyper = sc.Hyperparams(beta=2.0)
    key = jax.random.key(7)
    final, history = jax.jit(functools.partial(sc.run, **loop))(key, params0, None, hyper)
    return {"params0": params0, "loop": loop, "hyper": hyper, "key": key, "final": final,
            "history": history}


def _same(a, b):
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_chunks_reproduce_run_exactly():
    """``init_state(key=fold_in(key, 1))``, ``run_chunk`` over ``split(key, T + 1)[:T]`` one
    generation at a time and ``final_record`` with the last key reproduce ``run`` bit for bit
    (each jitted once); with another reward-model init key (``init_state``'s default) the history
    differs. On the way, refit_every = 3: the reward params change at generations 0 and 3 only,
    and the final entry refits at T = 6 (it reads other params than the final state's, those of
    the refit at generation 3)."""
    small = _small_loop()
    loop, hyper, key, history = small["loop"], small["hyper"], small["key"], small["history"]
    keys = jax.random.split(key, SMALL_T + 1)
    chunk = jax.jit(functools.partial(sc.retrain.run_chunk, **loop))
    final_record = jax.jit(functools.partial(sc.retrain.final_record, **loop))

    def chunked(init_key):
        state = sc.retrain.init_state(small["params0"], model=loop["model"],
                                      config=loop["config"], reward_model=loop["reward_model"],
                                      key=init_key)
        parts, changed = [], []
        for g in range(SMALL_T):
            new_state, part = chunk(keys[g:g + 1], state, hyper, None)
            changed.append(not _same(new_state.reward_params, state.reward_params))
            parts.append(part)
            state = new_state
        last = final_record(keys[-1], state, hyper, None)
        parts.append(jax.tree.map(lambda x: np.asarray(x)[None], last))
        return state, jax.tree.map(lambda *xs: np.concatenate(xs), *parts), changed

    state, got, changed = chunked(jax.random.fold_in(key, 1))
    assert changed == [g % SMALL_REFIT == 0 for g in range(SMALL_T)], changed
    assert set(got) == set(history) and REWARD_MODEL_KEYS <= set(history)
    for x, y in zip(jax.tree.leaves(got), jax.tree.leaves(history)):
        np.testing.assert_array_equal(x, y)
    for x, y in zip(jax.tree.leaves(state), jax.tree.leaves(small["final"])):
        np.testing.assert_array_equal(x, y)
    _, other, _ = chunked(jax.random.key(0))
    assert not np.array_equal(other["proxy_reward_mean"], history["proxy_reward_mean"])
    # the last entry: refitted at T
    assert not _same(jax.tree.map(lambda x: x[-1], history["reward_params"]),
                     small["final"].reward_params)
    assert np.all(np.asarray(history["fit_is_finite"]))


def test_metrics_fn_sees_the_reward_that_curated_each_generation():
    """At every entry t, ``metrics_fn``'s ``state.reward_params`` should be one thing: the
    learned reward that curated generation t (the one ``proxy_reward_mean`` reads), as it is at
    t = T, not the previous generation's at t < T and this generation's at t = T."""
    history = _small_loop()["history"]
    np.testing.assert_allclose(history["proxy_from_state"][-1], history["proxy_reward_mean"][-1],
                               rtol=1e-6)  # holds at t = T
    # fails at the refits t = 0, 3 < T, where the state still holds the previous params
    np.testing.assert_allclose(history["proxy_from_state"], history["proxy_reward_mean"],
                               rtol=1e-6)


# --------------------------------------------------------------------------------------------
# 3. Without a reward model: the plain loop (the sharp judge: CASES['random'] above)
# --------------------------------------------------------------------------------------------


def test_loop_without_a_reward_model_is_the_plain_loop():
    """No reward model: no reward-model metrics, ``reward_params`` None, and the random stream
    of the plain loop (generation t: ``split(keys[t])`` into draw and fit keys, the draw key into
    sample and curate keys; the last key draws and curates only), rebuilt here by hand."""
    model, params0 = _categorical()
    config = sc.LoopConfig(num_generations=3, num_samples=500, k=K)
    hyper = sc.Hyperparams(beta=2.0)
    reward_fn = _table()
    key = jax.random.key(4)
    final, history = sc.run(key, params0, None, hyper, model=model, reward_fn=reward_fn,
                            config=config, reward_model=None, feedback=None)
    assert final.reward_params is None
    assert not REWARD_MODEL_KEYS & set(history)
    # the same loop by hand
    keys = jax.random.split(key, config.num_generations + 1)
    params, expected, kept_mean = params0, [], []
    n = config.num_samples * config.k
    for t in range(config.num_generations + 1):
        key_draw, key_fit = jax.random.split(keys[t]) if t < config.num_generations else (
            keys[t], None)
        key_sample, key_curate = jax.random.split(key_draw)
        candidates = model.sample(key_sample, params, n)
        kept = sc.curate(key_curate, candidates, reward_fn(candidates), k=config.k, beta=2.0,
                         num_candidates=config.k)
        expected.append(float(params.probs @ jnp.asarray(R)))
        kept_mean.append(float(jnp.mean(kept.rewards)))
        if key_fit is not None:
            params = model.fit(key_fit, params, kept.samples,
                               jnp.full((config.num_samples,), 1.0 / config.num_samples))
    np.testing.assert_allclose(history["expected_reward"], expected, rtol=1e-6)
    np.testing.assert_allclose(history["kept_reward_mean"], kept_mean, rtol=1e-6)
    np.testing.assert_allclose(final.params.probs, params.probs, rtol=1e-6)


# --------------------------------------------------------------------------------------------
# 4. vmap over eps, the judge's rate and real_fraction; one compiled program
# --------------------------------------------------------------------------------------------


def test_vmap_over_eps_judge_rate_and_real_fraction_equals_single_runs():
    """One vmapped program over (eps, judge beta, real_fraction), the feedback built inside,
    equals a Python loop of single jitted runs with the feedback passed as an argument (float32,
    the same Newton iterations: entries agree to 1e-6 relative and absolute); the jitted run
    traces once for the three settings, eps among them 0.0, 0.1 and 0.4. In the same batch,
    traced invalid values (eps = 1.5, a judge rate -1) poison their own member: NaN params and
    fit_is_finite False at every generation, no exception."""
    model, params0 = _categorical()
    config = sc.LoopConfig(num_generations=3, num_samples=256, k=K)
    rm = RM.tabular(M)
    table = jnp.asarray(R)
    traces = []

    def reward_fn(x):
        traces.append(None)
        return table[x]

    key = jax.random.key(6)
    real = jnp.arange(M)
    eps = np.asarray([0.0, 0.1, 0.4, 1.5, 0.1], np.float32)
    judge_beta = np.asarray([1.0, 3.0, 0.5, 1.0, -1.0], np.float32)
    a = np.asarray([0.0, 0.3, 0.7, 0.3, 0.3], np.float32)

    def swept(e, b, fraction):
        fb = RM.feedback(256, judge=C.luce(b), eps=e, flip="margin", num_heldout=64)
        return sc.run(key, params0, real, sc.Hyperparams(beta=2.0, real_fraction=fraction),
                      model=model, reward_fn=_table(), config=config, real_weights=P_DATA,
                      reward_model=rm, feedback=fb)

    final_v, history_v = jax.jit(jax.vmap(swept))(eps, judge_beta, a)
    single = jax.jit(functools.partial(sc.run, model=model, reward_fn=reward_fn, config=config))
    for i in range(3):
        fb = RM.feedback(256, judge=C.luce(float(judge_beta[i])), eps=float(eps[i]),
                         flip="margin", num_heldout=64)
        final, history = single(key, params0, real,
                                sc.Hyperparams(beta=2.0, real_fraction=float(a[i])),
                                real_weights=P_DATA, reward_model=rm, feedback=fb)
        if i == 0:
            num_traces = len(traces)
            assert num_traces > 0
        for name in history:
            np.testing.assert_allclose(history[name], history_v[name][i], rtol=1e-6, atol=1e-6,
                                       err_msg=f"{name} at {i}")
        np.testing.assert_allclose(final.reward_params, final_v.reward_params[i], rtol=1e-6,
                                   atol=1e-6)
        np.testing.assert_allclose(final.params.probs, final_v.params.probs[i], atol=1e-6)
    assert len(traces) == num_traces  # no retrace for another eps, judge rate or real fraction
    # the swept values matter: the three runs differ
    assert len({round(float(x), 6) for x in history_v["expected_reward"][:3, -1]}) == 3
    # the invalid members
    finite = np.asarray(history_v["fit_is_finite"])
    assert np.all(finite[:3]) and not np.any(finite[3:])
    assert np.all(np.isnan(np.asarray(final_v.reward_params)[3:]))
    assert np.all(np.isnan(np.asarray(final_v.params.probs)[3:]))
    with pytest.raises(ValueError, match=r"`eps` must be in \[0, 1\]"):
        RM.feedback(256, eps=1.5)


# --------------------------------------------------------------------------------------------
# 5. Other families: gmm with linear and mlp reward models
# --------------------------------------------------------------------------------------------

CENTRE = np.asarray([1.5, 1.0], np.float32)


def _distance_reward(x):
    return -jnp.sum(jnp.square(x - jnp.asarray(CENTRE)[None, :]), axis=1)


def _gmm_loop(reward_model, regime, refit_every, *, seeds=8, num_generations=3):
    model = sc.models.get("gmm", num_components=4, dim=2, em_steps=5)
    real = jax.random.normal(jax.random.key(1), (256, 2))
    params0 = model.init(jax.random.key(2), real)
    config = sc.LoopConfig(num_generations=num_generations, num_samples=256, k=K, regime=regime)
    fb = RM.feedback(256, eps=0.0, refit_every=refit_every, num_heldout=64)

    def one(key):
        return sc.run(key, params0, real, sc.Hyperparams(beta=1.0), model=model,
                      reward_fn=_distance_reward, config=config, reward_model=reward_model,
                      feedback=fb)

    final, history = jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(8), seeds))
    for leaf in jax.tree.leaves((final.params, final.reward_params)):
        assert np.all(np.isfinite(np.asarray(leaf))), leaf
    for name, value in history.items():
        assert np.all(np.isfinite(np.asarray(value, np.float64))), name
    assert np.all(np.asarray(history["fit_is_finite"]))
    return {name: np.asarray(value, np.float64) for name, value in history.items()}


def _rises(values, seeds):
    """Seed mean at T minus at 0, and its standard error (paired over seeds)."""
    diff = values[:, -1] - values[:, 0]
    return diff.mean(), diff.std(ddof=1) / math.sqrt(seeds)


GMM_CASES = {  # the fast one: the non-convex fit and the accumulating pool
    "mlp-accumulate": (RM.mlp(2, (16,), steps=50), "accumulate"),
}
GMM_SLOW_CASES = {
    "linear-replace": (RM.linear("coordinates"), "replace"),
    "linear-accumulate": (RM.linear("coordinates"), "accumulate"),
    "mlp-replace": (RM.mlp(2, (16,), steps=50), "replace"),
    "radial-replace": (RM.linear(RM.radial([[0.0, 0.0], [1.5, 1.0], [-1.0, 1.0]], 1.0)),
                       "replace"),
}


def _check_gmm(reward_model, regime, seeds):
    """Fitted once (refit_every = 0) on clean comparisons, the learned reward is a fixed proxy:
    curating on it raises the proxy reward mean (and, 3 generations from N(0, I) toward the
    centre (1.5, 1), the true reward) by more than 5 standard errors of the paired seed mean
    (t with 7 dof at 8 seeds: level about 2e-3; measured for mlp-accumulate: 11 and 24)."""
    history = _gmm_loop(reward_model, regime, 0, seeds=seeds)
    for name in ("proxy_reward_mean", "true_reward_mean"):
        rise, se = _rises(history[name], seeds)
        assert rise > 5 * se and rise > 0, (name, history[name].mean(axis=0), se)
    assert np.all(history["reward_model_accuracy"][:, 0] > 0.6)  # better than a coin


@pytest.mark.parametrize("case", list(GMM_CASES))
def test_gmm_with_learned_rewards_stays_finite_and_raises_the_rewards(case):
    _check_gmm(*GMM_CASES[case], seeds=8)


@pytest.mark.slow
@pytest.mark.parametrize("case", list(GMM_SLOW_CASES) + list(GMM_CASES))
def test_gmm_with_learned_rewards_stays_finite_and_raises_the_rewards_large(case):
    reward_model, regime = {**GMM_CASES, **GMM_SLOW_CASES}[case]
    _check_gmm(reward_model, regime, seeds=16)
    # refitted every generation on clean comparisons, the true reward rises too
    history = _gmm_loop(reward_model, regime, 1, seeds=16)
    rise, se = _rises(history["true_reward_mean"], 16)
    assert rise > 5 * se and rise > 0, (history["true_reward_mean"].mean(axis=0), se)


# --------------------------------------------------------------------------------------------
# 6. Bad input
# --------------------------------------------------------------------------------------------


def test_bad_reward_model_arguments_raise_naming_the_argument():
    model, params0 = _categorical()
    config = sc.LoopConfig(num_generations=1, num_samples=8, k=2)
    rm = RM.tabular(M)
    fb = RM.feedback(8, num_heldout=2)
    run = functools.partial(sc.run, jax.random.key(0), params0, None, sc.Hyperparams(),
                            model=model, config=config)
    with pytest.raises(ValueError, match="`feedback` was given without a `reward_model`"):
        run(reward_fn=_table(), feedback=fb)
    for wrong in ("tabular", C.luce(1.0), RM.feedback(8)):
        with pytest.raises(ValueError, match="`reward_model` must be a selfconsume.reward_models"):
            run(reward_fn=_table(), reward_model=wrong, feedback=fb)
    for wrong in ({"eps": 0.1}, C.luce(1.0), rm):
        with pytest.raises(ValueError, match="`feedback` must be made by "
                                             r"sc.reward_models.feedback"):
            run(reward_fn=_table(), reward_model=rm, feedback=wrong)
    two_columns = jnp.asarray(np.stack([R, R[::-1]], axis=1))
    with pytest.raises(ValueError, match="`reward_fn`.*a learned reward model reads one"):
        run(reward_fn=lambda x: two_columns[x], reward_model=rm, feedback=fb)
    with pytest.raises(ValueError, match="`reward_fn`.*a learned reward model reads one"):
        run(reward_fn=lambda x: two_columns[x], reward_model=rm, feedback=fb,
            curator=C.luce(1.0, column=0))
    # a family that cannot read the model's samples
    with pytest.raises(ValueError, match="mlp reward model reads samples of dimension 2"):
        run(reward_fn=_table(), reward_model=RM.mlp(2, 4, steps=1), feedback=fb)


def test_state_and_reward_model_must_match():
    model, params0 = _categorical()
    config = sc.LoopConfig(num_generations=1, num_samples=8, k=2)
    rm = RM.tabular(M)
    fb = RM.feedback(8, num_heldout=2)
    loop = dict(model=model, reward_fn=_table(), config=config)
    plain = sc.retrain.init_state(params0, model=model, config=config)
    learned = sc.retrain.init_state(params0, model=model, config=config, reward_model=rm)
    keys = jax.random.split(jax.random.key(0), 1)
    hyper = sc.Hyperparams()
    message = r"`state` must come from init_state\(\.\.\., reward_model=\.\.\.\)"
    for call in (lambda s, **kw: sc.retrain.run_chunk(keys, s, hyper, None, **loop, **kw),
                 lambda s, **kw: sc.retrain.final_record(keys[0], s, hyper, None, **loop, **kw),
                 lambda s, **kw: sc.retrain_step(keys[0], s, hyper, None, **loop, **kw)):
        with pytest.raises(ValueError, match=message + ".*without reward params"):
            call(plain, reward_model=rm, feedback=fb)
        with pytest.raises(ValueError, match=message + ".*with reward params"):
            call(learned)

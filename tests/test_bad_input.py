"""Bad input at every public entry point raises ``ValueError`` with a one-line, useful message.

One table, one test per row. Each row is ``(id, call, expected)``: ``call()`` must raise
``ValueError`` (or a subclass of it) whose message holds every string of ``expected``; together
they name the argument, show the value received and say what is allowed. The messages are also
checked to be a single line, so that the command line can print them as they are.

Value checks (NaN data, negative or all-zero weights, probabilities that do not sum to one) run
when the input is concrete, as here; under ``jit`` they are returned as data instead (DESIGN.md
section 4, two-tier validation), which ``test_value_checks_are_skipped_under_jit`` pins down.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import selfconsume as sc
from selfconsume import classifier, data, metrics, models, rewards, theory

KEY = jax.random.key(0)

# Curation inputs: 4 groups of k = 2.
SAMPLES = jnp.arange(8.0)
REWARDS8 = jnp.linspace(0.0, 1.0, 8)

# Population inputs on M = 3 states.
P3 = jnp.array([0.2, 0.3, 0.5])
R3 = jnp.array([0.0, 1.0, 2.0])

# Continuous training data (N = 6, d = 2), states for the categorical family (M = 5).
X = jnp.stack([jnp.arange(6.0), jnp.arange(6.0) ** 2 / 5.0], axis=1)
STATES = jnp.array([0, 1, 2, 3, 4, 0], jnp.int32)
N = X.shape[0]

# Params built by hand, so that no case compiles a fit.
GAUSSIAN = models.gaussian(2)
GAUSSIAN_PARAMS = models.GaussianParams(mean=jnp.zeros(2), cov=jnp.eye(2))
GMM = models.gmm(2, 2)
GMM_PARAMS = models.GMMParams(weights=jnp.full(2, 0.5), means=jnp.zeros((2, 2)),
                              covs=jnp.stack([jnp.eye(2)] * 2))
KDE = models.kde(2)
KDE_PARAMS = models.KDEParams(points=X, weights=jnp.full(N, 1.0 / N), cov=jnp.eye(2))
CATEGORICAL = models.categorical(5)
CATEGORICAL_PARAMS = models.CategoricalParams(probs=jnp.full(5, 0.2))
FLOW = models.flow_matching(2, width=4, depth=1, time_frequencies=1, init_steps=0, steps=1)
HISTOGRAM = models.histogram(4, dim=2)
HISTOGRAM_PARAMS = models.HistogramParams(probs=jnp.full(16, 1.0 / 16))

CONTINUOUS = {
    "gaussian": (GAUSSIAN, lambda: GAUSSIAN_PARAMS),
    "gmm": (GMM, lambda: GMM_PARAMS),
    "kde": (KDE, lambda: KDE_PARAMS),
    "flow_matching": (FLOW, lambda: _flow_params()),
    "histogram": (HISTOGRAM, lambda: HISTOGRAM_PARAMS),
}


def _flow_params():
    return FLOW.init(KEY, X)  # init_steps = 0: only the network's initialisation


# The loop.
CONFIG = sc.LoopConfig(num_generations=1, num_samples=4, k=2)


def _run(hyper=None, real=X, *, config=CONFIG, model=GAUSSIAN, reward_fn=None, **kwargs):
    reward_fn = reward_fn or (lambda x: x[:, 0])
    hyper = sc.Hyperparams() if hyper is None else hyper
    return sc.run(KEY, GAUSSIAN_PARAMS, real, hyper, model=model, reward_fn=reward_fn,
                  config=config, **kwargs)


def _step(hyper=None, real=X, **kwargs):
    state = sc.retrain.init_state(GAUSSIAN_PARAMS, model=GAUSSIAN, config=CONFIG)
    hyper = sc.Hyperparams() if hyper is None else hyper
    return sc.retrain_step(KEY, state, hyper, real, model=GAUSSIAN, reward_fn=lambda x: x[:, 0],
                           config=CONFIG, **kwargs)


def _sweep_fn(key, beta=1.0):
    return jax.random.normal(key) * beta


def _with_nan(a, index=(0, 0)):
    a = np.array(a, np.float32)
    a[index] = np.nan
    return a


CASES = [
    # --------------------------------------------------------------------------- curate
    ("curate-k-zero", lambda: sc.curate(KEY, SAMPLES, REWARDS8, k=0), ["`k`", "got 0", ">= 1"]),
    ("curate-k-negative", lambda: sc.curate(KEY, SAMPLES, REWARDS8, k=-2),
     ["`k`", "got -2", ">= 1"]),
    ("curate-k-float", lambda: sc.curate(KEY, SAMPLES, REWARDS8, k=2.5),
     ["`k`", "got 2.5", "an integer >= 1"]),
    ("curate-rewards-2d", lambda: sc.curate(KEY, SAMPLES, REWARDS8.reshape(4, 2), k=2),
     ["`rewards`", "got shape (4, 2)", "1-D"]),
    ("curate-rewards-empty", lambda: sc.curate(KEY, SAMPLES[:0], REWARDS8[:0], k=2),
     ["`rewards`", "got shape (0,)", "must not be empty"]),
    ("curate-rewards-not-a-multiple-of-k", lambda: sc.curate(KEY, SAMPLES[:7], REWARDS8[:7], k=2),
     ["rewards", "got 7", "multiple of `k`=2"]),
    ("curate-samples-length", lambda: sc.curate(KEY, SAMPLES[:6], REWARDS8, k=2),
     ["`samples`", "(6,)", "(8,)", "same leading size"]),
    ("curate-samples-scalar", lambda: sc.curate(KEY, 1.0, REWARDS8, k=2),
     ["`samples`", "got a scalar", "leading axis"]),
    ("curate-beta-negative", lambda: sc.curate(KEY, SAMPLES, REWARDS8, k=2, beta=-1.0),
     ["`beta`", "got -1.0", ">= 0"]),
    ("curate-beta-nan", lambda: sc.curate(KEY, SAMPLES, REWARDS8, k=2, beta=float("nan")),
     ["`beta`", "got nan", ">= 0"]),
    ("curate-beta-vector", lambda: sc.curate(KEY, SAMPLES, REWARDS8, k=2, beta=jnp.ones(2)),
     ["`beta`", "got shape (2,)", "scalar"]),
    ("curate-num-candidates-above-k",
     lambda: sc.curate(KEY, SAMPLES, REWARDS8, k=2, num_candidates=3),
     ["`num_candidates`", "got 3", "[1, 2]"]),
    ("curate-num-candidates-zero",
     lambda: sc.curate(KEY, SAMPLES, REWARDS8, k=2, num_candidates=0),
     ["`num_candidates`", "got 0", "[1, 2]"]),
    ("choice-probabilities-scalar", lambda: sc.choice_probabilities(1.0),
     ["`rewards`", "got shape ()", "non-empty last axis"]),
    ("choice-probabilities-empty", lambda: sc.choice_probabilities(jnp.zeros((3, 0))),
     ["`rewards`", "got shape (3, 0)", "non-empty last axis"]),
    ("choice-probabilities-beta-negative",
     lambda: sc.choice_probabilities(REWARDS8, beta=-0.5), ["`beta`", "got -0.5", ">= 0"]),
    # --------------------------------------------------------------------------- theory
    ("theory-p-2d", lambda: theory.curation_factor(P3[None], R3, k=2),
     ["`p`", "got shape (1, 3)", "1-D probability vector"]),
    ("theory-rewards-2d", lambda: theory.curation_factor(P3, R3[None], k=2),
     ["`rewards`", "got shape (1, 3)", "1-D"]),
    ("theory-rewards-shape", lambda: theory.curated(P3, R3[:2], k=2),
     ["`rewards`", "(2,)", "(3,)", "shape of `p`"]),
    ("theory-p-negative", lambda: theory.curated(jnp.array([-0.1, 0.6, 0.5]), R3, k=2),
     ["`p`", "-0.1", "non-negative"]),
    ("theory-p-sum", lambda: theory.curated(jnp.array([0.5, 0.6, 0.1]), R3, k=2),
     ["`p`", "got sum 1.2", "sum to 1"]),
    ("theory-p-nan", lambda: theory.curated(jnp.array([0.5, jnp.nan, 0.5]), R3, k=2),
     ["`p`", "nan", "finite"]),
    ("theory-p-empty", lambda: theory.curated(jnp.zeros(0), jnp.zeros(0), k=2),
     ["`p`", "empty", "at least one entry"]),
    ("theory-rewards-nan", lambda: theory.curated(P3, jnp.array([0.0, jnp.nan, 1.0]), k=2),
     ["`rewards`", "nan", "finite"]),
    ("theory-rewards-inf", lambda: theory.curation_factor(P3, jnp.array([0.0, jnp.inf, 1.0]), k=2),
     ["`rewards`", "inf", "finite"]),
    ("theory-k-zero", lambda: theory.curation_factor(P3, R3, k=0),
     ["`k`", "got 0", ">= 1 or jnp.inf"]),
    ("theory-k-float", lambda: theory.curated(P3, R3, k=1.5),
     ["`k`", "got 1.5", "an integer >= 1 or jnp.inf"]),
    ("theory-k-minus-inf", lambda: theory.curated(P3, R3, k=-jnp.inf),
     ["`k`", "got -inf", "an integer >= 1 or jnp.inf"]),
    ("theory-beta-negative", lambda: theory.curation_factor(P3, R3, k=2, beta=-1.0),
     ["`beta`", "got -1.0", ">= 0"]),
    ("theory-num-nodes", lambda: theory.curation_factor(P3, R3, k=2, num_nodes=4),
     ["`num_nodes`", "got 4", ">= 8"]),
    ("retrain-map-real-fraction-above-one",
     lambda: theory.retrain_map(P3, R3, k=2, p_data=P3, real_fraction=1.5),
     ["`real_fraction`", "got 1.5", "[0, 1]"]),
    ("retrain-map-real-fraction-negative",
     lambda: theory.retrain_map(P3, R3, k=2, p_data=P3, real_fraction=-0.1),
     ["`real_fraction`", "got -0.1", "[0, 1]"]),
    ("retrain-map-p-data-missing", lambda: theory.retrain_map(P3, R3, k=2, real_fraction=0.5),
     ["`p_data`", "p_data=None", "required when `real_fraction` is not 0"]),
    ("retrain-map-p-data-sum",
     lambda: theory.retrain_map(P3, R3, k=2, p_data=jnp.array([0.1, 0.1, 0.1]),
                                real_fraction=0.5),
     ["`p_data`", "got sum 0.3", "sum to 1"]),
    ("retrain-map-p-data-shape",
     lambda: theory.retrain_map(P3, R3, k=2, p_data=jnp.array([0.5, 0.5]), real_fraction=0.5),
     ["`p_data`", "(2,)", "(3,)"]),
    ("trajectory-num-generations-negative",
     lambda: theory.trajectory(P3, R3, num_generations=-1, k=2),
     ["`num_generations`", "got -1", ">= 0"]),
    ("trajectory-num-generations-float",
     lambda: theory.trajectory(P3, R3, num_generations=2.0, k=2),
     ["`num_generations`", "got 2.0", "an integer >= 0"]),
    ("trajectory-beta-negative",
     lambda: theory.trajectory(P3, R3, num_generations=2, k=2, beta=-2.0),
     ["`beta`", "got -2.0", ">= 0"]),
    ("trajectory-p0-negative",
     lambda: theory.trajectory(jnp.array([1.2, -0.2, 0.0]), R3, num_generations=2, k=2),
     ["`p0`", "-0.2", "non-negative"]),
    ("fixed-point-real-fraction-zero",
     lambda: theory.fixed_point(P3, R3, k=2, real_fraction=0.0),
     ["`real_fraction`", "got 0.0", "(0, 1]"]),
    ("fixed-point-real-fraction-above-one",
     lambda: theory.fixed_point(P3, R3, k=2, real_fraction=2.0),
     ["`real_fraction`", "got 2.0", "[0, 1]"]),
    ("fixed-point-max-iterations",
     lambda: theory.fixed_point(P3, R3, k=2, real_fraction=0.5, max_iterations=0),
     ["`max_iterations`", "got 0", ">= 1"]),
    ("limit-empty", lambda: theory.limit(jnp.zeros(0), jnp.zeros(0)),
     ["`p0`", "empty", "at least one entry"]),
    ("reward-gain-bound-k-zero", lambda: theory.reward_gain_bound(P3, R3, k=0),
     ["`k`", "got 0", ">= 1"]),
    ("check-theorems-num-generations",
     lambda: theory.check_theorems(P3, R3, k=2, num_generations=0),
     ["`num_generations`", "got 0", ">= 1"]),
    ("check-theorems-real-fraction",
     lambda: theory.check_theorems(P3, R3, k=2, p_data=P3, real_fraction=-1.0),
     ["`real_fraction`", "got -1.0", "[0, 1]"]),
    # --------------------------------------------------------------------------- models
    ("models-get-unknown", lambda: models.get("vae"),
     ["`name`", "got 'vae'", f"one of {sorted(models.MODELS)}"]),
    ("models-registry-unknown", lambda: models.MODELS["vae"],
     ["model name", "'vae'", f"one of {sorted(models.MODELS)}"]),
    ("categorical-num-states", lambda: models.categorical(0), ["`num_states`", "got 0", ">= 1"]),
    ("gaussian-dim", lambda: models.gaussian(0), ["`dim`", "got 0", ">= 1"]),
    ("gaussian-min-variance", lambda: models.gaussian(2, min_variance=-1.0),
     ["`min_variance`", "got -1.0", ">= 0"]),
    ("gmm-num-components", lambda: models.gmm(0, 2), ["`num_components`", "got 0", ">= 1"]),
    ("gmm-em-steps", lambda: models.gmm(2, 2, em_steps=0), ["`em_steps`", "got 0", ">= 1"]),
    ("kde-bandwidth", lambda: models.kde(2, bandwidth=-1.0),
     ["`bandwidth`", "got -1.0", "'scott', 'silverman' or a finite Python float > 0"]),
    ("histogram-bins", lambda: models.histogram(0), ["`bins`", "got 0", ">= 1"]),
    ("histogram-box", lambda: models.histogram(4, low=1.0, high=-1.0),
     ["`low`", "low=1.0, high=-1.0", "below `high`"]),
    ("flow-width", lambda: models.flow_matching(2, width=0), ["`width`", "got 0", ">= 1"]),
    ("flow-learning-rate", lambda: models.flow_matching(2, learning_rate=0.0),
     ["`learning_rate`", "got 0.0", "> 0"]),
    ("categorical-data-2d", lambda: CATEGORICAL.init(KEY, STATES[:, None]),
     ["`data`", "got shape (6, 1)", "1-D array of state indices"]),
    ("categorical-data-float", lambda: CATEGORICAL.init(KEY, STATES.astype(jnp.float32)),
     ["`data`", "got dtype float32", "integer state indices"]),
    ("categorical-data-out-of-range", lambda: CATEGORICAL.init(KEY, jnp.array([0, 7])),
     ["`data`", "got values in [0, 7]", "states in [0, 4]"]),
    ("categorical-data-empty", lambda: CATEGORICAL.init(KEY, jnp.zeros(0, jnp.int32)),
     ["`data`", "got shape (0,)", "at least one state"]),
    ("categorical-weights-all-zero", lambda: CATEGORICAL.init(KEY, STATES, jnp.zeros(N)),
     ["`weights`", "all-zero", "must not all be zero"]),
    ("categorical-weights-negative",
     lambda: CATEGORICAL.fit(KEY, CATEGORICAL_PARAMS, STATES, -jnp.ones(N)),
     ["`weights`", "minimum -1.0", "non-negative"]),
    ("categorical-params-shape",
     lambda: CATEGORICAL.sample(KEY, models.CategoricalParams(jnp.full(4, 0.25)), 3),
     ["`params.probs`", "got (4,)", "shape (5,)"]),
    ("categorical-num-samples", lambda: CATEGORICAL.sample(KEY, CATEGORICAL_PARAMS, 0),
     ["`num_samples`", "got 0", ">= 1"]),
]

for _name, (_model, _params) in CONTINUOUS.items():
    CASES += [
        (f"{_name}-data-1d", lambda m=_model: m.init(KEY, X[:, 0]),
         ["`data`", "got shape (6,)", "shape (N, dim) with N >= 1 and dim = 2"]),
        (f"{_name}-data-3d", lambda m=_model: m.init(KEY, X[None]),
         ["`data`", "got shape (1, 6, 2)", "shape (N, dim)"]),
        (f"{_name}-data-wrong-dim", lambda m=_model: m.init(KEY, jnp.ones((N, 3))),
         ["`data`", "got shape (6, 3)", "dim = 2"]),
        (f"{_name}-data-empty", lambda m=_model: m.init(KEY, X[:0]),
         ["`data`", "got shape (0, 2)", "N >= 1"]),
        (f"{_name}-data-nan", lambda m=_model: m.init(KEY, _with_nan(X)),
         ["`data`", "1 non-finite entries", "must be finite"]),
        (f"{_name}-data-inf", lambda m=_model: m.init(KEY, jnp.full((N, 2), jnp.inf)),
         ["`data`", "12 non-finite entries", "must be finite"]),
        (f"{_name}-data-complex", lambda m=_model: m.init(KEY, X.astype(jnp.complex64)),
         ["`data`", "complex64", "real numbers"]),
        (f"{_name}-weights-shape", lambda m=_model: m.init(KEY, X, jnp.ones(N - 1)),
         ["`weights`", "got shape (5,)", "shape (N,) = (6,)"]),
        (f"{_name}-weights-negative", lambda m=_model: m.init(KEY, X, -jnp.ones(N)),
         ["`weights`", "minimum -1.0", "non-negative"]),
        (f"{_name}-weights-nan", lambda m=_model: m.init(KEY, X, jnp.full(N, jnp.nan)),
         ["`weights`", "6 non-finite entries", "must be finite"]),
        (f"{_name}-weights-all-zero", lambda m=_model: m.init(KEY, X, jnp.zeros(N)),
         ["`weights`", "all-zero", "must not all be zero"]),
        (f"{_name}-fit-weights-all-zero",
         lambda m=_model, p=_params: m.fit(KEY, p(), X, jnp.zeros(N)),
         ["`weights`", "all-zero", "must not all be zero"]),
        (f"{_name}-fit-data-nan", lambda m=_model, p=_params: m.fit(KEY, p(), _with_nan(X)),
         ["`data`", "1 non-finite entries", "must be finite"]),
        (f"{_name}-num-samples-zero", lambda m=_model, p=_params: m.sample(KEY, p(), 0),
         ["`num_samples`", "got 0", ">= 1"]),
        (f"{_name}-num-samples-float", lambda m=_model, p=_params: m.sample(KEY, p(), 4.0),
         ["`num_samples`", "got 4.0", "an integer >= 1"]),
        (f"{_name}-log-prob-shape", lambda m=_model, p=_params: m.log_prob(p(), X[:, :1]),
         ["`x`", "got shape (6, 1)", "dim = 2"]),
    ]

CASES += [
    ("gaussian-params-shape",
     lambda: GAUSSIAN.sample(KEY, models.GaussianParams(jnp.zeros(3), jnp.eye(3)), 2),
     ["`params.mean`", "got (3,)", "shape (2,)"]),
    ("gmm-params-shape",
     lambda: GMM.fit(KEY, models.GMMParams(jnp.ones(3) / 3, jnp.zeros((3, 2)),
                                           jnp.stack([jnp.eye(2)] * 3)), X),
     ["`params.weights`", "got (3,)", "shape (2,)"]),
    ("flow-params-type", lambda: FLOW.sample(KEY, GAUSSIAN_PARAMS, 2),
     ["`params`", "got GaussianParams", "FlowParams"]),
    ("flow-learning-rate-init", lambda: FLOW.init(KEY, X, learning_rate=-1.0),
     ["`learning_rate`", "got -1.0", "> 0"]),
    # --------------------------------------------------------------------------- the loop
    ("loop-config-num-generations", lambda: sc.LoopConfig(num_generations=0, num_samples=4),
     ["`num_generations`", "got 0", ">= 1"]),
    ("loop-config-num-samples", lambda: sc.LoopConfig(num_generations=2, num_samples=0),
     ["`num_samples`", "got 0", ">= 1"]),
    ("loop-config-k-zero", lambda: sc.LoopConfig(num_generations=2, num_samples=4, k=0),
     ["`k`", "got 0", ">= 1"]),
    ("loop-config-k-float", lambda: sc.LoopConfig(num_generations=2, num_samples=4, k=2.0),
     ["`k`", "got 2.0", "an integer >= 1"]),
    ("loop-config-regime",
     lambda: sc.LoopConfig(num_generations=2, num_samples=4, regime="keep"),
     ["`regime`", "got 'keep'", "one of ('replace', 'accumulate')"]),
    ("run-beta-negative", lambda: _run(sc.Hyperparams(beta=-1.0)), ["`beta`", "got -1.0", ">= 0"]),
    ("run-beta-vector", lambda: _run(sc.Hyperparams(beta=jnp.ones(3))),
     ["`beta`", "got shape (3,)", "scalar"]),
    ("run-real-fraction-above-one", lambda: _run(sc.Hyperparams(real_fraction=1.5)),
     ["`real_fraction`", "got 1.5", "[0, 1]"]),
    ("run-real-fraction-negative", lambda: _run(sc.Hyperparams(real_fraction=-0.25)),
     ["`real_fraction`", "got -0.25", "[0, 1]"]),
    ("run-num-candidates-above-k", lambda: _run(sc.Hyperparams(num_candidates=3)),
     ["`num_candidates`", "got 3", "[1, 2]"]),
    ("run-hyper-type", lambda: _run({"beta": 1.0}),
     ["`hyper`", "got dict", "selfconsume.Hyperparams"]),
    ("run-config-type", lambda: _run(config={"num_generations": 1}),
     ["`config`", "got dict", "selfconsume.LoopConfig"]),
    ("run-model-type", lambda: _run(model="gaussian"),
     ["`model`", "got str", "GenerativeModel"]),
    ("run-reward-fn-type", lambda: _run(reward_fn=3.0),
     ["`reward_fn`", "got float", "callable"]),
    ("run-reward-fn-shape", lambda: _run(reward_fn=lambda x: x),
     ["`reward_fn`", "got shape (8, 2)", "rewards of shape (8,)"]),
    ("run-real-data-wrong-dim", lambda: _run(real=jnp.ones((N, 3))),
     ["`real_data`", "got shape (6, 3)", "shape (N, 2) with N >= 1"]),
    ("run-real-data-empty", lambda: _run(real=X[:0]),
     ["`real_data`", "got shape (0, 2)", "N >= 1"]),
    ("run-real-data-nan", lambda: _run(real=_with_nan(X)),
     ["`real_data`", "1 non-finite entries", "must be finite"]),
    ("run-real-weights-all-zero", lambda: _run(real_weights=jnp.zeros(N)),
     ["`real_weights`", "all-zero", "must not all be zero"]),
    ("run-real-weights-negative", lambda: _run(real_weights=jnp.array([1.0, -1, 1, 1, 1, 1])),
     ["`real_weights`", "minimum -1.0", "non-negative"]),
    ("run-real-weights-nan", lambda: _run(real_weights=_with_nan(np.ones(N), 2)),
     ["`real_weights`", "1 non-finite entries", "must be finite"]),
    ("run-real-weights-shape", lambda: _run(real_weights=jnp.ones(3)),
     ["`real_weights`", "got (3,)", "shape (6,)"]),
    ("run-real-weights-without-data", lambda: _run(real=None, real_weights=jnp.ones(3)),
     ["`real_weights`", "real_data=None", "without `real_data`"]),
    ("retrain-step-real-fraction", lambda: _step(sc.Hyperparams(real_fraction=2.0)),
     ["`real_fraction`", "got 2.0", "[0, 1]"]),
    ("retrain-step-real-data-nan", lambda: _step(real=_with_nan(X)),
     ["`real_data`", "1 non-finite entries", "must be finite"]),
    # --------------------------------------------------------------------------- sweep
    ("sweep-num-seeds", lambda: sc.sweep(KEY, _sweep_fn, num_seeds=0),
     ["`num_seeds`", "got 0", ">= 1"]),
    ("sweep-grid-empty-axis", lambda: sc.sweep(KEY, _sweep_fn, num_seeds=1, grid={"beta": []}),
     ["`grid['beta']`", "empty sequence", "at least one value"]),
    ("sweep-grid-2d",
     lambda: sc.sweep(KEY, _sweep_fn, num_seeds=1, grid={"beta": [[1.0, 2.0]]}),
     ["`grid['beta']`", "got shape (1, 2)", "1-D"]),
    ("sweep-grid-strings", lambda: sc.sweep(KEY, _sweep_fn, num_seeds=1, grid={"beta": ["a"]}),
     ["`grid['beta']`", "got dtype <U1", "bools, ints or floats"]),
    ("sweep-grid-unknown-axis",
     lambda: sc.sweep(KEY, _sweep_fn, num_seeds=1, grid={"gamma": [1.0]}),
     ["`grid` axis 'gamma'", "fn accepts ['beta']", "not an argument"]),
    ("sweep-fn", lambda: sc.sweep(KEY, None, num_seeds=1),
     ["`fn`", "got None", "callable as fn(key, **point)"]),
    ("sweep-key", lambda: sc.sweep(0, _sweep_fn, num_seeds=1),
     ["`key`", "got shape ()", "a single PRNG key"]),
    ("sweep-chunk-size", lambda: sc.sweep(KEY, _sweep_fn, num_seeds=1, chunk_size=0),
     ["`chunk_size`", "got 0", ">= 1"]),
    # --------------------------------------------------------------------------- metrics
    ("reward-summary-2d", lambda: metrics.reward_summary(jnp.zeros((2, 3))),
     ["`rewards`", "got shape (2, 3)", "1-D"]),
    ("reward-summary-empty", lambda: metrics.reward_summary(jnp.zeros(0)),
     ["`rewards`", "got shape (0,)", "must not be empty"]),
    ("reward-summary-quantile", lambda: metrics.reward_summary(jnp.ones(3), quantiles=(1.5,)),
     ["`quantiles`", "got 1.5", "in [0, 1]"]),
    ("kl-shape", lambda: metrics.kl_divergence(P3, jnp.array([0.5, 0.5])),
     ["`p` and `q`", "(3,) and (2,)", "same shape"]),
    ("kl-negative", lambda: metrics.kl_divergence(P3, jnp.array([1.5, -0.5, 0.0])),
     ["`q`", "-0.5", "non-negative"]),
    ("total-variation-sum", lambda: metrics.total_variation(jnp.array([0.5, 0.6, 0.1]), P3),
     ["`p`", "got sum 1.2", "sum to 1"]),
    ("entropy-empty", lambda: metrics.entropy(jnp.zeros(0)),
     ["`p`", "empty", "at least one entry"]),
    ("entropy-nan", lambda: metrics.entropy(jnp.array([0.5, jnp.nan])),
     ["`p`", "nan", "finite"]),
    ("expected-reward-shape", lambda: metrics.expected_reward(P3, jnp.ones(2)),
     ["`rewards`", "(2,) and (3,)", "shape (M,) of `p`"]),
    ("gaussian-kl-cov-shape",
     lambda: metrics.gaussian_kl(jnp.zeros(2), jnp.eye(3), jnp.zeros(2), jnp.eye(2)),
     ["`cov0`", "got (3, 3)", "shape (d, d) = (2, 2)"]),
    ("gaussian-w2-mean-rank",
     lambda: metrics.gaussian_w2(jnp.zeros((2, 1)), jnp.eye(2), jnp.zeros(2), jnp.eye(2)),
     ["`mean0`", "got shape (2, 1)", "1-D with shape (d,)"]),
    ("mmd-too-few-points", lambda: metrics.mmd_rbf(X, X[:1]),
     ["`y`", "got shape (1, 2)", "at least 2 rows"]),
    ("mmd-dims", lambda: metrics.mmd_rbf(X, jnp.ones((4, 3))),
     ["`x` and `y`", "(6, 2) and (4, 3)", "same dimension"]),
    ("mmd-bandwidth", lambda: metrics.mmd_rbf(X, X, bandwidth=-1.0),
     ["`bandwidth`", "got -1.0", ">= 0"]),
    ("median-bandwidth-rank", lambda: metrics.median_bandwidth(jnp.zeros(4), X),
     ["`x`", "got shape (4,)", "2-D with shape (n, d)"]),
    ("mode-shares-centers-empty", lambda: metrics.mode_shares(X, jnp.zeros((0, 2))),
     ["`centers`", "got shape (0, 2)", "at least one row"]),
    ("nearest-mode-dims", lambda: metrics.nearest_mode(X, jnp.zeros((3, 3))),
     ["`x` and `centers`", "(6, 2) and (3, 3)", "same dimension"]),
    # --------------------------------------------------------------------------- data
    ("datasets-unknown", lambda: data.DATASETS["spiral"],
     ["dataset name", "'spiral'", "one of ['gaussian_grid', 'gaussian_ring', 'two_moons']"]),
    ("image-datasets-unknown", lambda: data.IMAGE_DATASETS["mnist"],
     ["dataset name", "'mnist'", "one of ['cifar10', 'digits']"]),
    ("gaussian-ring-n", lambda: data.gaussian_ring(KEY, 0), ["`n`", "got 0", ">= 1"]),
    ("gaussian-ring-num-modes", lambda: data.gaussian_ring(KEY, 4, num_modes=0),
     ["`num_modes`", "got 0", ">= 1"]),
    ("gaussian-ring-std", lambda: data.gaussian_ring(KEY, 4, std=-0.1),
     ["`std`", "got -0.1", ">= 0"]),
    ("gaussian-grid-side", lambda: data.gaussian_grid(KEY, 4, side=0),
     ["`side`", "got 0", ">= 1"]),
    ("gaussian-grid-std", lambda: data.gaussian_grid(KEY, 4, std=float("nan")),
     ["`std`", "got nan", ">= 0"]),
    ("two-moons-n-float", lambda: data.two_moons(KEY, 2.5),
     ["`n`", "got 2.5", "an integer >= 1"]),
    ("two-moons-noise", lambda: data.two_moons(KEY, 4, noise=-1.0),
     ["`noise`", "got -1.0", ">= 0"]),
    ("moon-of-shape", lambda: data.moon_of(jnp.zeros((3, 3))),
     ["`x`", "got shape (3, 3)", "shape (n, 2)"]),
    ("cifar-split", lambda: data.load_cifar10("/nonexistent", split="valid"),
     ["`split`", "got 'valid'", "one of ['test', 'train']"]),
    ("cifar-max-examples", lambda: data.load_cifar10("/nonexistent", max_examples=0),
     ["`max_examples`", "got 0", ">= 1"]),
    ("cifar-missing-folder", lambda: data.load_cifar10("/nonexistent/cifar"),
     ["`path`", "'/nonexistent/cifar'", "data_batch_1", "never downloads"]),
    # --------------------------------------------------------------------------- rewards
    ("rewards-unknown", lambda: rewards.REWARDS["aesthetic"],
     ["reward name", "'aesthetic'", f"one of {sorted(rewards.REWARDS)}"]),
    ("distance-center-2d", lambda: rewards.distance(jnp.zeros((2, 2))),
     ["`center`", "got shape (2, 2)", "non-empty 1-D vector"]),
    ("distance-center-empty", lambda: rewards.distance(jnp.zeros(0)),
     ["`center`", "got shape (0,)", "non-empty 1-D vector"]),
    ("distance-scale-vector", lambda: rewards.distance(jnp.zeros(2), scale=jnp.ones(2)),
     ["`scale`", "got shape (2,)", "scalar"]),
    ("distance-radius-negative", lambda: rewards.distance(jnp.zeros(2), radius=-1.0),
     ["`radius`", "got -1.0", ">= 0"]),
    ("distance-points-shape", lambda: rewards.distance(jnp.zeros(2))(jnp.zeros((3, 3))),
     ["samples", "got shape (3, 3)", "shape (n, 2)"]),
    ("linear-direction-empty", lambda: rewards.linear(jnp.zeros(0)),
     ["`direction`", "got shape (0,)", "non-empty 1-D vector"]),
    ("linear-scale-vector", lambda: rewards.linear(jnp.ones(2), scale=jnp.ones(3)),
     ["`scale`", "got shape (3,)", "scalar"]),
    ("table-values-2d", lambda: rewards.table(jnp.zeros((2, 2))),
     ["`values`", "got shape (2, 2)", "non-empty 1-D vector"]),
    ("table-states-float", lambda: rewards.table(jnp.zeros(3))(jnp.zeros(2)),
     ["state indices", "got dtype float32", "integer"]),
    ("table-states-out-of-range", lambda: rewards.table(jnp.zeros(3))(jnp.array([0, 3])),
     ["state indices", "got values in [0, 3]", "[0, 2]"]),
    ("class-probability-index", lambda: rewards.class_probability(_classifier(), 3),
     ["`class_index`", "got 3", "[0, 3)"]),
    ("log-density-no-density", lambda: rewards.log_density(models.flow_matching(9), None),
     ["`model`", "'flow_matching'", "model.log_prob is None"]),
    ("classifier-steps", lambda: classifier.train(KEY, X, jnp.zeros(N, jnp.int32), num_classes=2,
                                                  steps=0),
     ["`steps`", "got 0", ">= 1"]),
]


def _classifier():
    return classifier.init(KEY, (2,), num_classes=3, hidden=())


@pytest.mark.parametrize("call, expected", [(c, e) for _, c, e in CASES],
                         ids=[i for i, _, _ in CASES])
def test_bad_input_raises_a_clear_value_error(call, expected):
    with pytest.raises(ValueError) as err:
        call()
    message = str(err.value)
    missing = [s for s in expected if s not in message]
    assert not missing, f"message {message!r} lacks {missing}"
    assert "\n" not in message, message


def test_case_ids_are_unique():
    ids = [i for i, _, _ in CASES]
    assert len(ids) == len(set(ids))


def test_value_problems_under_jit_give_nan():
    """Under ``jit`` structural checks raise; value problems give NaN, never a plausible answer
    (the rule of selfconsume._checks; tests/test_traced_values.py has the full table)."""
    bad_p = jnp.array([0.5, 0.6, 0.1])
    out = jax.jit(lambda p: theory.curated(p, R3, k=2))(bad_p)  # no exception: traced p
    assert out.shape == (3,) and np.all(np.isnan(out))
    params = jax.jit(GAUSSIAN.init)(KEY, _with_nan(X))
    assert not np.all(np.isfinite(params.mean))
    with pytest.raises(ValueError, match="`data` must have shape"):
        jax.jit(GAUSSIAN.init)(KEY, X[:, 0])
    with pytest.raises(ValueError, match="`k` must be >= 1"):
        jax.jit(lambda r: sc.curate(KEY, SAMPLES, r, k=0))(REWARDS8)

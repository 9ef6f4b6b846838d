"""selfconsume: simulate generative models retrained on their own curated samples, in JAX.

The public API (see the README and DESIGN.md section 3):

* :func:`curate`, :func:`choice_probabilities`: K-way Bradley–Terry curation of samples;
  :mod:`selfconsume.curators`: every other choice rule (top-m, Thurstone, adversarial, mixtures,
  two stages, top-fraction), sampled and exact.
* :mod:`selfconsume.theory`: exact population dynamics on a finite support and theorem checks.
* :mod:`selfconsume.models`: generative model families (``MODELS``) as pure functions.
* :class:`LoopConfig`, :class:`Hyperparams`, :func:`retrain_step`, :func:`run`: the loop.
* :func:`sweep`, :class:`Generations`: seeds x grids as one compiled, sharded program, optionally
  generation by generation with checkpoints (:mod:`selfconsume.execution`, the one executor of
  the API and the command line); :class:`SweepResult` and its files (:mod:`selfconsume.results`).
* :mod:`selfconsume.ecosystem`: M models retrained on each other's curated samples;
  :mod:`selfconsume.preferences`: rewards that drift with what the model shows;
  :mod:`selfconsume.reward_models`: rewards learned from comparisons.
* :mod:`selfconsume.metrics`, :mod:`selfconsume.data`, :mod:`selfconsume.rewards`,
  :mod:`selfconsume.stats` (intervals over seeds), :mod:`selfconsume.files` (atomic writes).
"""

from selfconsume import (classifier, curators, data, files, metrics, models, preferences,
                         results, reward_models, rewards, stats, theory)
from selfconsume import ecosystem, execution, retrain
from selfconsume.curation import choice_probabilities, curate
from selfconsume.retrain import (Hyperparams, LoopConfig, RetrainInfo, RetrainState, retrain_step,
                                 run)
from selfconsume.execution import Generations, sweep
from selfconsume.results import SweepResult
from selfconsume.theory import lambda_from_real_fraction, real_fraction_from_lambda
from selfconsume.types import Curated, PRNGKey, PyTree

__version__ = "0.1.0"

__all__ = [
    "Curated",
    "Generations",
    "Hyperparams",
    "LoopConfig",
    "PRNGKey",
    "PyTree",
    "RetrainInfo",
    "RetrainState",
    "SweepResult",
    "choice_probabilities",
    "classifier",
    "curate",
    "curators",
    "data",
    "ecosystem",
    "execution",
    "files",
    "lambda_from_real_fraction",
    "metrics",
    "models",
    "preferences",
    "real_fraction_from_lambda",
    "results",
    "retrain",
    "reward_models",
    "retrain_step",
    "rewards",
    "run",
    "stats",
    "sweep",
    "theory",
]


def __getattr__(name):
    # `sc.plotting` is imported on first use, so that `import selfconsume` does not load matplotlib.
    if name == "plotting":
        import importlib

        return importlib.import_module("selfconsume.plotting")
    raise AttributeError(f"module 'selfconsume' has no attribute {name!r}")

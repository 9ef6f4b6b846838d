"""selfconsume: simulate generative models retrained on their own curated samples, in JAX.

The public API (see the README):

* :func:`curate`, :func:`choice_probabilities`: K-way Bradley–Terry curation of samples.
* :mod:`selfconsume.theory`: exact population dynamics on a finite support and theorem checks.
"""

from selfconsume import theory
from selfconsume.curation import choice_probabilities, curate
from selfconsume.theory import lambda_from_real_fraction, real_fraction_from_lambda
from selfconsume.types import Curated, PRNGKey, PyTree

__version__ = "0.1.0"

__all__ = [
    "Curated",
    "PRNGKey",
    "PyTree",
    "choice_probabilities",
    "curate",
    "lambda_from_real_fraction",
    "real_fraction_from_lambda",
    "theory",
]

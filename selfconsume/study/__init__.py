"""Studies: TOML configurations run on the package's one executor, with claims and figures.

* :mod:`~selfconsume.study.config`: the schema, validation (:class:`ConfigError`), overrides,
  the round trip to TOML, and the studies shipped with the package;
* :mod:`~selfconsume.study.build`: data, model, reward and classifier, and the loop as a
  :class:`selfconsume.Generations` program;
* :mod:`~selfconsume.study.execute`: running and resuming on :func:`selfconsume.sweep`;
* :mod:`~selfconsume.study.claims`: the claims and the summary;
* :mod:`~selfconsume.study.outputs`: the run folder's files and figures.

The command line (:mod:`selfconsume.cli`) is a thin layer over these.
"""

from selfconsume.study.build import Study, build
from selfconsume.study.claims import evaluate_claims, summarize
from selfconsume.study.config import (DEMO, ClaimFailed, ConfigError, NumericalError, find_study,
                                      load_config, shipped_studies, to_toml, validate)
from selfconsume.study.execute import execute, new_run_dir, replot, resume, run_study
from selfconsume.study.outputs import figures, write_outputs

__all__ = ["DEMO", "ClaimFailed", "ConfigError", "NumericalError", "Study", "build",
           "evaluate_claims", "execute", "figures", "find_study", "load_config", "new_run_dir",
           "replot", "resume", "run_study", "shipped_studies", "summarize", "to_toml",
           "validate", "write_outputs"]

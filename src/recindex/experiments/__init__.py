"""Experiments as data: a TOML file names a matrix of datasets x families x config overrides x index
sweeps and the comparisons to test; `run` trains and evaluates every cell per seed (cached, resumable,
side by side in processes), and `write_report` turns a run folder into Markdown and HTML with mean +-
95% CI over seeds, paired tests with verdicts, and plots.

    from recindex.experiments import RunOptions, run, write_report
"""

from recindex.experiments.report import write_report
from recindex.experiments.runner import RunOptions, RunSummary, run
from recindex.experiments.spec import ExperimentSpec, load_spec

__all__ = ["ExperimentSpec", "RunOptions", "RunSummary", "load_spec", "run", "write_report"]

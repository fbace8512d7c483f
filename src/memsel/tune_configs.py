"""Tune schedulers and search algorithms by name, with their settings; free of Ray.

``tune.scheduler`` and ``tune.search_alg`` name components registered here (memsel.config checks
the names and settings before Ray starts); their factories live in memsel.tune_jobs.schedulers
and memsel.tune_jobs.search and import Ray only when called. A scheduler or search algorithm in a
module of its own registers its factory and config together (``@SCHEDULERS.register("pbt", PBTConfig)``).
A factory takes the component's config (None without settings) and the sweep's settings
(:class:`memsel.config.TuneSettings`), then ``max_t`` and the searched ``mutations`` (schedulers) or the
run's ``seed`` (search algorithms), and returns the Tune object.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from memsel.registry import Registry, check

SCHEDULERS = Registry("Tune scheduler")
"""tune.scheduler -> factory(config, settings, max_t, mutations) returning a Tune trial scheduler (None = FIFO)."""
SEARCH_ALGS = Registry("Tune search algorithm")
"""tune.search_alg -> factory(config, settings, seed) returning a Tune search algorithm."""


@SCHEDULERS.register_config("asha", "memsel.tune_jobs.schedulers:asha")
@dataclass
class ASHAConfig:
    """ASHA early stopping; tune spells its fields ``tune.grace_period`` and ``tune.reduction_factor``."""

    FLAT_PREFIX: ClassVar[str] = ""
    grace_period: int = 2
    """Iterations every trial gets before it can be stopped."""
    reduction_factor: int = 2
    """Keep 1 / reduction_factor of the trials at each rung."""

    def validate(self, p: str = "tune") -> None:
        check(self.grace_period >= 1, f"{p}.grace_period", "an integer >= 1", self.grace_period)
        check(self.reduction_factor >= 2, f"{p}.reduction_factor", "an integer >= 2", self.reduction_factor)


@SCHEDULERS.register_config("pbt", "memsel.tune_jobs.schedulers:pbt")
@dataclass
class PBTConfig:
    """Population-based training (``tune.scheduler_options``): every ``perturbation_interval`` iterations
    a trial in the bottom ``quantile_fraction`` restores the checkpoint of one in the top and continues
    with its ``ppo`` settings mutated (x0.8 / x1.2, or resampled with ``resample_probability``)."""

    perturbation_interval: int = 2
    """Iterations between exploit/explore steps (trials checkpoint at the same interval)."""
    quantile_fraction: float = 0.5
    """Share of the population at the top (copied from) and the bottom (replaced); <= 0.5."""
    resample_probability: float = 0.25
    """Chance that a mutated value is drawn anew from the search space instead of perturbed."""
    synch: bool = False
    """Wait at each interval until every running trial reached it, then exploit (deterministic with
    ties and few trials; slower: trials pause for the slowest)."""

    def validate(self, p: str = "tune") -> None:
        check(self.perturbation_interval >= 1, f"{p}.scheduler_options.perturbation_interval", "an integer >= 1",
              self.perturbation_interval)
        check(0 < self.quantile_fraction <= 0.5, f"{p}.scheduler_options.quantile_fraction", "a number in (0, 0.5]",
              self.quantile_fraction)
        check(0 <= self.resample_probability <= 1, f"{p}.scheduler_options.resample_probability",
              "a number in [0, 1]", self.resample_probability)


@SEARCH_ALGS.register_config("optuna", "memsel.tune_jobs.search:optuna_search")
@dataclass
class OptunaConfig:
    """Optuna's TPE sampler through Tune's OptunaSearch (``tune.search_options``), seeded with the run's seed
    and limited to ``tune.max_concurrent_trials`` suggestions at once."""

    n_startup_trials: int = 2
    """Trials drawn at random before TPE starts modelling the results."""

    def validate(self, p: str = "tune") -> None:
        check(self.n_startup_trials >= 1, f"{p}.search_options.n_startup_trials", "an integer >= 1",
              self.n_startup_trials)


SCHEDULERS.register_reference("none", "memsel.tune_jobs.schedulers:fifo")
SEARCH_ALGS.register_reference("random", "memsel.tune_jobs.search:random_search")
SEARCH_ALGS.register_reference("grid", "memsel.tune_jobs.search:grid_search")

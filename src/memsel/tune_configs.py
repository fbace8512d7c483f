"""Tune schedulers and search algorithms by name, with their settings; free of Ray.

``tune.scheduler`` and ``tune.search_alg`` name components registered here (memsel.config checks
the names and settings before Ray starts); their factories live in memsel.tune_jobs.schedulers
and memsel.tune_jobs.search and import Ray only when called. A scheduler or search algorithm in a
module of its own registers its factory and config together (``@SCHEDULERS.register("pbt", PBTConfig)``).
A factory takes the component's config (None without settings) and the sweep's settings
(:class:`memsel.config.TuneSettings`, and ``max_t`` for schedulers) and returns the Tune object.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from memsel.registry import Registry, check

SCHEDULERS = Registry("Tune scheduler")
"""tune.scheduler -> factory(config, settings, max_t) returning a Tune trial scheduler (None = FIFO)."""
SEARCH_ALGS = Registry("Tune search algorithm")
"""tune.search_alg -> factory(config, settings) returning a Tune search algorithm."""


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


SCHEDULERS.register_reference("none", "memsel.tune_jobs.schedulers:fifo")
SEARCH_ALGS.register_reference("random", "memsel.tune_jobs.search:random_search")

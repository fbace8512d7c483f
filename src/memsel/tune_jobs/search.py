"""The Tune search algorithms ``tune.search_alg`` names (memsel.tune_configs registers them)."""

from __future__ import annotations

from typing import Any

from memsel.tune_configs import SEARCH_ALGS


def random_search(config: None, settings: Any) -> Any:
    """``random``: Tune's BasicVariantGenerator (random draws and grid points), as Tune builds it by default."""
    from ray.tune.search import BasicVariantGenerator

    return BasicVariantGenerator(max_concurrent=settings.max_concurrent_trials)


def make_search_alg(settings: Any) -> Any:
    """The search algorithm ``settings.search_alg`` (a :class:`memsel.config.TuneSettings`) names."""
    return SEARCH_ALGS.make(settings.search_alg, settings, settings.search_options, "tune", "search_options", settings)

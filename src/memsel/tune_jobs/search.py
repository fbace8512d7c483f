"""The Tune search algorithms ``tune.search_alg`` names (memsel.tune_configs registers them).

``random`` and ``grid`` are Tune's BasicVariantGenerator (``grid`` turns every ``choice`` into grid
points, :func:`memsel.tune_jobs.space.search_space`); ``optuna`` is Optuna's TPE through Tune's
OptunaSearch, behind a ConcurrencyLimiter of ``tune.max_concurrent_trials``.
"""

from __future__ import annotations

from typing import Any

from memsel.tune_configs import SEARCH_ALGS, OptunaConfig


def random_search(config: None, settings: Any, seed: int | None = None) -> Any:
    """``random``: Tune's BasicVariantGenerator (random draws and grid points), as Tune builds it by default."""
    from ray.tune.search import BasicVariantGenerator

    return BasicVariantGenerator(max_concurrent=settings.max_concurrent_trials, random_state=seed)


def grid_search(config: None, settings: Any, seed: int | None = None) -> Any:
    """``grid``: every combination of the searched values (``choice`` and ``grid`` lists), ``num_samples``
    times each; the same generator as random search, over grid points only."""
    return random_search(config, settings, seed)


def optuna_search(config: OptunaConfig, settings: Any, seed: int | None = None) -> Any:
    """``optuna``: Optuna's TPE sampler (seeded), at most ``max_concurrent_trials`` suggestions pending."""
    import optuna
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=config.n_startup_trials)
    return ConcurrencyLimiter(OptunaSearch(sampler=sampler), max_concurrent=settings.max_concurrent_trials)


def make_search_alg(settings: Any, seed: int | None = None) -> Any:
    """The search algorithm ``settings.search_alg`` (a :class:`memsel.config.TuneSettings`) names, its draws
    seeded with ``seed`` (the run's)."""
    return SEARCH_ALGS.make(settings.search_alg, settings, settings.search_options, "tune", "search_options",
                            settings, seed)

"""The Tune trial schedulers ``tune.scheduler`` names (memsel.tune_configs registers them)."""

from __future__ import annotations

from typing import Any

from memsel.tune_configs import SCHEDULERS, ASHAConfig, PBTConfig


def asha(config: ASHAConfig, settings: Any, max_t: int, mutations: dict | None = None) -> Any:
    """``asha``: asynchronous successive halving over ``training_iteration``, stopping weak trials early."""
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(time_attr="training_iteration", max_t=max_t, grace_period=min(config.grace_period, max_t),
                         reduction_factor=config.reduction_factor)


def pbt(config: PBTConfig, settings: Any, max_t: int, mutations: dict | None = None) -> Any:
    """``pbt``: population-based training over ``training_iteration``; ``mutations`` (searched ppo field ->
    Tune domain) are what it perturbs. Trials checkpoint at the perturbation interval (memsel.tune_jobs.ppo),
    so that exploiting always has a recent checkpoint to copy."""
    from ray.tune.schedulers import PopulationBasedTraining

    return PopulationBasedTraining(time_attr="training_iteration", perturbation_interval=config.perturbation_interval,
                                   quantile_fraction=config.quantile_fraction,
                                   resample_probability=config.resample_probability, synch=config.synch,
                                   hyperparam_mutations=dict(mutations or {}))


def fifo(config: None, settings: Any, max_t: int, mutations: dict | None = None) -> None:
    """``none``: every trial runs to the end (Tune's FIFO scheduler, what it uses when given none)."""
    return None


def make_scheduler(settings: Any, max_t: int, mutations: dict | None = None) -> Any:
    """The scheduler ``settings.scheduler`` (a :class:`memsel.config.TuneSettings`) names, for trials of ``max_t``
    iterations; ``mutations``: the searched fields a scheduler may change within a trial (PBT)."""
    return SCHEDULERS.make(settings.scheduler, settings, settings.scheduler_options, "tune", "scheduler_options",
                           settings, max_t, mutations)

"""The Tune trial schedulers ``tune.scheduler`` names (memsel.tune_configs registers them)."""

from __future__ import annotations

from typing import Any

from memsel.tune_configs import SCHEDULERS, ASHAConfig


def asha(config: ASHAConfig, settings: Any, max_t: int) -> Any:
    """``asha``: asynchronous successive halving over ``training_iteration``, stopping weak trials early."""
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(time_attr="training_iteration", max_t=max_t, grace_period=min(config.grace_period, max_t),
                         reduction_factor=config.reduction_factor)


def fifo(config: None, settings: Any, max_t: int) -> None:
    """``none``: every trial runs to the end (Tune's FIFO scheduler, what it uses when given none)."""
    return None


def make_scheduler(settings: Any, max_t: int) -> Any:
    """The scheduler ``settings.scheduler`` (a :class:`memsel.config.TuneSettings`) names, for trials of ``max_t`` iterations."""
    return SCHEDULERS.make(settings.scheduler, settings, settings.scheduler_options, "tune", "scheduler_options",
                           settings, max_t)

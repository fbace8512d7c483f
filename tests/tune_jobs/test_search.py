"""Tune schedulers and search algorithms by name (memsel.tune_configs, memsel.tune_jobs.schedulers/search)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from memsel.config import ConfigError, load_config
from memsel.tune_configs import SCHEDULERS, SEARCH_ALGS
from memsel.tune_jobs.schedulers import make_scheduler
from memsel.tune_jobs.search import make_search_alg


def test_defaults_build_what_the_sweep_used_before_the_registry():
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import BasicVariantGenerator

    settings = load_config(sets=["tune.grace_period=3", "tune.reduction_factor=4",
                                 "tune.max_concurrent_trials=3"]).tune
    assert (settings.scheduler, settings.search_alg) == ("asha", "random")
    scheduler = make_scheduler(settings, 8)
    assert isinstance(scheduler, ASHAScheduler)
    # the scheduler ppo.py built inline before the registry
    before = ASHAScheduler(time_attr="training_iteration", max_t=8, grace_period=3, reduction_factor=4)
    assert _shape(scheduler) == _shape(before) and scheduler._time_attr == "training_iteration"
    capped = ASHAScheduler(time_attr="training_iteration", max_t=2, grace_period=2, reduction_factor=4)
    assert _shape(make_scheduler(settings, 2)) == _shape(capped)  # grace period capped at max_t, as before
    search = make_search_alg(settings)
    assert isinstance(search, BasicVariantGenerator) and search.max_concurrent == 3


def _shape(asha) -> tuple:
    """What an ASHA scheduler stops on: max_t, reduction factor and every bracket's rung milestones."""
    return asha._max_t, asha._reduction_factor, [[milestone for milestone, _ in b._rungs] for b in asha._brackets]


def test_none_is_fifo():
    assert make_scheduler(load_config(sets=["tune.scheduler=none"]).tune, 8) is None


@pytest.mark.parametrize("sets, field, names", [
    (["tune.scheduler=hyperband"], "tune.scheduler", SCHEDULERS.names()),
    (["tune.search_alg=bayes"], "tune.search_alg", SEARCH_ALGS.names()),
])
def test_unknown_names_are_refused_listing_the_registered_ones(sets, field, names):
    with pytest.raises(ConfigError) as info:
        load_config(sets=sets)
    assert f"field '{field}'" in str(info.value) and str(list(names)) in str(info.value)


def test_settings_of_a_component_without_any_are_refused():
    with pytest.raises(ConfigError, match="tune.search_options"):
        load_config(sets=["tune.search_options.seed=1"])
    with pytest.raises(ConfigError, match=r"tune.scheduler_options.patience.*grace_period"):
        load_config(sets=["tune.scheduler_options.patience=1"])


@dataclass
class _HalvingConfig:
    every: int = 1

    def validate(self, p: str = "tune") -> None:
        if self.every < 1:
            raise ConfigError(f"field '{p}.scheduler_options.every': expected an integer >= 1, got {self.every}")


def test_a_scheduler_is_one_registration():
    made = []

    @SCHEDULERS.register("halving", _HalvingConfig)
    def halving(config, settings, max_t, mutations=None):
        made.append((config.every, max_t))
        return "scheduler"

    try:
        cfg = load_config(sets=["tune.scheduler=halving", "tune.scheduler_options.every=2"])
        assert make_scheduler(cfg.tune, 5) == "scheduler" and made == [(2, 5)]
        with pytest.raises(ConfigError, match="scheduler_options.every"):
            load_config(sets=["tune.scheduler=halving", "tune.scheduler_options.every=0"])
    finally:
        SCHEDULERS.unregister("halving")

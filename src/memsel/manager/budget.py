"""The memory-budget strategy ``managed``: a trained memory manager decides which K memories a question sees.

For each question (a row of memsel.data.encode's arrays) the manager runs over the row's memories in story
order, exactly as it would have while the story was told: the first K are kept, then at every arrival it
evicts a held memory or drops the newcomer. The K memories it holds when the question comes are the slots
the selector sees (story order, with their ages in the full story, like every strategy). Greedy decisions
depend only on the statements so far, so the questions of one story see consistent memories.

Importing this module needs no torch (memsel.config registers the strategy through it); the manager network
is loaded on first use, once per strategy instance.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from memsel.data.budget import STRATEGIES, BudgetStrategy
from memsel.registry import check

log = logging.getLogger(__name__)

MANAGER_FILE = Path("manager") / "manager.pt"
"""A run directory's manager (relative to it): what the pipeline trains when no manager file is given."""


@dataclass
class ManagedConfig:
    """``managed``'s settings, in ``env.budget_options``."""

    manager: str = ""
    """A manager file (written by `memsel manager train`); empty = the run directory's manager/manager.pt,
    which `memsel pipeline` trains (Lightning on the oracle's decisions, then PPO) before the selector."""

    def validate(self, p: str = "env") -> None:
        field = f"{p}.budget_options.manager"
        check(isinstance(self.manager, str), field, "a path to a manager file", self.manager)
        if self.manager:
            check(Path(self.manager).is_file(), field, "an existing manager file (`memsel manager train` writes "
                  "<run_dir>/manager/manager.pt), or empty for the run directory's", self.manager)


@STRATEGIES.register("managed", ManagedConfig)
class ManagedMemories(BudgetStrategy):
    """``managed``: the K memories a trained manager holds when the question comes (module docstring)."""

    needs_tokens = True

    def __init__(self, config: ManagedConfig | None = None):
        super().__init__(config or ManagedConfig())
        self._net: Any = None

    def network(self, k: int) -> Any:
        """The manager network (loaded once); refuses a file trained for another K."""
        if self._net is None:
            from memsel.manager.network import load_manager

            if not self.config.manager:
                raise ValueError("field 'env.budget_options.manager': no manager file; train one with `memsel manager "
                                 "train` (or `memsel pipeline`, which trains the run's own first)")
            net, slots = load_manager(self.config.manager)
            if slots != k:
                raise ValueError(f"field 'env.memory_budget': {k}, but the manager {self.config.manager} was trained "
                                 f"for K = {slots}")
            self._net = net
        return self._net

    def select(self, mask, ages, k, rng, memories=None):
        if memories is None:
            raise ValueError("budget strategy 'managed' needs the memories' token ids (select_slots(..., memories=))")
        from memsel.manager.network import greedy_rollout

        held, _ = greedy_rollout(self.network(k), memories, mask.sum(1), k)
        return held

    def describe(self, k: int) -> str:
        return f"K = {k} (managed by {self.config.manager or 'the run directory manager'})"


def with_run_manager(cfg: Any) -> Any:
    """``cfg`` (a memsel Config) with ``env.budget_options.manager`` set to the run directory's manager file
    when the strategy is ``managed`` and no file is given; otherwise ``cfg`` itself."""
    env = cfg.env
    if env.budget_strategy != "managed" or (env.budget_options or {}).get("manager"):
        return cfg
    options = {**(env.budget_options or {}), "manager": str(cfg.run_path / MANAGER_FILE)}
    return dataclasses.replace(cfg, env=dataclasses.replace(env, budget_options=options))

"""Progress bars for the long stages of a command (data building, pretraining epochs, PPO iterations,
evaluation): tqdm bars with rate and time left, on stderr, like the logs.

Bars are shown when stderr is a terminal, and never with ``memsel --quiet`` (``MEMSEL_PROGRESS=0``, which
child processes inherit); ``MEMSEL_PROGRESS=1`` forces them on. In a CI log (no terminal) a bar would
print a line per refresh, so there the one-line-per-step logs (``pretrain epoch 3/15 ...``, one line per
trial result) tell the progress instead. While bars are shown, log lines are written above them
(:func:`log_above_bars`), so that neither garbles the other.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any, Iterator

ENV = "MEMSEL_PROGRESS"
"""0: no bars; 1: bars even when stderr is not a terminal; unset: bars when stderr is a terminal."""


def set_quiet(quiet: bool) -> None:
    """``--quiet``: no bars in this process nor in the processes it starts (Ray workers, Tune trials)."""
    if quiet:
        os.environ[ENV] = "0"


def enabled() -> bool:
    """Whether bars are shown (see the module docstring)."""
    setting = os.environ.get(ENV, "")
    if setting in ("0", "1"):
        return setting == "1"
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # a replaced or closed stderr
        return False


def bar(total: float | None, desc: str, unit: str = "it", **kwargs: Any):
    """A tqdm bar on stderr (rate and time left), or a disabled one that does nothing when bars are off."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True, leave=False,
                disable=not enabled(), **kwargs)


@contextlib.contextmanager
def log_above_bars() -> Iterator[None]:
    """While bars are shown, route the logging handlers' output through tqdm so log lines print above them."""
    if not enabled():
        yield
        return
    from tqdm.contrib.logging import logging_redirect_tqdm

    with logging_redirect_tqdm():
        yield


def lightning_bar():
    """Lightning's own tqdm progress bar (per epoch: batches, rate, time left, loss and accuracy), titled
    ``pretrain epoch k/K`` and writing to stderr instead of its default stdout; None when bars are off (the
    Trainer then shows none)."""
    if not enabled():
        return None
    from lightning.pytorch.callbacks import TQDMProgressBar

    class StderrTQDMProgressBar(TQDMProgressBar):
        """TQDMProgressBar whose bars go to stderr (``--json`` keeps stdout for the JSON; logs are on stderr)."""

        # Lightning passes file=sys.stdout as it builds each bar: point sys.stdout at stderr meanwhile.
        def init_train_tqdm(self):
            with contextlib.redirect_stdout(sys.stderr):
                return super().init_train_tqdm()

        def init_validation_tqdm(self):
            with contextlib.redirect_stdout(sys.stderr):
                return super().init_validation_tqdm()

        def on_train_epoch_start(self, trainer, *args):
            super().on_train_epoch_start(trainer, *args)
            self.train_progress_bar.set_description(f"pretrain epoch {trainer.current_epoch + 1}/{trainer.max_epochs}")

        def get_metrics(self, trainer, module):
            metrics = super().get_metrics(trainer, module)
            metrics.pop("v_num", None)  # the logger's run id, not progress
            return metrics

    return StderrTQDMProgressBar(refresh_rate=5)

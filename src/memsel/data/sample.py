"""What every dataset yields: :class:`Sample`, one question with the memories it may draw on; and the
dataset registry ``data.dataset`` chooses from.

A dataset registers a factory and its config dataclass in :data:`DATASETS`
(``@DATASETS.register("name", NameConfig)``); the factory takes its validated config, the run's
seed and the run's data folder and returns :class:`DatasetSplits`. memsel.data.prepare holds out
validation stories, builds the vocabulary and encodes, whatever the dataset.
"""

from __future__ import annotations

from dataclasses import dataclass

from memsel.registry import Registry


@dataclass(frozen=True)
class Sample:
    """One question with the memories it may draw on."""

    memories: tuple[str, ...]
    """The story's statements before the question, oldest first."""
    query: str
    answer: str
    supporting: tuple[int, ...]
    """Indices into ``memories`` of the supporting facts, in the order the source lists them (bAbI's
    reasoning order, which multi-hop pretraining follows)."""
    story: int
    """0-based index of the story within its source."""
    source: str
    """Where the question comes from (``file:line``), for error messages and inspection."""


@dataclass
class DatasetSplits:
    """A dataset's train and test questions and what identifies its source."""

    train: list[Sample]
    test: list[Sample]
    sources: dict[str, str]
    """What the run directory records to refuse other data later (e.g. files and their sha1)."""

    def describe(self) -> tuple[str, str]:
        """Names of the train and test sources, for logs."""
        return self.sources.get("train_file", "train"), self.sources.get("test_file", "test")


DATASETS = Registry("dataset")
"""data.dataset -> factory(config, seed, folder) returning :class:`DatasetSplits`, and its config class."""

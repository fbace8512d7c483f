"""Where a run's files live: one ``RunLayout`` names every path under a run directory.

    <run_dir>/
      config.yaml                 the full config of the last command run here
      mlflow.db                   the embedded MLflow store (unless tracking_uri names another)
      data/                       encoded splits, vocab.json, spec.json, sources.json
      pretrain/selector.pt        the pretrained selector; pretrain/reader.pt the answer reader
      pretrain/checkpoints/       Lightning's checkpoints
      <stage>/selector.pt         a PPO stage's network (ppo, ppo_scratch, ppo_no_distill, tune)
      <stage>/outcome.json        its summary; ray_results/<stage> holds the RLlib / Tune checkpoints
      results.json, results.txt, results.png, timings.json   the evaluation
      mlartifacts/                MLflow artifacts of this directory's runs (a local store's artifact root)
      .memsel.lock                while a command runs: its PID and MLflow runs (memsel.lifecycle)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunLayout:
    """The paths of one run directory (nothing is created by naming a path)."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def mlflow_db(self) -> Path:
        return self.root / "mlflow.db"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def vocab(self) -> Path:
        return self.data / "vocab.json"

    @property
    def spec(self) -> Path:
        return self.data / "spec.json"

    @property
    def sources(self) -> Path:
        return self.data / "sources.json"

    @property
    def pretrain(self) -> Path:
        return self.root / "pretrain"

    @property
    def pretrained_selector(self) -> Path:
        return self.pretrain / "selector.pt"

    @property
    def reader(self) -> Path:
        return self.pretrain / "reader.pt"

    @property
    def pretrain_checkpoints(self) -> Path:
        return self.pretrain / "checkpoints"

    @property
    def ray_results(self) -> Path:
        return self.root / "ray_results"

    def stage(self, name: str) -> Path:
        """A PPO stage's folder: ``ppo``, ``ppo_scratch``, ``ppo_no_distill`` or ``tune``."""
        return self.root / name

    def selector(self, stage: str) -> Path:
        """The network a stage exports (``pretrain`` included)."""
        return self.root / stage / "selector.pt"

    def outcome(self, stage: str) -> Path:
        return self.root / stage / "outcome.json"

    @property
    def results_json(self) -> Path:
        return self.root / "results.json"

    @property
    def results_txt(self) -> Path:
        return self.root / "results.txt"

    @property
    def results_png(self) -> Path:
        return self.root / "results.png"

    @property
    def timings(self) -> Path:
        return self.root / "timings.json"

    @property
    def artifacts(self) -> Path:
        return self.root / "mlartifacts"

    @property
    def lock(self) -> Path:
        return self.root / ".memsel.lock"

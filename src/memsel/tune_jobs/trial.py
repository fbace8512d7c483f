"""One Tune trial of ``memsel train`` or ``memsel tune``: an RLlib PPO algorithm inside a Tune Trainable.

A trial never reads the driver's run directory by path. Everything it needs (the run's config, the
encoded train and validation splits, the vocabulary, the pretrained selector and answer reader)
reaches it as one :class:`TrialPayload` through Ray's object store (``tune.with_parameters``); the
trial unpacks it into a scratch run directory on whatever node it runs, and writes its checkpoints
to ``tune.storage_path`` through Tune. With ``tune.trial: pipeline`` it also pretrains (Lightning)
in that scratch directory, with its own sampled pretrain and selector settings.

Every ``tune.eval_every`` iterations (and at the first and last) the trial scores its greedy policy
on the validation split and reports ``val/selection_accuracy`` (and ``val/answer_accuracy`` with a
learned reader): what trials are ranked, stopped and exploited on. A checkpoint holds the RLlib
algorithm (module weights, optimiser, KL coefficient, the learner's distillation state), the
trial's bare selector with its vocabulary, and the last validation scores.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune.result import AUTO_RESULT_KEYS, DONE, SHOULD_CHECKPOINT, TRIAL_ID

log = logging.getLogger(__name__)

SELECTOR_FILE = "selector.pt"
"""The trial's bare selector (with vocabulary) inside each of its checkpoints."""
STATE_FILE = "memsel_trial.json"
"""The trial's own state inside each checkpoint: trial id, iteration, last validation scores."""
_RESERVED = (*AUTO_RESULT_KEYS, DONE, TRIAL_ID, SHOULD_CHECKPOINT, "experiment_id")
"""Keys of the inner algorithm's result that Tune fills in for the trial itself (left out of the trial's result)."""


@dataclass
class TrialPayload:
    """What every trial of a run gets through the object store (never a path on the driver)."""

    config: dict
    """The run's Config.to_dict(); a trial applies its sampled values on top."""
    files: dict[str, bytes]
    """Run-directory-relative path -> content: data/{train,val}.npz, data/vocab.json, data/spec.json,
    and (when the run has them) pretrain/selector.pt, pretrain/reader.pt."""
    iterations: int
    """Iterations each trial runs at most (its last one is always validated)."""
    searched: list[str] = field(default_factory=list)
    """The dotted fields the trial config holds sampled values for."""


def build_payload(cfg: Any, data_files: dict[str, str], iterations: int, searched: list[str]) -> TrialPayload:
    """Read what the trials need from the driver's run directory into one payload."""
    layout = cfg.layout
    paths = {"data/train.npz": Path(data_files["train_npz"]), "data/val.npz": Path(data_files["val_npz"]),
             "data/vocab.json": layout.vocab, "data/spec.json": layout.spec,
             "pretrain/selector.pt": layout.pretrained_selector, "pretrain/reader.pt": layout.reader}
    files = {rel: path.read_bytes() for rel, path in paths.items() if path.is_file()}
    return TrialPayload(cfg.to_dict(), files, iterations, list(searched))


class MemselTrial(tune.Trainable):
    """A PPO trial: ``config`` holds the sampled values of the searched fields (``{"ppo.lr": ...}``);
    ``payload`` (:class:`TrialPayload`) comes through ``tune.with_parameters``."""

    def setup(self, config: dict, payload: TrialPayload | None = None) -> None:
        from memsel.config import from_dict, with_overrides

        if payload is None:
            raise ValueError("MemselTrial needs its payload: tune.with_parameters(MemselTrial, payload=...)")
        self.payload = payload
        self.workdir = Path(tempfile.mkdtemp(prefix="memsel-trial-"))
        for rel, blob in payload.files.items():
            (self.workdir / rel).parent.mkdir(parents=True, exist_ok=True)
            (self.workdir / rel).write_bytes(blob)
        base = dataclasses.replace(from_dict(payload.config), run_dir=str(self.workdir), tracking_uri="")
        self.cfg = with_overrides(base, {k: config[k] for k in payload.searched if k in config})
        self.val: dict[str, float] = {}
        self.algo = self._build_algorithm()

    def _build_algorithm(self) -> Any:
        from memsel.data.encode import EncodedSamples
        from memsel.data.prepare import load_spec
        from memsel.pipeline import budgeted
        from memsel.rl import build_ppo_config
        from memsel.tune_jobs.ppo import pretrained_return

        cfg, layout = self.cfg, self.cfg.layout
        spec = load_spec(layout.spec)
        if cfg.tune.trial == "pipeline":
            self._pretrain(spec)
        pretrained = layout.pretrained_selector if (cfg.ppo.use_pretrained and layout.pretrained_selector.is_file()) \
            else None
        if cfg.ppo.use_pretrained and pretrained is None:
            raise FileNotFoundError("the trial's payload holds no pretrained selector (ppo.use_pretrained is on)")
        train = EncodedSamples.load(layout.data / "train.npz")
        teacher = pretrained_return(cfg, pretrained, budgeted(cfg, train, "train")) if pretrained else None
        return build_ppo_config(cfg, str(layout.data / "train.npz"), spec, pretrained, teacher).build_algo()

    def _pretrain(self, spec: Any) -> None:
        """``tune.trial: pipeline``: Lightning pretraining inside the trial, with its sampled settings."""
        from memsel.data.encode import EncodedSamples
        from memsel.pipeline import budgeted
        from memsel.pretrain import pretrain

        cfg, data = self.cfg, self.cfg.layout.data
        train, val = EncodedSamples.load(data / "train.npz"), EncodedSamples.load(data / "val.npz")
        pretrain(cfg, budgeted(cfg, train, "train"), budgeted(cfg, val, "val"), spec, logger=None)

    def step(self) -> dict:
        import ray

        result = {k: v for k, v in self.algo.train().items() if k not in _RESERVED}
        done = self.iteration + 1
        if not self.val or done == 1 or done % self.cfg.tune.eval_every == 0 or done >= self.payload.iterations:
            self.val = {**self.validate(), "iteration": float(done)}
        result["val"] = dict(self.val)
        result["node_id"] = ray.get_runtime_context().get_node_id()
        return result

    @functools.cached_property
    def _validation(self) -> tuple[Any, Any]:
        """The validation split through the env's memory budget, and the learned reader (or None): read once."""
        from memsel.data.encode import EncodedSamples
        from memsel.pipeline import budgeted

        cfg = self.cfg
        reader = None
        if cfg.env.reward_mode == "answer" and cfg.env.reader == "learned":
            from memsel.reader import AnswerReader

            reader = AnswerReader.load(cfg.layout.reader)
        return budgeted(cfg, EncodedSamples.load(cfg.layout.data / "val.npz"), "val"), reader

    def validate(self) -> dict[str, float]:
        """The greedy policy's scores on the validation split (through the env's memory budget)."""
        from memsel.evaluate import selector_scores

        val, reader = self._validation
        scores = selector_scores(self.algo.get_module().selector, val, self.cfg.env.hops, reader, device=self.cfg.device)
        keys = ("selection_accuracy", "answer_accuracy")
        return {k: float(scores[k]) for k in keys if isinstance(scores.get(k), (int, float))}

    @functools.cached_property
    def _vocab(self) -> list[str] | None:
        from memsel.inference import vocabulary_of_run

        return vocabulary_of_run(self.cfg.run_path)

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        self.algo.save_to_path(checkpoint_dir)
        selector = self.algo.get_module().selector
        selector.vocab = self._vocab
        selector.save(Path(checkpoint_dir) / SELECTOR_FILE)
        state = {"trial_id": self.trial_id, "iteration": self.iteration, "val": self.val}
        (Path(checkpoint_dir) / STATE_FILE).write_text(json.dumps(state), encoding="utf-8")

    def load_checkpoint(self, checkpoint: str | dict) -> None:
        path = Path(checkpoint if isinstance(checkpoint, str) else checkpoint["path"])
        self.algo.restore_from_path(str(path))
        state_file = path / STATE_FILE
        if state_file.is_file():
            self.val = dict(json.loads(state_file.read_text(encoding="utf-8")).get("val") or {})

    def cleanup(self) -> None:
        try:
            self.algo.stop()
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)


def trial_resources(cfg: Any) -> Any:
    """The trial's placement group: its own process (``tune.cpus_per_trial`` CPUs, the learner's GPU) and one
    CPU per env runner, packed on one node (the runners read the trial's scratch data)."""
    from ray.tune import PlacementGroupFactory

    from memsel.devices import gpus_per_learner

    head = {"CPU": cfg.tune.cpus_per_trial}
    gpus = gpus_per_learner(cfg.device)
    if gpus:
        head["GPU"] = gpus
    return PlacementGroupFactory([head] + [{"CPU": 1}] * cfg.ppo.num_env_runners, strategy="STRICT_PACK")


def trainable(cfg: Any, payload: TrialPayload) -> Any:
    """MemselTrial with its payload in the object store and its resources declared, ready for a Tuner."""
    return tune.with_resources(tune.with_parameters(MemselTrial, payload=payload), trial_resources(cfg))

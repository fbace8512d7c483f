"""Supervised pretraining of the selector (and the answer reader) with PyTorch Lightning.

A question is answered in hops (``env.hops``; 0 = as many as its supporting facts), as in the
environment: at hop h the network sees the memories chosen before in ``selected``. The selection
target at each hop (``pretrain.target``) is a soft distribution over memories:

- ``recency``: the temporal prior exp(-lambda * age) over the memories not yet chosen (the seed's
  recency bias; no labels); the next hop continues from the prior's pick.
- ``supporting``: the hop's supporting fact, in the order the data lists them (bAbI lists them in
  reasoning order); the next hop continues from the true fact (teacher forcing).
- ``mixed``: the supporting fact with ``recency_weight`` of the prior (the prior alone where the
  fact is outside the memory budget).

With ``answer_weight > 0`` an answer reader (memsel.reader) is trained on the answers. With labels
it reads the true facts; with target ``recency`` it reads the selector's soft choices (softmax
weights, also passed on as soft ``selected``), so the answer loss trains the selector too: weak
supervision, End-To-End Memory Networks style, with the prior as a light regulariser.

The losses are plain functions of tensors in memsel.losses; this module runs them under Lightning
(on ``cfg.device``), logs them and picks the checkpoint.

The bare network is exported to ``<run_dir>/pretrain/selector.pt`` (with the run's vocabulary),
the file PPO starts from, and the reader to ``<run_dir>/pretrain/reader.pt``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from memsel import progress
from memsel.config import Config, PretrainConfig, SelectorConfig
from memsel.data.encode import DataSpec, EncodedSamples, question_hops
from memsel.devices import trainer_kwargs
from memsel.evaluate import exact_match, greedy_rollout
from memsel.inference import vocabulary_of_run
from memsel.losses import pretraining_loss
from memsel.network import Selector

log = logging.getLogger(__name__)

class SampleDataset(Dataset):
    """EncodedSamples as a map-style dataset of dicts (the default collate stacks them)."""

    def __init__(self, data: EncodedSamples):
        self.t = {k: torch.from_numpy(v) for k, v in data.tensors().items()}
        self.t["support"] = torch.from_numpy(data.support)
        self.t["support_rank"] = torch.from_numpy(data.support_rank.astype(np.int64))
        self.t["n_support"] = torch.from_numpy(data.n_support.astype(np.int64))
        self.t["answer"] = torch.from_numpy(data.answer.astype(np.int64))

    def __len__(self) -> int:
        return int(self.t["mask"].shape[0])

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[i] for k, v in self.t.items()}


SLOT_KEYS = ("memories", "mask", "ages", "support", "support_rank")
"""The per-slot fields of a batch, padded to the longest list of the batch by :func:`collate_trimmed`."""


def collate_trimmed(rows: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack ``rows`` and cut the slot dimension to the batch's longest list (memories come first in their
    slots, padding after), not the data set's: padding never changes a result, so this only saves work."""
    batch = default_collate(rows)
    used = batch["mask"].any(0).nonzero()  # (n, 1) slots some row of the batch uses
    n = int(used.max()) + 1 if len(used) else 1
    return {k: (v[:, :n] if k in SLOT_KEYS else v) for k, v in batch.items()}


class SelectorDataModule(L.LightningDataModule):
    """The train split, shuffled with ``seed``, and the validation split, as batches of :class:`SampleDataset`."""

    def __init__(self, train: EncodedSamples, val: EncodedSamples, batch_size: int = 32, seed: int = 0):
        super().__init__()
        self.train, self.val = train, val
        self.batch_size, self.seed = batch_size, seed

    def train_dataloader(self) -> DataLoader:
        g = torch.Generator().manual_seed(self.seed)
        return DataLoader(SampleDataset(self.train), batch_size=self.batch_size, shuffle=True, generator=g,
                          collate_fn=collate_trimmed)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(SampleDataset(self.val), batch_size=256, collate_fn=collate_trimmed)


def content_words(data: EncodedSamples, max_share: float = 0.4) -> list[int]:
    """Token ids that occur in at most ``max_share`` of the train memories (not 'the', 'to', verbs of
    motion...): the words a question and a memory can meaningfully share."""
    present = data.mask.sum()
    if present == 0:
        return []
    ids = np.sort(data.memories[data.mask], axis=1)  # (M, L): each memory's tokens, sorted
    first = np.ones_like(ids, dtype=bool)
    first[:, 1:] = ids[:, 1:] != ids[:, :-1]  # a token's first occurrence in its memory
    counts = np.bincount(ids[first & (ids > 0)], minlength=int(data.query.max(initial=0)) + 1)
    return [int(t) for t in np.nonzero((counts > 0) & (counts <= max_share * present))[0]]


class SelectorLightningModule(L.LightningModule):
    """Owns loss, metrics and optimiser; the networks themselves are the plain ``self.selector`` and
    ``self.reader`` (None unless ``answer_weight > 0``)."""

    def __init__(self, selector_config: dict, spec: dict, pretrain_config: dict, hops: int = 1,
                 reader_hops: int = 1, answer_ids: list[int] | None = None, content_ids: list[int] | None = None):
        super().__init__()
        self.save_hyperparameters()
        self.cfg = PretrainConfig(**pretrain_config)
        self.selector = Selector(SelectorConfig(**selector_config), DataSpec(**spec))
        self.hops = hops
        self.reader = None
        if self.cfg.answer_weight > 0:
            from memsel.reader import AnswerReader

            self.reader = AnswerReader(DataSpec(**spec), self.selector.config.embed_dim, max(reader_hops, 1),
                                       answer_ids or [])
        # weak supervision: no labels, the answer loss trains the selector through its soft choices
        self.weak = self.cfg.target == "recency" and self.reader is not None
        content = torch.zeros(DataSpec(**spec).vocab_size, dtype=torch.bool)
        if content_ids:
            content[torch.as_tensor(content_ids, dtype=torch.long)] = True
        self.register_buffer("content", content, persistent=False)

    def losses(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss of ``batch`` and its detached parts (memsel.losses.pretraining_loss)."""
        hops = question_hops(self.hops, batch["n_support"])  # (B,)
        return pretraining_loss(self.selector, self.reader, batch, hops, self.content, self.cfg, self.weak)

    metric_prefix = ""
    """Put before every logged metric name (``restart1/`` etc. for pretrain.restarts > 1)."""

    def _step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        """Train and validation alike: the loss and its parts; validation adds the greedy choices' accuracy."""
        loss, parts = self.losses(batch)
        metrics = {"loss": loss, **parts}
        if stage != "train":
            metrics.update(self._greedy_metrics(batch))
        for k, v in metrics.items():
            self.log(f"{self.metric_prefix}{stage}/{k}", v, prog_bar=k in ("loss", "selection_accuracy", "answer_accuracy"),
                     batch_size=batch["mask"].shape[0], on_epoch=True, on_step=False)
        return loss

    @torch.no_grad()
    def _greedy_metrics(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Exact-match selection accuracy of the greedy hops, as the environment scores them, and with
        a reader the accuracy of its answer from those hard choices."""
        hops = question_hops(self.hops, batch["n_support"])  # (B,)
        obs = {k: batch[k] for k in ("memories", "mask", "query", "ages")}
        chosen = greedy_rollout(self.selector, obs, hops)  # (B, H)
        metrics = {"selection_accuracy": exact_match(chosen, batch["support"], batch["n_support"], hops).float().mean()}
        if self.reader is not None:
            said = self.reader.answer(batch["memories"], batch["query"], chosen)
            metrics["answer_accuracy"] = (said == batch["answer"]).float().mean()
            self.reader.train(self.training)  # answer() switches to eval mode; put back what Lightning set
        self.selector.train(self.training)
        return metrics

    def training_step(self, batch, batch_idx):
        # The epoch's weighted means are logged once, at its last batch: each self.log call costs Lightning
        # about a millisecond of bookkeeping (ResultCollection moves the metric's state every call), which
        # was a third of a training step of the quickstart's network (memsel bench pretrain).
        loss, parts = self.losses(batch)
        n = batch["mask"].shape[0]
        for k, v in {"loss": loss, **parts}.items():
            self._train_sums[k] = self._train_sums.get(k, 0.0) + v.detach() * n
        self._train_count += n
        if batch_idx + 1 >= self.trainer.num_training_batches:
            for k, v in self._train_sums.items():
                self.log(f"{self.metric_prefix}train/{k}", v / self._train_count, batch_size=1, on_epoch=True,
                         on_step=False, prog_bar=k == "loss")
            self.on_train_epoch_start()
        return loss

    def on_train_epoch_start(self) -> None:
        self._train_sums: dict[str, torch.Tensor] = {}
        self._train_count = 0

    def validation_step(self, batch, batch_idx):
        return self._step(batch, "val")

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)


def strip_prefix(state_dict: dict[str, torch.Tensor], prefix: str = "selector.") -> dict[str, torch.Tensor]:
    """Lightning checkpoint keys carry the attribute name (``selector.``); the bare network's do not."""
    return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}


def selector_from_lightning_checkpoint(path: str | Path) -> Selector:
    """Rebuild the bare network from a Lightning checkpoint of :class:`SelectorLightningModule`."""
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    hp = ckpt["hyper_parameters"]
    net = Selector(SelectorConfig(**hp["selector_config"]), DataSpec(**hp["spec"]))
    net.load_state_dict(strip_prefix(ckpt["state_dict"]))
    return net


class EpochLog(L.Callback):
    """One log line per epoch, for logs and terminals where a progress bar would flood the output."""

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        m = {k: float(v) for k, v in trainer.callback_metrics.items()}
        log.info("pretrain epoch %d/%d  %s", trainer.current_epoch + 1, trainer.max_epochs,
                 "  ".join(f"{k} {v:.4f}" for k, v in sorted(m.items())))


def _monitor(module: SelectorLightningModule, has_val: bool) -> tuple[str, str]:
    """What picks the checkpoint, from what the run may know: answers only (weak supervision), labels, or the loss.

    With labels it is the validation loss, not the validation selection accuracy: a 10% split of
    bAbI's 1k questions is 100 questions, on which accuracy reaches 100% early and stops telling
    checkpoints apart (on qa2, picking by loss gave 3.0% test error where picking by accuracy gave 4.2%).
    """
    if not has_val:
        return "train/loss", "min"
    if module.weak:
        return "val/answer_accuracy", "max"
    return "val/loss", "min"


def restart_seed(cfg: Config, restart: int) -> int:
    """The seed of pretraining run ``restart`` (0 = ``cfg.seed``): 1000 apart, so that the restarts of
    seeds 0, 1, 2 never share an initialisation."""
    return cfg.seed + 1000 * restart


def _fit(cfg: Config, train: EncodedSamples, val: EncodedSamples, spec: DataSpec, restart: int,
         logger: L.pytorch.loggers.Logger | None) -> tuple[SelectorLightningModule, L.pytorch.callbacks.ModelCheckpoint]:
    """One training run from seed :func:`restart_seed`; its metrics carry a ``restart<r>/`` prefix for r > 0."""
    p = cfg.pretrain
    seed = restart_seed(cfg, restart)
    L.seed_everything(seed, workers=True, verbose=False)
    reader_hops = cfg.env.hops or int(max(train.n_support.max(initial=1), 1))
    module = SelectorLightningModule(asdict(cfg.selector), asdict(spec), asdict(p), hops=cfg.env.hops,
                                     reader_hops=reader_hops, answer_ids=sorted(set(train.answer.tolist())),
                                     content_ids=content_words(train))
    module.metric_prefix = f"restart{restart}/" if restart else ""
    has_val = len(val) > 0
    monitor, mode = _monitor(module, has_val)
    folder = cfg.layout.pretrain_checkpoints
    checkpoint = L.pytorch.callbacks.ModelCheckpoint(
        dirpath=folder / f"restart{restart}" if restart else folder, filename="best-{epoch}",
        monitor=module.metric_prefix + monitor, mode=mode, save_top_k=1, save_last=True)
    bar = progress.lightning_bar()  # Lightning's own bar (to stderr), or none: --quiet, or no terminal
    callbacks = [checkpoint, EpochLog(), *([bar] if bar else [])]
    if p.ema_decay > 0:  # validation, checkpoints and so the export see the averaged weights
        callbacks.append(L.pytorch.callbacks.EMAWeightAveraging(decay=p.ema_decay))
    trainer = L.Trainer(
        max_epochs=p.max_epochs, **trainer_kwargs(cfg.device), logger=logger or False,
        callbacks=callbacks, deterministic=True, enable_model_summary=False,
        enable_progress_bar=bar is not None,
        log_every_n_steps=10, default_root_dir=str(cfg.layout.pretrain), num_sanity_val_steps=0)
    dm = SelectorDataModule(train, val, batch_size=p.batch_size, seed=seed)
    trainer.fit(module, datamodule=dm if has_val else None,
                train_dataloaders=None if has_val else dm.train_dataloader())
    return module, checkpoint


def _best_restart(cfg: Config, train: EncodedSamples, val: EncodedSamples, spec: DataSpec,
                  logger: L.pytorch.loggers.Logger | None) -> tuple[SelectorLightningModule, L.pytorch.callbacks.ModelCheckpoint, float]:
    """Run the ``pretrain.restarts`` trainings; the module, checkpoint callback and best score of the
    run whose best validation score is best (a tie keeps the earlier run)."""
    restarts = cfg.pretrain.restarts
    best_run, chosen, best_key = None, 0, math.inf
    for restart in range(restarts):
        module, checkpoint = _fit(cfg, train, val, spec, restart, logger)
        score = float(checkpoint.best_model_score) if checkpoint.best_model_score is not None else math.nan
        key = math.inf if math.isnan(score) else score if checkpoint.mode == "min" else -score  # lower is better
        if restarts > 1:
            log.info("pretrain: restart %d/%d (seed %d): best %s = %.4f", restart + 1, restarts,
                     restart_seed(cfg, restart), checkpoint.monitor, score)
        if best_run is None or key < best_key:
            best_run, chosen, best_key = (module, checkpoint, score), restart, key
    if restarts > 1:
        log.info("pretrain: keeping restart %d (seed %d)", chosen + 1, restart_seed(cfg, chosen))
        if logger is not None:
            logger.log_metrics({"pretrain/chosen_restart": chosen})
    return best_run


def _export_reader(module: SelectorLightningModule, best: str, reader_file: Path) -> None:
    """Write the reader of checkpoint ``best`` to ``reader_file``, or remove a stale one when there is no reader."""
    if module.reader is not None:
        reader = module.reader
        reader.load_state_dict(strip_prefix(torch.load(best, map_location="cpu", weights_only=False)["state_dict"],
                                            "reader."))
        reader.save(reader_file)
        log.info("pretrain: answer reader exported to %s", reader_file)
    elif reader_file.exists():  # a reader from an earlier run with other settings would not match this selector
        reader_file.unlink()


def pretrain(cfg: Config, train: EncodedSamples, val: EncodedSamples, spec: DataSpec,
             logger: L.pytorch.loggers.Logger | None = None) -> Path:
    """Train (``pretrain.restarts`` times), keep the best validation checkpoint, export its bare network;
    returns the export path."""
    module, checkpoint, score = _best_restart(cfg, train, val, spec, logger)
    best = checkpoint.best_model_path or checkpoint.last_model_path
    net = selector_from_lightning_checkpoint(best)
    net.vocab = vocabulary_of_run(cfg.run_path)  # lets `memsel select` read raw text with this file
    path = net.save(cfg.layout.pretrain / "selector.pt")
    _export_reader(module, best, cfg.layout.pretrain / "reader.pt")
    log.info("pretrain: best checkpoint %s (%s = %.4f) exported to %s", best, checkpoint.monitor, score, path)
    return path

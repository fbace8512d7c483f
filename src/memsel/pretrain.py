"""Supervised pretraining of the selector with PyTorch Lightning.

The target is a soft distribution over memories: the temporal prior exp(-lambda * age) (the
seed's recency bias) mixed with the supporting facts where labels exist. The bare network's
state dict is exported to ``<run_dir>/pretrain/selector.pt`` (with the run's vocabulary), the
file PPO starts from.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import asdict
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from memsel.config import Config, PretrainConfig, SelectorConfig
from memsel.data.encode import DataSpec, EncodedSamples
from memsel.inference import vocabulary_of_run
from memsel.network import Selector, recency_prior

log = logging.getLogger(__name__)


class SampleDataset(Dataset):
    """EncodedSamples as a map-style dataset of dicts (the default collate stacks them)."""

    def __init__(self, data: EncodedSamples):
        self.t = {k: torch.from_numpy(v) for k, v in data.tensors().items()}
        self.t["support"] = torch.from_numpy(data.support)

    def __len__(self) -> int:
        return int(self.t["mask"].shape[0])

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[i] for k, v in self.t.items()}


class SelectorDataModule(L.LightningDataModule):
    def __init__(self, train: EncodedSamples, val: EncodedSamples, test: EncodedSamples | None = None,
                 batch_size: int = 32, seed: int = 0):
        super().__init__()
        self.train, self.val, self.test = train, val, test
        self.batch_size, self.seed = batch_size, seed

    def train_dataloader(self) -> DataLoader:
        g = torch.Generator().manual_seed(self.seed)
        return DataLoader(SampleDataset(self.train), batch_size=self.batch_size, shuffle=True, generator=g)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(SampleDataset(self.val), batch_size=256)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(SampleDataset(self.test or self.val), batch_size=256)


def selection_target(batch: dict[str, torch.Tensor], cfg: PretrainConfig) -> torch.Tensor:
    """(B, N) soft target: temporal prior, mixed with the supporting facts when labels are used."""
    prior = recency_prior(batch["ages"], batch["mask"], cfg.recency_decay)
    if not cfg.use_labels:
        return prior
    support = batch["support"].to(prior.dtype)
    has_label = support.sum(-1, keepdim=True) > 0  # rows whose facts all fell out of the slots have none
    labels = support / support.sum(-1, keepdim=True).clamp(min=1.0)
    mixed = (1 - cfg.recency_weight) * labels + cfg.recency_weight * prior
    return torch.where(has_label, mixed, prior)


def selection_accuracy(logits: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    """Fraction of rows whose top-scoring memory is a supporting fact."""
    choice = logits.argmax(-1)
    return support.gather(-1, choice.unsqueeze(-1)).squeeze(-1).float().mean()


class SelectorLightningModule(L.LightningModule):
    """Owns loss, metrics and optimiser; the network itself is the plain ``self.selector``."""

    def __init__(self, selector_config: dict, spec: dict, pretrain_config: dict):
        super().__init__()
        self.save_hyperparameters()
        self.cfg = PretrainConfig(**pretrain_config)
        self.selector = Selector(SelectorConfig(**selector_config), DataSpec(**spec))

    def _step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        logits = self.selector(batch)
        target = selection_target(batch, self.cfg)
        loss = -(target * F.log_softmax(logits, dim=-1)).sum(-1).mean()
        acc = selection_accuracy(logits, batch["support"])
        bs = logits.shape[0]
        self.log(f"{stage}/loss", loss, prog_bar=True, batch_size=bs, on_epoch=True, on_step=False)
        self.log(f"{stage}/selection_accuracy", acc, prog_bar=True, batch_size=bs, on_epoch=True, on_step=False)
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")

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


def pretrain(cfg: Config, train: EncodedSamples, val: EncodedSamples, spec: DataSpec,
             logger: L.pytorch.loggers.Logger | None = None) -> Path:
    """Train, keep the best validation checkpoint, export its bare network; returns the export path."""
    out = cfg.run_path / "pretrain"
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    module = SelectorLightningModule(asdict(cfg.selector), asdict(spec), asdict(cfg.pretrain))
    has_val = len(val) > 0
    checkpoint = L.pytorch.callbacks.ModelCheckpoint(
        dirpath=out / "checkpoints", filename="best-{epoch}",
        monitor="val/selection_accuracy" if has_val else "train/loss", mode="max" if has_val else "min",
        save_top_k=1, save_last=True)
    trainer = L.Trainer(
        max_epochs=cfg.pretrain.max_epochs, accelerator="cpu", devices=1, logger=logger or False,
        callbacks=[checkpoint, EpochLog()], deterministic=True, enable_model_summary=False,
        enable_progress_bar=sys.stderr.isatty(),
        log_every_n_steps=10, default_root_dir=str(out), num_sanity_val_steps=0)
    dm = SelectorDataModule(train, val, batch_size=cfg.pretrain.batch_size, seed=cfg.seed)
    trainer.fit(module, datamodule=dm if has_val else None,
                train_dataloaders=None if has_val else dm.train_dataloader())
    best = checkpoint.best_model_path or checkpoint.last_model_path
    net = selector_from_lightning_checkpoint(best)
    net.vocab = vocabulary_of_run(cfg.run_path)  # lets `memsel select` read raw text with this file
    path = net.save(out / "selector.pt")
    log.info("pretrain: best checkpoint %s (%s = %.4f) exported to %s", best, checkpoint.monitor,
             float(checkpoint.best_model_score or float("nan")), path)
    return path

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

The bare network is exported to ``<run_dir>/pretrain/selector.pt`` (with the run's vocabulary),
the file PPO starts from, and the reader to ``<run_dir>/pretrain/reader.pt``.
"""

from __future__ import annotations

import logging
import math
import sys
from dataclasses import asdict
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from memsel.config import Config, PretrainConfig, SelectorConfig
from memsel.evaluate import exact_match, greedy_rollout
from memsel.data.encode import DataSpec, EncodedSamples
from memsel.inference import vocabulary_of_run
from memsel.network import Selector, recency_prior

log = logging.getLogger(__name__)

COVER_WORDS = 3
"""The bridge hint asks a chain to hold at most this many of the question's content words (2 in bAbI)."""


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


def hop_target(kind: str, label: torch.Tensor, prior: torch.Tensor, recency_weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, N) target and (B,) row weight at one hop: ``label`` (B, N) the hop's supporting fact
    (all False where it is outside the slots or there is none), ``prior`` (B, N) the temporal prior."""
    has = label.any(-1)
    if kind == "recency":
        return prior, torch.ones_like(has, dtype=prior.dtype)
    labels = label.to(prior.dtype)
    if kind == "supporting":
        return labels, has.to(prior.dtype)
    mixed = (1 - recency_weight) * labels + recency_weight * prior
    return torch.where(has.unsqueeze(-1), mixed, prior), torch.ones_like(has, dtype=prior.dtype)


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

    def _query_words_held(self, batch: dict[str, torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        """(B, N, L) True where real memory n holds the question's word l and that word is a content word."""
        q = batch["query"]
        words = self.content[q] & (q > 0)  # (B, L) the query's content words
        held = (batch["memories"].unsqueeze(-1) == q[:, None, None, :]).any(2)  # (B, N, L)
        return held & words.unsqueeze(1) & mask.unsqueeze(-1)

    def _shares_query_word(self, batch: dict[str, torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        """(B, N) memories that share a content word with the question."""
        return self._query_words_held(batch, mask).any(-1)

    @staticmethod
    def _holds_answer(batch: dict[str, torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        """(B, N) real memories that hold the answer word."""
        return (batch["memories"] == batch["answer"][:, None, None]).any(-1) & mask

    def _shared_words(self, memories: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, N, N) True where two different real memories share a content word."""
        words = self.content[memories] & (memories > 0)  # (B, N, L)
        same = memories[:, :, None, :, None] == memories[:, None, :, None, :]  # (B, N, N, L, L)
        both = words[:, :, None, :, None] & words[:, None, :, None, :]
        pair = (same & both).flatten(-2).any(-1)  # (B, N, N)
        eye = torch.eye(mask.shape[1], dtype=torch.bool, device=mask.device)
        return pair & ~eye & mask[:, :, None] & mask[:, None, :]

    def _query_word_bits(self, batch: dict[str, torch.Tensor], mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Which of the question's content words each memory holds, as bits: (B, N) long, and (B,) the
        bits of all of them. Only words that some real memory of the row holds count (a word no memory
        holds can be covered by no chain), each once, the first :data:`COVER_WORDS` of them."""
        q = batch["query"]  # (B, L)
        earlier = torch.tril(torch.ones(q.shape[1], q.shape[1], dtype=torch.bool, device=q.device), -1)  # (L, L)
        repeat = ((q.unsqueeze(-1) == q.unsqueeze(1)) & earlier).any(-1)  # (B, L) the same word came before
        held = self._query_words_held(batch, mask)  # (B, N, L)
        counted = ~repeat & held.any(1)  # (B, L)
        rank = counted.long().cumsum(-1) - 1  # (B, L) the bit of each counted word
        counted = counted & (rank < COVER_WORDS)
        bit = torch.where(counted, 1 << rank.clamp(min=0), 0)  # (B, L)
        return (held.long() * bit.unsqueeze(1)).sum(-1), bit.sum(-1)  # each word once: bits, not a count

    def _bridge_hint(self, batch: dict[str, torch.Tensor], mask: torch.Tensor, logps: list[torch.Tensor],
                     hops: torch.Tensor) -> torch.Tensor | None:
        """-log P(the hops form a chain), the mean over multi-hop rows where a chain exists.

        P = sum over chains m_1 .. m_k of prod_h p_h(m_h), where m_1 holds a content word of the
        question, each m_h shares a content word with m_{h-1}, m_k holds the answer word, and the
        chain's memories hold every content word of the question that the story holds (a question
        word that no hop reads would be ignored). Computed in log space hop by hop over (memory, words
        covered so far) states: a (B, N, N, 2^w) log-sum-exp per hop, w <= COVER_WORDS.
        """
        holds = self._holds_answer(batch, mask)  # (B, N)
        link = self._shared_words(batch["memories"], mask)  # (B, N, N)
        bits, full = self._query_word_bits(batch, mask)  # (B, N), (B,)
        states = 1 << COVER_WORDS
        s = torch.arange(states, device=mask.device)
        # grow[b, j, s, t]: reading memory j in state s (words covered) leads to state t = s | bits(j)
        grow = (s[None, None, :] | bits.unsqueeze(-1)).unsqueeze(-1) == s  # (B, N, S, S)
        none = -1e9
        start = F.one_hot(bits, states).bool() & ((bits > 0) & mask).unsqueeze(-1)  # (B, N, S)
        log_v = torch.where(start, logps[0].unsqueeze(-1), none)  # (B, N, S) log P(chains so far, ending at m, in s)
        ends = torch.full_like(logps[0], none)
        goal = F.one_hot(full, states).bool().unsqueeze(1)  # (B, 1, S)
        for h in range(1, len(logps)):
            step = torch.logsumexp(log_v.unsqueeze(2) + torch.where(link, 0.0, none).unsqueeze(-1), dim=1)  # (B, N, S)
            log_v = torch.logsumexp(step.unsqueeze(-1) + torch.where(grow, 0.0, none), dim=2) + logps[h].unsqueeze(-1)
            last = (hops == h + 1).unsqueeze(-1)
            ends = torch.where(last, torch.logsumexp(log_v.masked_fill(~goal, none), dim=-1), ends)
        # No chain ends at m: ends stays near `none` (-1e9); any chain: a sum of real memories' log-probabilities,
        # which softmax over finite logits keeps far above none / 2.
        rows = (hops > 1) & ((ends > none / 2) & holds).any(-1)
        if not rows.any():
            return None
        return -torch.logsumexp(ends.masked_fill(~holds, none), dim=-1)[rows].mean()

    def _hop_counts(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.hops > 0:
            return torch.full_like(batch["n_support"], self.hops)
        return batch["n_support"].clamp(min=1)

    def _losses(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        obs = {k: batch[k] for k in ("memories", "mask", "query", "ages")}
        mask = batch["mask"] > 0
        hops = self._hop_counts(batch)
        b, n = mask.shape
        selected = torch.zeros(b, n)
        taken = torch.zeros(b, n, dtype=torch.bool)
        reads, sel_loss, sel_rows, hits, labelled = [], 0.0, 0.0, 0.0, 0.0
        last_logp = torch.zeros(b, n)  # each row's log-probabilities at its last hop
        query_hint, hinted = 0.0, 0.0
        shares = self._shares_query_word(batch, mask) if self.weak and self.cfg.query_hint > 0 else None
        logps = []
        for h in range(int(hops.max()) if b else 0):
            active = (hops > h).to(selected.dtype)
            logits = self.selector({**obs, "selected": selected})
            logp = F.log_softmax(logits, dim=-1)
            last_logp = torch.where((hops == h + 1).unsqueeze(-1), logp, last_logp)
            logps.append(logp)
            if shares is not None:  # the first hop and every hop before the last
                rows = shares.any(-1) & ((hops > h + 1) | (h == 0))
                if rows.any():
                    query_hint = query_hint - torch.logsumexp(logp.masked_fill(~shares, -1e9), dim=-1)[rows].sum()
                    hinted = hinted + float(rows.sum())
            prior = recency_prior(batch["ages"], mask & ~taken, self.cfg.recency_decay)
            label = (batch["support_rank"] == h + 1) & mask
            target, weight = hop_target(self.cfg.target, label, prior, self.cfg.recency_weight)
            weight = weight * active
            sel_loss = sel_loss + (-(target * logp).sum(-1) * weight).sum()
            sel_rows = sel_rows + weight.sum()
            has = (label.any(-1) & (hops > h)).to(selected.dtype)
            hits = hits + (label.gather(-1, logits.argmax(-1, keepdim=True)).squeeze(-1) * has).sum()
            labelled = labelled + has.sum()
            if self.weak:
                read = F.softmax(logits, dim=-1) * mask
            else:  # teacher forcing: the true fact where there is one, else the prior's pick
                pick = F.one_hot(prior.argmax(-1), n).bool() & mask
                read = torch.where(label.any(-1, keepdim=True), label, pick).to(selected.dtype)
                taken = taken | (read.bool() & (hops > h).unsqueeze(-1))
            read = read * active.unsqueeze(-1)
            reads.append(read)
            selected = selected + read
        loss = sel_loss / max(float(sel_rows), 1.0)
        parts = {"selection_loss": loss.detach(), "hop_accuracy": hits / max(float(labelled), 1.0)}
        if self.weak:
            loss = self.cfg.recency_weight * loss
            if self.cfg.answer_hint > 0:
                # The answer is read from the last memory chosen: the marginal likelihood that the
                # last hop picks one of the memories holding the answer word (answers only, no labels).
                holds = self._holds_answer(batch, mask)  # (B, N)
                rows = holds.any(-1)
                if rows.any():
                    hint = -torch.logsumexp(last_logp.masked_fill(~holds, -1e9), dim=-1)[rows].mean()
                    parts["answer_hint_loss"] = hint.detach()
                    loss = loss + self.cfg.answer_hint * hint
            if self.cfg.bridge_hint > 0 and len(logps) > 1:
                chain = self._bridge_hint(batch, mask, logps, hops)
                if chain is not None:
                    parts["bridge_hint_loss"] = chain.detach()
                    loss = loss + self.cfg.bridge_hint * chain
            if hinted > 0:
                # Hops before the last start from the question: the marginal likelihood that each picks
                # a memory sharing a content word (not among the most frequent words) with the query.
                parts["query_hint_loss"] = (query_hint / hinted).detach()
                loss = loss + self.cfg.query_hint * query_hint / hinted
        if self.reader is not None:
            answer_logits = self.reader(batch["memories"], batch["query"], torch.stack(reads, 1))
            answer_loss = F.cross_entropy(answer_logits, batch["answer"])
            parts["answer_loss"] = answer_loss.detach()
            loss = loss + self.cfg.answer_weight * answer_loss
        return loss, parts

    metric_prefix = ""
    """Put before every logged metric name (``restart1/`` etc. for pretrain.restarts > 1)."""

    def _log(self, stage: str, metrics: dict[str, torch.Tensor], bs: int) -> None:
        for k, v in metrics.items():
            self.log(f"{self.metric_prefix}{stage}/{k}", v, prog_bar=k in ("loss", "selection_accuracy", "answer_accuracy"),
                     batch_size=bs, on_epoch=True, on_step=False)

    def training_step(self, batch, batch_idx):
        loss, parts = self._losses(batch)
        self._log("train", {"loss": loss, **parts}, batch["mask"].shape[0])
        return loss

    @torch.no_grad()
    def _greedy(self, batch: dict[str, torch.Tensor], stage: str) -> None:
        loss, parts = self._losses(batch)
        hops = self._hop_counts(batch)
        obs = {k: batch[k] for k in ("memories", "mask", "query", "ages")}
        chosen = greedy_rollout(self.selector, obs, hops)
        metrics = {"loss": loss, **parts,
                   "selection_accuracy": exact_match(chosen, batch["support"], batch["n_support"], hops).float().mean()}
        if self.reader is not None:
            said = self.reader.answer(batch["memories"], batch["query"], chosen)
            metrics["answer_accuracy"] = (said == batch["answer"]).float().mean()
            self.reader.train(self.training)
        self.selector.train(self.training)
        self._log(stage, metrics, batch["mask"].shape[0])

    def validation_step(self, batch, batch_idx):
        self._greedy(batch, "val")

    def test_step(self, batch, batch_idx):
        self._greedy(batch, "test")

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
    callbacks = [checkpoint, EpochLog()]
    if p.ema_decay > 0:  # validation, checkpoints and so the export see the averaged weights
        callbacks.append(L.pytorch.callbacks.EMAWeightAveraging(decay=p.ema_decay))
    trainer = L.Trainer(
        max_epochs=p.max_epochs, accelerator="cpu", devices=1, logger=logger or False,
        callbacks=callbacks, deterministic=True, enable_model_summary=False,
        enable_progress_bar=sys.stderr.isatty(),
        log_every_n_steps=10, default_root_dir=str(cfg.layout.pretrain), num_sanity_val_steps=0)
    dm = SelectorDataModule(train, val, batch_size=p.batch_size, seed=seed)
    trainer.fit(module, datamodule=dm if has_val else None,
                train_dataloaders=None if has_val else dm.train_dataloader())
    return module, checkpoint


def pretrain(cfg: Config, train: EncodedSamples, val: EncodedSamples, spec: DataSpec,
             logger: L.pytorch.loggers.Logger | None = None) -> Path:
    """Train (``pretrain.restarts`` times), keep the best validation checkpoint, export its bare network;
    returns the export path."""
    out = cfg.layout.pretrain
    restarts = cfg.pretrain.restarts
    best_run, chosen, best_key = None, 0, math.inf
    for restart in range(restarts):
        module, checkpoint = _fit(cfg, train, val, spec, restart, logger)
        score = float(checkpoint.best_model_score) if checkpoint.best_model_score is not None else math.nan
        key = math.inf if math.isnan(score) else score if checkpoint.mode == "min" else -score  # lower is better
        if restarts > 1:
            log.info("pretrain: restart %d/%d (seed %d): best %s = %.4f", restart + 1, restarts,
                     restart_seed(cfg, restart), checkpoint.monitor, score)
        if best_run is None or key < best_key:  # a tie keeps the earlier run
            best_run, chosen, best_key = (module, checkpoint, score), restart, key
    module, checkpoint, score = best_run
    if restarts > 1:
        log.info("pretrain: keeping restart %d (seed %d)", chosen + 1, restart_seed(cfg, chosen))
        if logger is not None:
            logger.log_metrics({"pretrain/chosen_restart": chosen})
    best = checkpoint.best_model_path or checkpoint.last_model_path
    net = selector_from_lightning_checkpoint(best)
    net.vocab = vocabulary_of_run(cfg.run_path)  # lets `memsel select` read raw text with this file
    path = net.save(out / "selector.pt")
    reader_file = out / "reader.pt"
    if module.reader is not None:
        reader = module.reader
        reader.load_state_dict(strip_prefix(torch.load(best, map_location="cpu", weights_only=False)["state_dict"],
                                            "reader."))
        reader.save(reader_file)
        log.info("pretrain: answer reader exported to %s", reader_file)
    elif reader_file.exists():  # a reader from an earlier run with other settings would not match this selector
        reader_file.unlink()
    log.info("pretrain: best checkpoint %s (%s = %.4f) exported to %s", best, checkpoint.monitor, score, path)
    return path

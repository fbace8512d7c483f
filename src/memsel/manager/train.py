"""Training and evaluating the memory manager: Lightning on the oracle's decisions, then PPO in RLlib.

- Data (:func:`manager_data`): the run's splits (memsel.data.prepare: same vocabulary, same validation
  stories) as streams (memsel.manager.streams) with their token ids.
- Pretraining (:func:`pretrain_manager`, Lightning): cross-entropy to Belady's decisions on the train
  stories, mixed with ``manager.recency_weight`` of the eviction prior (memsel.manager.network.eviction_loss),
  each decision weighted by its cost (``manager.cost_weight``); then ``manager.dagger_rounds`` rounds of DAgger
  (Ross et al. 2011): the manager's own rollouts, labelled by the oracle from the states they reach, are added
  to the data and training goes on. The checkpoint is chosen on the validation stories' retention. Writes
  ``<run>/manager/pretrained.pt``.
- PPO (:func:`ppo_manager`, RLlib): memsel's own RLModule (SelectorRLModule) and learner (distillation toward
  the pretrained manager) on memsel.manager.env.MemoryManagerEnv, the ppo section's settings, for
  ``manager.ppo_iterations`` iterations; the iteration with the best validation retention (the pretrained
  start included) is kept. Writes ``<run>/manager/ppo.pt``. ``<run>/manager/manager.pt`` is the better of the
  two on validation: the file the budget strategy 'managed' reads by default.
- Evaluation (:func:`evaluate_managers`): retention of FIFO, LIFO, random, LRU (by the run's selector's
  attention, when it has one), the oracle and the managers on a split, and the gap each manager closes,
  (manager - FIFO) / (oracle - FIFO).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from memsel.config import Config
from memsel.data.encode import DataSpec, Vocab
from memsel.devices import trainer_kwargs
from memsel.files import write_text_atomic
from memsel.manager.budget import MANAGER_FILE
from memsel.manager.network import (build_manager, dagger_decisions, eviction_loss, load_manager, manager_retention,
                                    save_manager)
from memsel.manager.streams import (FIFO, LIFO, LRU, Oracle, RandomEviction, Stream, encode_stream,
                                    oracle_decisions, retention, streams_from_samples)
from memsel.network import Selector
from memsel.selector_configs import SelectorConfig

log = logging.getLogger(__name__)

OBS = ("memories", "mask", "query", "ages")


@dataclass
class ManagerData:
    """The run's splits as streams with token ids (T, L) each, and the run's vocabulary and shapes."""

    splits: dict[str, tuple[list[Stream], list[np.ndarray]]]
    vocab: Vocab
    spec: DataSpec


def manager_data(cfg: Config) -> ManagerData:
    """Streams of the run's train, validation and test stories (the split memsel.data.prepare makes)."""
    from memsel.data.prepare import prepare_data, split_by_story
    from memsel.data.sample import DATASETS

    prepared = prepare_data(cfg)  # the run's vocabulary and shapes (cached in the run directory)
    d = cfg.data
    raw = DATASETS.make(d.dataset_name, d, d.dataset_options, "data", "dataset_options", cfg.seed, cfg.layout.data)
    train, val = split_by_story(raw.train, d.val_fraction, cfg.seed)
    splits = {}
    for name, samples in (("train", train), ("val", val), ("test", raw.test)):
        streams = streams_from_samples(samples)
        splits[name] = (streams, [encode_stream(s, prepared.vocab, prepared.spec.max_sentence_len) for s in streams])
    return ManagerData(splits, prepared.vocab, prepared.spec)


def manager_selector_config(cfg: Config) -> SelectorConfig:
    """The manager's network: the family ``manager.kind`` with its default settings (and, for mha,
    ``manager.self_attention_layers``)."""
    m = cfg.manager
    extra = {"self_attention_layers": m.self_attention_layers} if m.self_attention_layers else {}
    return SelectorConfig(kind=m.kind, **extra)


def slots(cfg: Config) -> int:
    """K, refused (naming the field) when neither manager.slots nor env.memory_budget gives one."""
    from memsel.registry import check

    k = cfg.manager.resolved_slots(cfg.env)
    check(k >= 1, "manager.slots", "an integer K >= 1 (or env.memory_budget >= 1 with manager.slots 0)", k)
    return k


# ----------------------------------------------------------------------------- pretraining (Lightning)


class ManagerLightningModule(L.LightningModule):
    """Owns the pretraining loss, metrics and optimiser; the network is the plain ``self.manager``."""

    def __init__(self, selector_config: dict, spec: dict, k: int, lr: float, recency_weight: float,
                 recency_decay: float, cost_weight: float = 0.0):
        super().__init__()
        self.save_hyperparameters()
        self.manager = build_manager(SelectorConfig(**selector_config), DataSpec(**spec), k)
        self.val_streams: tuple[list[Stream], list[np.ndarray]] | None = None

    def _step(self, batch: tuple[torch.Tensor, ...], stage: str) -> torch.Tensor:
        memories, mask, query, ages, best, cost = batch
        logits = self.manager({"memories": memories, "mask": mask, "query": query, "ages": ages})  # (B, K+1)
        hp = self.hparams
        weight = 1 + hp.cost_weight * (cost * mask).sum(-1) / mask.sum(-1).clamp(min=1)  # (B,)
        loss = eviction_loss(logits, best, mask, ages, hp.recency_weight, hp.recency_decay, weight)
        agree = best.gather(1, logits.argmax(-1, keepdim=True)).float().mean()  # an oracle-allowed decision
        self.log(f"{stage}/loss", loss, prog_bar=True, on_epoch=True, on_step=False, batch_size=len(best))
        self.log(f"{stage}/oracle_agreement", agree, on_epoch=True, on_step=False, batch_size=len(best))
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        return self._step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        if self.val_streams is not None:
            was = self.manager.training
            self.manager.eval()
            r = manager_retention(self.manager, *self.val_streams, self.hparams.k)
            self.manager.train(was)
            self.log("val/retention", r, prog_bar=True)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


def _dataset(d: dict[str, np.ndarray]) -> TensorDataset:
    """Tensors of memsel.manager.streams.oracle_decisions' arrays, in ManagerLightningModule's batch order."""
    return TensorDataset(*(torch.from_numpy(d[key].astype(np.int64)) for key in OBS), torch.from_numpy(d["best"]),
                         torch.from_numpy(d["cost"].astype(np.float32)))


def _fit_round(cfg: Config, module: ManagerLightningModule, train: TensorDataset, val: TensorDataset,
               epochs: int, folder: Path, logger: Any) -> tuple[float, dict]:
    """Lightning over ``train`` for ``epochs``; (the best validation retention, that epoch's network state)."""
    from memsel.pretrain import EpochLog, strip_prefix

    checkpoint = L.pytorch.callbacks.ModelCheckpoint(dirpath=folder / "checkpoints", filename="best-{epoch}",
                                                     monitor="val/retention", mode="max", save_top_k=1)
    trainer = L.Trainer(max_epochs=epochs, **trainer_kwargs(cfg.device), logger=logger or False,
                        callbacks=[checkpoint, EpochLog()], deterministic=True, enable_model_summary=False,
                        enable_progress_bar=sys.stderr.isatty(), default_root_dir=str(folder), num_sanity_val_steps=0,
                        log_every_n_steps=10)
    g = torch.Generator().manual_seed(cfg.seed)
    trainer.fit(module, DataLoader(train, batch_size=cfg.manager.batch_size, shuffle=True, generator=g),
                DataLoader(val, batch_size=1024))
    state = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=False)["state_dict"]
    return float(checkpoint.best_model_score), strip_prefix(state, "manager.")


def pretrain_manager(cfg: Config, data: ManagerData, logger: Any = None) -> Path:
    """Lightning on the oracle's decisions, then ``manager.dagger_rounds`` DAgger rounds (each on the
    decisions so far and the oracle's labels of the states the round's manager reaches); the network with the
    best validation retention over all epochs of all rounds (a tie goes to the later round) ->
    ``<run>/manager/pretrained.pt``."""
    m, k = cfg.manager, slots(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    module = ManagerLightningModule(asdict(manager_selector_config(cfg)), asdict(data.spec), k, m.lr,
                                    m.recency_weight, m.recency_decay, m.cost_weight)
    module.val_streams = data.splits["val"]
    rounds = [oracle_decisions(*data.splits["train"], k)]
    val = _dataset(oracle_decisions(*data.splits["val"], k))
    folder = cfg.run_path / "manager"
    best_score, best_state = -math.inf, None
    for r in range(m.dagger_rounds + 1):
        if r:
            rounds.append(dagger_decisions(module.manager, data.splits["train"], k, m.dagger_beta ** r, cfg.seed + r))
        train = _dataset({key: np.concatenate([d[key] for d in rounds]) for key in rounds[0]})
        log.info("manager: round %d, %d oracle-labelled decisions (%d validation), K = %d", r, len(train), len(val), k)
        score, state = _fit_round(cfg, module, train, val, m.max_epochs if r == 0 else m.dagger_epochs,
                                  folder / f"round{r}", logger)
        module.manager.load_state_dict(state)  # the round's best: DAgger's next rollout policy and starting point
        log.info("manager: round %d best validation retention %.4f", r, score)
        if score >= best_score:
            best_score, best_state = score, state
    net = build_manager(manager_selector_config(cfg), data.spec, k)
    net.load_state_dict(best_state)
    net.vocab = list(data.vocab.tokens)
    path = save_manager(net, k, folder / "pretrained.pt")
    log.info("manager: pretrained (validation retention %.4f) -> %s", best_score, path)
    return path


# ----------------------------------------------------------------------------- PPO (RLlib)


def manager_ppo_config(cfg: Config, data: ManagerData, pretrained: Path) -> Any:
    """memsel's PPO (SelectorRLModule + the distillation learner) on the manager's env, the ppo section's settings."""
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    from memsel.devices import gpus_per_learner
    from memsel.manager.env import MemoryManagerEnv
    from memsel.rl import RLLIB_KEYS, learner_settings
    from memsel.rllib_models import SelectorRLModule, learner_class

    p, blob = cfg.ppo, pretrained.read_bytes()
    net, k = load_manager(pretrained)
    streams, tokens = data.splits["train"]
    env_config = {"streams": streams, "tokens": tokens, "k": k, "seed": cfg.seed, "vocab_size": data.spec.vocab_size}
    model_config = {"selector": asdict(net.config), "spec": asdict(net.spec), "pretrained": blob,
                    "orthogonal_init": p.orthogonal_init}
    return (
        PPOConfig()
        .environment(MemoryManagerEnv, env_config=env_config)
        .framework("torch")
        .env_runners(num_env_runners=p.num_env_runners, num_envs_per_env_runner=p.num_envs_per_env_runner,
                     num_cpus_per_env_runner=1)
        .learners(learner_class=learner_class(p.update), num_gpus_per_learner=gpus_per_learner(cfg.device),
                  learner_config_dict={"ppo": learner_settings(p), "teacher": blob, "teacher_return": None})
        .training(entropy_coeff=p.entropy_coeff, **{"lambda_" if key == "lambda" else key: getattr(p, name)
                                                    for name, key in RLLIB_KEYS.items()})
        .rl_module(rl_module_spec=RLModuleSpec(module_class=SelectorRLModule, model_config=model_config))
        .debugging(seed=cfg.seed)
    )


def ppo_manager(cfg: Config, data: ManagerData, pretrained: Path) -> tuple[Path, list[dict]]:
    """PPO from the pretrained manager; the iteration with the best validation retention (iteration 0 = the
    pretrained start) -> ``<run>/manager/ppo.pt``. Returns it and the curve (per iteration: return, KLs,
    validation retention)."""
    from memsel.pipeline import init_ray

    init_ray(cfg)
    net, k = load_manager(pretrained)
    val = data.splits["val"]
    best_r, best_state = manager_retention(net, *val, k), net.state_dict()
    curve = [{"iteration": 0, "val_retention": best_r}]
    algo = manager_ppo_config(cfg, data, pretrained).build_algo()
    try:
        for it in range(1, cfg.manager.ppo_iterations + 1):
            result = algo.train()
            student = algo.get_module().selector.eval()
            r = manager_retention(student, *val, k)
            learner = result.get("learners", {}).get("default_policy", {})
            row = {"iteration": it, "val_retention": r,
                   "return": float(result.get("env_runners", {}).get("episode_return_mean", math.nan)),
                   **{key: float(learner[key]) for key in ("mean_kl_loss", "distill_kl", "entropy") if key in learner}}
            curve.append(row)
            log.info("manager PPO %d/%d: %s", it, cfg.manager.ppo_iterations,
                     "  ".join(f"{key} {v:.4f}" for key, v in row.items() if key != "iteration"))
            if r > best_r:
                best_r, best_state = r, {key: v.detach().cpu().clone() for key, v in student.state_dict().items()}
    finally:
        algo.stop()
    net.load_state_dict(best_state)
    path = save_manager(net, k, cfg.run_path / "manager" / "ppo.pt")
    log.info("manager: PPO best validation retention %.4f -> %s", best_r, path)
    return path, curve


def train_manager(cfg: Config, data: ManagerData | None = None, logger: Any = None) -> Path:
    """Pretrain, then PPO (unless manager.ppo_iterations is 0); ``<run>/manager/manager.pt`` = the better on the
    validation stories (a tie keeps the pretrained one). Returns its path."""
    data = data or manager_data(cfg)
    k = slots(cfg)
    pretrained = pretrain_manager(cfg, data, logger)
    chosen, curve = pretrained, []
    if cfg.manager.ppo_iterations > 0:
        tuned, curve = ppo_manager(cfg, data, pretrained)
        scores = {p: manager_retention(load_manager(p)[0], *data.splits["val"], k) for p in (pretrained, tuned)}
        chosen = tuned if scores[tuned] > scores[pretrained] else pretrained
    dest = cfg.run_path / MANAGER_FILE
    net, _ = load_manager(chosen)
    save_manager(net, k, dest)
    write_text_atomic(dest.with_name("outcome.json"), json.dumps({"chosen": chosen.name, "k": k, "ppo_curve": curve},
                                                                indent=2))
    log.info("manager: %s chosen on the validation stories -> %s", chosen.name, dest)
    return dest


# ----------------------------------------------------------------------------- evaluation


def attention_lru(selector: Selector, vocab: Vocab, length: int, tokens: dict[str, np.ndarray], top: int) -> LRU:
    """LRU whose uses are the ``top`` memories the ``selector`` ranks highest at each question (its first hop).
    ``tokens`` maps a stream's source to its (T, L) token ids."""
    def attend(stream: Stream, q: int, held: np.ndarray) -> np.ndarray:
        if len(held) == 0:
            return held
        time, tok = stream.times[q], tokens[stream.source]
        query = np.zeros((1, length), dtype=np.int64)
        ids = vocab.encode(stream.queries[q])[:length]
        query[0, :len(ids)] = ids
        obs = {"memories": torch.as_tensor(tok[held])[None], "mask": torch.ones(1, len(held), dtype=torch.bool),
               "query": torch.as_tensor(query), "ages": torch.as_tensor(time - 1 - held)[None]}
        with torch.no_grad():
            logits = selector(obs)[0]  # (K',)
        return held[torch.topk(logits, min(top, len(held))).indices.numpy()]

    return LRU(attend)


def evaluate_managers(cfg: Config, data: ManagerData, split: str, managers: dict[str, Path],
                      selector: Path | None = None) -> dict[str, dict[str, float]]:
    """Retention on ``split`` of the baselines, the oracle and ``managers`` (name -> file), and each one's gap
    closed = (retention - FIFO) / (oracle - FIFO); with ``selector`` also LRU by its attention."""
    k = slots(cfg)
    streams, tokens = data.splits[split]
    policies = [FIFO(), LIFO(), RandomEviction(cfg.seed)]
    if selector is not None and selector.is_file():
        net = Selector.load(selector).eval()
        by_source = {s.source: t for s, t in zip(streams, tokens)}
        policies.append(attention_lru(net, data.vocab, data.spec.max_sentence_len, by_source, cfg.manager.lru_top))
    policies.append(Oracle())
    scores = {p.name: retention(streams, k, p) for p in policies}
    for name, path in managers.items():
        if path.is_file():
            scores[name] = manager_retention(load_manager(path)[0], streams, tokens, k)
    fifo, oracle = scores["fifo"], scores["oracle"]
    pairs = sum(s.pairs for s in streams)
    return {name: {"retention": r, "gap_closed": (r - fifo) / (oracle - fifo) if oracle > fifo else math.nan,
                   "pairs": pairs} for name, r in scores.items()}


def format_manager_table(results: dict[str, dict[str, float]], title: str) -> str:
    """The evaluation as a text table: method, retention, gap closed."""
    rows = [f"{title}", f"{'method':<22}{'retention':>11}{'gap closed':>12}{'pairs':>8}",
            f"{'-' * 22}{'-' * 11:>11}{'-' * 12:>12}{'-' * 8:>8}"]
    for name, r in results.items():
        gap = "" if math.isnan(r["gap_closed"]) else f"{100 * r['gap_closed']:.1f}%"
        rows.append(f"{name:<22}{100 * r['retention']:>10.2f}%{gap:>12}{int(r['pairs']):>8}")
    return "\n".join(rows)


def manager_files(cfg: Config) -> dict[str, Path]:
    """The run's trained managers by table name."""
    folder = cfg.run_path / "manager"
    return {"manager (pretrained)": folder / "pretrained.pt", "manager (PPO)": folder / "ppo.pt"}


def with_slots(cfg: Config, k: int) -> Config:
    """``cfg`` with manager.slots = ``k`` (for commands that set K without a managed budget)."""
    return dataclasses.replace(cfg, manager=dataclasses.replace(cfg.manager, slots=k))

"""The selector network: masked attention scores over a variable-length list of memories.

Pure PyTorch: no Lightning, Ray or MLflow here. One class serves supervised pretraining
(memsel.pretrain), the RLlib module (memsel.rllib_models) and inference.

Input is a dict of tensors, the same fields as the RL environment's observation:
    memories (B, N, L) token ids, 0 = pad      mask  (B, N) True/1 where a slot holds a memory
    query    (B, L)    token ids               ages  (B, N) 0 = most recent memory
Output: logits (B, N); padded slots get the dtype's finite minimum, so padding never changes a
real memory's logit and a row with every slot masked stays finite (uniform softmax, no NaN).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from memsel.config import SelectorConfig
from memsel.data.encode import DataSpec

OBS_KEYS = ("memories", "mask", "query", "ages")


def masked_fill_min(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Put the finite minimum where ``mask`` is false (a finite value, unlike -inf, keeps softmax NaN-free)."""
    return logits.masked_fill(~mask, torch.finfo(logits.dtype).min)


class SentenceEncoder(nn.Module):
    """Bag of words, optionally weighted by position as in End-To-End Memory Networks (PE)."""

    def __init__(self, vocab_size: int, dim: int, position_encoding: bool):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=0)
        self.position_encoding = position_encoding
        self.dim = dim

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        # tokens (..., L) -> (..., d)
        x = self.embed(tokens)  # (..., L, d)
        present = (tokens > 0).to(x.dtype)  # (..., L)
        if self.position_encoding:
            length = present.sum(-1, keepdim=True).clamp(min=1.0)  # (..., 1) words per sentence J
            j = torch.arange(1, tokens.shape[-1] + 1, device=x.device, dtype=x.dtype)  # (L,)
            k = torch.arange(1, self.dim + 1, device=x.device, dtype=x.dtype) / self.dim  # (d,)
            jj = (j / length).unsqueeze(-1)  # (..., L, 1)
            # l_kj = (1 - j/J) - (k/d)(1 - 2j/J)
            weight = (1 - jj) - k * (1 - 2 * jj)  # (..., L, d)
            x = x * weight
        return (x * present.unsqueeze(-1)).sum(-2)  # (..., d)


class Selector(nn.Module):
    """Scores every memory against the query; ``kind='ff'`` is one feed-forward attention layer."""

    def __init__(self, config: SelectorConfig, spec: DataSpec):
        super().__init__()
        config.validate()
        self.config, self.spec = config, spec
        d, h = config.embed_dim, config.hidden_dim
        self.encoder = SentenceEncoder(spec.vocab_size, d, config.position_encoding)
        # Age embedding: the network can learn any recency profile, e.g. "most recent matching".
        self.age_embed = nn.Embedding(spec.max_memories, d) if config.recency else None
        # Additive attention over [m * q, m, age]: the product term carries query-memory match.
        self.score_hidden = nn.Linear(3 * d, h)
        self.score_out = nn.Linear(h, 1)

    @property
    def feature_dim(self) -> int:
        """Size of the features that :meth:`forward` returns for a value head."""
        return 2 * self.config.embed_dim

    def _check(self, obs: dict[str, torch.Tensor]) -> None:
        missing = [k for k in OBS_KEYS if k not in obs]
        if missing:
            raise KeyError(f"selector input lacks {missing}; expected keys {list(OBS_KEYS)}")
        m, q = obs["memories"], obs["query"]
        if m.dim() != 3 or q.dim() != 2 or obs["mask"].shape != m.shape[:2] or obs["ages"].shape != m.shape[:2]:
            raise ValueError(
                "selector input shapes: expected memories (B, N, L), mask (B, N), query (B, L), ages (B, N); got "
                + ", ".join(f"{k} {tuple(obs[k].shape)}" for k in OBS_KEYS))
        if m.shape[0] != q.shape[0] or m.shape[2] != q.shape[1]:
            raise ValueError(f"memories {tuple(m.shape)} and query {tuple(q.shape)} disagree on B or L")
        if m.shape[1] > self.spec.max_memories and self.age_embed is not None:
            raise ValueError(f"{m.shape[1]} memory slots, but this network was built for "
                             f"{self.spec.max_memories}")
        for k in ("memories", "query", "ages"):
            if obs[k].is_floating_point() and not torch.equal(obs[k], obs[k].round()):
                raise TypeError(f"selector input '{k}' must hold integer ids, got {obs[k].dtype} with fractions")
        for k in ("memories", "query"):
            if obs[k].numel() and (obs[k].min() < 0 or obs[k].max() >= self.spec.vocab_size):
                raise ValueError(f"selector input '{k}' holds token ids outside 0..{self.spec.vocab_size - 1} "
                                 f"(min {int(obs[k].min())}, max {int(obs[k].max())}): another vocabulary?")

    def forward(self, obs: dict[str, torch.Tensor], return_features: bool = False) -> Any:
        """Masked logits (B, N); with ``return_features`` also (B, 2d) features for a value head."""
        self._check(obs)
        memories, query = obs["memories"].long(), obs["query"].long()
        mask = obs["mask"] > 0  # int8 from RLlib, bool from the data: both become bool
        m = self.encoder(memories)  # (B, N, d)
        q = self.encoder(query)  # (B, d)
        if self.age_embed is not None:
            ages = obs["ages"].long().clamp(0, self.spec.max_memories - 1)
            t = self.age_embed(ages)  # (B, N, d)
        else:
            t = torch.zeros_like(m)
        feats = torch.cat([m * q.unsqueeze(1), m, t], dim=-1)  # (B, N, 3d)
        logits = self.score_out(torch.tanh(self.score_hidden(feats))).squeeze(-1)  # (B, N)
        logits = masked_fill_min(logits, mask)
        if not return_features:
            return logits
        probs = F.softmax(logits, dim=-1) * mask  # (B, N); zero on padding
        read = torch.einsum("bn,bnd->bd", probs, m)  # (B, d) what the attention reads
        return logits, torch.cat([read, q], dim=-1)

    # ------------------------------------------------------------------ saving and loading
    def export(self) -> dict:
        """A self-describing checkpoint: bare state dict plus what is needed to rebuild the net."""
        return {"format": "memsel.selector/1", "selector_config": asdict(self.config),
                "spec": asdict(self.spec), "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()}}

    def save(self, path: str | Path) -> Path:
        """Write :meth:`export` atomically: a crash never leaves a half-written file under ``path``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        torch.save(self.export(), tmp)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Selector":
        blob = read_selector_file(path)
        net = cls(SelectorConfig(**blob["selector_config"]), DataSpec(**blob["spec"]))
        try:
            net.load_state_dict(blob["state_dict"])
        except RuntimeError as e:
            raise ValueError(f"{path}: weights do not fit the network it describes: {e}") from None
        return net


def read_selector_file(path: str | Path) -> dict:
    """Load a file written by :meth:`Selector.save`, refusing anything else with a clear message."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no selector file (run `memsel pretrain` first, or check the path)")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling errors come in many types; all mean "not our file"
        raise ValueError(f"{path}: not a memsel selector file (expected format 'memsel.selector/1'): {e}") from None
    if not isinstance(blob, dict) or blob.get("format") != "memsel.selector/1":
        raise ValueError(f"{path}: not a memsel selector file (expected format 'memsel.selector/1')")
    return blob


def recency_prior(ages: torch.Tensor, mask: torch.Tensor, decay: float) -> torch.Tensor:
    """The temporal bias: p(memory) ~ exp(-decay * age) over real memories, 0 on padding. (B, N)"""
    mask = mask > 0
    logits = masked_fill_min(-decay * ages.to(torch.float32), mask)
    return F.softmax(logits, dim=-1) * mask

"""The selector network: masked attention scores over a variable-length list of memories.

Pure PyTorch: no Lightning, Ray or MLflow here. One class serves supervised pretraining
(memsel.pretrain), the RLlib module (memsel.rllib_models) and inference (memsel.inference).

Input is a dict of tensors, the same fields as the RL environment's observation:
    memories (B, N, L) token ids, 0 = pad      mask  (B, N) True/1 where a slot holds a memory
    query    (B, L)    token ids               ages  (B, N) 0 = most recent memory
    selected (B, N)    optional: 1 where a memory was chosen at an earlier step of a multi-hop
                       episode; the query becomes u = q + sum of the selected memories'
                       embeddings, as MemN2N's u_{k+1} = u_k + o_k. Without it nothing changes.
                       A float tensor is used as weights (soft selections, for training through
                       the choice); integer or bool ones count where > 0.
Output: logits (B, N); padded slots get the dtype's finite minimum, so padding never changes a
real memory's logit and a row with every slot masked stays finite (uniform softmax, no NaN).

The network is two stages with public methods, so that memory embeddings of a growing list can
be computed once and cached: ``encode_memories`` / ``encode_query`` (tokens -> embeddings, one
memory at a time) and ``score`` (embeddings + query + ages + mask -> logits). The family
(``selector.kind``, see memsel.families) does the scoring; ``selector.attention`` picks softmax or
stick-breaking over the memories in recency order; ``selector.hops`` runs it H times, adding what
each hop read to the query (End-To-End Memory Networks).
"""

from __future__ import annotations

import re
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from memsel.config import FAMILIES, SelectorConfig
from memsel.data.encode import DataSpec
from memsel.files import load_torch_file, save_torch_atomic
from memsel.layers import Ages, recency_order, residual_stack

OBS_KEYS = ("memories", "mask", "query", "ages")
OPTIONAL_OBS_KEYS = ("selected",)
FILE_FORMAT = "memsel.selector/1"


def masked_fill_min(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Put the finite minimum where ``mask`` is false (a finite value, unlike -inf, keeps softmax NaN-free)."""
    return logits.masked_fill(~mask, torch.finfo(logits.dtype).min)


class BagOfWordsEncoder(nn.Module):
    """Sum of word embeddings, optionally weighted by position as in End-To-End Memory Networks (PE)."""

    def __init__(self, vocab_size: int, dim: int, position_encoding: bool):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=0)
        self.position_encoding = position_encoding
        self.dim = dim

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        # tokens (..., L) -> (..., d)
        x = self.embed(tokens)  # (..., L, d)
        present = (tokens > 0).to(x.dtype)  # (..., L)
        if not self.position_encoding:
            return (present.unsqueeze(-2) @ x).squeeze(-2)  # (..., d)
        # l_kj = (1 - j/J) - (k/d)(1 - 2j/J) = (1 - k/d) + (j/J)(2k/d - 1): the weighted sum is two plain
        # sums, of x_j and of j * x_j, one small matmul with no (..., L, d) weight tensor (the encoder was
        # most of a step's time at hundreds of memories of 20 words).
        length = present.sum(-1, keepdim=True).clamp(min=1.0)  # (..., 1) words per sentence J
        j = torch.arange(1, tokens.shape[-1] + 1, device=x.device, dtype=x.dtype)  # (L,)
        k = torch.arange(1, self.dim + 1, device=x.device, dtype=x.dtype) / self.dim  # (d,)
        sums = torch.stack([present, present * j], dim=-2) @ x  # (..., 2, d): sum of x_j, sum of j * x_j
        return (1 - k) * sums[..., 0, :] + (2 * k - 1) * sums[..., 1, :] / length


class LearnedPositionEncoder(nn.Module):
    """Sum of word embeddings times a learned weight per position and channel (starts as a bag of words)."""

    def __init__(self, vocab_size: int, dim: int, max_len: int):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=0)
        self.position = nn.Parameter(torch.ones(max_len, dim))  # (L_max, d)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        # tokens (..., L) -> (..., d); words past the longest trained position share its weight
        x = self.embed(tokens)  # (..., L, d)
        slots = torch.arange(tokens.shape[-1], device=tokens.device).clamp(max=self.position.shape[0] - 1)
        present = (tokens > 0).to(x.dtype).unsqueeze(-1)  # (..., L, 1)
        return (x * self.position[slots] * present).sum(-2)  # (..., d)


def sentence_encoder(config: SelectorConfig, spec: DataSpec) -> nn.Module:
    """The sentence encoder ``config.encoder`` names, shared by memories and query."""
    if config.encoder == "learned":
        return LearnedPositionEncoder(spec.vocab_size, config.embed_dim, spec.max_sentence_len)
    return BagOfWordsEncoder(spec.vocab_size, config.embed_dim, position_encoding=config.encoder == "pe")


class LogAgeBuckets(nn.Module):
    """Age features defined for any age (``selector.age_encoding: log``): a learned row per age bucket,
    ages 0..EXACT-1 exactly, then PER_DOUBLING buckets per doubling of the age.

    ``seen`` (a buffer, saved with the weights) is the oldest bucket met in training; outside training,
    older ages share it, so a network trained on lists of 1k memories scores a 16k one with the features
    it learned for its oldest memories instead of rows no gradient ever reached."""

    EXACT = 16
    PER_DOUBLING = 4
    LAST = EXACT + PER_DOUBLING * 36  # the bucket of age 2^40 (16 * 2^36); older ages share it

    def __init__(self, dim: int):
        super().__init__()
        self.embedding = nn.Embedding(self.LAST + 1, dim)
        self.register_buffer("seen", torch.tensor(-1, dtype=torch.long))

    @classmethod
    def bucket(cls, ages: torch.Tensor) -> torch.Tensor:
        """Bucket ids of ``ages`` (any shape, >= 0), long."""
        ages = ages.long().clamp(min=0)
        octave = torch.log2(ages.clamp(min=cls.EXACT).double() / cls.EXACT)
        late = cls.EXACT + torch.floor(cls.PER_DOUBLING * octave + 1e-9).long()
        return torch.where(ages < cls.EXACT, ages, late).clamp(max=cls.LAST)

    def index(self, ages: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Rows of ``embedding`` for ``ages`` (B, N); in training, records the oldest bucket met in ``mask``."""
        rows = self.bucket(ages)
        if self.training:
            if mask.any():
                self.seen.fill_(max(int(self.seen), int(rows[mask].max())))
        elif int(self.seen) >= 0:
            rows = rows.clamp(max=int(self.seen))
        return rows


class Selector(nn.Module):
    """Scores every memory against the query; the family ``config.kind`` does the scoring.

    Attributes: ``config``, ``spec``, and ``vocab`` (the token list of the run, or None): saved
    with the weights, so that :class:`memsel.inference.SelectorPredictor` can read raw text.
    """

    def __init__(self, config: SelectorConfig, spec: DataSpec):
        super().__init__()
        config.validate()
        self.config, self.spec = config, spec
        self.vocab: list[str] | None = None
        d = config.embed_dim
        self.encoder = sentence_encoder(config, spec)
        # Memories and query go through the same blocks, so their embeddings stay comparable.
        self.refine = (residual_stack(d, config.hidden_dim, config.num_residual_blocks, config.dropout)
                       if config.residual else None)
        # Age embedding: the network can learn any recency profile, e.g. "most recent matching".
        self.age_embed = (nn.Embedding(spec.max_memories, d) if config.recency and config.age_encoding == "table"
                          else None)
        self.age_buckets = LogAgeBuckets(d) if config.recency and config.age_encoding == "log" else None
        self.family = FAMILIES.get(config.kind)(config)
        # Age relative to the oldest memory chosen at an earlier hop, as smooth features (older / newer /
        # same, log distance), so that "the nearest one before it" generalises across distances.
        self.relative_age = nn.Linear(7, d) if config.relative_age else None

    @property
    def feature_dim(self) -> int:
        """Size of the features that :meth:`forward` returns for a value head: [read, query]."""
        return 2 * self.config.embed_dim

    @property
    def equivariant(self) -> bool:
        """Whether reordering memories (with their ages and mask) reorders the logits alike (see memsel.families)."""
        return self.family.equivariant()

    # ------------------------------------------------------------------ input checks
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
        self._check_slots(m.shape[1])
        self._check_optional(obs.get("selected"), m.shape[:2])
        for k in ("memories", "query", "ages"):
            _check_ids(k, obs[k])
        for k in ("memories", "query"):
            if obs[k].numel() and (obs[k].min() < 0 or obs[k].max() >= self.spec.vocab_size):
                raise ValueError(f"selector input '{k}' holds token ids outside 0..{self.spec.vocab_size - 1} "
                                 f"(min {int(obs[k].min())}, max {int(obs[k].max())}): another vocabulary?")

    def _check_slots(self, n: int) -> None:
        if n > self.spec.max_memories and self.age_embed is not None:
            raise ValueError(f"{n} memory slots, but this network was built for "
                             f"{self.spec.max_memories}")

    @staticmethod
    def _check_optional(selected: torch.Tensor | None, shape: torch.Size) -> None:
        if selected is not None and selected.shape != shape:
            raise ValueError(f"selector input 'selected' must be (B, N) = {tuple(shape)} like the mask; "
                             f"got {tuple(selected.shape)}")

    def _check_embeddings(self, memories: torch.Tensor, query: torch.Tensor, ages: torch.Tensor,
                          mask: torch.Tensor, selected: torch.Tensor | None) -> None:
        d = self.config.embed_dim
        dtype = self.encoder.embed.weight.dtype
        for name, t in (("memory embeddings", memories), ("query embedding", query)):
            if t.dtype != dtype:
                raise TypeError(f"{name} must be {dtype} like the network's weights, got {t.dtype}")
        if memories.dim() != 3 or memories.shape[-1] != d or query.shape != (memories.shape[0], d):
            raise ValueError(f"score() expects memory embeddings (B, N, {d}) and a query embedding (B, {d}); "
                             f"got {tuple(memories.shape)} and {tuple(query.shape)}")
        for name, t in (("ages", ages), ("mask", mask)):
            if t.shape != memories.shape[:2]:
                raise ValueError(f"score() expects {name} (B, N) = {tuple(memories.shape[:2])}, got {tuple(t.shape)}")
        self._check_slots(memories.shape[1])
        self._check_optional(selected, memories.shape[:2])
        _check_ids("ages", ages)

    # ------------------------------------------------------------------ the two stages
    def _refined(self, x: torch.Tensor) -> torch.Tensor:
        return self.refine(x) if self.refine is not None else x

    def encode_memories(self, memories: torch.Tensor) -> torch.Tensor:
        """Token ids (B, N, L) -> memory embeddings (B, N, d); each memory on its own (cacheable)."""
        return self._refined(self.encoder(memories.long()))

    def encode_query(self, query: torch.Tensor) -> torch.Tensor:
        """Token ids (B, L) -> query embedding (B, d)."""
        return self._refined(self.encoder(query.long()))

    def score(self, memories: torch.Tensor, query: torch.Tensor, ages: torch.Tensor, mask: torch.Tensor,
              selected: torch.Tensor | None = None, return_features: bool = False) -> Any:
        """Masked logits (B, N) from embeddings: ``memories`` (B, N, d) from :meth:`encode_memories`,
        ``query`` (B, d) from :meth:`encode_query`, ``ages`` (B, N), ``mask`` (B, N), optional
        ``selected`` (B, N). With ``return_features`` also (B, feature_dim) features."""
        self._check_embeddings(memories, query, ages, mask, selected)
        return self._score(memories, query, ages, mask, selected, return_features)

    def _score(self, x: torch.Tensor, u: torch.Tensor, ages: torch.Tensor, mask: torch.Tensor,
               selected: torch.Tensor | None, return_features: bool) -> Any:
        if mask.dtype != torch.bool:
            mask = mask > 0  # int8 from RLlib, bool from the data: both become bool
        age = None
        if self.age_embed is not None:
            age = Ages(ages.long().clamp(0, self.spec.max_memories - 1), self.age_embed)
        elif self.age_buckets is not None:
            age = Ages(self.age_buckets.index(ages, mask), self.age_buckets.embedding)
        scored = x
        if selected is not None:  # MemN2N: u_{k+1} = u_k + o_k, o = what earlier steps chose
            if selected.is_floating_point():  # 0/1 from RLlib, or soft weights in end-to-end pretraining
                chosen = selected.to(x.dtype) * mask
            else:
                chosen = ((selected > 0) & mask).to(x.dtype)  # (B, N); padding never counts
            u = u + torch.einsum("bn,bnd->bd", chosen, x)  # (B, d)
            if self.relative_age is not None:
                scored = x + self._relative_age(ages, chosen)
        if x.shape[0] == 0 or x.shape[1] == 0:  # no rows or no slots: nothing to score or read
            logits = x.new_zeros(x.shape[:2])
            return (logits, torch.cat([torch.zeros_like(u), u], dim=-1)) if return_features else logits
        context = self.family.contextualise(scored, age, mask)  # (B, N, d)
        order = recency_order(ages, mask) if self.config.attention == "stick_breaking" else None  # (B, N)
        hops = self.config.hops
        for hop in range(hops):
            logits = masked_fill_min(self.family.score(hop, context, u, age, mask, order), mask)  # (B, N)
            if hop + 1 < hops or return_features:
                probs = F.softmax(logits, dim=-1) * mask  # (B, N); zero on padding
                read = torch.einsum("bn,bnd->bd", probs, scored)  # (B, d) what this hop reads
                if hop + 1 < hops:
                    u = u + read
        if not return_features:
            return logits
        return logits, torch.cat([read, u], dim=-1)

    def _relative_age(self, ages: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
        """(B, N, d) features of each memory's age relative to the oldest chosen one (older, newer,
        the same; the distance either way, as log1p and linear); zero in rows where nothing is chosen, so that a
        first hop sees exactly what a one-hop network sees. Soft choices (weights) count where they
        exceed half of the row's largest."""
        picked = chosen > 0.5 * chosen.amax(-1, keepdim=True).clamp(min=1e-6)  # (B, N)
        anything = (chosen.amax(-1) > 0).to(chosen.dtype)  # (B,)
        ages = ages.long()
        oldest = torch.where(picked, ages, torch.full_like(ages, -1)).amax(-1, keepdim=True)  # (B, 1)
        delta = (ages - oldest).to(chosen.dtype)  # (B, N) > 0: older than the oldest chosen memory
        feats = torch.stack([(delta > 0).to(delta.dtype), (delta < 0).to(delta.dtype), (delta == 0).to(delta.dtype),
                             torch.log1p(delta.clamp(min=0)), torch.log1p((-delta).clamp(min=0)),
                             delta.clamp(min=0) / 8, (-delta).clamp(min=0) / 8], dim=-1)
        return self.relative_age(feats) * anything[:, None, None]

    def forward(self, obs: dict[str, torch.Tensor], return_features: bool = False) -> Any:
        """Masked logits (B, N); with ``return_features`` also (B, feature_dim) features for a value head."""
        self._check(obs)
        m = self.encode_memories(obs["memories"])  # (B, N, d)
        q = self.encode_query(obs["query"])  # (B, d)
        return self._score(m, q, obs["ages"], obs["mask"], obs.get("selected"), return_features)

    # ------------------------------------------------------------------ saving and loading
    def export(self) -> dict:
        """A self-describing checkpoint: bare state dict, what is needed to rebuild the net, the vocabulary."""
        blob = {"format": FILE_FORMAT, "selector_config": asdict(self.config), "spec": asdict(self.spec),
                "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()}}
        if self.vocab is not None:
            blob["vocab"] = list(self.vocab)
        return blob

    def save(self, path: str | Path) -> Path:
        """Write :meth:`export` atomically: a crash never leaves a half-written file under ``path``."""
        return save_torch_atomic(self.export(), path)

    @classmethod
    def load(cls, path: str | Path | bytes) -> "Selector":
        """Rebuild a network from a file written by :meth:`save` (older files of the same format too), or from
        such a file's contents."""
        blob = read_selector_file(path)
        net = cls(SelectorConfig(**blob["selector_config"]), DataSpec(**blob["spec"]))
        try:
            net.load_state_dict(blob["state_dict"])
        except RuntimeError as e:
            raise ValueError(f"{path}: weights do not fit the network it describes: {e}") from None
        net.vocab = blob.get("vocab")
        return net


def _check_ids(name: str, t: torch.Tensor) -> None:
    if t.dtype == torch.bool or t.is_complex():
        raise TypeError(f"selector input '{name}' must hold integer ids, got {t.dtype}")
    if t.is_floating_point() and not torch.equal(t, t.round()):
        raise TypeError(f"selector input '{name}' must hold integer ids, got {t.dtype} with fractions")


_SOFTMAX_REDUNDANT = re.compile(r"family\.heads\.\d+\.(out|age_bias)\.bias")


def _upgrade(blob: dict) -> dict:
    """Bring a file of format memsel.selector/1 written by an older memsel to the current layout.

    The first files held only the ``ff`` network with its scoring layer at the top level
    (``score_hidden``, ``score_out``) and ``position_encoding`` instead of ``encoder``.
    """
    config = asdict(SelectorConfig.from_saved(blob["selector_config"]))
    state = dict(blob["state_dict"])
    if "score_hidden.weight" in state:
        head = "family.heads.0."
        for old in ("score_hidden.weight", "score_hidden.bias", "score_out.weight", "score_out.bias"):
            layer, param = old.split(".")
            state[head + ("hidden." if layer == "score_hidden" else "out.") + param] = state.pop(old)
        if not config["recency"]:  # the old layer kept an always-zero age block
            state[head + "hidden.weight"] = state[head + "hidden.weight"][:, :2 * config["embed_dim"]]
    if config.get("attention", "softmax") == "softmax":
        # Files from before the score constants a softmax cancels were dropped: the values are irrelevant.
        state = {k: v for k, v in state.items() if not _SOFTMAX_REDUNDANT.fullmatch(k)}
    return {**blob, "selector_config": config, "state_dict": state}


def read_selector_file(path: str | Path | bytes) -> dict:
    """Load a file written by :meth:`Selector.save` (in the current layout), refusing anything else clearly;
    ``bytes`` are such a file's contents (a selector that travels inside a config, memsel.rl)."""
    if isinstance(path, bytes):
        import tempfile

        with tempfile.TemporaryDirectory(prefix="memsel-selector-") as folder:
            (Path(folder) / "selector.pt").write_bytes(path)
            return read_selector_file(Path(folder) / "selector.pt")
    blob = load_torch_file(path, FILE_FORMAT, "selector", "run `memsel pretrain` first, or check the path")
    vocab = blob.get("vocab")
    if vocab is not None and len(vocab) != blob["spec"]["vocab_size"]:
        raise ValueError(f"{path}: its vocabulary has {len(vocab)} tokens, its network {blob['spec']['vocab_size']}")
    try:
        return _upgrade(blob)
    except (KeyError, TypeError) as e:
        raise ValueError(f"{path}: a memsel selector file with an unreadable configuration: {e}") from None


def recency_prior(ages: torch.Tensor, mask: torch.Tensor, decay: float) -> torch.Tensor:
    """The temporal bias: p(memory) ~ exp(-decay * age) over real memories, 0 on padding. (B, N)"""
    mask = mask > 0
    logits = masked_fill_min(-decay * ages.to(torch.float32), mask)
    return F.softmax(logits, dim=-1) * mask

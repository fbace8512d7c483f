"""The manager network and its file: a :class:`memsel.network.Selector` that scores which of K+1 candidates to evict.

Pure PyTorch (no Lightning, Ray or MLflow). At a decision the manager sees the selector's observation keys:
    memories (B, K+1, L)  the K held memories (oldest first) and the newcomer last
    mask     (B, K+1)     1 where a candidate exists      query (B, L)  the newcomer's tokens
    ages     (B, K+1)     t - arrival (0 for the newcomer)
and its logits (B, K+1) say which to evict; the argmax K (the newcomer's index) drops the newcomer. So the
selector's RLModule and distillation learner serve it unchanged.

A manager file is a selector file (:meth:`Selector.save`'s format) with a ``manager`` entry holding
``slots`` (K) and ``kind`` ("memsel.manager"); :func:`load_manager` refuses a plain selector file.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from memsel.data.encode import DataSpec
from memsel.files import save_torch_atomic
from memsel.manager.streams import EvictionPolicy, Mixture, Oracle, oracle_decisions
from memsel.network import Selector, masked_fill_min, read_selector_file
from memsel.selector_configs import SelectorConfig

log = logging.getLogger(__name__)

MANAGER_KIND = "memsel.manager"


def manager_spec(spec: DataSpec, k: int) -> DataSpec:
    """The manager's shapes for data of ``spec``: K+1 candidates, ages up to the longest story (slots)."""
    return replace(spec, max_memories=max(k + 1, spec.max_memories))


def build_manager(config: SelectorConfig, spec: DataSpec, k: int) -> Selector:
    """A fresh manager network for K slots over data of ``spec`` (one hop: a decision is one choice)."""
    return Selector(replace(config, hops=1), manager_spec(spec, k))


def save_manager(net: Selector, k: int, path: str | Path) -> Path:
    """Write the network as a manager file for K = ``k`` slots (atomically)."""
    return save_torch_atomic({**net.export(), "manager": {"kind": MANAGER_KIND, "slots": int(k)}}, path)


def load_manager(path: str | Path | bytes) -> tuple[Selector, int]:
    """(network, K) from a manager file; a selector file without the manager entry is refused."""
    blob = read_selector_file(path)
    info = blob.get("manager")
    if not isinstance(info, dict) or info.get("kind") != MANAGER_KIND:
        where = "the given bytes" if isinstance(path, bytes) else path
        raise ValueError(f"{where}: a selector file, not a memory manager (train one with `memsel manager train`)")
    net = Selector(SelectorConfig(**blob["selector_config"]), DataSpec(**blob["spec"]))
    net.load_state_dict(blob["state_dict"])
    net.vocab = blob.get("vocab")
    return net.eval(), int(info["slots"])


@torch.no_grad()
def greedy_rollout(net: Selector, memories: np.ndarray, counts: np.ndarray, k: int,
                   record: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """Run the manager greedily over S streams at once.

    ``memories`` (S, N, L) token ids, stream s's statements in slots 0..counts[s]-1 (story order).
    Returns the final memory (S, K) (statement indices, oldest first, -1 = empty) and with ``record`` the
    memory before each arrival, (S, N+1, K): [:, t] = what a question after t statements sees.
    """
    s_count, n, _ = memories.shape
    device = next(net.parameters()).device
    emb = net.encode_memories(torch.as_tensor(memories, device=device))  # (S, N, d)
    held = np.full((s_count, k), -1, dtype=np.int64)
    size = np.zeros(s_count, dtype=np.int64)
    snaps = np.full((s_count, n + 1, k), -1, dtype=np.int64) if record else None
    for t in range(n):
        if record:
            snaps[:, t] = held
        arriving = t < counts
        filling = arriving & (size < k)
        held[filling, size[filling]] = t
        size[filling] += 1
        rows = np.nonzero(arriving & ~filling)[0]
        if len(rows):
            held[rows] = _decide(net, emb, held[rows], rows, t, k)
    if record:
        snaps[:, n] = held
    return held, snaps


def _choose(net: Selector, emb: torch.Tensor, held: np.ndarray, rows: np.ndarray,
            t: int) -> tuple[np.ndarray, np.ndarray]:
    """Greedy decisions for full memories ``held`` (B, K) of ``rows`` of ``emb`` (S, N, d) at arrival ``t``:
    the candidates (B, K+1) and the choice (B,) in 0..K."""
    cand = np.concatenate([held, np.full((len(rows), 1), t)], axis=1)  # (B, K+1)
    r = torch.as_tensor(rows, device=emb.device)
    c = torch.as_tensor(cand, device=emb.device)
    x = emb[r[:, None], c]  # (B, K+1, d)
    ages = torch.as_tensor(t - cand, device=emb.device)  # (B, K+1)
    mask = torch.ones_like(ages, dtype=torch.bool)
    return cand, net.score(x, emb[r, t], ages, mask).argmax(-1).cpu().numpy()


def _decide(net: Selector, emb: torch.Tensor, held: np.ndarray, rows: np.ndarray, t: int, k: int) -> np.ndarray:
    """One batched decision for full memories ``held`` (B, K) of ``rows`` at arrival ``t``: the new (B, K)."""
    cand, choice = _choose(net, emb, held, rows, t)
    keep = np.ones_like(cand, dtype=bool)
    keep[np.arange(len(rows)), choice] = False
    return cand[keep].reshape(len(rows), k)  # story order kept: the newcomer (largest index) stays last


class ManagerPolicy(EvictionPolicy):
    """The greedy manager as an eviction policy, one decision at a time (DAgger's rollouts; the same choices
    as :func:`greedy_rollout`). ``tokens`` maps a stream's source to its (T, L) token ids."""

    name = "manager"

    def __init__(self, net: Selector, tokens: dict[str, np.ndarray]):
        self.net, self.tokens = net, tokens
        self.emb: torch.Tensor | None = None

    @torch.no_grad()
    def reset(self, stream):
        device = next(self.net.parameters()).device
        tokens = torch.as_tensor(self.tokens[stream.source], device=device)[None]  # (1, T, L)
        self.emb = self.net.encode_memories(tokens)  # (1, T, d)

    @torch.no_grad()
    def decide(self, held, t):
        return int(_choose(self.net, self.emb, held[None], np.zeros(1, dtype=np.int64), t)[1][0])


def dagger_decisions(net: Selector, split: tuple[list, list[np.ndarray]], k: int, beta: float,
                     seed: int) -> dict[str, np.ndarray]:
    """One DAgger round's data: the manager ``net`` (greedy; the oracle instead with probability ``beta`` per
    decision) rolled out over ``split``'s stories, every state it reaches labelled by the oracle from there."""
    streams, tokens = split
    learner = ManagerPolicy(net.eval(), {s.source: t for s, t in zip(streams, tokens)})
    return oracle_decisions(streams, tokens, k, Mixture(learner, Oracle(), beta, seed))


def manager_retention(net: Selector, streams: list, tokens: list[np.ndarray], k: int) -> float:
    """Retention of the greedy manager on ``streams`` (memsel.manager.streams.Stream) with ``tokens`` (T, L) each."""
    from memsel.manager.streams import snapshot_hits, stack_tokens

    memories, counts = stack_tokens(tokens)
    _, snaps = greedy_rollout(net, memories, counts, k, record=True)
    hits, pairs = snapshot_hits(streams, snaps)
    return hits / pairs if pairs else float("nan")


def eviction_loss(logits: torch.Tensor, best: torch.Tensor, mask: torch.Tensor, ages: torch.Tensor,
                  recency_weight: float, decay: float, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Pretraining loss of ``logits`` (B, K+1), the mean over decisions (weighted by ``weight`` (B,) when given) of
    (1 - recency_weight) * the cross-entropy to the oracle's decision, as the negative log of the mass on the
    decisions Belady's rule allows (``best`` (B, K+1) bool: ties are all right, so the network may put its mass
    on any of them), plus recency_weight * the cross-entropy to the eviction prior p ~ exp(decay * age) over the
    candidates ``mask`` (the older, the likelier: the selector's temporal bias turned round, FIFO-like)."""
    valid = mask > 0
    logp = F.log_softmax(logits, dim=-1)  # (B, K+1)
    oracle = -torch.logsumexp(logp.masked_fill(~(best & valid), -1e9), dim=-1)  # (B,)
    prior = F.softmax(masked_fill_min(decay * ages.to(logits.dtype), valid), dim=-1) * valid
    per = (1 - recency_weight) * oracle - recency_weight * (prior * logp).sum(-1)  # (B,)
    if weight is None:
        return per.mean()
    return (weight * per).sum() / weight.sum().clamp(min=1e-12)

"""The pretraining losses as plain PyTorch functions of tensors (no Lightning): the selection target at
each hop, the weak-supervision hints (answer, query, bridge) and the whole loss of a batch.

memsel.pretrain's LightningModule calls :func:`pretraining_loss` and only logs and optimises; every
function here can be tested on a hand-made batch. Shapes: B questions, N memory slots, L tokens per
sentence, V vocabulary, S = 2**COVER_WORDS bridge states. Every tensor made here lives on the device
of the inputs, so the same code runs on the CPU and on a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from memsel.config import PretrainConfig
from memsel.network import recency_prior

COVER_WORDS = 3
"""The bridge hint asks a chain to hold at most this many of the question's content words (2 in bAbI)."""

IMPOSSIBLE = -1e9
"""The log-probability of what cannot happen: finite, so that sums and log-sum-exps of it stay NaN-free,
and far below any sum of real log-probabilities of a softmax over finite logits."""


def hop_target(kind: str, label: torch.Tensor, prior: torch.Tensor, recency_weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, N) target and (B,) row weight at one hop for ``pretrain.target`` ``kind``: ``label`` (B, N)
    the hop's supporting fact (all False where it is outside the slots or there is none), ``prior``
    (B, N) the temporal prior. ``supporting`` gives rows without a label weight 0; ``mixed`` falls back
    to the prior there."""
    has = label.any(-1)  # (B,)
    if kind == "recency":
        return prior, torch.ones_like(has, dtype=prior.dtype)
    labels = label.to(prior.dtype)
    if kind == "supporting":
        return labels, has.to(prior.dtype)
    mixed = (1 - recency_weight) * labels + recency_weight * prior
    return torch.where(has.unsqueeze(-1), mixed, prior), torch.ones_like(has, dtype=prior.dtype)


def marginal_nll(logp: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """(...,) -log of the probability mass that ``logp`` (..., N) puts on the ``allowed`` (..., N) entries
    (about -IMPOSSIBLE where none is allowed)."""
    return -torch.logsumexp(logp.masked_fill(~allowed, IMPOSSIBLE), dim=-1)


def holds_answer(memories: torch.Tensor, answer: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, N) real memories (``mask`` (B, N) bool) of ``memories`` (B, N, L) that hold the ``answer`` (B,) word."""
    return (memories == answer[:, None, None]).any(-1) & mask


def query_words_held(memories: torch.Tensor, query: torch.Tensor, content: torch.Tensor,
                     mask: torch.Tensor) -> torch.Tensor:
    """(B, N, L) True where real memory n holds the question's word l and that word is a content word
    (``content`` (V,) bool; ``query`` (B, L))."""
    words = content[query] & (query > 0)  # (B, L) the query's content words
    held = (memories.unsqueeze(-1) == query[:, None, None, :]).any(2)  # (B, N, L)
    return held & words.unsqueeze(1) & mask.unsqueeze(-1)


def shares_query_word(memories: torch.Tensor, query: torch.Tensor, content: torch.Tensor,
                      mask: torch.Tensor) -> torch.Tensor:
    """(B, N) memories that share a content word with the question."""
    return query_words_held(memories, query, content, mask).any(-1)


def shared_words(memories: torch.Tensor, content: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, N, N) True where two different real memories share a content word: the bridge's links."""
    words = content[memories] & (memories > 0)  # (B, N, L)
    same = memories[:, :, None, :, None] == memories[:, None, :, None, :]  # (B, N, N, L, L)
    both = words[:, :, None, :, None] & words[:, None, :, None, :]
    pair = (same & both).flatten(-2).any(-1)  # (B, N, N)
    eye = torch.eye(mask.shape[1], dtype=torch.bool, device=mask.device)
    return pair & ~eye & mask[:, :, None] & mask[:, None, :]


def query_word_bits(memories: torch.Tensor, query: torch.Tensor, content: torch.Tensor,
                    mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Which of the question's content words each memory holds, as bits: (B, N) long, and (B,) the
    bits of all of them. Only words that some real memory of the row holds count (a word no memory
    holds can be covered by no chain), each once, the first :data:`COVER_WORDS` of them."""
    length = query.shape[1]
    earlier = torch.tril(torch.ones(length, length, dtype=torch.bool, device=query.device), -1)  # (L, L)
    repeat = ((query.unsqueeze(-1) == query.unsqueeze(1)) & earlier).any(-1)  # (B, L) the same word came before
    held = query_words_held(memories, query, content, mask)  # (B, N, L)
    counted = ~repeat & held.any(1)  # (B, L)
    rank = counted.long().cumsum(-1) - 1  # (B, L) the bit of each counted word
    counted = counted & (rank < COVER_WORDS)
    bit = torch.where(counted, 1 << rank.clamp(min=0), 0)  # (B, L)
    return (held.long() * bit.unsqueeze(1)).sum(-1), bit.sum(-1)  # each word once: bits, not a count


def chain_ends(logps: list[torch.Tensor], link: torch.Tensor, bits: torch.Tensor, full: torch.Tensor,
               mask: torch.Tensor, hops: torch.Tensor) -> torch.Tensor:
    """(B, N) log P(the row's hops form a chain that ends at memory m and covers the ``full`` (B,) word
    bits), summed over chains m_1 .. m_k (k = ``hops`` (B,)) of prod_h p_h(m_h), where m_1 holds a
    question word, each m_h shares a content word with m_{h-1} (``link`` (B, N, N)) and ``bits`` (B, N)
    are the question words each memory holds; ``logps`` one (B, N) log-probability per hop.

    The dynamic programme runs in log space hop by hop over (memory, words covered so far) states: a
    (B, N, N, S) log-sum-exp per hop. Rows without such a chain stay near IMPOSSIBLE."""
    states = 1 << COVER_WORDS
    s = torch.arange(states, device=mask.device)
    # grow[b, j, s, t]: reading memory j in state s (words covered) leads to state t = s | bits(j)
    grow = (s[None, None, :] | bits.unsqueeze(-1)).unsqueeze(-1) == s  # (B, N, S, S)
    start = F.one_hot(bits, states).bool() & ((bits > 0) & mask).unsqueeze(-1)  # (B, N, S)
    log_v = torch.where(start, logps[0].unsqueeze(-1), IMPOSSIBLE)  # (B, N, S) chains so far, ending at m, in s
    ends = torch.full_like(logps[0], IMPOSSIBLE)
    goal = F.one_hot(full, states).bool().unsqueeze(1)  # (B, 1, S)
    for h in range(1, len(logps)):
        step = torch.logsumexp(log_v.unsqueeze(2) + torch.where(link, 0.0, IMPOSSIBLE).unsqueeze(-1), dim=1)  # (B, N, S)
        log_v = torch.logsumexp(step.unsqueeze(-1) + torch.where(grow, 0.0, IMPOSSIBLE), dim=2) + logps[h].unsqueeze(-1)
        last = (hops == h + 1).unsqueeze(-1)  # (B, 1)
        ends = torch.where(last, torch.logsumexp(log_v.masked_fill(~goal, IMPOSSIBLE), dim=-1), ends)
    return ends


def bridge_hint(memories: torch.Tensor, query: torch.Tensor, answer: torch.Tensor, content: torch.Tensor,
                mask: torch.Tensor, logps: list[torch.Tensor], hops: torch.Tensor) -> torch.Tensor | None:
    """-log P(the hops form a chain), the mean over multi-hop rows where a chain exists (None: no row).

    P = sum over chains m_1 .. m_k of prod_h p_h(m_h), where m_1 holds a content word of the
    question, each m_h shares a content word with m_{h-1}, m_k holds the answer word, and the
    chain's memories hold every content word of the question that the story holds (a question
    word that no hop reads would be ignored). ``memories`` (B, N, L), ``query`` (B, L), ``answer``
    (B,), ``content`` (V,) bool, ``mask`` (B, N) bool, ``logps`` one (B, N) per hop, ``hops`` (B,)."""
    holds = holds_answer(memories, answer, mask)  # (B, N)
    link = shared_words(memories, content, mask)  # (B, N, N)
    bits, full = query_word_bits(memories, query, content, mask)  # (B, N), (B,)
    ends = chain_ends(logps, link, bits, full, mask, hops)  # (B, N)
    # Any chain is a sum of real memories' log-probabilities, far above IMPOSSIBLE / 2.
    rows = (hops > 1) & ((ends > IMPOSSIBLE / 2) & holds).any(-1)
    if not rows.any():
        return None
    return marginal_nll(ends, holds)[rows].mean()


def answer_hint(last_logp: torch.Tensor, holds: torch.Tensor) -> torch.Tensor | None:
    """-log P(the last hop picks a memory holding the answer word), the mean over rows where one does
    (None: no row). ``last_logp`` (B, N) each row's log-probabilities at its last hop; ``holds`` (B, N)."""
    rows = holds.any(-1)  # (B,)
    if not rows.any():
        return None
    return marginal_nll(last_logp, holds)[rows].mean()


def query_hint_at(logp: torch.Tensor, shares: torch.Tensor, hops: torch.Tensor, h: int) -> tuple[torch.Tensor, int]:
    """The query hint at hop ``h``: the sum over its rows of -log P(the hop picks a memory sharing a
    content word with the question), and the number of rows. A row counts at its first hop and every
    hop before its last, where such a memory exists. ``logp`` (B, N) the hop's log-probabilities;
    ``shares`` (B, N) from :func:`shares_query_word`; ``hops`` (B,)."""
    rows = shares.any(-1) & ((hops > h + 1) | (h == 0))  # (B,)
    count = int(rows.sum())
    return marginal_nll(logp, shares)[rows].sum(), count


@dataclass
class Unrolled:
    """What :func:`unroll` gives: the hops' (B, N) log-probabilities and reads, each row's
    log-probabilities at its last hop, the selection loss, the argmax's hit rate on labelled hops, and
    the query hint's mean over hops and rows (None when not asked for or no row has one)."""

    logps: list[torch.Tensor]
    reads: list[torch.Tensor]
    last_logp: torch.Tensor
    selection_loss: torch.Tensor
    hop_accuracy: torch.Tensor | float
    query_hint: torch.Tensor | None = None


def unroll(selector: nn.Module, batch: dict[str, torch.Tensor], hops: torch.Tensor, cfg: PretrainConfig,
           soft: bool, shares: torch.Tensor | None = None) -> Unrolled:
    """Run ``selector`` hop by hop on ``batch`` (``hops`` (B,) selections per row) against the
    ``cfg.target`` target at each hop. The next hop sees what this one read in ``selected``: with
    ``soft`` the softmax of its logits (weak supervision: gradients flow through the choices), else
    teacher forcing: the true fact where there is one, else the prior's pick. With ``shares`` (B, N)
    (:func:`shares_query_word`) the query hint is summed hop by hop as well."""
    obs = {k: batch[k] for k in ("memories", "mask", "query", "ages")}
    mask = batch["mask"] > 0  # (B, N)
    b, n = mask.shape
    selected = torch.zeros(b, n, device=mask.device)
    taken = torch.zeros(b, n, dtype=torch.bool, device=mask.device)
    last_logp = torch.zeros(b, n, device=mask.device)
    logps, reads, sel_loss, sel_rows, hits, labelled, hint, hinted = [], [], 0.0, 0.0, 0.0, 0.0, 0.0, 0
    for h in range(int(hops.max()) if b else 0):
        active = (hops > h).to(selected.dtype)  # (B,)
        logits = selector({**obs, "selected": selected})  # (B, N)
        logp = F.log_softmax(logits, dim=-1)
        last_logp = torch.where((hops == h + 1).unsqueeze(-1), logp, last_logp)
        logps.append(logp)
        if shares is not None:  # here, not after the loop: the same autograd order, so bit-identical gradients
            total, count = query_hint_at(logp, shares, hops, h)
            if count:
                hint, hinted = hint + total, hinted + count
        prior = recency_prior(batch["ages"], mask & ~taken, cfg.recency_decay)  # (B, N)
        label = (batch["support_rank"] == h + 1) & mask  # (B, N)
        target, weight = hop_target(cfg.target, label, prior, cfg.recency_weight)
        weight = weight * active
        sel_loss = sel_loss + (-(target * logp).sum(-1) * weight).sum()
        sel_rows = sel_rows + weight.sum()
        has = (label.any(-1) & (hops > h)).to(selected.dtype)  # (B,) rows with a label at this hop
        hits = hits + (label.gather(-1, logits.argmax(-1, keepdim=True)).squeeze(-1) * has).sum()
        labelled = labelled + has.sum()
        if soft:
            read = F.softmax(logits, dim=-1) * mask
        else:
            pick = F.one_hot(prior.argmax(-1), n).bool() & mask
            read = torch.where(label.any(-1, keepdim=True), label, pick).to(selected.dtype)
            taken = taken | (read.bool() & (hops > h).unsqueeze(-1))
        read = read * active.unsqueeze(-1)
        reads.append(read)
        selected = selected + read
    return Unrolled(logps, reads, last_logp, sel_loss / max(float(sel_rows), 1.0), hits / max(float(labelled), 1.0),
                    hint / hinted if hinted else None)


def weak_hints(batch: dict[str, torch.Tensor], unrolled: Unrolled, hops: torch.Tensor, content: torch.Tensor,
               cfg: PretrainConfig) -> list[tuple[str, float, torch.Tensor]]:
    """The weak-supervision hints that apply to ``batch``, as (metric name, weight, loss): they read the
    answer word, the question and the memories' words, never the supporting-fact labels."""
    memories, query, mask = batch["memories"], batch["query"], batch["mask"] > 0
    terms = []
    if cfg.answer_hint > 0:
        # The answer is read from the last memory chosen (answers only, no labels).
        hint = answer_hint(unrolled.last_logp, holds_answer(memories, batch["answer"], mask))
        if hint is not None:
            terms.append(("answer_hint_loss", cfg.answer_hint, hint))
    if cfg.bridge_hint > 0 and len(unrolled.logps) > 1:
        chain = bridge_hint(memories, query, batch["answer"], content, mask, unrolled.logps, hops)
        if chain is not None:
            terms.append(("bridge_hint_loss", cfg.bridge_hint, chain))
    if unrolled.query_hint is not None:
        # Hops before the last start from the question: content words (not the most frequent words) link them.
        terms.append(("query_hint_loss", cfg.query_hint, unrolled.query_hint))
    return terms


def pretraining_loss(selector: nn.Module, reader: nn.Module | None, batch: dict[str, torch.Tensor],
                     hops: torch.Tensor, content: torch.Tensor, cfg: PretrainConfig,
                     weak: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The pretraining loss of ``batch`` and its detached parts (metric name -> value).

    ``hops`` (B,) selections per question; ``content`` (V,) bool, the content words; ``reader`` the
    answer reader (None without an answer loss); ``weak``: no labels, so the selection loss is the
    recency prior's, scaled by ``cfg.recency_weight``, next to the hints and the answer loss, which
    trains the selector through its soft choices."""
    shares = None
    if weak and cfg.query_hint > 0:
        shares = shares_query_word(batch["memories"], batch["query"], content, batch["mask"] > 0)  # (B, N)
    unrolled = unroll(selector, batch, hops, cfg, soft=weak, shares=shares)
    loss = unrolled.selection_loss
    parts = {"selection_loss": loss.detach(), "hop_accuracy": unrolled.hop_accuracy}
    if weak:
        loss = cfg.recency_weight * loss
        for name, weight, term in weak_hints(batch, unrolled, hops, content, cfg):
            parts[name] = term.detach()
            loss = loss + weight * term
    if reader is not None:
        answer_logits = reader(batch["memories"], batch["query"], torch.stack(unrolled.reads, 1))  # (B, V)
        answer_loss = F.cross_entropy(answer_logits, batch["answer"])
        parts["answer_loss"] = answer_loss.detach()
        loss = loss + cfg.answer_weight * answer_loss
    return loss, parts

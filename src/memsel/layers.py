"""Small building blocks that the selector families (memsel.families) are made of. Pure PyTorch.

Shapes: B batch rows, N memory slots, d = embed_dim, h = hidden_dim, H heads, dk = d / H.
Every block that mixes information across memories takes the boolean slot mask (B, N) and makes
sure that a padded slot never changes what a real memory gets.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

# Scoring temporaries are computed this many floats at a time (the additive score's B * chunk * h
# hidden activations, the cross-attention's g * H * N head scores), so that they stay in a core's
# L2 cache instead of being written out to memory for N = 100k memories.
SCORE_CHUNK_FLOATS = 1 << 18


def neg_min(dtype: torch.dtype) -> float:
    """The dtype's finite minimum: the 'impossible' logit (finite, so softmax never gives NaN)."""
    return torch.finfo(dtype).min


class Ages:
    """Memory ages (B, N) and the embedding table that turns them into features.

    Families that feed ages through a linear map project the table first, (A, d) -> (A, out), then
    gather rows: A * d * out work instead of B * N * d * out, and no (B, N, d) tensor at all.
    """

    def __init__(self, index: torch.Tensor, embedding: nn.Embedding):
        self.index = index  # (B, N) long, clamped to the table
        self.embedding = embedding

    def embed(self) -> torch.Tensor:
        """Age embeddings. (B, N, d)"""
        return self.embedding(self.index)

    def table(self, layer: nn.Module, weight: torch.Tensor, bias: torch.Tensor | None = None,
              scale: float = 1.0) -> torch.Tensor:
        """``scale * (age_table @ weight.T + bias)``, one row per age. (A, out)

        ``layer`` owns ``weight``: under ``torch.inference_mode`` the result is kept on it until the
        table or a weight changes (their version counters move on every in-place update: optimiser
        steps, ``load_state_dict``; not on writes through ``.data``), so scoring a long list does
        not redo A * d * out work per call.
        """
        table = self.embedding.weight
        if not torch.is_inference_mode_enabled():
            return scale * F.linear(table, weight, bias)
        parts = (table, weight) if bias is None else (table, weight, bias)
        key = (scale, *((t.data_ptr(), t._version, tuple(t.shape), t.dtype) for t in parts))
        cached = getattr(layer, "_age_table", None)
        if cached is None or cached[0] != key:
            cached = (key, scale * F.linear(table, weight, bias))
            object.__setattr__(layer, "_age_table", cached)  # a plain attribute: not a buffer, not saved
        return cached[1]

    def gather(self, table: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Rows of a :meth:`table` for slots ``start:stop``. (B, stop - start, out)"""
        return F.embedding(self.index[:, start:stop], table)


class AdditiveScore(nn.Module):
    """Feed-forward (additive) attention: one score per memory, w . tanh(W [x*u, x, age] + b) + c.

    The (B, N, 3d) concatenation is never built. W splits into blocks W_p, W_m, W_a; the query
    folds into one weight per row, M_b = W_p diag(u_b) + W_m (times an optional channel gate), so
    the hidden layer is x @ M_b^T plus a gathered, pre-projected age table; memories go through it
    in chunks so that the (B, chunk, h) activations stay in cache. tanh(z) is evaluated as
    2 sigmoid(2z) - 1 (the same function, about 6x faster than torch.tanh on CPU).
    """

    def __init__(self, dim: int, hidden: int, age: bool, shift: bool = False):
        super().__init__()
        self.dim = dim
        self.hidden = nn.Linear((3 if age else 2) * dim, hidden)  # blocks [W_p | W_m | W_a]
        # c adds the same constant to every score: a softmax cancels it, so it would never learn (its
        # gradient is exactly 0). Stick-breaking's sigmoid shares do depend on it: ``shift`` keeps it there.
        self.out = nn.Linear(hidden, 1, bias=shift)

    def forward(self, x: torch.Tensor, u: torch.Tensor, ages: Ages | None = None,
                gate: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, N, d) memory features, u (B, d) query, gate (B, d) or None -> scores (B, N)."""
        b, n, d = x.shape
        w = self.hidden.weight  # (h, 2d or 3d)
        fold = w[:, :d] * u.unsqueeze(1) + w[:, d:2 * d]  # (B, h, d) = W_p diag(u) + W_m
        if gate is not None:
            fold = fold * gate.unsqueeze(1)  # x*g enters both blocks: scale their columns
        fold = 2.0 * fold.transpose(1, 2)  # (B, d, h); the 2 turns sigmoid(2z) into tanh below
        if ages is not None:
            table = ages.table(self, w[:, 2 * d:], self.hidden.bias, scale=2.0)  # (A, h), bias folded in
        else:
            bias = (2.0 * self.hidden.bias).expand(b, 1, -1)  # (B, 1, h) view, broadcast over slots
        w_out = 2.0 * self.out.weight.squeeze(0)  # (h,)
        # w . tanh(z) + c = w . (2 sigmoid(2z) - 1) + c = (2w) . sigmoid(2z) + (c - sum w)
        const = -self.out.weight.sum() if self.out.bias is None else self.out.bias - self.out.weight.sum()  # (1,)
        chunk = max(16, SCORE_CHUNK_FLOATS // max(1, b * fold.shape[-1]))
        scores = []
        for s in range(0, n, chunk):
            if ages is not None:  # in place on the freshly gathered rows: no extra copy (autograd-safe)
                z = ages.gather(table, s, s + chunk).baddbmm_(x[:, s:s + chunk], fold)  # (B, c, h)
            else:
                z = torch.baddbmm(bias, x[:, s:s + chunk], fold)  # (B, c, h)
            scores.append(z.sigmoid_() @ w_out)  # (B, c)
        return (torch.cat(scores, dim=1) if len(scores) > 1 else scores[0]) + const


class FeedForward(nn.Module):
    """Position-wise MLP d -> h -> d (GELU), applied to every memory on its own."""

    def __init__(self, dim: int, hidden: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class PreNormResidual(nn.Module):
    """x + f(LayerNorm(x)): the pre-norm residual wrapper of every residual and self-attention layer."""

    def __init__(self, dim: int, inner: nn.Module):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.inner = inner

    def forward(self, x: torch.Tensor, *args) -> torch.Tensor:
        return x + self.inner(self.norm(x), *args)


def residual_stack(dim: int, hidden: int, blocks: int, dropout: float) -> nn.Sequential:
    """``blocks`` pre-norm residual feed-forward blocks, per memory (no mixing across memories)."""
    return nn.Sequential(*[PreNormResidual(dim, FeedForward(dim, hidden, dropout)) for _ in range(blocks)])


class MaskedConv1d(nn.Module):
    """x + GELU(conv(x)) along the memory slots; padded slots read as zeros, like the conv's own padding.

    With padding after the real memories (as memsel encodes them), appending padded slots changes
    nothing; the result depends on slot order, so this block is not permutation equivariant.
    The convolution runs as ``kernel`` matrix products over the rows laid end to end (zeros between
    batch rows), in the (B, N, d) layout: no transposes to torch's channels-first convolution.
    """

    def __init__(self, dim: int, kernel: int):
        super().__init__()
        self.conv = nn.Conv1d(dim, dim, kernel, padding=kernel // 2)  # holds the weights (d, d, k)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # x (B, N, d), mask (B, N) bool -> (B, N, d)
        b, n, d = x.shape
        k = self.conv.kernel_size[0]
        p = k // 2
        seg = n + 2 * p  # a row with its p zero slots on either side
        rows = b * seg
        buf = x.new_zeros(rows + 2 * p, d)  # (B*(N+2p) + 2p, d)
        inner = buf[p:p + rows].view(b, seg, d)[:, p:p + n]  # (B, N, d) view into buf
        inner.copy_(x)
        inner.masked_fill_(~mask.unsqueeze(-1), 0.0)
        w = self.conv.weight  # (d_out, d_in, k); out[t] = sum_o w[..., o] @ in[t + o - p]
        y = torch.addmm(self.conv.bias, buf[0:rows], w[:, :, 0].T)  # (B*(N+2p), d)
        for o in range(1, k):
            y = y.addmm_(buf[o:o + rows], w[:, :, o].T)
        return x + F.gelu(y.view(b, seg, d)[:, p:p + n])


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the real memories of each row; zeros for a row without any. (B, N, d) -> (B, d)"""
    weights = mask.to(x.dtype)  # (B, N)
    total = torch.einsum("bn,bnd->bd", weights, x)  # (B, d); padded slots weigh exactly 0
    return total / weights.sum(-1, keepdim=True).clamp(min=1.0)


class SqueezeExcite(nn.Module):
    """Channel gates (B, d) in (0, 1): squeeze the list to its mean, excite conditioned on the query."""

    def __init__(self, dim: int, reduction: int):
        super().__init__()
        inner = max(1, dim // reduction)
        self.excite = nn.Sequential(nn.Linear(2 * dim, inner), nn.ReLU(), nn.Linear(inner, dim))

    def forward(self, x: torch.Tensor, u: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        squeezed = masked_mean(x, mask)  # (B, d)
        return torch.sigmoid(self.excite(torch.cat([squeezed, u], dim=-1)))  # (B, d)


class CrossAttentionMixture(nn.Module):
    """Multi-head attention from the query to the memories, read out as a mixture of its heads.

    Each head h has its own distribution softmax_j(q_h . k_hj / sqrt(dk) + bias_h(age_j)); the
    selection distribution is their mixture with query-dependent weights pi(u):
    log p(j) = logsumexp_h [log pi_h(u) + log softmax_j(...)]. A memory is likely when any head
    points at it, so heads can specialise. Keys are never built: q_h . (W_k x)_h = (W_k,h^T q_h) . x,
    a (B, N, d) x (B, d, H) product; long lists go a few rows at a time so the (H, N) scores stay
    in cache through the two softmax reductions.
    """

    def __init__(self, dim: int, heads: int, age: bool, shift: bool = False):
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim, bias=False)  # a key bias would add a per-head constant: no effect
        self.mix = nn.Linear(dim, heads) if heads > 1 else None  # one head: nothing to mix
        # The age layer's bias is a per-head constant too: each head's softmax cancels it, stick-breaking
        # does not (``shift``), as in AdditiveScore.
        self.age_bias = nn.Linear(dim, heads, bias=shift) if age else None

    def forward(self, x: torch.Tensor, u: torch.Tensor, ages: Ages | None, mask: torch.Tensor,
                order: torch.Tensor | None = None) -> torch.Tensor:
        """Log selection probabilities (B, N); with ``order`` (B, N) from :func:`recency_order` every head
        normalises its scores by stick-breaking (:func:`stick_breaking`) instead of softmax."""
        b, n, d = x.shape
        hd = self.heads
        dk = d // hd
        q = self.query(u).view(b, hd, dk)  # (B, H, dk)
        folded = torch.einsum("bhk,hkd->bhd", q, self.key.weight.view(hd, dk, d)) / math.sqrt(dk)  # (B, H, d)
        table = ages.table(self, self.age_bias.weight, self.age_bias.bias) if ages is not None else None  # (A, H)
        log_pi = F.log_softmax(self.mix(u), dim=-1).unsqueeze(-1) if self.mix is not None else None  # (B, H, 1)
        # Rows go in groups whose (g, H, N) scores stay in cache; for short lists that is the whole batch.
        group = max(1, SCORE_CHUNK_FLOATS // (hd * n))
        out = []
        for r in range(0, b, group):
            rows = slice(r, r + group)
            # Scores come out memory-major, (g, N, H): x @ folded^T reads x in its own row-major order,
            # which BLAS does 2-3x faster at N >= 100k than folded @ x^T. One copy then makes them
            # contiguous along memories, (g, H, N), for the per-head reductions below.
            if table is not None:
                s = torch.baddbmm(F.embedding(ages.index[rows], table), x[rows], folded[rows].transpose(1, 2))
            else:
                s = torch.bmm(x[rows], folded[rows].transpose(1, 2))
            s = s.transpose(1, 2).contiguous()  # (g, H, N)
            real = mask[rows]
            if not bool(real.all()):
                s.masked_fill_(~real.unsqueeze(1), neg_min(s.dtype))  # in place: nothing saved s yet
            if order is not None:  # stick-breaking log weights; the softmax or mixture below renormalises them
                s = stick_breaking(s, order[rows], real)  # (g, H, N)
            if log_pi is None:
                out.append((s - torch.logsumexp(s, dim=-1, keepdim=True)).squeeze(1))  # (g, N) log softmax
            else:
                out.append(self._mixture(s, log_pi[rows], real))
        return torch.cat(out) if len(out) > 1 else out[0]  # (B, N)

    @staticmethod
    def _mixture(s: torch.Tensor, log_pi: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """log sum_h pi_h softmax_j(s_hj): (g, H, N) head scores, (g, H, 1) log weights -> (g, N).

        One exp pass and a (1, H) x (H, N) product: p_j = sum_h (pi_h / z_h) exp(s_hj - max_j s_hj),
        instead of a logsumexp across heads, whose reduction runs across the memory-contiguous layout
        (2.5x slower at N = 16k). A real memory that every head puts more than e^-87 below its best
        would underflow to p = 0; then the group takes the exact logsumexp path instead. Padded slots
        come out at log(tiny) (the caller masks them), never -inf, so no NaN reaches a gradient.
        """
        e = (s - s.amax(-1, keepdim=True)).exp_()  # (g, H, N), each head's best = 1
        w = (log_pi.exp() / e.sum(-1, keepdim=True)).transpose(1, 2)  # (g, 1, H): pi_h / z_h
        p = torch.bmm(w, e).squeeze(1)  # (g, N) mixture probabilities
        tiny = torch.finfo(p.dtype).tiny
        if bool(p.amin() < tiny) and bool(((p < tiny) & real).any()):  # underflow at a real memory: exact way
            log_norm = torch.logsumexp(s, dim=-1, keepdim=True)  # (g, H, 1)
            return torch.logsumexp(s + (log_pi - log_norm), dim=1)
        return p.clamp(min=tiny).log()


# ------------------------------------------------------------------------------------ stick-breaking


def recency_order(ages: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Slot indices (B, N) from the most recent real memory (smallest age) to the oldest, padding last.
    Ties (equal ages, which real lists do not have) keep slot order."""
    key = torch.where(mask, ages.long(), torch.iinfo(torch.long).max)
    return key.argsort(dim=-1, stable=True)


def stick_breaking(s: torch.Tensor, order: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Stick-breaking attention over memories in recency order: scores (B, H, N) -> log weights (B, H, N).

    The most recent memory takes a share sigmoid(s) of the probability, the next one sigmoid(s) of
    what is left, and so on: p_j = sigmoid(s_j) * prod_{k more recent than j} (1 - sigmoid(s_k)).
    The result is log p_j, left unnormalised: the softmax over the memories that every caller applies,
    as to plain scores, renormalises it over the real ones (what no memory took is dropped). A good
    match therefore hides every older one whatever the distance between them, where softmax needs an
    age bias that outweighs the content scores' noise. Padded slots take nothing, leave everything and come out at
    the dtype's finite minimum; ``order`` is :func:`recency_order`.
    """
    real = mask.unsqueeze(1).expand_as(s)  # (B, H, N)
    idx = order.unsqueeze(1).expand_as(s)
    take = torch.where(real, F.logsigmoid(s), neg_min(s.dtype))  # log sigmoid(s_j)
    leave = torch.where(real, F.logsigmoid(-s), 0.0)  # log (1 - sigmoid(s_j))
    leave_sorted = leave.gather(-1, idx)
    before = leave_sorted.cumsum(-1) - leave_sorted  # sum over the more recent memories, in recency order
    return torch.empty_like(s).scatter(-1, idx, before) + take


# ------------------------------------------------------------------------------------ self-attention
# Three ways for memories to attend to each other; each takes q, k, v (B, H, N, dk) and the slot mask.


def full_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor,
                   chunk: int) -> torch.Tensor:
    """Every memory attends to every real memory: O(N^2) time; torch's CPU kernel keeps memory O(N)."""
    # A finite bias instead of a boolean mask: a row whose keys are all padding stays finite.
    bias = torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill(~mask, neg_min(q.dtype))
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias[:, None, None, :])  # (B, H, N, dk)


def chunked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor,
                      chunk: int) -> torch.Tensor:
    """Memories attend within consecutive blocks of ``chunk`` slots: O(N * chunk), not permutation equivariant."""
    b, hd, n, dk = q.shape
    pad = (-n) % chunk
    if pad:
        q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
        mask = F.pad(mask, (0, pad), value=False)
    c = (n + pad) // chunk

    def blocks(t: torch.Tensor) -> torch.Tensor:  # (B, H, c*chunk, dk) -> (B*c, H, chunk, dk)
        return t.view(b, hd, c, chunk, dk).transpose(1, 2).reshape(b * c, hd, chunk, dk)

    out = full_attention(blocks(q), blocks(k), blocks(v), mask.reshape(b * c, chunk), chunk)
    return out.view(b, c, hd, chunk, dk).transpose(1, 2).reshape(b, hd, c * chunk, dk)[:, :, :n]


def linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor,
                     chunk: int) -> torch.Tensor:
    """Kernelised attention with feature map elu + 1 (Katharopoulos et al., 2020): O(N * dk^2)."""
    fq = F.elu(q) + 1  # (B, H, N, dk)
    fk = (F.elu(k) + 1) * mask[:, None, :, None].to(k.dtype)  # padded keys contribute nothing
    kv = torch.einsum("bhnk,bhnv->bhkv", fk, v)  # (B, H, dk, dk)
    norm = torch.einsum("bhnk,bhk->bhn", fq, fk.sum(2)).clamp(min=1e-6)  # (B, H, N)
    return torch.einsum("bhnk,bhkv->bhnv", fq, kv) / norm.unsqueeze(-1)


ATTENTION = {"full": full_attention, "chunked": chunked_attention, "linear": linear_attention}


class MemoryAttention(nn.Module):
    """Multi-head self-attention among memories (the inner part of a pre-norm layer)."""

    def __init__(self, dim: int, heads: int, mode: str, chunk: int, dropout: float):
        super().__init__()
        self.heads, self.chunk, self.attend = heads, chunk, ATTENTION[mode]
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)  # 3 x (B, H, N, dk)
        out = self.attend(q, k, v, mask, self.chunk)  # (B, H, N, dk)
        return self.drop(self.proj(out.transpose(1, 2).reshape(b, n, d)))


class SelfAttentionLayer(nn.Module):
    """Pre-norm Transformer layer over the memory list; padded slots are masked as keys and zeroed after."""

    def __init__(self, dim: int, heads: int, hidden: int, mode: str, chunk: int, dropout: float):
        super().__init__()
        self.attention = PreNormResidual(dim, MemoryAttention(dim, heads, mode, chunk, dropout))
        self.feed_forward = PreNormResidual(dim, FeedForward(dim, hidden, dropout))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.feed_forward(self.attention(x, mask))
        return x.masked_fill(~mask.unsqueeze(-1), 0.0)  # (B, N, d)

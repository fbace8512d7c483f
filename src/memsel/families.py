"""The four selector families behind ``selector.kind``. Pure PyTorch.

Each family's config dataclass (its own settings, e.g. ``MHAConfig.num_heads``) registers it by
name in memsel.selector_configs, which stays free of torch so that configs load without it; a
family in a module of its own registers network and config together (``@FAMILIES.register``).

A family turns memory embeddings (B, N, d), a query (B, d), the memories' ages and the slot mask
into one unmasked score per memory (B, N). It has two parts:

- ``contextualise``: query-independent mixing along the memory list, run once per forward
  (identity for ``ff`` and ``se``; a convolution for ``conv1d``; self-attention for ``mha``);
- ``score(hop, ...)``: the query-dependent scoring, one head per hop (memsel.network runs the hops).
  With ``order`` (``selector.attention: stick_breaking``) the scores are stick-breaking log weights
  (memsel.layers.stick_breaking); either way the network's softmax normalises them.

Permutation equivariance (reordering the memories, with their ages and mask, reorders the scores
the same way) holds for ``ff``, ``se`` and ``mha`` with ``full`` or ``linear`` self-attention; it
does not hold for ``conv1d`` (a convolution reads neighbouring slots) nor for ``chunked``
self-attention (which memories share a block depends on their order). ``equivariant`` says so.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from memsel.selector_configs import Conv1dConfig, MHAConfig, SEConfig, SelectorConfig
from memsel.layers import (Ages, AdditiveScore, CrossAttentionMixture, MaskedConv1d, SelfAttentionLayer,
                           SqueezeExcite, stick_breaking)


class SelectorFamily(nn.Module):
    """Base of the families: documents the two calls memsel.network.Selector makes."""

    def equivariant(self) -> bool:
        """Whether scores are permutation equivariant over memory slots."""
        return True

    def contextualise(self, x: torch.Tensor, ages: Ages | None, mask: torch.Tensor) -> torch.Tensor:
        """Query-independent mixing along the list: (B, N, d) -> (B, N, d). Identity by default."""
        return x

    def score(self, hop: int, x: torch.Tensor, u: torch.Tensor, ages: Ages | None,
              mask: torch.Tensor, order: torch.Tensor | None = None) -> torch.Tensor:
        """Scores (B, N) of memories ``x`` (B, N, d) for query ``u`` (B, d) at hop ``hop``; padding unmasked.
        With ``order`` (B, N), memsel.layers.recency_order, stick-breaking log weights instead."""
        raise NotImplementedError


def one_head(scores: torch.Tensor, order: torch.Tensor | None, mask: torch.Tensor) -> torch.Tensor:
    """A single-score family's output: the scores, or with ``order`` their stick-breaking log weights."""
    return scores if order is None else stick_breaking(scores.unsqueeze(1), order, mask).squeeze(1)


class FeedForwardSelector(SelectorFamily):
    """``ff``: single-layer feed-forward (additive) attention, w . tanh(W [m*u, m, age] + b) + c."""

    def __init__(self, cfg: SelectorConfig):
        super().__init__()
        self.heads = nn.ModuleList(AdditiveScore(cfg.embed_dim, cfg.hidden_dim, cfg.recency,
                                                 shift=cfg.attention == "stick_breaking")
                                   for _ in range(cfg.hops))

    def score(self, hop, x, u, ages, mask, order=None):
        return one_head(self.heads[hop](x, u, ages), order, mask)


class ConvSelector(FeedForwardSelector):
    """``conv1d``: memories first see their neighbours in the list, x + GELU(conv(x)), then ``ff``'s scores."""

    def __init__(self, cfg: Conv1dConfig):
        super().__init__(cfg)
        self.conv = MaskedConv1d(cfg.embed_dim, cfg.conv_kernel)

    def equivariant(self) -> bool:
        return False

    def contextualise(self, x, ages, mask):
        return self.conv(x, mask)


class SqueezeExciteSelector(FeedForwardSelector):
    """``se``: channel gates from the list's mean and the query recalibrate every memory, then ``ff``'s scores.

    The gate multiplies the memory features channel-wise (x * g); it folds into the scoring weights,
    so recalibration costs one pass over the list (the mean), not a second copy of it.
    """

    def __init__(self, cfg: SEConfig):
        super().__init__(cfg)
        self.excite = nn.ModuleList(SqueezeExcite(cfg.embed_dim, cfg.se_reduction) for _ in range(cfg.hops))

    def score(self, hop, x, u, ages, mask, order=None):
        return one_head(self.heads[hop](x, u, ages, gate=self.excite[hop](x, u, mask)), order, mask)


class MultiHeadSelector(SelectorFamily):
    """``mha``: optional self-attention layers among memories, then multi-head cross-attention from the query.

    Self-attention costs O(N^2) with ``self_attention: full`` (fine for hundreds of memories, about
    a second per 16k-memory row on one core), O(N * attention_chunk) with ``chunked`` and
    O(N * d^2 / H) with ``linear``; with ``self_attention_layers: 0`` the family is linear in N.
    Ages enter the self-attention input as embeddings and every cross-attention head as a bias.
    """

    def __init__(self, cfg: MHAConfig):
        super().__init__()
        self.mode = cfg.self_attention
        self.layers = nn.ModuleList(
            SelfAttentionLayer(cfg.embed_dim, cfg.num_heads, cfg.hidden_dim, cfg.self_attention,
                               cfg.attention_chunk, cfg.dropout)
            for _ in range(cfg.self_attention_layers))
        self.heads = nn.ModuleList(CrossAttentionMixture(cfg.embed_dim, cfg.num_heads, cfg.recency,
                                                         shift=cfg.attention == "stick_breaking")
                                   for _ in range(cfg.hops))

    def equivariant(self) -> bool:
        return not (len(self.layers) and self.mode == "chunked")

    def contextualise(self, x, ages, mask):
        if not len(self.layers):
            return x
        if ages is not None:
            x = x + ages.embed()  # (B, N, d): the layers see when each memory happened
        for layer in self.layers:
            x = layer(x, mask)
        return x

    def score(self, hop, x, u, ages, mask, order=None):
        return self.heads[hop](x, u, ages, mask, order)

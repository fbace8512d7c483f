"""Pretraining batches are padded to the longest list of the batch, and the network scores them the same."""

from __future__ import annotations

import numpy as np
import torch

from memsel.config import SelectorConfig
from memsel.data.encode import DataSpec, EncodedSamples
from memsel.network import Selector
from memsel.pretrain import SampleDataset, collate_trimmed


def _data(lengths, n=12, length=4, vocab=20):
    rng = np.random.default_rng(0)
    s = len(lengths)
    mask = np.arange(n)[None, :] < np.array(lengths)[:, None]
    memories = np.where(mask[..., None], rng.integers(1, vocab, (s, n, length)), 0)
    ages = np.where(mask, np.array(lengths)[:, None] - 1 - np.arange(n)[None, :], 0)
    support = mask & (np.arange(n)[None, :] == 0)
    return EncodedSamples(memories, mask, rng.integers(1, vocab, (s, length)), ages, support,
                          rng.integers(1, vocab, s))


def test_a_batch_is_cut_to_its_longest_list_and_scores_the_same():
    data = _data([3, 5, 2])
    rows = [SampleDataset(data)[i] for i in range(3)]
    batch = collate_trimmed(rows)
    assert batch["memories"].shape == (3, 5, 4) and batch["mask"].shape == (3, 5)
    assert batch["query"].shape == (3, 4) and batch["n_support"].shape == (3,)
    full = torch.utils.data.default_collate(rows)
    torch.manual_seed(0)
    for attention in ("softmax", "stick_breaking"):
        net = Selector(SelectorConfig(kind="mha", embed_dim=8, num_heads=2, attention=attention), DataSpec(20, 12, 4))
        obs = ("memories", "mask", "query", "ages")
        short, long = net({k: batch[k] for k in obs}), net({k: full[k] for k in obs})
        assert torch.allclose(torch.log_softmax(short, -1), torch.log_softmax(long, -1)[:, :5], atol=1e-6)

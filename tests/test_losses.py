"""memsel.losses on tiny batches worked out by hand: hop targets, the recency prior's use under teacher
forcing, the answer / query / bridge hints, padding, and the same numbers on every device."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from memsel.config import PretrainConfig, SelectorConfig
from memsel.data.encode import DataSpec
from memsel.losses import (answer_hint, bridge_hint, hop_target, marginal_nll, pretraining_loss, query_hint_at,
                           query_words_held, shared_words, shares_query_word, unroll)
from memsel.network import Selector
from memsel.reader import AnswerReader

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU"))]


class FixedSelector(nn.Module):
    """Stands in for the network: hop h returns log ``probs[h]`` and records the ``selected`` it was given."""

    def __init__(self, probs: list[list[float]]):
        super().__init__()
        self.probs, self.seen = probs, []

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        self.seen.append(obs["selected"].clone())
        return torch.tensor([self.probs[len(self.seen) - 1]]).log()  # (1, N)


def story(**extra) -> dict[str, torch.Tensor]:
    """Three memories, oldest first: 0 = 'mary kitchen' (5 6), 1 = 'kitchen apple' (6 7), 2 = 'apple
    garden' (7 8); the question 'mary ?' (5 2), its answer 7 ('apple'); token 2 is no content word."""
    batch = {"memories": torch.tensor([[[5, 6], [6, 7], [7, 8]]]), "mask": torch.ones(1, 3, dtype=torch.bool),
             "query": torch.tensor([[5, 2]]), "ages": torch.tensor([[2, 1, 0]]), "answer": torch.tensor([7]),
             "support_rank": torch.tensor([[0, 0, 0]]), "n_support": torch.tensor([2])}
    return {**batch, **extra}


CONTENT = torch.tensor([False] * 5 + [True] * 4)  # (V,) 5..8 are content words


def test_hop_target_kinds_by_hand():
    label = torch.tensor([[False, False, True], [False, False, False]])  # row 1 has no label at this hop
    prior = torch.tensor([[0.5, 0.25, 0.25], [0.25, 0.25, 0.5]])  # dyadic: exact in float32
    target, weight = hop_target("mixed", label, prior, 0.5)
    assert target.tolist() == [[0.25, 0.125, 0.625], [0.25, 0.25, 0.5]] and weight.tolist() == [1.0, 1.0]
    target, weight = hop_target("supporting", label, prior, 0.5)
    assert target[0].tolist() == [0.0, 0.0, 1.0] and weight.tolist() == [1.0, 0.0]
    target, weight = hop_target("recency", label, prior, 0.5)
    assert torch.equal(target, prior) and weight.tolist() == [1.0, 1.0]


def test_supporting_target_teacher_forces_the_true_facts():
    """Facts 2 then 0: loss = mean of -log p_1(2), -log p_2(0); hop 2 sees fact 2 as selected."""
    net = FixedSelector([[0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    out = unroll(net, story(support_rank=torch.tensor([[2, 0, 1]])), torch.tensor([2]),
                 PretrainConfig(target="supporting"), soft=False)
    assert float(out.selection_loss) == pytest.approx((-math.log(0.5) - math.log(0.6)) / 2)
    assert float(out.hop_accuracy) == 1.0  # both argmaxes are the facts
    assert net.seen[0].tolist() == [[0, 0, 0]] and net.seen[1].tolist() == [[0, 0, 1]]
    assert torch.equal(out.last_logp, torch.tensor([[0.6, 0.3, 0.1]]).log())


def test_recency_target_follows_the_prior_and_takes_its_pick():
    """No labels: the target is exp(-d * age) normalised; the next hop leaves the prior's pick out."""
    d = math.log(2)  # prior 1 : 2 : 4 over ages 2, 1, 0
    net = FixedSelector([[0.25, 0.25, 0.5], [0.5, 0.25, 0.25]])
    out = unroll(net, story(), torch.tensor([2]), PretrainConfig(target="recency", recency_decay=d), soft=False)
    hop1 = -(1 * math.log(0.25) + 2 * math.log(0.25) + 4 * math.log(0.5)) / 7
    hop2 = -(1 * math.log(0.5) + 2 * math.log(0.25)) / 3  # memory 2 taken: 1 : 2 over the others
    assert float(out.selection_loss) == pytest.approx((hop1 + hop2) / 2, rel=1e-6)
    assert net.seen[1].tolist() == [[0, 0, 1]]
    assert float(out.hop_accuracy) == 0.0  # no labelled hop: 0 of 0


def test_marginal_likelihood_of_the_answer_hint():
    logp = torch.tensor([[0.2, 0.3, 0.5], [0.1, 0.1, 0.8]]).log()
    holds = torch.tensor([[True, False, True], [False, False, False]])  # row 1: no memory holds the answer
    assert float(marginal_nll(logp, holds)[0]) == pytest.approx(-math.log(0.7))
    assert float(answer_hint(logp, holds)) == pytest.approx(-math.log(0.7))  # the mean over row 0 only
    assert answer_hint(logp, torch.zeros_like(holds)) is None


def test_query_word_masks_and_the_query_hint():
    batch = story(query=torch.tensor([[5, 7]]))  # 'mary apple?': 5 in memory 0, 7 in memories 1 and 2
    held = query_words_held(batch["memories"], batch["query"], CONTENT, batch["mask"])  # (1, 3, 2)
    assert held[0].tolist() == [[True, False], [False, True], [False, True]]
    not_content = CONTENT.clone()
    not_content[7] = False
    assert shares_query_word(batch["memories"], batch["query"], not_content, batch["mask"]).tolist() == [[True, False, False]]
    shares = torch.tensor([[True, False, False]])
    logp = torch.tensor([[0.4, 0.4, 0.2]]).log()
    total, rows = query_hint_at(logp, shares, torch.tensor([3]), 0)
    assert rows == 1 and float(total) == pytest.approx(-math.log(0.4))
    assert query_hint_at(logp, shares, torch.tensor([2]), 1)[1] == 0  # a row's last hop asks for the answer instead
    assert query_hint_at(logp, shares, torch.tensor([3]), 1)[1] == 1


def test_shared_words_link_different_memories_by_content_words():
    batch = story()
    link = shared_words(batch["memories"], CONTENT, batch["mask"])[0]
    assert link.tolist() == [[False, True, False], [True, False, True], [False, True, False]]


def test_bridge_chain_probability_is_a_product_by_hand():
    """Only 0 holds the question's 'mary'; 0 links to 1 ('kitchen'), 1 to 2 ('apple'); 1 and 2 hold the answer.
    Two hops: the one chain 0 -> 1, P = p1(0) p2(1). Three: 0 -> 1 -> 2, P = p1(0) p2(1) p3(2)."""
    batch = story()
    p1, p2, p3 = [0.5, 0.3, 0.2], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6]
    logps = [torch.tensor([p]).log() for p in (p1, p2, p3)]

    def hint(hops):
        return float(bridge_hint(batch["memories"], batch["query"], batch["answer"], CONTENT, batch["mask"],
                                 logps[:hops], torch.tensor([hops])))

    assert hint(2) == pytest.approx(-math.log(0.5 * 0.6))
    assert hint(3) == pytest.approx(-math.log(0.5 * 0.6 * 0.6))
    one_hop = bridge_hint(batch["memories"], batch["query"], batch["answer"], CONTENT, batch["mask"], logps[:1],
                          torch.tensor([1]))
    assert one_hop is None  # a single hop is no chain


def small_problem(slots: int, garbage: bool) -> tuple[Selector, AnswerReader, dict[str, torch.Tensor]]:
    """The story in ``slots`` memory slots; the slots past 3 are padding, filled with words when ``garbage``."""
    spec = DataSpec(vocab_size=9, max_memories=5, max_sentence_len=2)
    torch.manual_seed(0)
    net = Selector(SelectorConfig(kind="mha", embed_dim=8, hidden_dim=8), spec)
    reader = AnswerReader(spec, 8, 2, [6, 7, 8])
    base = story(support_rank=torch.tensor([[0, 2, 1]]))
    pad = slots - 3
    fill = 7 if garbage else 0
    batch = dict(base, memories=torch.cat([base["memories"], torch.full((1, pad, 2), fill)], 1),
                 mask=torch.cat([base["mask"], torch.zeros(1, pad, dtype=torch.bool)], 1),
                 ages=torch.cat([base["ages"], torch.full((1, pad), 3 if garbage else 0)], 1),
                 support_rank=torch.cat([base["support_rank"], torch.full((1, pad), 1 if garbage else 0)], 1))
    return net, reader, batch


@pytest.mark.parametrize("weak", [False, True])
def test_padding_changes_nothing(weak):
    """Padding slots full of words (even a 'label' and the answer word) change no loss and no part."""
    cfg = PretrainConfig(target="recency" if weak else "mixed", answer_weight=1.0, answer_hint=1.0 * weak,
                         query_hint=1.0 * weak, bridge_hint=1.0 * weak, recency_weight=0.2)
    got = []
    for garbage in (False, True):
        net, reader, batch = small_problem(5, garbage)
        got.append(pretraining_loss(net, reader, batch, torch.tensor([2]), CONTENT, cfg, weak))
    (loss, parts), (loss2, parts2) = got
    assert parts.keys() == parts2.keys()
    assert weak == ("bridge_hint_loss" in parts)
    assert float(loss2.detach()) == pytest.approx(float(loss.detach()), abs=1e-6)
    for k in parts:
        assert float(parts2[k]) == pytest.approx(float(parts[k]), abs=1e-6), k


@pytest.mark.parametrize("device", DEVICES)
def test_losses_are_the_same_on_every_device(device):
    """Every tensor the losses make follows its inputs: the weak loss (all hints) runs on ``device`` and
    gives the CPU's numbers."""
    cfg = PretrainConfig(target="recency", answer_weight=1.0, answer_hint=1.0, query_hint=1.0, bridge_hint=1.0)
    net, reader, batch = small_problem(5, garbage=True)
    loss, parts = pretraining_loss(net, reader, batch, torch.tensor([3]), CONTENT, cfg, weak=True)
    on = {k: v.to(device) for k, v in batch.items()}
    loss_d, parts_d = pretraining_loss(net.to(device), reader.to(device), on, torch.tensor([3], device=device),
                                       CONTENT.to(device), cfg, weak=True)
    assert loss_d.device.type == device
    loss_d.backward()  # the graph is on the device too
    assert float(loss_d.detach()) == pytest.approx(float(loss.detach()), abs=1e-5)
    for k in parts:
        assert float(parts_d[k]) == pytest.approx(float(parts[k]), abs=1e-5), k

"""The manager network (memsel.manager.network) and the budget strategy 'managed' (memsel.manager.budget)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from memsel.config import ConfigError, load_config
from memsel.data.budget import Budget, apply_budget
from memsel.data.encode import DataSpec, EncodedSamples
from memsel.manager.budget import with_run_manager
from memsel.manager.network import (ManagerPolicy, build_manager, dagger_decisions, eviction_loss, greedy_rollout, load_manager,
                                    manager_retention, save_manager)
from memsel.manager.streams import EvictionPolicy, Oracle, Stream, decision_obs, run_policy
from memsel.network import Selector
from memsel.selector_configs import SelectorConfig

SPEC = DataSpec(vocab_size=40, max_memories=12, max_sentence_len=3)


def _net(kind: str = "ff", k: int = 3, seed: int = 0) -> Selector:
    torch.manual_seed(seed)
    return build_manager(SelectorConfig(kind=kind, embed_dim=8, hidden_dim=8), SPEC, k).eval()


def _tokens(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(2, 40, size=(n, 3))


class NetPolicy(EvictionPolicy):
    """The manager one decision at a time, from memsel.manager.streams.decision_obs: the reference."""

    def __init__(self, net, tokens):
        self.net, self.tokens = net, tokens

    def decide(self, held, t):
        obs = {k: torch.as_tensor(v)[None] for k, v in decision_obs(self.tokens, held, t).items()}
        with torch.no_grad():
            return int(self.net(obs).argmax(-1))


@pytest.mark.parametrize("kind", ["ff", "mha"])
def test_batched_rollout_matches_one_decision_at_a_time(kind):
    net, k = _net(kind), 3
    tokens = [_tokens(10, 1), _tokens(7, 2), _tokens(2, 3)]
    memories = np.zeros((3, 10, 3), dtype=np.int64)
    for i, t in enumerate(tokens):
        memories[i, :len(t)] = t
    final, snaps = greedy_rollout(net, memories, np.array([10, 7, 2]), k, record=True)
    for i, tok in enumerate(tokens):
        stream = Stream(tuple(map(str, range(len(tok)))), tuple(range(len(tok) + 1)), tuple(() for _ in range(len(tok) + 1)))
        trace = run_policy(stream, k, NetPolicy(net, tok))
        want = trace.held_at[-1].tolist()
        assert final[i].tolist() == want + [-1] * (k - len(want))
        for t, held in enumerate(trace.held_at):
            assert snaps[i, t].tolist() == held.tolist() + [-1] * (k - len(held))


def test_manager_file_round_trip_and_refuses_a_selector_file(tmp_path):
    net = _net()
    path = save_manager(net, 3, tmp_path / "m.pt")
    loaded, k = load_manager(path)
    assert k == 3 and loaded.spec.max_memories == 12
    obs = decision_obs(_tokens(6), np.array([0, 2, 4]), 5)
    obs = {key: torch.as_tensor(v)[None] for key, v in obs.items()}
    torch.testing.assert_close(loaded(obs), net(obs))
    Selector(SelectorConfig(), SPEC).save(tmp_path / "s.pt")
    with pytest.raises(ValueError, match="not a memory manager"):
        load_manager(tmp_path / "s.pt")


def test_manager_retention_counts_questions():
    net, k = _net(), 3
    tok = _tokens(8)
    stream = Stream(tuple(map(str, range(8))), (2, 8), ((0, 1), (7,)))
    snaps_retention = manager_retention(net, [stream], [tok], k)
    trace = run_policy(stream, k, NetPolicy(net, tok))
    assert snaps_retention == pytest.approx(trace.hits / trace.pairs)


def _rows(counts=(8, 2), n=8) -> EncodedSamples:
    s = len(counts)
    memories = np.zeros((s, n, 3), dtype=np.int64)
    mask = np.zeros((s, n), dtype=bool)
    ages = np.zeros((s, n), dtype=np.int64)
    for i, c in enumerate(counts):
        memories[i, :c] = _tokens(c, 5)[:c]
        mask[i, :c] = True
        ages[i, :c] = np.arange(c - 1, -1, -1)
    support = mask & (np.arange(n) == 0)
    return EncodedSamples(memories, mask, np.full((s, 3), 5), ages, support, np.full(s, 2))


def test_managed_budget_shows_what_the_manager_kept(tmp_path):
    net = _net()
    path = save_manager(net, 3, tmp_path / "m.pt")
    data = _rows()
    out = apply_budget(data, Budget(3, "managed", options={"manager": str(path)}))
    held, _ = greedy_rollout(net, data.memories, data.mask.sum(1), 3)
    for row in range(2):
        kept = [int(i) for i in held[row] if i >= 0]
        np.testing.assert_array_equal(out.memories[row, :len(kept)], data.memories[row, kept])
        assert out.ages[row, :len(kept)].tolist() == data.ages[row, kept].tolist()  # ages in the full story
    assert out.mask[1].tolist() == [True, True, False]
    with pytest.raises(ValueError, match="env.memory_budget"):
        apply_budget(data, Budget(4, "managed", options={"manager": str(path)}))


def test_managed_config_names_its_fields(tmp_path):
    with pytest.raises(ConfigError, match="env.budget_options.manager"):
        load_config(None, ["env.budget_strategy=managed", "env.memory_budget=8",
                           f"env.budget_options={{manager: {tmp_path / 'missing.pt'}}}"])
    with pytest.raises(ConfigError, match="manager.slots"):
        load_config(None, ["env.budget_strategy=managed", "env.memory_budget=8", "manager.slots=4"])
    with pytest.raises(ConfigError, match="manager.kind"):
        load_config(None, ["manager.kind=nope"])
    cfg = load_config(None, ["env.budget_strategy=managed", "env.memory_budget=8", f"run_dir={tmp_path}"])
    assert with_run_manager(cfg).env.budget_options["manager"] == str(tmp_path / "manager" / "manager.pt")


def test_manager_policy_decides_as_the_batched_rollout():
    net, k, tok = _net(), 3, _tokens(10, 1)
    stream = Stream(tuple(map(str, range(10))), (10,), ((0,),), "f#0")
    mine = run_policy(stream, k, ManagerPolicy(net, {"f#0": tok}))
    ref = run_policy(stream, k, NetPolicy(net, tok))
    assert [d for _, _, d in mine.decisions] == [d for _, _, d in ref.decisions]


def test_a_dagger_round_labels_the_managers_own_states_with_the_oracle():
    net, k, tok = _net(), 3, _tokens(10, 1)
    stream = Stream(tuple(map(str, range(10))), (5, 10), ((0, 4), (1, 9)), "f#0")
    d = dagger_decisions(net, ([stream], [tok]), k, beta=0.0, seed=0)
    trace = run_policy(stream, k, NetPolicy(net, tok))
    oracle = Oracle()
    oracle.reset(stream)
    assert len(d["best"]) == len(trace.decisions) == 10 - k
    for i, (held, t, _) in enumerate(trace.decisions):
        np.testing.assert_array_equal(d["memories"][i], decision_obs(tok, held, t)["memories"])
        assert d["best"][i].tolist() == oracle.candidates(held, t).tolist()


def test_eviction_loss_weights_decisions():
    torch.manual_seed(0)
    logits, mask, ages = torch.randn(4, 5), torch.ones(4, 5), torch.arange(5).repeat(4, 1)
    best = torch.rand(4, 5) > 0.5
    best[:, 0] = True
    plain = eviction_loss(logits, best, mask, ages, 0.1, 0.2)
    torch.testing.assert_close(eviction_loss(logits, best, mask, ages, 0.1, 0.2, torch.full((4,), 3.0)), plain)
    only_first = eviction_loss(logits, best, mask, ages, 0.1, 0.2, torch.tensor([1.0, 0, 0, 0]))
    torch.testing.assert_close(only_first, eviction_loss(logits[:1], best[:1], mask[:1], ages[:1], 0.1, 0.2))


def test_manager_dagger_and_network_fields_are_checked():
    with pytest.raises(ConfigError, match="manager.self_attention_layers"):
        load_config(None, ["manager.kind=ff", "manager.self_attention_layers=1"])
    with pytest.raises(ConfigError, match="manager.dagger_beta"):
        load_config(None, ["manager.dagger_beta=1.5"])
    with pytest.raises(ConfigError, match="manager.cost_weight"):
        load_config(None, ["manager.cost_weight=-1"])
    assert load_config(None, ["manager.kind=mha", "manager.self_attention_layers=1"]).manager.self_attention_layers == 1

"""The selector network (memsel.network): masking, padding invariance, shape checks, save/load."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from memsel.config import SelectorConfig
from memsel.data.encode import DataSpec
from memsel.network import Selector, read_selector_file, recency_prior

SPEC = DataSpec(vocab_size=30, max_memories=8, max_sentence_len=6)
MIN = torch.finfo(torch.float32).min


def make_obs(counts: list[int], n: int = SPEC.max_memories, length: int = SPEC.max_sentence_len,
             seed: int = 0) -> dict[str, torch.Tensor]:
    """A valid batch: row b has counts[b] memories in its first slots, padding (zeros) after."""
    g = torch.Generator().manual_seed(seed)
    b = len(counts)
    memories = torch.zeros(b, n, length, dtype=torch.long)
    mask = torch.zeros(b, n, dtype=torch.bool)
    ages = torch.zeros(b, n, dtype=torch.long)
    for i, k in enumerate(counts):
        words = torch.randint(1, length + 1, (k,), generator=g)  # 1..L words per sentence
        for j in range(k):
            memories[i, j, : words[j]] = torch.randint(1, SPEC.vocab_size, (int(words[j]),), generator=g)
        mask[i, :k] = True
        ages[i, :k] = torch.arange(k - 1, -1, -1)
    query = torch.randint(1, SPEC.vocab_size, (b, length), generator=g)
    query[:, length // 2:] = 0
    return {"memories": memories, "mask": mask, "query": query, "ages": ages}


def make_net(seed: int = 0, **kw) -> Selector:
    torch.manual_seed(seed)
    return Selector(SelectorConfig(**kw), SPEC).eval()


@pytest.fixture
def net() -> Selector:
    return make_net()


def _row(obs: dict[str, torch.Tensor], i: int) -> dict[str, torch.Tensor]:
    return {k: v[i:i + 1] for k, v in obs.items()}


# --------------------------------------------------------------------------- masking and padding


@pytest.mark.parametrize("kw", [{}, {"encoder": "bow"}, {"recency": False}])
def test_appending_padded_slots_does_not_change_real_logits(kw):
    net = make_net(**kw)
    obs = make_obs([3, 5], n=5)
    with torch.no_grad():
        base = net(obs)
        wide = {
            "memories": F.pad(obs["memories"], (0, 0, 0, 3)),
            "mask": F.pad(obs["mask"], (0, 3)),
            "query": obs["query"],
            "ages": F.pad(obs["ages"], (0, 3)),
        }
        out = net(wide)
    assert out.shape == (2, 8)
    for i, k in enumerate([3, 5]):
        assert torch.allclose(out[i, :k], base[i, :k], atol=1e-6)
        assert (out[i, k:] == MIN).all()


@pytest.mark.parametrize("kw", [{}, {"encoder": "bow"}, {"recency": False}])
def test_garbage_in_padded_slots_does_not_change_real_logits(kw):
    net = make_net(**kw)
    obs = make_obs([2, 6, 8])
    garbage = {k: v.clone() for k, v in obs.items()}
    g = torch.Generator().manual_seed(1)
    pad = ~obs["mask"]
    noise = torch.randint(1, SPEC.vocab_size, garbage["memories"].shape, generator=g)
    garbage["memories"][pad] = noise[pad]
    garbage["ages"][pad] = torch.randint(0, 50, garbage["ages"].shape, generator=g)[pad]
    with torch.no_grad():
        a, b = net(obs), net(garbage)
    assert torch.allclose(a[obs["mask"]], b[obs["mask"]], atol=1e-6)
    assert (b[pad] == MIN).all()


def test_padding_tokens_inside_sentences_do_not_change_logits(net):
    obs = make_obs([4, 7])
    longer = dict(obs, memories=F.pad(obs["memories"], (0, 3)), query=F.pad(obs["query"], (0, 3)))
    with torch.no_grad():
        a, b = net(obs), net(longer)
    assert torch.allclose(a[obs["mask"]], b[obs["mask"]], atol=1e-6)


def test_masked_slots_get_the_finite_minimum(net):
    obs = make_obs([1, 4, 8])
    with torch.no_grad():
        logits = net(obs)
    assert logits.dtype == torch.float32
    assert (logits[~obs["mask"]] == MIN).all()
    assert (logits[obs["mask"]] > MIN / 2).all()
    assert torch.isfinite(logits).all()
    probs = logits.softmax(-1)
    assert torch.allclose(probs[~obs["mask"]], torch.zeros(()), atol=0)
    assert torch.allclose(probs.sum(-1), torch.ones(3))


def test_all_masked_row_is_finite(net):
    obs = make_obs([0, 3])
    with torch.no_grad():
        logits, feats = net(obs, return_features=True)
    assert torch.isfinite(logits).all()
    probs = logits.softmax(-1)
    assert not torch.isnan(probs).any()
    assert torch.allclose(probs[0], torch.full((8,), 1 / 8))
    assert torch.isfinite(feats).all()
    assert feats.shape == (2, net.feature_dim)


def test_mixed_lengths_equal_each_row_alone(net):
    counts = [1, 3, 8, 5]
    obs = make_obs(counts)
    with torch.no_grad():
        batch = net(obs)
        for i, k in enumerate(counts):
            alone = net(_row(obs, i))
            assert torch.allclose(batch[i], alone[0], atol=1e-6)
            # and trimmed to its own memories only
            trimmed = {key: v[i:i + 1, :k] if key != "query" else v[i:i + 1] for key, v in obs.items()}
            assert torch.allclose(batch[i, :k], net(trimmed)[0], atol=1e-6)


def test_int8_mask_equals_bool_mask(net):
    obs = make_obs([2, 8, 5])
    as_int8 = dict(obs, mask=obs["mask"].to(torch.int8))
    as_float = dict(obs, mask=obs["mask"].to(torch.float32), memories=obs["memories"].float())
    with torch.no_grad():
        ref = net(obs)
        assert torch.equal(net(as_int8), ref)
        assert torch.equal(net(as_float), ref)  # float ids without fractions are accepted too


def test_features_read_only_real_memories(net):
    obs = make_obs([3])
    garbage = {k: v.clone() for k, v in obs.items()}
    garbage["memories"][0, 3:] = 7
    with torch.no_grad():
        _, fa = net(obs, return_features=True)
        _, fb = net(garbage, return_features=True)
    assert torch.allclose(fa, fb, atol=1e-6)


# --------------------------------------------------------------------------- gradients and seeding


def test_gradients_reach_every_parameter():
    net = make_net().train()
    obs = make_obs([3, 8, 5, 1])
    obs["selected"] = torch.zeros_like(obs["mask"], dtype=torch.int8)
    obs["selected"][1, 3] = 1  # a second hop in one row: the relative-age features learn too
    target = torch.tensor([0, 6, 2, 0])  # valid slots
    loss = F.cross_entropy(net(obs), target)
    loss.backward()
    names = [n for n, _ in net.named_parameters()]
    assert {"encoder.embed.weight", "age_embed.weight", "family.heads.0.hidden.weight",
            "family.heads.0.out.weight"} <= set(names)
    # Every parameter is reached: none is one a softmax cancels (whose gradient would be 0 up to rounding).
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.norm() > 0, name
    # padding id 0 never learns; only ages that occur get gradient
    assert (net.encoder.embed.weight.grad[0] == 0).all()
    used = torch.unique(obs["ages"][obs["mask"]])
    assert (net.age_embed.weight.grad[used].norm(dim=-1) > 0).all()


def test_padded_slots_get_no_gradient():
    net = make_net().train()
    obs = make_obs([2, 4])
    for key in ("memories", "query"):
        obs[key][obs[key] == 29] = 28  # token 29 appears nowhere real ...
    obs["memories"][0, 5, :3] = 29  # ... only in a padded slot
    loss = F.cross_entropy(net(obs), torch.tensor([1, 3]))
    loss.backward()
    assert (net.encoder.embed.weight.grad[29] == 0).all()


def test_same_seed_same_weights_and_output():
    a, b, c = make_net(seed=3), make_net(seed=3), make_net(seed=4)
    for (na, pa), (nb, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert na == nb
        assert torch.equal(pa, pb), na
    obs = make_obs([4, 8])
    with torch.no_grad():
        assert torch.equal(a(obs), b(obs))
        assert not torch.allclose(a(obs)[obs["mask"]], c(obs)[obs["mask"]])


# --------------------------------------------------------------------------- input checks


def test_two_dimensional_memories_are_refused(net):
    obs = make_obs([2, 3])
    obs["memories"] = obs["memories"][:, :, 0]
    with pytest.raises(ValueError, match=r"memories \(B, N, L\)"):
        net(obs)


def test_query_with_another_length_is_refused(net):
    obs = make_obs([2, 3])
    obs["query"] = obs["query"][:, :4]
    with pytest.raises(ValueError) as info:
        net(obs)
    assert "query" in str(info.value) and "(2, 4)" in str(info.value) and "(2, 8, 6)" in str(info.value)


def test_mask_shape_mismatch_is_refused(net):
    obs = make_obs([2, 3])
    obs["mask"] = obs["mask"][:, :5]
    with pytest.raises(ValueError, match=r"mask \(B, N\)"):
        net(obs)


def test_batch_size_mismatch_is_refused(net):
    obs = make_obs([2, 3])
    obs["query"] = obs["query"][:1]
    with pytest.raises(ValueError, match="disagree"):
        net(obs)


def test_more_slots_than_built_for_is_refused(net):
    obs = make_obs([2], n=SPEC.max_memories + 1)
    with pytest.raises(ValueError, match="built for 8"):
        net(obs)


@pytest.mark.parametrize("key", ["memories", "query", "ages"])
def test_fractional_ids_are_refused(net, key):
    obs = make_obs([2, 3])
    obs[key] = obs[key].float() + 0.5
    with pytest.raises(TypeError, match=key):
        net(obs)


@pytest.mark.parametrize("key", ["memories", "mask", "query", "ages"])
def test_missing_key_is_refused(net, key):
    obs = make_obs([2])
    del obs[key]
    with pytest.raises(KeyError, match=key):
        net(obs)


# --------------------------------------------------------------------------- saving and loading


def test_save_load_roundtrip(tmp_path):
    net = make_net(seed=5, embed_dim=16, hidden_dim=8, encoder="bow")
    path = net.save(tmp_path / "deep" / "selector.pt")
    assert path == tmp_path / "deep" / "selector.pt" and path.is_file()
    assert not (tmp_path / "deep" / "selector.pt.tmp").exists()
    blob = read_selector_file(path)
    assert blob["format"] == "memsel.selector/1"
    assert blob["spec"] == {"vocab_size": 30, "max_memories": 8, "max_sentence_len": 6}
    assert blob["selector_config"]["embed_dim"] == 16
    loaded = Selector.load(path).eval()
    assert loaded.config == net.config and loaded.spec == net.spec
    obs = make_obs([3, 8])
    with torch.no_grad():
        assert torch.equal(loaded(obs), net(obs))


def test_read_selector_file_refuses_other_torch_files(tmp_path):
    for i, obj in enumerate([{"state_dict": {"w": torch.zeros(2)}}, torch.zeros(3), {"format": "other/1"}]):
        path = tmp_path / f"other{i}.pt"
        torch.save(obj, path)
        with pytest.raises(ValueError, match="memsel.selector/1"):
            read_selector_file(path)


def test_read_selector_file_refuses_a_non_torch_file(tmp_path):
    """A corrupt or foreign file should get the same clear ValueError, not a pickle traceback."""
    path = tmp_path / "selector.pt"
    path.write_bytes(b"this is not a torch checkpoint\n")
    with pytest.raises(ValueError, match="selector.pt"):
        read_selector_file(path)


def test_read_selector_file_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.pt"):
        read_selector_file(tmp_path / "nothing.pt")
    with pytest.raises(FileNotFoundError):
        Selector.load(tmp_path / "nothing.pt")


def test_import_pulls_in_no_ray_lightning_or_mlflow():
    code = "import memsel.network, sys; print('ray' in sys.modules, 'lightning' in sys.modules, 'mlflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False", "False"]


# --------------------------------------------------------------------------- recency prior


def test_recency_prior_sums_to_one_over_valid_slots():
    obs = make_obs([1, 4, 8])
    prior = recency_prior(obs["ages"], obs["mask"], 0.5)
    assert torch.allclose(prior.sum(-1), torch.ones(3))
    assert (prior[~obs["mask"]] == 0).all()
    assert (prior[obs["mask"]] > 0).all()


def test_recency_prior_decreases_with_age():
    obs = make_obs([6])
    prior = recency_prior(obs["ages"], obs["mask"].to(torch.int8), 0.7)[0, :6]
    # slot 5 is the newest (age 0): probabilities increase along the slots
    assert (prior[1:] > prior[:-1]).all()
    assert torch.allclose(prior[1:] / prior[:-1], torch.full((5,), float(torch.exp(torch.tensor(0.7)))))


def test_recency_prior_uniform_without_decay():
    obs = make_obs([5, 2])
    prior = recency_prior(obs["ages"], obs["mask"], 0.0)
    assert torch.allclose(prior[0, :5], torch.full((5,), 0.2))
    assert torch.allclose(prior[1, :2], torch.full((2,), 0.5))
    assert (prior[:, 5:] == 0).all()


def test_recency_prior_all_masked_row_is_zero_not_nan():
    obs = make_obs([0])
    prior = recency_prior(obs["ages"], obs["mask"], 0.5)
    assert not torch.isnan(prior).any()
    assert (prior == 0).all()


def test_relative_age_features_see_before_and_after_the_oldest_choice():
    """With a choice, memories older and newer than the oldest chosen one get different features;
    without one, the first hop sees exactly what a network without the feature sees."""
    net = make_net().eval()
    obs = make_obs([8, 8])
    plain = net(obs)
    obs["selected"] = torch.zeros_like(obs["mask"], dtype=torch.int8)
    assert torch.equal(net(obs), plain)  # nothing chosen: no relative features
    obs["selected"][0, 4] = 1
    x = net.encode_memories(obs["memories"])
    rel = net._relative_age(obs["ages"], obs["selected"].float())
    assert (rel[1] == 0).all()  # the row without a choice
    older, newer = rel[0, :4], rel[0, 5:8]  # slots before slot 4 are older memories
    assert not torch.allclose(older[-1], newer[0])
    # soft choices count where they carry at least half of the row's largest weight
    soft = torch.zeros(2, obs["mask"].shape[1])
    soft[0, 4], soft[0, 6] = 0.7, 0.2
    assert torch.allclose(net._relative_age(obs["ages"], soft)[0], rel[0])
    assert x.shape == rel.shape


@pytest.mark.parametrize("kw", [{"kind": "ff"}, {"kind": "se"}, {"kind": "conv1d"}, {"kind": "mha"},
                                {"kind": "mha", "num_heads": 1}])
def test_softmax_families_hold_no_score_constant_that_a_softmax_cancels(kw):
    """A parameter that adds one constant to every score (of a head) cannot change a softmax: its gradient
    is exactly zero, so it could never learn. Softmax networks have none; stick-breaking keeps them,
    because its sigmoid shares do depend on a shift."""
    soft = {n for n, _ in make_net(**kw).named_parameters()}
    stick = {n for n, _ in make_net(attention="stick_breaking", **kw).named_parameters()}
    constants = {n for n in stick if n.endswith(("out.bias", "age_bias.bias"))}
    assert constants, "stick-breaking keeps its score constants"
    assert not soft & constants
    assert soft == stick - constants


def test_a_shift_of_the_stick_breaking_constant_changes_the_selection():
    net = make_net(attention="stick_breaking")
    obs = make_obs([5, 3])
    with torch.no_grad():
        before = torch.log_softmax(net(obs), -1)
        net.family.heads[0].out.bias += 2.0
        after = torch.log_softmax(net(obs), -1)
    assert (before - after).abs().max() > 1e-3


def test_files_with_a_softmax_score_constant_still_load_and_score_alike(tmp_path):
    """Selector files written before the redundant constant was dropped load, and the constant's
    value (whatever it was) changes nothing."""
    net = make_net()
    blob = net.export()
    blob["state_dict"]["family.heads.0.out.bias"] = torch.tensor([3.5])  # as an older memsel wrote it
    path = tmp_path / "old.pt"
    torch.save(blob, path)
    loaded = Selector.load(path)
    obs = make_obs([4, 8])
    with torch.no_grad():
        assert torch.allclose(torch.log_softmax(loaded(obs), -1), torch.log_softmax(net(obs), -1), atol=1e-6)

"""Properties of every selector family and option that matters (memsel.network, memsel.families).

Each property runs over VARIANTS: the four families, each sentence encoder, recency off,
residual blocks, several hops and the three self-attention modes. Random batches come from
hypothesis (few examples, no deadline) so that every test stays well under a second.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from memsel.config import ConfigError, SelectorConfig, load_config
from memsel.data.encode import DataSpec
from memsel.layers import (AdditiveScore, chunked_attention, full_attention, linear_attention, recency_order,
                           stick_breaking)
from memsel.network import Selector, read_selector_file

SPEC = DataSpec(vocab_size=30, max_memories=8, max_sentence_len=6)
MIN = torch.finfo(torch.float32).min

VARIANTS = {
    "ff": {"kind": "ff"},
    "ff-bow": {"kind": "ff", "encoder": "bow"},
    "ff-learned": {"kind": "ff", "encoder": "learned"},
    "ff-no-recency": {"kind": "ff", "recency": False},
    "ff-residual-3hops": {"kind": "ff", "residual": True, "num_residual_blocks": 2, "hops": 3},
    "conv1d": {"kind": "conv1d"},
    "conv1d-k5-residual": {"kind": "conv1d", "conv_kernel": 5, "residual": True},
    "se": {"kind": "se"},
    "se-2hops-learned": {"kind": "se", "hops": 2, "encoder": "learned"},
    "mha": {"kind": "mha"},
    "mha-no-recency-1head": {"kind": "mha", "recency": False, "num_heads": 1},
    "mha-residual-2hops": {"kind": "mha", "residual": True, "hops": 2},
    "mha-sa-full": {"kind": "mha", "self_attention_layers": 2},
    "mha-sa-chunked": {"kind": "mha", "self_attention_layers": 1, "self_attention": "chunked", "attention_chunk": 3},
    "mha-sa-linear": {"kind": "mha", "self_attention_layers": 1, "self_attention": "linear"},
    "ff-stick": {"kind": "ff", "attention": "stick_breaking"},
    "conv1d-stick": {"kind": "conv1d", "attention": "stick_breaking"},
    "se-stick-2hops": {"kind": "se", "attention": "stick_breaking", "hops": 2},
    "mha-stick": {"kind": "mha", "attention": "stick_breaking"},
    "mha-stick-1head-no-recency": {"kind": "mha", "attention": "stick_breaking", "num_heads": 1, "recency": False},
}
NOT_EQUIVARIANT = {"conv1d", "conv1d-k5-residual", "mha-sa-chunked", "conv1d-stick"}
SETTINGS = settings(max_examples=8, deadline=None, derandomize=True)

_NETS: dict[tuple[str, int], Selector] = {}


def net_for(variant: str, seed: int = 0) -> Selector:
    """One network per variant and seed, in eval mode (built once: hypothesis calls tests many times)."""
    key = (variant, seed)
    if key not in _NETS:
        torch.manual_seed(seed)
        _NETS[key] = Selector(SelectorConfig(**VARIANTS[variant]), SPEC).eval()
    return _NETS[key]


def make_obs(counts: list[int], n: int = SPEC.max_memories, seed: int = 0,
             selected: bool = False) -> dict[str, torch.Tensor]:
    """Row b holds counts[b] memories (1..L words each) in its first slots, zeros after; optional 'selected'."""
    g = torch.Generator().manual_seed(seed)
    b, length = len(counts), SPEC.max_sentence_len
    obs = {"memories": torch.zeros(b, n, length, dtype=torch.long), "mask": torch.zeros(b, n, dtype=torch.bool),
           "query": torch.zeros(b, length, dtype=torch.long), "ages": torch.zeros(b, n, dtype=torch.long)}
    for i, k in enumerate(counts):
        for j in range(k):
            words = int(torch.randint(1, length + 1, (1,), generator=g))
            obs["memories"][i, j, :words] = torch.randint(1, SPEC.vocab_size, (words,), generator=g)
        obs["mask"][i, :k] = True
        obs["ages"][i, :k] = torch.arange(k - 1, -1, -1)
        obs["query"][i, :3] = torch.randint(1, SPEC.vocab_size, (3,), generator=g)
    if selected:
        obs["selected"] = (torch.rand(b, n, generator=g) < 0.3) & obs["mask"]
    return obs


def run(net: Selector, obs: dict, **kw):
    with torch.no_grad():
        return net(obs, **kw)


counts_st = st.lists(st.integers(0, SPEC.max_memories), min_size=1, max_size=4)
variants = pytest.mark.parametrize("variant", list(VARIANTS))


# --------------------------------------------------------------------------- padding invariance


@variants
@SETTINGS
@given(counts=st.lists(st.integers(0, 5), min_size=1, max_size=4), seed=st.integers(0, 2**16),
       extra=st.integers(1, 3), with_selected=st.booleans())
def test_padding_never_changes_a_real_memory_logit(variant, counts, seed, extra, with_selected):
    """Appending padded slots, garbage in padded slots and padding tokens inside sentences change nothing."""
    net = net_for(variant)
    obs = make_obs(counts, n=5, seed=seed, selected=with_selected)
    base = run(net, obs)
    real, pad = obs["mask"], ~obs["mask"]
    wider = {k: F.pad(v, (0, 0, 0, extra) if k == "memories" else (0, extra)) if k != "query" else v
             for k, v in obs.items()}
    wider_logits = run(net, wider)
    assert wider_logits.shape == (len(counts), 5 + extra)
    assert torch.allclose(wider_logits[:, :5][real], base[real], atol=1e-5)
    assert (wider_logits[:, 5:] == MIN).all()
    g = torch.Generator().manual_seed(seed + 1)
    garbage = {k: v.clone() for k, v in obs.items()}
    garbage["memories"][pad] = torch.randint(1, SPEC.vocab_size, garbage["memories"].shape, generator=g)[pad]
    garbage["ages"][pad] = torch.randint(0, 50, garbage["ages"].shape, generator=g)[pad]
    if with_selected:
        garbage["selected"] = garbage["selected"] | pad  # a 'selected' padded slot is ignored too
    garbage_logits = run(net, garbage)
    assert torch.allclose(garbage_logits[real], base[real], atol=1e-5)
    assert (garbage_logits[pad] == MIN).all() and (base[pad] == MIN).all()
    longer = dict(obs, memories=F.pad(obs["memories"], (0, 2)), query=F.pad(obs["query"], (0, 2)))
    assert torch.allclose(run(net, longer)[real], base[real], atol=1e-5)


# --------------------------------------------------------------------------- permutation equivariance


@variants
@SETTINGS
@given(counts=counts_st, seed=st.integers(0, 2**16), with_selected=st.booleans())
def test_permutation_equivariance_where_the_family_has_it(variant, counts, seed, with_selected):
    """Reordering all slots (memories, mask, ages, selected) reorders the logits the same way."""
    net = net_for(variant)
    assert net.equivariant == (variant not in NOT_EQUIVARIANT)
    if not net.equivariant:
        return  # documented in memsel.families; test_order_matters_for_non_equivariant_families shows it
    obs = make_obs(counts, seed=seed, selected=with_selected)
    perm = torch.randperm(SPEC.max_memories, generator=torch.Generator().manual_seed(seed))
    permuted = {k: v if k == "query" else v[:, perm] for k, v in obs.items()}
    base, out = run(net, obs), run(net, permuted)
    assert torch.allclose(out, base[:, perm], atol=1e-5)


@pytest.mark.parametrize("variant", sorted(NOT_EQUIVARIANT))
def test_order_matters_for_non_equivariant_families(variant):
    net = net_for(variant)
    obs = make_obs([8, 8], seed=3)
    perm = torch.tensor([3, 0, 6, 1, 7, 2, 5, 4])
    permuted = {k: v if k == "query" else v[:, perm] for k, v in obs.items()}
    assert not torch.allclose(run(net, permuted), run(net, obs)[:, perm], atol=1e-4)


# --------------------------------------------------------------------------- mixed lengths, all-masked rows


@variants
@SETTINGS
@given(counts=st.lists(st.integers(0, SPEC.max_memories), min_size=2, max_size=4), seed=st.integers(0, 2**16))
def test_mixed_lengths_in_one_batch_equal_each_row_alone(variant, counts, seed):
    net = net_for(variant)
    obs = make_obs(counts, seed=seed, selected=True)
    batch = run(net, obs)
    for i, k in enumerate(counts):
        alone = run(net, {key: v[i:i + 1] for key, v in obs.items()})
        assert torch.allclose(batch[i], alone[0], atol=1e-5)
        if k:
            trimmed = {key: v[i:i + 1] if key == "query" else v[i:i + 1, :k] for key, v in obs.items()}
            assert torch.allclose(batch[i, :k], run(net, trimmed)[0], atol=1e-5)


@variants
def test_all_masked_rows_are_finite(variant):
    net = net_for(variant)
    obs = make_obs([0, 5, 0], selected=True)
    logits, features = run(net, obs, return_features=True)
    assert torch.isfinite(logits).all() and torch.isfinite(features).all()
    assert features.shape == (3, net.feature_dim)
    probs = logits.softmax(-1)
    assert not torch.isnan(probs).any()
    assert torch.allclose(probs[0], torch.full((SPEC.max_memories,), 1 / SPEC.max_memories))
    assert (logits[~obs["mask"]] == MIN).all()
    assert (logits[obs["mask"]] > MIN / 2).all()
    # and gradients through an all-masked row stay finite too
    net.train()
    try:
        loss = net(obs).log_softmax(-1)[1, :5].sum()
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)
    finally:
        net.zero_grad(set_to_none=True)
        net.eval()


@variants
def test_empty_batches_and_lists_give_empty_logits(variant):
    net = net_for(variant)
    obs = make_obs([3, 2])
    no_slots = {k: v if k == "query" else v[:, :0] for k, v in obs.items()}
    logits, features = run(net, no_slots, return_features=True)
    assert logits.shape == (2, 0) and features.shape == (2, net.feature_dim)
    assert run(net, {k: v[:0] for k, v in obs.items()}).shape == (0, SPEC.max_memories)


# --------------------------------------------------------------------------- gradients, seeds


@variants
def test_gradients_reach_every_parameter(variant):
    torch.manual_seed(0)
    net = Selector(SelectorConfig(**VARIANTS[variant]), SPEC).train()
    obs = make_obs([8, 8, 5, 3], seed=1, selected=True)
    obs["memories"][0, 0, :] = torch.arange(1, SPEC.max_sentence_len + 1)  # every position occurs
    logits, features = net(obs, return_features=True)
    loss = F.cross_entropy(logits, torch.tensor([0, 6, 2, 1])) + features.pow(2).mean()
    loss.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        if name.endswith("out.bias") and net.config.attention == "softmax":
            # The additive score's output bias shifts every logit of a row alike: softmax ignores it,
            # so its gradient is zero up to rounding (kept: files of the first memsel have it).
            # Stick-breaking's sigmoid shares do depend on it.
            assert p.grad.abs().max() < 1e-5, name
        else:
            assert p.grad.norm() > 0, name
    assert (net.encoder.embed.weight.grad[0] == 0).all()  # the padding id never learns


@variants
def test_same_seed_same_output(variant):
    a, b = net_for(variant, seed=7), net_for(variant, seed=7)
    torch.manual_seed(7)
    fresh = Selector(SelectorConfig(**VARIANTS[variant]), SPEC).eval()
    other = net_for(variant, seed=8)
    obs = make_obs([8, 4, 1], seed=2, selected=True)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), fresh.state_dict().items()):
        assert ka == kb and torch.equal(va, vb), ka
    assert torch.equal(run(a, obs), run(fresh, obs))
    assert torch.equal(run(a, obs), run(b, obs))  # and calling twice gives the same result
    assert not torch.allclose(run(a, obs)[obs["mask"]], run(other, obs)[obs["mask"]])


# --------------------------------------------------------------------------- errors for wrong shapes and dtypes


@variants
def test_wrong_shapes_and_dtypes_are_refused_clearly(variant):
    net = net_for(variant)
    obs = make_obs([3, 5])
    with pytest.raises(ValueError, match=r"memories \(B, N, L\)"):
        net(dict(obs, memories=obs["memories"][:, :, 0]))
    with pytest.raises(ValueError, match="disagree"):
        net(dict(obs, query=obs["query"][:1]))
    with pytest.raises(ValueError, match="'selected' must be"):
        net(dict(obs, selected=torch.zeros(2, 5, dtype=torch.bool)))
    with pytest.raises(TypeError, match="memories"):
        net(dict(obs, memories=obs["memories"].float() + 0.5))
    with pytest.raises(TypeError, match="query"):
        net(dict(obs, query=obs["query"] > 0))
    with pytest.raises(KeyError, match="ages"):
        net({k: v for k, v in obs.items() if k != "ages"})
    m, q = net.encode_memories(obs["memories"]), net.encode_query(obs["query"])
    with pytest.raises(TypeError, match="float32"):
        net.score(m.double(), q.double(), obs["ages"], obs["mask"])
    with pytest.raises(ValueError, match=r"\(B, N, 32\)"):
        net.score(m[..., :16], q[..., :16], obs["ages"], obs["mask"])
    with pytest.raises(ValueError, match="ages"):
        net.score(m, q, obs["ages"][:, :4], obs["mask"])
    with pytest.raises(TypeError, match="ages"):
        net.score(m, q, obs["ages"].float() + 0.25, obs["mask"])


# --------------------------------------------------------------------------- the two stages and 'selected'


@variants
def test_forward_is_encode_then_score(variant):
    """score() on cached embeddings gives forward()'s logits and features."""
    net = net_for(variant)
    obs = make_obs([8, 6, 2], seed=5, selected=True)
    with torch.no_grad():
        m, q = net.encode_memories(obs["memories"]), net.encode_query(obs["query"])
        assert m.shape == (3, SPEC.max_memories, 32) and q.shape == (3, 32)
        logits, feats = net.score(m, q, obs["ages"], obs["mask"], obs["selected"], return_features=True)
        ref_logits, ref_feats = net(obs, return_features=True)
    assert torch.equal(logits, ref_logits) and torch.equal(feats, ref_feats)


@variants
def test_selected_memories_are_added_to_the_query(variant):
    """u = q + sum of the selected memories' embeddings (MemN2N's u_{k+1} = u_k + o_k); absent = none selected."""
    net = net_for(variant)
    obs = make_obs([8, 5], seed=9)
    none = dict(obs, selected=torch.zeros(2, SPEC.max_memories, dtype=torch.int8))
    assert torch.equal(run(net, none), run(net, obs))
    chosen = torch.zeros(2, SPEC.max_memories, dtype=torch.int8)
    chosen[0, [1, 4]] = 1
    chosen[1, 2] = 1
    with torch.no_grad():
        m, q = net.encode_memories(obs["memories"]), net.encode_query(obs["query"])
        # the chosen memories also give the others their age relative to the oldest chosen one
        rel = net._relative_age(obs["ages"], chosen.float()) if net.relative_age is not None else 0
        expected = net.score(m + rel, q + torch.einsum("bn,bnd->bd", chosen.float(), m), obs["ages"], obs["mask"])
        assert torch.allclose(run(net, dict(obs, selected=chosen)), expected, atol=1e-6)
        assert not torch.allclose(expected[obs["mask"]], run(net, obs)[obs["mask"]])


# --------------------------------------------------------------------------- saving and loading


@variants
def test_save_load_roundtrip_keeps_config_vocab_and_outputs(variant, tmp_path):
    net = net_for(variant, seed=3)
    net.vocab = ["<pad>", "<unk>", *(f"w{i}" for i in range(SPEC.vocab_size - 2))]
    try:
        loaded = Selector.load(net.save(tmp_path / "selector.pt")).eval()
    finally:
        net.vocab = None
    assert loaded.config == net.config and loaded.vocab[2] == "w0"
    obs = make_obs([8, 3], selected=True)
    assert torch.equal(run(loaded, obs), run(net, obs))


def _old_ff_output(state: dict, obs: dict, position_encoding: bool, recency: bool) -> torch.Tensor:
    """The first memsel's ff network written out by hand: score_out(tanh(score_hidden([m*q, m, t])))."""
    emb = state["encoder.embed.weight"]

    def encode(tokens):
        x = emb[tokens]
        present = (tokens > 0).float()
        if position_encoding:
            d = emb.shape[1]
            length = present.sum(-1, keepdim=True).clamp(min=1.0)
            jj = (torch.arange(1, tokens.shape[-1] + 1).float() / length).unsqueeze(-1)
            x = x * ((1 - jj) - torch.arange(1, d + 1).float() / d * (1 - 2 * jj))
        return (x * present.unsqueeze(-1)).sum(-2)

    m, q = encode(obs["memories"]), encode(obs["query"])
    t = state["age_embed.weight"][obs["ages"]] if recency else torch.zeros_like(m)
    hidden = torch.tanh(torch.cat([m * q.unsqueeze(1), m, t], -1) @ state["score_hidden.weight"].T
                        + state["score_hidden.bias"])
    logits = (hidden @ state["score_out.weight"].T + state["score_out.bias"]).squeeze(-1)
    return logits.masked_fill(~obs["mask"], MIN)


@pytest.mark.parametrize("position_encoding, recency", [(True, True), (False, False)])
def test_files_of_the_first_memsel_still_load_and_score_alike(tmp_path, position_encoding, recency):
    """The original 'memsel.selector/1' layout: position_encoding flag, score_hidden/score_out at the top."""
    torch.manual_seed(0)
    d, h = 8, 6
    state = {"encoder.embed.weight": torch.randn(SPEC.vocab_size, d), "score_hidden.weight": torch.randn(h, 3 * d),
             "score_hidden.bias": torch.randn(h), "score_out.weight": torch.randn(1, h), "score_out.bias": torch.randn(1)}
    state["encoder.embed.weight"][0] = 0
    if recency:
        state["age_embed.weight"] = torch.randn(SPEC.max_memories, d)
    old = {"format": "memsel.selector/1",
           "selector_config": {"kind": "ff", "embed_dim": d, "hidden_dim": h, "position_encoding": position_encoding,
                               "recency": recency},
           "spec": {"vocab_size": 30, "max_memories": 8, "max_sentence_len": 6}, "state_dict": state}
    torch.save(old, tmp_path / "old.pt")
    blob = read_selector_file(tmp_path / "old.pt")
    assert blob["selector_config"]["encoder"] == ("pe" if position_encoding else "bow")
    net = Selector.load(tmp_path / "old.pt").eval()
    assert net.vocab is None
    obs = make_obs([8, 5, 1], seed=4)
    # The old constant score_out.bias is dropped on load (a softmax cancels it): the distributions agree.
    assert torch.allclose(torch.log_softmax(run(net, obs), -1),
                          torch.log_softmax(_old_ff_output(state, obs, position_encoding, recency), -1), atol=1e-5)


# --------------------------------------------------------------------------- building blocks against references


@pytest.mark.parametrize("age", [True, False])
def test_additive_score_equals_the_concatenated_formula_in_value_and_gradient(age, monkeypatch):
    monkeypatch.setattr("memsel.layers.SCORE_CHUNK_FLOATS", 64)  # several chunks even for small inputs
    torch.manual_seed(0)
    d, h, n = 5, 7, 11
    score = AdditiveScore(d, h, age)
    table = torch.nn.Embedding(20, d)
    x, u = torch.randn(3, n, d, requires_grad=True), torch.randn(3, d, requires_grad=True)
    gate = torch.rand(3, d, requires_grad=True)
    ages_idx = torch.randint(0, 20, (3, n))
    from memsel.layers import Ages

    got = score(x, u, Ages(ages_idx, table) if age else None, gate=gate)
    xg = x * gate.unsqueeze(1)
    parts = [xg * u.unsqueeze(1), xg] + ([table(ages_idx)] if age else [])
    want = score.out(torch.tanh(score.hidden(torch.cat(parts, -1)))).squeeze(-1)
    assert torch.allclose(got, want, atol=1e-5)
    g1 = torch.autograd.grad(got.sin().sum(), [x, u, gate, *score.parameters(), table.weight], allow_unused=True)
    g2 = torch.autograd.grad(want.sin().sum(), [x, u, gate, *score.parameters(), table.weight], allow_unused=True)
    for a, b in zip(g1, g2):
        assert (a is None and b is None) or torch.allclose(a, b, atol=1e-5)
    with torch.inference_mode():  # the inference path (in-place, cached age table) agrees as well
        assert torch.allclose(score(x, u, Ages(ages_idx, table) if age else None, gate=gate), want, atol=1e-5)
        assert torch.allclose(score(x, u, Ages(ages_idx, table) if age else None, gate=gate), want, atol=1e-5)


def test_cached_age_table_follows_weight_updates():
    torch.manual_seed(0)
    net = Selector(SelectorConfig(kind="ff"), SPEC).eval()
    obs = make_obs([8, 4])
    with torch.inference_mode():
        before = net(obs)
    net.train()
    F.cross_entropy(net(obs), torch.tensor([0, 1])).backward()
    with torch.no_grad():  # what an optimiser step does: in-place updates
        for p in net.parameters():
            if p.grad is not None:  # the relative-age layer has none without a choice
                p.sub_(0.5 * p.grad)
    net.eval()
    with torch.inference_mode():  # the only mode that caches
        after = net(obs)
    reference = run(net, obs)
    assert not torch.allclose(before, after) and torch.allclose(after, reference, atol=1e-6)
    net.load_state_dict(Selector(SelectorConfig(kind="ff"), SPEC).state_dict())
    with torch.inference_mode():
        assert torch.allclose(net(obs), run(net, obs), atol=1e-6)


def _naive_attention(q, k, v, mask):
    s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    s = s.masked_fill(~mask[:, None, None, :], float("-inf"))
    return s.softmax(-1) @ v


def test_self_attention_modes_against_references():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 10, 4) for _ in range(3))
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[1, 6:] = False
    ref = _naive_attention(q, k, v, mask)
    assert torch.allclose(full_attention(q, k, v, mask, 0), ref, atol=1e-5)
    assert torch.allclose(chunked_attention(q, k, v, mask, 16), ref, atol=1e-5)  # one block = full attention
    blocks = chunked_attention(q, k, v, mask, 4)
    for s in range(0, 10, 4):  # each block of 4 is full attention on its own
        sl = slice(s, s + 4)
        if mask[:, sl].any(1).all():
            assert torch.allclose(blocks[:, :, sl], _naive_attention(q[:, :, sl], k[:, :, sl], v[:, :, sl],
                                                                      mask[:, sl]), atol=1e-5)
    fq, fk = F.elu(q) + 1, (F.elu(k) + 1) * mask[:, None, :, None]
    w = fq @ fk.transpose(-1, -2)
    assert torch.allclose(linear_attention(q, k, v, mask, 0), (w @ v) / w.sum(-1, keepdim=True), atol=1e-5)
    empty = torch.zeros(2, 10, dtype=torch.bool)
    for attend in (full_attention, chunked_attention, linear_attention):
        assert torch.isfinite(attend(q, k, v, empty, 4)).all()


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize("sets, field, allowed", [
    (["selector.kind=lstm"], "selector.kind", "['ff', 'conv1d', 'se', 'mha']"),
    (["selector.encoder=gru"], "selector.encoder", "['bow', 'pe', 'learned']"),
    (["selector.kind=mha", "selector.self_attention=sparse"], "selector.self_attention", "['full', 'chunked', 'linear']"),
    (["selector.kind=mha", "selector.num_heads=5"], "selector.num_heads", "a divisor of selector.embed_dim"),
    (["selector.kind=conv1d", "selector.conv_kernel=4"], "selector.conv_kernel", "an odd integer"),
    (["selector.hops=0"], "selector.hops", ">= 1"),
    (["selector.dropout=1.0"], "selector.dropout", "[0, 1)"),
    (["selector.num_residual_blocks=0"], "selector.num_residual_blocks", ">= 1"),
    (["selector.kind=mha", "selector.attention_chunk=0"], "selector.attention_chunk", ">= 1"),
    (["selector.attention=sparsemax"], "selector.attention", "['softmax', 'stick_breaking']"),
])
def test_selector_config_refuses_bad_values_naming_field_and_allowed_values(sets, field, allowed):
    with pytest.raises(ConfigError) as info:
        load_config(sets=sets)
    assert f"field '{field}'" in str(info.value) and allowed in str(info.value)


def test_selector_defaults_keep_the_quickstart_network():
    cfg = SelectorConfig()
    assert (cfg.kind, cfg.encoder, cfg.recency, cfg.residual, cfg.hops) == ("ff", "pe", True, False, 1)


# --------------------------------------------------------------------------- stick-breaking attention


def _naive_stick_breaking(s: torch.Tensor, ages: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """p_j = sigmoid(s_j) * prod over more recent real k of (1 - sigmoid(s_k)), renormalised; loops only."""
    out = torch.zeros_like(s)
    for b in range(s.shape[0]):
        for h in range(s.shape[1]):
            p = torch.zeros(s.shape[2], dtype=torch.float64)
            for j in range(s.shape[2]):
                if mask[b, j]:
                    p[j] = torch.sigmoid(s[b, h, j].double())
                    for k in range(s.shape[2]):
                        if mask[b, k] and ages[b, k] < ages[b, j]:
                            p[j] *= 1 - torch.sigmoid(s[b, h, k].double())
            out[b, h] = (p / p.sum()).float()
    return out


@SETTINGS
@given(counts=st.lists(st.integers(1, 7), min_size=1, max_size=3), seed=st.integers(0, 2**16))
def test_stick_breaking_equals_its_formula_whatever_the_slot_order(counts, seed):
    g = torch.Generator().manual_seed(seed)
    b, n, h = len(counts), 7, 3
    mask = torch.arange(n) < torch.tensor(counts)[:, None]  # (B, N)
    ages = torch.stack([torch.randperm(n, generator=g) for _ in range(b)])  # shuffled: slot order != age order
    s = 3 * torch.randn(b, h, n, generator=g)
    log_p = stick_breaking(s, recency_order(ages, mask), mask).log_softmax(-1)  # renormalised, as callers do
    want = _naive_stick_breaking(s, ages, mask)
    assert torch.allclose(log_p.exp() * mask[:, None], want, atol=1e-5)
    assert (log_p[~mask[:, None].expand_as(log_p)] < -1e30).all()  # padding: the 'impossible' log probability


def test_stick_breaking_prefers_the_more_recent_of_two_equal_matches():
    """Two copies of one sentence, nothing else to tell them apart (no age embedding): softmax cannot
    choose, stick-breaking gives the more recent copy more, wherever the copies sit in the list."""
    obs = make_obs([6], seed=3)
    obs["memories"][0, 4] = obs["memories"][0, 1]  # slot 1 (age 4) and slot 4 (age 1) say the same
    for attention, ages in (("softmax", None), ("stick_breaking", None), ("stick_breaking", [4, 1, 2, 3, 5, 0])):
        torch.manual_seed(0)
        net = Selector(SelectorConfig(kind="ff", recency=False, attention=attention), SPEC).eval()
        o = dict(obs)
        if ages is not None:  # slot 1 is now the more recent copy
            o["ages"] = obs["ages"].clone()
            o["ages"][0, :6] = torch.tensor(ages)
        logits = run(net, o)[0]
        if attention == "softmax":
            assert torch.allclose(logits[1], logits[4])
        else:
            newer, older = (4, 1) if ages is None else (1, 4)
            assert logits[newer] > logits[older] + 1e-4

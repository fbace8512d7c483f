"""Selection among thousands: cached, chunked scoring equals the network's plain forward; ages that extrapolate;
BM25 and the recency baselines at length."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from memsel.config import SelectorConfig
from memsel.data.babi import parse_babi
from memsel.data.encode import DataSpec, Vocab, encode
from memsel.data.generate import write_task
from memsel.data.haystack import Background, build_haystack
from memsel.evaluate import greedy_rollout, hop_counts
from memsel.haystack_eval import bm25_choices, haystack_split, recency_choices, score_methods, selector_choices
from memsel.network import LogAgeBuckets, Selector

SENTENCES = tuple(f"the {a} {b} walked past the {c} quietly" for a in ("red", "old", "tall", "small")
                  for b in ("fox", "cart", "clerk", "lamp", "boat") for c in ("mill", "pond", "gate"))
BACKGROUND = Background(SENTENCES, ("test",), "0")


@pytest.fixture(scope="module")
def split_and_net(tmp_path_factory):
    samples = parse_babi(write_task(tmp_path_factory.mktemp("g") / "qa2_train.txt", 2, 5, seed=1))
    built, timelines, _ = build_haystack(samples, 90, BACKGROUND, seed=0)
    vocab = Vocab.build(built)
    torch.manual_seed(0)
    net = Selector(SelectorConfig(kind="mha", embed_dim=16, num_heads=4, attention="stick_breaking",
                                  age_encoding="log"), DataSpec(len(vocab), 90, 12))
    net.vocab = vocab.tokens
    return built, haystack_split(built, timelines), net, vocab


def test_cached_chunked_scoring_chooses_as_the_plain_forward(split_and_net):
    built, split, net, vocab = split_and_net
    data = encode(built, vocab, net.spec)
    hops = hop_counts(data, 0)
    net.eval()
    with torch.inference_mode():
        plain = greedy_rollout(net, {k: torch.from_numpy(v) for k, v in data.tensors().items()},
                               torch.from_numpy(hops)).numpy()
    for chunk in (7, 4096):  # many chunks of the distinct sentences, or one
        assert np.array_equal(selector_choices(net, vocab, split, hops=0, chunk=chunk), plain)


def test_a_network_trained_on_short_lists_scores_every_memory_of_a_long_one():
    spec = DataSpec(30, 1000, 5)
    torch.manual_seed(0)
    net = Selector(SelectorConfig(kind="mha", embed_dim=16, num_heads=4, age_encoding="log"), spec)
    table = Selector(SelectorConfig(kind="mha", embed_dim=16, num_heads=4), spec)

    def obs(n):
        g = torch.Generator().manual_seed(n)
        return {"memories": torch.randint(1, 30, (2, n, 5), generator=g), "mask": torch.ones(2, n, dtype=torch.bool),
                "query": torch.randint(1, 30, (2, 5), generator=g), "ages": torch.arange(n - 1, -1, -1).repeat(2, 1)}

    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    loss = -torch.log_softmax(net(obs(1000)), -1)[:, -1].mean()  # one training step on lists of 1,000
    loss.backward()
    opt.step()
    assert int(net.age_buckets.seen) == int(LogAgeBuckets.bucket(torch.tensor(999)))
    net.eval()
    long = obs(16000)
    with torch.inference_mode():
        probs = torch.softmax(net(long), -1)
        assert torch.isfinite(probs).all() and (probs > 0).all()  # all 16,000 memories scored
        # ages older than any seen in training share the oldest trained bucket: same content, same score
        same = {**long, "memories": long["memories"].clone()}
        same["memories"][:, 100] = same["memories"][:, 15000]  # ages 15899 and 999
        logits = net(same)
        assert torch.allclose(logits[:, 100], logits[:, 15000])
    with pytest.raises(ValueError, match="built for 1000"):
        table(long)


def test_a_table_network_scores_only_its_newest_slots_at_length(split_and_net):
    built, split, _, vocab = split_and_net
    torch.manual_seed(0)
    net = Selector(SelectorConfig(kind="mha", embed_dim=16, num_heads=4), DataSpec(len(vocab), 10, 12))
    chosen = selector_choices(net, vocab, split, hops=0)
    live = chosen >= 0
    assert (chosen[live] >= (split.lengths[:, None] - 10).repeat(chosen.shape[1], 1)[live]).all()


def test_bm25_takes_the_best_match_and_the_newer_of_equals():
    texts = ["Mary went to the kitchen.", "the owl sat on the tree", "Mary went to the garden.",
             "John went to the hallway.", "the owl sat on the tree"]
    from memsel.data.sample import Sample

    samples = [Sample(tuple(texts), "Where is John?", "hallway", (3,), 0, "t:1"),
               Sample(tuple(texts), "Where is Mary?", "garden", (2,), 1, "t:2")]
    split = haystack_split(samples, [])
    hops = np.array([1, 2])
    assert bm25_choices(split, hops).tolist() == [[3, -1], [2, 0]]
    rec = recency_choices(split, hops)
    assert rec["most_recent"].tolist() == [[4, -1], [4, 4]] and rec["recency_prior"].tolist() == [[4, -1], [4, 3]]


def test_scores_at_length_have_every_method_and_speed(split_and_net):
    _, split, net, vocab = split_and_net
    results = score_methods(split, 0, {"memsel": net}, vocab)
    assert set(results) == {"random", "most_recent", "recency_prior", "bm25", "memsel"}
    assert results["memsel"]["memories_per_second"] > 0
    assert 0 <= results["random"]["selection_accuracy"] < 0.05  # 2 facts among 90 memories


def test_answers_at_length_are_read_as_memsel_evaluate_reads_them(split_and_net):
    from memsel.evaluate import answer_accuracy as plain_answer_accuracy
    from memsel.haystack_eval import answer_accuracy
    from memsel.reader import AnswerReader

    built, split, net, vocab = split_and_net
    data = encode(built, vocab, net.spec)
    torch.manual_seed(1)
    reader = AnswerReader(net.spec, 16, 2, candidates=sorted(set(data.answer.tolist())))
    chosen = selector_choices(net, vocab, split, hops=0)
    chosen[::3] = np.where(data.support[::3].any(1, keepdims=True), data.support[::3].argmax(1)[:, None], -1)
    ours = answer_accuracy(reader, vocab, split, chosen)
    assert ours == plain_answer_accuracy(reader, data, chosen)


@pytest.mark.parametrize("lengths", ["abc", "1000,-1", ""])
def test_bad_lengths_are_refused_before_anything_runs(lengths, capsys, tmp_path):
    from memsel.cli import main

    with pytest.raises(SystemExit) as e:
        main(["evaluate", "--run-dir", str(tmp_path / "run"), "--lengths", lengths])
    assert e.value.code == 2
    assert "--lengths: expected comma-separated integers >= 0" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_evaluate_at_lengths_after_a_real_pretraining(tmp_path, capsys):
    """memsel pretrain (Lightning) on a 40-memory haystack, then evaluate --lengths on test and validation."""
    import json

    from memsel.cli import main

    book = tmp_path / "book.txt"
    book.write_text(" ".join(f"The {w} lamp stood by the {v} door all night." for w in ("red", "old", "tall")
                             for v in ("oak", "iron", "glass", "blue")), encoding="utf-8")
    common = ["--run-dir", str(tmp_path / "run"), "--seed", "0",
              "--set", "data.haystack=40", "--set", f"data.haystack_background={str(book)!r}",
              "--set", "data.train_stories=20", "--set", "data.test_stories=4", "--set", "data.val_fraction=0.2",
              "--set", "selector.kind=mha", "--set", "selector.embed_dim=16", "--set", "selector.num_heads=2",
              "--set", "selector.age_encoding=log", "--set", "pretrain.max_epochs=1", "--set", "device=cpu"]
    with pytest.raises(SystemExit) as e:
        main(["pretrain", *common])
    assert e.value.code == 0
    capsys.readouterr()
    for split, questions in (("test", 20), ("val", 20)):
        with pytest.raises(SystemExit) as e:
            main(["evaluate", *common, "--lengths", "0,40,300", "--split", split, "--json"])
        assert e.value.code == 0
        out = json.loads(capsys.readouterr().out)
        assert list(out) == ["0", "40", "300"]
        for length, entry in out.items():
            assert entry["questions"] == questions
            assert set(entry["results"]) == {"random", "most_recent", "recency_prior", "bm25", "pretrained"}
            if length != "0":
                assert entry["memories_per_question"] == int(length)
    assert (tmp_path / "run" / "haystack.json").is_file() and (tmp_path / "run" / "haystack-val.json").is_file()
    with pytest.raises(SystemExit) as e:
        main(["evaluate", *common, "--lengths", "40", "--selector", "nonesuch"])
    assert e.value.code == 2 and "--selector: ['nonesuch']" in capsys.readouterr().err


def test_words_per_question_counts_each_list_as_the_haystack_summary_does(split_and_net):
    from memsel.data.babi import tokenize

    built, split, _, _ = split_and_net
    expected = np.mean([sum(len(tokenize(m)) for m in s.memories) for s in built])
    assert split.words_per_question() == pytest.approx(expected)

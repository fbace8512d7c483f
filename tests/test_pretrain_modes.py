"""Pretraining targets (recency / supporting / mixed), hop-by-hop supervision, the answer reader
(trained on answers, used by the env's answer reward and by evaluation) and the PPO comparison runs.
Real Lightning runs on generated tasks, a few epochs each."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from memsel.config import ConfigError, load_config
from memsel.data.prepare import prepare_data
from memsel.evaluate import baseline_scores, selector_scores
from memsel.network import Selector
from memsel.losses import bridge_hint, hop_target, query_word_bits, shared_words
from memsel.pretrain import exact_match, pretrain


def test_hop_targets():
    label = torch.tensor([[False, True, False], [False, False, False]])  # row 1: its fact is outside
    prior = torch.tensor([[0.2, 0.3, 0.5], [0.1, 0.2, 0.7]])
    t, w = hop_target("supporting", label, prior, 0.1)
    assert torch.equal(t[0], torch.tensor([0.0, 1.0, 0.0])) and w.tolist() == [1.0, 0.0]  # no label: no loss
    t, w = hop_target("mixed", label, prior, 0.1)
    assert torch.allclose(t[0], 0.9 * torch.tensor([0.0, 1.0, 0.0]) + 0.1 * prior[0])
    assert torch.equal(t[1], prior[1]) and w.tolist() == [1.0, 1.0]  # the prior where the fact is missing
    t, w = hop_target("recency", label, prior, 0.1)
    assert torch.equal(t, prior) and w.tolist() == [1.0, 1.0]


def test_exact_match_matches_the_env_rule():
    support = torch.tensor([[True, False, True, False], [True, False, False, False]])
    chosen = torch.tensor([[2, 0], [0, 0]])
    assert exact_match(chosen, support, torch.tensor([2, 1]), torch.tensor([2, 2])).tolist() == [True, True]
    chosen = torch.tensor([[2, 2], [1, 0]])  # the same fact twice; one hop wrong but one fact is enough
    assert exact_match(chosen, support, torch.tensor([2, 1]), torch.tensor([2, 2])).tolist() == [False, True]
    assert exact_match(torch.tensor([[0, -1]]), support[:1], torch.tensor([2]), torch.tensor([1])).tolist() == [True]


def test_config_refuses_unknown_targets_and_variants():
    with pytest.raises(ConfigError, match="pretrain.target"):
        load_config(None, ["pretrain.target=labels"])
    with pytest.raises(ConfigError, match="pretrain.answer_weight"):
        load_config(None, ["pretrain.answer_weight=-1"])
    with pytest.raises(ConfigError, match="ppo.compare"):
        load_config(None, ["ppo.compare=[scratch, teacher]"])
    with pytest.raises(ConfigError, match="ppo.compare"):
        load_config(None, ["ppo.compare=scratch"])  # a list is expected
    assert load_config(None, ["ppo.compare=[scratch, no_distill]"]).ppo.compare == ["scratch", "no_distill"]


@pytest.fixture(scope="module")
def task2(tmp_path_factory):
    def run(target: str, answer_weight: float = 0.0, epochs: int = 12):
        path = tmp_path_factory.mktemp(f"pre_{target}_{answer_weight}")
        cfg = load_config(None, [f"run_dir={path}", "data.task=2", "data.train_stories=120", "data.test_stories=30",
                                 "env.hops=0", f"pretrain.target={target}", f"pretrain.answer_weight={answer_weight}",
                                 f"pretrain.max_epochs={epochs}", "selector.kind=mha", "seed=1"])
        data = prepare_data(cfg)
        return cfg, data, pretrain(cfg, data.train, data.val, data.spec)
    return run


def test_supporting_target_learns_both_hops_of_task_2(task2):
    """Hop-by-hop supervision in the data's order: the second hop beats the recency prior by far."""
    cfg, data, path = task2("mixed")
    got = selector_scores(Selector.load(path), data.test, hops=0)
    base = baseline_scores(data.test, hops=0)
    assert len(got["hop_accuracy"]) == 2
    assert got["hop_accuracy"][0] > 0.8
    assert got["selection_accuracy"] > base["recency_prior"]["selection_accuracy"] + 0.3
    assert not (cfg.run_path / "pretrain" / "reader.pt").exists()  # no answer loss, no reader


def test_recency_target_learns_the_prior(task2):
    """Trained on the temporal prior alone, the selector picks what the prior picks."""
    cfg, data, path = task2("recency", epochs=6)
    got = selector_scores(Selector.load(path), data.test, hops=0)
    base = baseline_scores(data.test, hops=0)["recency_prior"]
    assert got["hop_accuracy"][0] == pytest.approx(base["hop_accuracy"][0], abs=0.1)


def test_reader_trained_on_answers_reads_the_true_facts_and_serves_the_env(task2):
    from memsel.env import MemorySelectionEnv
    from memsel.reader import AnswerReader

    cfg, data, path = task2("mixed", answer_weight=1.0)
    reader_path = cfg.run_path / "pretrain" / "reader.pt"
    reader = AnswerReader.load(reader_path)
    test = data.test
    oracle = baseline_scores(test, hops=0, reader=reader)["oracle"]
    answers = sorted(set(test.answer.tolist()))
    assert oracle["answer_accuracy"] > 2.0 / len(answers)  # far above a guess among the places
    assert set(reader.candidates.nonzero().squeeze(-1).tolist()) == set(data.train.answer.tolist())
    # the env's answer reward asks the same reader about the chosen slots
    env = MemorySelectionEnv({"data": test, "hops": 0, "reward_mode": "answer", "reward_timing": "final",
                              "reader": "learned", "reader_config": {"path": str(reader_path)}, "seed": 0})
    for _ in range(10):
        obs, info = env.reset()
        i = info["sample"]
        picks = [int(np.argmax(test.support_rank[i] == h + 1)) for h in range(info["hops"])]
        for a in picks:
            _, reward, done, _, _ = env.step(a)
        said = reader.answer(torch.from_numpy(test.memories[i:i + 1]), torch.from_numpy(test.query[i:i + 1]),
                             torch.tensor([picks]))
        assert done and reward == float(int(said[0]) == int(test.answer[i]))


def test_weak_supervision_learns_task_1_from_answers_alone(tmp_path):
    """No labels: the answer loss through the soft choices teaches the selector where the answer is."""
    cfg = load_config(None, [f"run_dir={tmp_path}", "data.train_stories=120", "data.test_stories=30",
                             "pretrain.target=recency", "pretrain.answer_weight=1.0", "pretrain.max_epochs=15",
                             "seed=2"])
    data = prepare_data(cfg)
    path = pretrain(cfg, data.train, data.val, data.spec)
    from memsel.reader import AnswerReader

    reader = AnswerReader.load(cfg.run_path / "pretrain" / "reader.pt")
    got = selector_scores(Selector.load(path), data.test, hops=1, reader=reader)
    base = baseline_scores(data.test, hops=1, reader=reader)
    assert got["selection_accuracy"] > base["most_recent"]["selection_accuracy"] + 0.2
    assert got["answer_accuracy"] > base["most_recent"]["answer_accuracy"] + 0.2


def test_learned_reader_without_a_path_is_refused():
    from memsel.env import make_reader

    with pytest.raises(ValueError, match="reader_config"):
        make_reader("learned", {})


def test_ppo_variant_configs():
    from memsel.pipeline import variant_config

    cfg = load_config(None, ["ppo.compare=[scratch, no_distill]", "ppo.distill_schedule=adaptive"])
    scratch = variant_config(cfg, "scratch")
    assert not scratch.ppo.use_pretrained and scratch.ppo.compare == []
    plain = variant_config(cfg, "no_distill")
    assert plain.ppo.use_pretrained and plain.ppo.distill_coeff == 0.0 and plain.ppo.distill_schedule == "constant"
    assert cfg.ppo.compare == ["scratch", "no_distill"]  # the original is left alone


def test_content_words_leave_out_the_most_frequent():
    from memsel.data.encode import EncodedSamples
    from memsel.pretrain import content_words

    # 10 memories: token 2 ('the') in all, 3 in half, 4 in one; 5 only in a query
    memories = np.zeros((1, 10, 3), dtype=np.int64)
    memories[0, :, 0] = 2
    memories[0, :5, 1] = 3
    memories[0, 0, 2] = 4
    mask = np.ones((1, 10), dtype=bool)
    data = EncodedSamples(memories, mask, np.array([[5, 4, 0]]), np.zeros((1, 10), dtype=np.int64),
                          np.zeros((1, 10), dtype=bool), np.array([4]))
    assert content_words(data, max_share=0.4) == [4]
    assert content_words(data, max_share=0.6) == [3, 4]


def test_weak_hints_use_answers_and_questions_only(tmp_path):
    """The hint losses read the answer word and the question, never the supporting-fact labels:
    removing the labels from the batch changes nothing."""
    from dataclasses import asdict

    from memsel.pretrain import SelectorLightningModule, SampleDataset, content_words

    cfg = load_config(None, [f"run_dir={tmp_path}", "data.task=2", "data.train_stories=20", "data.test_stories=5",
                             "env.hops=0", "pretrain.target=recency", "pretrain.answer_weight=1",
                             "pretrain.answer_hint=1", "pretrain.query_hint=1", "pretrain.bridge_hint=1",
                             "selector.kind=mha"])
    data = prepare_data(cfg)
    torch.manual_seed(0)
    module = SelectorLightningModule(asdict(cfg.selector), asdict(data.spec), asdict(cfg.pretrain), hops=0,
                                     reader_hops=2, answer_ids=sorted(set(data.train.answer.tolist())),
                                     content_ids=content_words(data.train))
    ds = SampleDataset(data.train)
    batch = {k: v[:16] for k, v in ds.t.items()}
    loss, parts = module.losses(batch)
    assert {"answer_hint_loss", "query_hint_loss", "bridge_hint_loss", "answer_loss"} <= set(parts)
    assert torch.isfinite(loss)
    blind = dict(batch, support=torch.zeros_like(batch["support"]), support_rank=torch.zeros_like(batch["support_rank"]))
    loss2, parts2 = module.losses(blind)
    assert torch.equal(loss, loss2)


def test_bridge_hint_is_the_probability_of_a_chain_from_question_to_answer():
    """Memories 0 -> 2 form the only chain (0 holds the question's word 5, 2 shares word 6 with 0 and
    holds the answer 7); 1 holds the answer but links to nothing; 3 links to 0 but lacks the answer.
    A second question word (8, held by memory 3 only) must then be covered: 3 -> 0 -> 2 is the chain."""
    content = torch.zeros(10, dtype=torch.bool)
    content[[5, 6, 7, 8, 9]] = True
    memories = torch.tensor([[[2, 5, 6], [2, 7, 0], [2, 6, 7], [2, 6, 8]]])  # token 2 ('the') is no content word
    batch = {"memories": memories, "query": torch.tensor([[5, 2, 9, 5]]), "answer": torch.tensor([7])}
    mask = torch.ones(1, 4, dtype=torch.bool)
    link = shared_words(memories, content, mask)[0]
    assert link.tolist() == [[False, False, True, True], [False, False, True, False],
                             [True, True, False, True], [True, False, True, False]]
    bits, full = query_word_bits(memories, batch["query"], content, mask)  # 9 is held by no memory; 5 counts once
    assert bits.tolist() == [[1, 0, 0, 0]] and full.tolist() == [1]

    def hint(*ps, hops=2):
        logps = [torch.tensor([p]).clamp(min=1e-30).log() for p in ps]
        out = bridge_hint(memories, batch["query"], batch["answer"], content, mask, logps, torch.tensor([hops]))
        return None if out is None else float(out)

    assert hint([0.25] * 4, [0.25] * 4) == pytest.approx(-math.log(0.25 * 0.25))  # one chain of four by four
    assert hint([1, 0, 0, 0], [0, 0, 1, 0]) == pytest.approx(0.0, abs=1e-6)  # all mass on the chain
    assert hint([1, 0, 0, 0], [0, 0.5, 0.5, 0]) == pytest.approx(math.log(2))
    assert hint([1, 0, 0, 0], [0, 1, 0, 0]) > 20  # the answer, but no link from the first hop
    assert hint([0, 0, 0, 1], [0, 0, 1, 0]) > 20  # a link, but the first hop holds no question word

    batch["query"] = torch.tensor([[5, 2, 8, 0]])  # words 5 and 8: a chain must hold both
    assert query_word_bits(memories, batch["query"], content, mask)[1].tolist() == [3]
    assert hint([1, 0, 0, 0], [0, 0, 1, 0]) is None  # no two hops hold both words and end at the answer
    third = [0, 0, 1, 0]
    assert hint([0, 0, 0, 1], [1, 0, 0, 0], third, hops=3) == pytest.approx(0.0, abs=1e-6)  # 3 -> 0 -> 2
    assert hint([0.25] * 4, [0.25] * 4, [0.25] * 4, hops=3) == pytest.approx(-math.log(2 / 64))  # 3-0-2, 0-3-2
    batch["answer"] = torch.tensor([9])  # no memory holds it: no chain, no loss
    assert bridge_hint(memories, batch["query"], batch["answer"], content, mask, [torch.zeros(1, 4)] * 2,
                       torch.tensor([2])) is None


def test_weak_supervision_hints_need_weak_supervision():
    with pytest.raises(ConfigError, match="pretrain.answer_hint"):
        load_config(None, ["pretrain.answer_hint=1"])  # target 'mixed' uses labels: a hint would be ignored
    cfg = load_config(None, ["pretrain.target=recency", "pretrain.answer_weight=1", "pretrain.answer_hint=1",
                             "pretrain.query_hint=1"])
    assert cfg.pretrain.answer_hint == cfg.pretrain.query_hint == 1.0


def test_restarts_keep_the_run_with_the_best_validation_loss(tmp_path, caplog):
    """pretrain.restarts = 2: two real runs from different seeds; the exported network is the best
    checkpoint of the run whose validation loss is lower, and the second run's metrics are prefixed."""
    with pytest.raises(ConfigError, match="pretrain.restarts"):
        load_config(None, ["pretrain.restarts=0"])
    cfg = load_config(None, [f"run_dir={tmp_path}", "data.train_stories=40", "data.test_stories=10",
                             "pretrain.max_epochs=2", "pretrain.restarts=2", "seed=3"])
    data = prepare_data(cfg)
    with caplog.at_level("INFO", logger="memsel.pretrain"):
        path = pretrain(cfg, data.train, data.val, data.spec)
    folder = tmp_path / "pretrain" / "checkpoints"
    firsts, seconds = sorted(folder.glob("best-*.ckpt")), sorted((folder / "restart1").glob("best-*.ckpt"))
    assert len(firsts) == 1 and len(seconds) == 1
    scores = []
    for ck, monitor in ((firsts[0], "val/loss"), (seconds[0], "restart1/val/loss")):
        state = torch.load(ck, map_location="cpu", weights_only=False)
        key, callback = next((k, v) for k, v in state["callbacks"].items() if k.startswith("ModelCheckpoint"))
        assert f"'monitor': '{monitor}'," in key, key
        scores.append(float(callback["best_model_score"]))
    keep = int(np.argmin(scores))
    assert "restart 1/2 (seed 3)" in caplog.text and "restart 2/2 (seed 1003)" in caplog.text
    assert f"keeping restart {keep + 1} (seed {3 + 1000 * keep})" in caplog.text
    kept = torch.load((firsts, seconds)[keep][0], map_location="cpu", weights_only=False)["state_dict"]
    exported = Selector.load(path).state_dict()
    for k, v in exported.items():
        assert torch.equal(v, kept[f"selector.{k}"]), k
    assert scores[0] != scores[1]  # different seeds: different runs


def test_ema_weights_are_what_validation_sees_and_what_is_exported(tmp_path):
    """pretrain.ema_decay > 0: a real run whose checkpoints hold the moving average (not the last raw
    weights); the exported network is that average; the decay is checked like every field."""
    for bad in ("1.0", "-0.1"):
        with pytest.raises(ConfigError, match="pretrain.ema_decay"):
            load_config(None, [f"pretrain.ema_decay={bad}"])
    cfg = load_config(None, [f"run_dir={tmp_path}", "data.train_stories=40", "data.test_stories=10",
                             "pretrain.max_epochs=2", "pretrain.ema_decay=0.9", "seed=5"])
    data = prepare_data(cfg)
    path = pretrain(cfg, data.train, data.val, data.spec)
    best = next((tmp_path / "pretrain" / "checkpoints").glob("best-*.ckpt"))
    state = torch.load(best, map_location="cpu", weights_only=False)
    averaged, raw = state["state_dict"], state["current_model_state"]
    exported = Selector.load(path).state_dict()
    for k, v in exported.items():
        assert torch.equal(v, averaged[f"selector.{k}"]), k
    assert any(not torch.equal(averaged[k], raw[k]) for k in averaged if k.startswith("selector."))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
def test_weak_pretraining_with_every_hint_runs_on_the_gpu(tmp_path):
    """device=cuda: Lightning trains there (the losses, the bridge programme, the greedy validation and
    the reader's answers all on the GPU); the exported files load on the CPU."""
    cfg = load_config(None, [f"run_dir={tmp_path}", "data.task=2", "data.train_stories=20", "data.test_stories=5",
                             "env.hops=0", "pretrain.target=recency", "pretrain.answer_weight=1",
                             "pretrain.answer_hint=1", "pretrain.query_hint=1", "pretrain.bridge_hint=1",
                             "pretrain.max_epochs=1", "selector.kind=mha", "device=cuda"])
    data = prepare_data(cfg)
    path = pretrain(cfg, data.train, data.val, data.spec)
    from memsel.reader import AnswerReader

    reader = AnswerReader.load(cfg.run_path / "pretrain" / "reader.pt")
    got = selector_scores(Selector.load(path), data.test, hops=0, reader=reader, device="cuda")
    assert 0.0 <= got["answer_accuracy"] <= 1.0

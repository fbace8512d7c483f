"""Raw-text inference: memsel.SelectorPredictor, `memsel select`, and the light `import memsel`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

import memsel
from memsel.cli import run
from memsel.config import SelectorConfig
from memsel.data.encode import DataSpec, Vocab
from memsel.inference import Ranked, SelectorPredictor

WORDS = ["<pad>", "<unk>", "mary", "went", "to", "the", "kitchen", "john", "moved", "garden", "where", "is"]
STORY = ["Mary went to the kitchen.", "John moved to the garden.", "Mary moved to the garden."]


def _net(seed: int = 0, **kw) -> memsel.Selector:
    torch.manual_seed(seed)
    net = memsel.Selector(SelectorConfig(**kw), DataSpec(vocab_size=len(WORDS), max_memories=4, max_sentence_len=6))
    net.vocab = list(WORDS)
    return net.eval()


@pytest.fixture
def checkpoint(tmp_path):
    return _net().save(tmp_path / "selector.pt")


def test_memsel_exports_selector_and_predictor_without_ray_or_lightning():
    code = ("import sys, memsel; light = 'torch' not in sys.modules; memsel.Selector; memsel.SelectorPredictor; "
            "print(light, *(m in sys.modules for m in ('ray', 'lightning', 'mlflow')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "False", "False", "False"]
    assert memsel.Selector is memsel.network.Selector
    with pytest.raises(AttributeError):
        memsel.Nothing


def test_rank_returns_every_memory_sorted_with_probabilities(checkpoint):
    predictor = memsel.SelectorPredictor.load(checkpoint)
    ranked = predictor.rank(STORY, "Where is Mary?")
    assert all(isinstance(r, Ranked) for r in ranked)
    assert sorted(r.index for r in ranked) == [0, 1, 2]
    assert all(STORY[r.index] == r.text for r in ranked)
    probs = [r.probability for r in ranked]
    assert probs == sorted(probs, reverse=True) and sum(probs) == pytest.approx(1.0, abs=1e-5)
    # the same as the network on the encoded batch
    obs = predictor.observation(STORY, "Where is Mary?", [2, 1, 0])
    assert obs["memories"][0, 2, :5].tolist() == [2, 8, 4, 5, 9]  # "mary moved to the garden"
    expected = torch.softmax(predictor.selector(obs)[0], -1)
    assert [r.probability for r in sorted(ranked, key=lambda r: r.index)] == pytest.approx(expected.tolist())


def test_rank_with_ages_selected_and_more_memories_than_slots(checkpoint, caplog):
    predictor = SelectorPredictor.load(checkpoint)
    plain = predictor.rank(STORY, "Where is Mary?")
    assert predictor.rank(STORY, "Where is Mary?", ages=[2, 1, 0]) == plain
    assert predictor.rank(STORY, "Where is Mary?", selected=[0]) != plain
    long = STORY + ["John went to the kitchen.", "Mary went to the garden.", "Unknown words here."]
    ranked = predictor.rank(long, "where is mary")
    assert {r.index for r in ranked if r.probability == 0.0} == {0, 1}  # 4 slots: the 2 oldest are not scored
    assert [r.index for r in ranked[-2:]] == [1, 0]  # the unscored come last, most recent first
    assert "the 2 oldest get probability 0" in caplog.text
    assert predictor.rank([], "Where is Mary?") == []
    with pytest.raises(ValueError, match="ages"):
        predictor.rank(STORY, "Where is Mary?", ages=[1, 0])
    with pytest.raises(ValueError, match="selected"):
        predictor.rank(STORY, "Where is Mary?", selected=[3])


def test_files_without_vocabulary_need_one(tmp_path):
    net = _net()
    net.vocab = None
    path = net.save(tmp_path / "old.pt")
    with pytest.raises(ValueError, match="vocab.json"):
        SelectorPredictor.load(path)
    Vocab(WORDS).save(tmp_path / "vocab.json")
    assert len(SelectorPredictor.load(path, vocab=tmp_path / "vocab.json").rank(STORY, "Where is John?")) == 3
    Vocab(WORDS[:5]).save(tmp_path / "short.json")
    with pytest.raises(ValueError, match="vocabulary of 5 tokens"):
        SelectorPredictor.load(path, vocab=tmp_path / "short.json")


def test_cli_select_prints_a_table_or_json(checkpoint, tmp_path, capsys):
    story = tmp_path / "story.txt"
    story.write_text("\n".join(STORY[:2]) + "\n\n")
    assert run(["select", "--checkpoint", str(checkpoint), "--query", "Where is Mary?", "--memories-file", str(story),
                "--memory", STORY[2], "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["query"] == "Where is Mary?" and len(out["ranking"]) == 3
    assert set(out["ranking"][0]) == {"index", "text", "probability"}
    ranked = SelectorPredictor.load(checkpoint).rank(STORY, "Where is Mary?")
    assert [r["index"] for r in out["ranking"]] == [r.index for r in ranked]
    assert run(["select", "--checkpoint", str(checkpoint), "--query", "Where is Mary?", "--top", "1",
                *(x for m in STORY for x in ("--memory", m))]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "query: Where is Mary?" and len(lines) == 3 and lines[2].strip().startswith("1")


def test_cli_select_errors_exit_2(checkpoint, capsys):
    from memsel.cli import main

    for argv in (["select", "--checkpoint", str(checkpoint), "--query", "q"],
                 ["select", "--checkpoint", str(checkpoint), "--query", "q", "--memory", "a", "--ages", "x"],
                 ["select", "--checkpoint", str(checkpoint) + ".missing", "--query", "q", "--memory", "a"]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        err = capsys.readouterr().err
        assert info.value.code == 2 and err.startswith("memsel: error: ") and err.count("\n") == 1


@pytest.mark.parametrize("query, memories, warnings", [
    ("", STORY, ["the query is empty"]),
    ("Wo ist Maria?", STORY, ["no word of the query 'Wo ist Maria?'"]),
    ("Where is Mary?", ["", *STORY], ["1 of 4 memories empty (#0)"]),
    ("Where is Mary?", ["Maria ging heim.", "Hans auch.", *STORY[:2]], ["2 of 4 memories without a word"]),
    ("", ["", "zz"], ["the query is empty", "1 of 2 memories empty (#0)", "1 of 2 memories without a word"]),
    ("Where is Mary?", STORY, []),
])
def test_select_warns_on_empty_or_unknown_text_and_still_ranks(checkpoint, query, memories, warnings):
    """`memsel select` warns on stderr, one line per problem, and ranks anyway (exit 0)."""
    cmd = [sys.executable, "-m", "memsel.cli", "select", "--checkpoint", str(checkpoint), "--query", query, "--json",
           *(x for m in memories for x in ("--memory", m))]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert len(json.loads(out.stdout)["ranking"]) == len(memories)
    lines = [line for line in out.stderr.splitlines() if "WARNING" in line]
    assert len(lines) == len(warnings), out.stderr
    for line, expected in zip(lines, warnings):
        assert expected in line


def test_text_warnings_of_the_predictor(checkpoint):
    predictor = SelectorPredictor.load(checkpoint)
    assert predictor.text_warnings(STORY, "Where is Mary?") == []
    assert predictor.text_warnings(["zz qq"], "?")[0].startswith("the query is empty")


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no GPU"))])
def test_rank_on_a_device_gives_the_cpu_ranking(checkpoint, device):
    on_cpu = SelectorPredictor.load(checkpoint).rank(STORY, "Where is Mary?", selected=[0])
    predictor = SelectorPredictor.load(checkpoint, device=device)
    assert next(predictor.selector.parameters()).device.type == device
    got = predictor.rank(STORY, "Where is Mary?", selected=[0])
    assert [r.index for r in got] == [r.index for r in on_cpu]
    assert [r.probability for r in got] == pytest.approx([r.probability for r in on_cpu], abs=1e-6)

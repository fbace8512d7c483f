"""The seeded task-1 generator (memsel.data.generate), read back through the real parser."""

from __future__ import annotations

import pytest

from memsel.data.babi import parse_babi, tokenize
from memsel.data.generate import ACTORS, PLACES, generate_task1_lines, write_task1


def _statements(lines: list[str]) -> list[str]:
    """Statement texts (without id) of generated lines."""
    out = []
    for line in lines:
        _, text = line.split(" ", 1)
        if "\t" not in text:
            out.append(text)
    return out


def _actor_and_place(statement: str) -> tuple[str, str]:
    words = tokenize(statement)
    return words[0], words[-1]


def test_same_seed_same_lines_different_seed_different_lines():
    a = generate_task1_lines(10, seed=7)
    b = generate_task1_lines(10, seed=7)
    c = generate_task1_lines(10, seed=8)
    assert a == b
    assert a != c
    # same structure either way: only the drawn words differ
    assert len(a) == len(c) == 10 * 5 * (2 + 1)


def test_write_task1_parses_to_stories_times_questions(tmp_path):
    path = write_task1(tmp_path / "sub" / "gen_train.txt", 12, seed=1, questions_per_story=3,
                       statements_per_question=4)
    assert path.is_file()
    assert not (tmp_path / "sub" / "gen_train.txt.tmp").exists()  # the temporary file is gone
    samples = parse_babi(path)
    assert len(samples) == 12 * 3
    assert len({s.story for s in samples}) == 12
    # memories grow by statements_per_question between two questions of a story
    assert [len(s.memories) for s in samples[:3]] == [4, 8, 12]


def test_written_file_matches_the_lines(tmp_path):
    path = write_task1(tmp_path / "g.txt", 3, seed=5)
    assert path.read_text(encoding="utf-8").splitlines() == generate_task1_lines(3, seed=5)


def test_supporting_fact_is_the_last_statement_about_the_asked_actor(tmp_path):
    samples = parse_babi(write_task1(tmp_path / "g.txt", 40, seed=2))
    assert len(samples) == 40 * 5
    for s in samples:
        actor = tokenize(s.query)[-1]
        assert tokenize(s.query)[:2] == ["where", "is"]
        mentions = [i for i, m in enumerate(s.memories) if actor in tokenize(m)]
        assert mentions, s.source
        assert s.supporting == frozenset({mentions[-1]}), s.source
        fact = tokenize(s.memories[mentions[-1]])
        assert s.answer in fact, s.source
        assert fact[-1] == s.answer  # "<actor> <verb> the <place>."


def test_most_recent_memory_is_often_wrong(tmp_path):
    samples = parse_babi(write_task1(tmp_path / "g.txt", 200, seed=0))
    most_recent_hits = sum(s.supporting == frozenset({len(s.memories) - 1}) for s in samples)
    rate = most_recent_hits / len(samples)
    # with 4 actors the asked actor is often not the one who moved last
    assert rate < 0.75
    assert rate > 0.0


def test_a_move_always_goes_somewhere_new():
    lines = generate_task1_lines(30, seed=4)
    where: dict[str, str] = {}
    for line in lines:
        line_id, text = line.split(" ", 1)
        if line_id == "1":
            where = {}
        if "\t" in text:
            continue
        actor, place = _actor_and_place(text)
        assert where.get(actor) != place, line
        where[actor] = place


@pytest.mark.parametrize("num_actors, num_places", [(2, 3), (7, 9), (1, 2)])
def test_knobs_are_honoured(num_actors, num_places):
    lines = generate_task1_lines(60, seed=3, num_actors=num_actors, num_places=num_places)
    pairs = [_actor_and_place(t) for t in _statements(lines)]
    actors = {a for a, _ in pairs}
    places = {p for _, p in pairs}
    assert actors == {a.lower() for a in ACTORS[:num_actors]}
    assert places == set(PLACES[:num_places])
    # the questions only ask about those actors too
    asked = {tokenize(line.split(" ", 1)[1].split("\t")[0])[-1] for line in lines if "\t" in line}
    assert asked <= actors


@pytest.mark.parametrize("knobs", [{"num_actors": len(ACTORS) + 1}, {"num_places": len(PLACES) + 1}])
def test_more_actors_or_places_than_known_is_refused(knobs):
    with pytest.raises(ValueError, match="knows"):
        generate_task1_lines(1, seed=0, **knobs)

"""The seeded generators of tasks 1 to 5 (memsel.data.generate), read back through the real parser."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import pytest

from memsel.data.babi import parse_babi, tokenize
from memsel.data.generate import (ACTORS, BYSTANDERS, OBJECTS, OPPOSITE, PLACES, RECENT_WINDOW, GeneratedConfig,
                                  actors_of, generate_lines, generate_task1_lines, write_splits, write_task,
                                  write_task1)
from memsel.data.inspection import file_stats


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
        assert s.supporting == (mentions[-1],), s.source
        fact = tokenize(s.memories[mentions[-1]])
        assert s.answer in fact, s.source
        assert fact[-1] == s.answer  # "<actor> <verb> the <place>."


def test_most_recent_memory_is_often_wrong(tmp_path):
    samples = parse_babi(write_task1(tmp_path / "g.txt", 200, seed=0))
    most_recent_hits = sum(s.supporting == (len(s.memories) - 1,) for s in samples)
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


# --------------------------------------------------------------------------- tasks 2 and 3

MOVES = ("moved to", "went to", "journeyed to", "travelled to", "went back to")
GETS = ("got", "grabbed", "took", "picked up")
DROPS = ("dropped", "left", "discarded", "put down")


def _replay(lines: list[str]):
    """An independent reading of generated task-2/3 lines: yields, per question, the world as the
    statements so far describe it: (question, answer, support ids, world) with world = dict of
    where (person -> (place, move id)), holder (object -> person or None), event (object -> id),
    gets (object -> id of its last get), trail (object -> [(place, move id)] since its last get)."""
    for line in lines:
        line_id, text = line.split(" ", 1)
        line_id = int(line_id)
        if line_id == 1:
            where, holder, event, gets, trail, at = {}, {}, {}, {}, {}, {}
        if "\t" in text:
            q, answer, ids = text.split("\t")
            yield q.strip(), answer, [int(i) for i in ids.split()], dict(where=where, holder=holder, event=event,
                                                                         gets=gets, trail=trail, at=at)
            continue
        words = text.rstrip(".").split()
        who, rest = words[0], " ".join(words[1:])
        if any(rest.startswith(v + " the ") for v in MOVES):
            place = words[-1]
            where[who] = (place, line_id)
            for o, h in holder.items():
                if h == who:
                    at[o] = place
                    trail[o].append((place, line_id))
            continue
        obj = rest.replace(" there", "").split(" the ")[1]
        verb = rest.split(" the ")[0]
        event[obj] = line_id
        if verb in GETS:
            assert who in where, f"{line}: a get before its person has been anywhere"
            assert holder.get(obj) is None and at.get(obj, where[who][0]) == where[who][0], line
            holder[obj], gets[obj], at[obj] = who, line_id, where[who][0]
            trail[obj] = [where[who]]
        else:
            assert verb in DROPS and holder.get(obj) == who, line
            holder[obj] = None


def test_task2_answers_and_supporting_facts_follow_the_story():
    lines = generate_lines(2, 60, seed=1)
    checked = 0
    for q, answer, ids, w in _replay(lines):
        obj = q.split("the ")[1].rstrip("?").strip()
        assert q == f"Where is the {obj}?"
        assert answer == w["at"][obj]  # where the object is now
        assert len(ids) == 2 and ids[0] == w["event"][obj]  # the last get/drop of it, written first
        carrier_moves = [m for p, m in w["trail"][obj] if p == answer]
        assert ids[1] == carrier_moves[-1]  # the move that put it (or its carrier) there
        checked += 1
    assert checked == 60 * 5


def test_task3_answers_and_supporting_facts_follow_the_story():
    lines = generate_lines(3, 40, seed=2)
    checked = 0
    for q, answer, ids, w in _replay(lines):
        obj, place = q.split("the ")[1].split(" before")[0], q.split("before the ")[1].rstrip("?").strip()
        trail = w["trail"][obj]
        assert len(ids) == 3 and ids[0] == w["event"][obj]
        # both moves are the carrier's, after its last get: into the place before P, then into P
        k = max(j for j, (p, _) in enumerate(trail) if p == place)  # its latest arrival in P
        assert k >= 2 and ids[1] == trail[k][1] and ids[2] == trail[k - 1][1]
        assert answer == trail[k - 1][0] != place
        assert all(m > w["gets"][obj] for m in ids[1:])
        checked += 1
    assert checked == 40 * 5


@pytest.mark.parametrize("task", [2, 3])
def test_tasks_2_and_3_parse_with_their_number_of_supporting_facts(tmp_path, task):
    path = write_task(tmp_path / f"qa{task}_g_train.txt", task, 30, seed=4)
    samples = parse_babi(path)
    assert len(samples) == 30 * 5
    assert {len(s.supporting) for s in samples} == {task}
    for s in samples:
        # the newest supporting fact is recent, as in every real question of these tasks
        assert len(s.memories) - 1 - max(s.supporting) < RECENT_WINDOW, s.source
        assert s.answer in tokenize(" ".join(s.memories[i] for i in s.supporting)), s.source
    # ids are written object event first, so not always ascending (as in the real files)
    raw = [line.split("\t")[2] for line in path.read_text().splitlines() if "\t" in line]
    assert any([int(x) for x in ids.split()] != sorted(int(x) for x in ids.split()) for ids in raw)


@pytest.mark.parametrize("task", [1, 2, 3, 4, 5])
def test_every_task_is_deterministic_in_the_seed(task):
    assert generate_lines(task, 8, seed=5) == generate_lines(task, 8, seed=5)
    assert generate_lines(task, 8, seed=5) != generate_lines(task, 8, seed=6)


def test_num_objects_and_story_length_knobs():
    lines = generate_lines(2, 40, seed=0, num_objects=1)
    objects = {w for line in lines for w in tokenize(line) if w in OBJECTS}
    assert objects == {OBJECTS[0]}
    short = file_stats(parse_babi_lines(generate_lines(2, 40, seed=0)))
    long = file_stats(parse_babi_lines(generate_lines(2, 40, seed=0, statements_per_question=6)))
    assert long["statements_per_story"]["median"] > 2 * short["statements_per_story"]["median"]


def parse_babi_lines(lines: list[str]):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.txt"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return parse_babi(path)


@pytest.mark.parametrize("task", [1, 2, 3, 5])
def test_distractor_density_adds_bystanders_who_are_never_asked_about(task):
    plain = generate_lines(task, 40, seed=3)
    noisy = generate_lines(task, 40, seed=3, distractor_density=0.4)
    bystanders = {a.lower() for a in actors_of(task)[4:4 + BYSTANDERS]}
    assert not any(set(tokenize(line)) & bystanders for line in plain)  # density 0: none at all
    statements = [line.split(" ", 1)[1] for line in noisy if "\t" not in line]
    by_bystanders = [t for t in statements if tokenize(t)[0] in bystanders]
    assert 0.3 < len(by_bystanders) / len(statements) < 0.5
    samples = parse_babi_lines(noisy)
    assert len(samples) == 40 * 5
    for s in samples:
        assert not set(tokenize(s.query)) & bystanders
        assert not any(tokenize(s.memories[i])[0] in bystanders for i in s.supporting)


@pytest.mark.parametrize("task, knobs, match", [
    (6, {}, "tasks"),
    (4, {"num_places": 2}, "places"),  # 2 relations need a line of 3 places
    (4, {"num_places": 9, "distractor_density": 0.2}, "bystanders"),
    (5, {"num_actors": 1}, "2 actors"),  # a give needs someone to give to
    (2, {"num_objects": 0}, "objects"),
    (3, {"num_objects": len(OBJECTS) + 1}, "objects"),
    (1, {"num_actors": len(ACTORS) - 1, "distractor_density": 0.2}, "bystanders"),
    (2, {"distractor_density": 1.0}, "distractor_density"),
])
def test_bad_generator_knobs_are_refused(task, knobs, match):
    with pytest.raises(ValueError, match=match):
        generate_lines(task, 1, seed=0, **knobs)


@pytest.mark.parametrize("task, name", [(1, "qa1_single-supporting-fact_train.txt"),
                                        (2, "qa2_two-supporting-facts_train.txt"),
                                        (3, "qa3_three-supporting-facts_train.txt"),
                                        (4, "qa4_two-arg-relations_train.txt"),
                                        (5, "qa5_three-arg-relations_train.txt")])
def test_generated_statistics_are_close_to_the_real_task(babi_en, task, name):
    real = file_stats(parse_babi(babi_en / name))
    gen = file_stats(parse_babi_lines(generate_lines(task, real["stories"], seed=0)))
    assert gen["questions"] == real["questions"]
    assert gen["supporting_per_question"] == real["supporting_per_question"]
    assert gen["vocabulary"] == real["vocabulary"]
    for key in ("median", "max"):
        ratio = gen["statements_per_story"][key] / real["statements_per_story"][key]
        assert 0.6 < ratio < 1.7, (key, gen["statements_per_story"], real["statements_per_story"])
    for stat in ("memories_per_question", "words_per_question"):
        ratio = gen[stat]["mean"] / real[stat]["mean"]
        assert 0.7 < ratio < 1.4, (stat, gen[stat], real[stat])


def test_task1_defaults_draw_the_same_stories_as_before_the_new_knobs():
    """The quickstart's data (train split: seed 1) must not move when knobs are added."""
    import hashlib

    text = "\n".join(generate_lines(1, 200, seed=1)).encode()
    assert hashlib.sha256(text).hexdigest() == "759c66ddd56592710aecd8e5cbde0031184b6df7dcf3b2181835daaf7a0505f5"


@pytest.mark.parametrize("task, digest", [
    (2, "a5f2b1a165a60d49dcbf1393c38e0d6e51bba1ca2b6a5ecb517b9ca19abfff0a"),
    (3, "a6a4c8d6f9f960bc0727cd1bbd424beab85900bd08a236a0fb77cf739ffde152"),
])
def test_tasks_2_and_3_defaults_draw_the_same_stories_as_before_tasks_4_and_5(task, digest):
    import hashlib

    assert hashlib.sha256("\n".join(generate_lines(task, 200, seed=1)).encode()).hexdigest() == digest


# --------------------------------------------------------------------------- tasks 4 and 5


@pytest.mark.parametrize("task", [4, 5])
def test_tasks_4_and_5_files_are_seeded(tmp_path, task):
    a = write_task(tmp_path / "a.txt", task, 30, seed=11).read_bytes()
    b = write_task(tmp_path / "b.txt", task, 30, seed=11).read_bytes()
    c = write_task(tmp_path / "c.txt", task, 30, seed=12).read_bytes()
    assert a == b and a != c


def _relations(statements) -> list[tuple[str, str, str]]:
    """(subject, relation, object) of task-4 statements "The S is R of the O."."""
    out = []
    for text in statements:
        words = tokenize(text)
        assert words[0] == "the" and words[2] == "is" and words[4:6] == ["of", "the"] and len(words) == 7, text
        out.append((words[1], words[3], words[6]))
    return out


def _task4_question(query: str) -> tuple[str, str]:
    """(relation R, place X) of "What is R of the X?" or, conversely, "What is the X R' of?"."""
    words = tokenize(query)
    if words[2] == "the":  # what is the X R' of: the answer lies R of X, R = opposite of R'
        return OPPOSITE[words[4]], words[3]
    return words[2], words[5]


def test_task4_stories_ask_about_one_relation_and_the_answer_follows_from_them(tmp_path):
    path = write_task(tmp_path / "qa4_g_train.txt", 4, 300, seed=5)
    samples = parse_babi(path)
    assert len(samples) == 300 and len({s.story for s in samples}) == 300  # one question per story
    forms = set()
    for s in samples:
        assert len(s.memories) == 2 and len(s.supporting) == 1, s.source
        facts = _relations(s.memories)
        relation, place = _task4_question(s.query)
        forms.add(tokenize(s.query)[2] == "the")
        # Re-derived from the statements (each read both ways): the one place that lies R of X.
        known = {*facts, *((o, OPPOSITE[r], sub) for sub, r, o in facts)}
        answers = {sub for sub, r, o in known if r == relation and o == place}
        assert answers == {s.answer}, s.source
        # The supporting statement names both places of the question.
        assert {place, s.answer} <= set(tokenize(s.memories[s.supporting[0]])), s.source
        # Three places on one line: north/south or east/west, never both.
        assert len({p for f in facts for p in (f[0], f[2])}) == 3
        assert len({frozenset((r, OPPOSITE[r])) for _, r, _ in facts}) == 1, s.memories
    assert forms == {True, False}
    # As in the real files: no space before the question's tab.
    assert all(line.split("\t")[0].endswith("?") for line in path.read_text().splitlines() if "\t" in line)


def test_task4_longer_lines_and_distractors_never_touch_the_question():
    lines = generate_lines(4, 60, seed=2, statements_per_question=4, num_places=6, distractor_density=0.3)
    samples = parse_babi_lines(lines)
    assert len(samples) == 60
    bystanders = set(PLACES[6:6 + BYSTANDERS])
    with_distractors = 0
    for s in samples:
        facts = _relations(s.memories)
        story = [f for f in facts if not {f[0], f[2]} & bystanders]
        asides = [f for f in facts if {f[0], f[2]} <= bystanders]
        assert len(story) == 4 and len(story) + len(asides) == len(facts), s.memories
        with_distractors += bool(asides)
        relation, place = _task4_question(s.query)
        assert place not in bystanders and s.answer not in bystanders
        assert s.memories[s.supporting[0]] in [s.memories[i] for i, f in enumerate(facts) if f in story]
        known = {*facts, *((o, OPPOSITE[r], sub) for sub, r, o in facts)}
        assert {sub for sub, r, o in known if r == relation and o == place} == {s.answer}, s.source
    assert with_distractors > 20


GIVES = ("gave", "handed", "passed")


def _replay_gives(lines: list[str]):
    """An independent reading of generated task-5 lines: yields, per question, (question, answer,
    support ids, gives so far as (id, giver, object, receiver)), checking that every statement is
    possible (only a holder gives or drops, a get takes a free object, a give is between two people
    at the same place, or to one whose place is not known yet)."""
    for line in lines:
        line_id, text = line.split(" ", 1)
        line_id = int(line_id)
        if line_id == 1:
            where, holder, gives = {}, {}, []
        if "\t" in text:
            q, answer, ids = text.split("\t")
            yield q.strip(), answer, [int(i) for i in ids.split()], list(gives)
            continue
        words = text.rstrip(".").split()
        who, rest = words[0], " ".join(words[1:])
        if any(rest.startswith(v + " the ") for v in MOVES):
            where[who] = words[-1]
        elif words[1] in GIVES:
            obj, receiver = words[3], words[5]
            assert words[4] == "to" and holder.get(obj) == who != receiver, line
            assert where.get(receiver, where[who]) == where[who], line
            where.setdefault(receiver, where[who])
            holder[obj] = receiver
            gives.append((line_id, who, obj, receiver))
        else:
            obj = rest.replace(" there", "").split(" the ")[1]
            if rest.split(" the ")[0] in GETS:
                assert who in where and holder.get(obj) is None, line
                holder[obj] = who
            else:
                assert rest.split(" the ")[0] in DROPS and holder.get(obj) == who, line
                holder[obj] = None


TASK5_QUESTIONS = [  # (pattern, the parts it names, the part that answers): parts of (id, giver, object, receiver)
    (r"What did (\w+) give to (\w+)\?", (1, 3), 2),
    (r"Who gave the (\w+)\?", (2,), 1),
    (r"Who gave the (\w+) to (\w+)\?", (2, 3), 1),
    (r"Who received the (\w+)\?", (2,), 3),
    (r"Who did (\w+) give the (\w+) to\?", (1, 2), 3),
]


def test_task5_answers_are_the_latest_give_the_question_matches():
    lines = generate_lines(5, 60, seed=4)
    asked = [0] * len(TASK5_QUESTIONS)
    for q, answer, ids, gives in _replay_gives(lines):
        (k, m), = [(k, m) for k, (pat, _, _) in enumerate(TASK5_QUESTIONS) if (m := re.fullmatch(pat, q))]
        _, names, asks = TASK5_QUESTIONS[k]
        matching = [g for g in gives if tuple(g[i] for i in names) == m.groups()]
        assert matching, q
        assert ids == [matching[-1][0]], (q, ids, matching)  # the latest give it matches
        assert answer == matching[-1][asks]
        asked[k] += 1
    assert sum(asked) == 60 * 5
    assert min(asked) > 30 and asked[0] > max(asked[1:])  # every form; "what" the commonest, as in the real files


def test_task5_parses_with_one_recent_supporting_give_and_facts_in_order(tmp_path):
    path = write_task(tmp_path / "qa5_g_train.txt", 5, 40, seed=6)
    samples = parse_babi(path)
    assert len(samples) == 40 * 5 and {len(s.supporting) for s in samples} == {1}
    statements = {}
    for line in path.read_text().splitlines():
        line_id, text = line.split(" ", 1)
        if line_id == "1":
            story = statements[len(statements)] = []
        if "\t" not in text:
            story.append(text)
    for prev, s in zip([None, *samples], samples):
        # the memories are the story's statements so far, in the file's order
        assert list(s.memories) == statements[s.story][:len(s.memories)], s.source
        if prev is not None and prev.story == s.story:
            assert len(s.memories) > len(prev.memories)
        fact = s.memories[s.supporting[0]]
        assert set(tokenize(fact)) & set(GIVES) and s.answer.lower() in tokenize(fact), s.source
        assert len(s.memories) - 1 - s.supporting[0] < RECENT_WINDOW, s.source
    people = set(re.findall(r"\b[A-Z][a-z]+\b", path.read_text())) - {"What", "Who", "The"}
    assert people == set(actors_of(5)[:4]) == {"Mary", "Fred", "Bill", "Jeff"}  # the real files' names


@pytest.mark.parametrize("task, questions", [(4, 7), (5, 7 * 5)])
def test_generated_config_writes_tasks_4_and_5(tmp_path, task, questions):
    config = GeneratedConfig(task=task, train_stories=7, test_stories=3, questions_per_story=5,
                             statements_per_question=2, num_actors=4, num_places=6, num_objects=3,
                             distractor_density=0.0)
    config.validate()
    train, test = write_splits(config, seed=1, folder=tmp_path)
    assert train.name == f"qa{task}_generated_train.txt" and len(parse_babi(train)) == questions
    assert len({s.story for s in parse_babi(test)}) == 3

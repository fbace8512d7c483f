"""Seeded generators of bAbI tasks 1 to 5, in the real format.

Task 1: people move between places; "Where is Mary?" needs Mary's most recent move.
Task 2: people also get and drop objects; "Where is the football?" needs the last thing done with
the football and the move that put its carrier where it is (two facts).
Task 3: "Where was the football before the kitchen?" needs the last thing done with the football
and the two moves of its carrier that took it to the place before the kitchen and then into the
kitchen (three facts).
Task 4: "The office is north of the kitchen. The garden is south of the kitchen. What is north of the
kitchen?": places on a line, each statement relates two neighbours, one question per story about
one statement (two-argument relations).
Task 5: people also give objects to each other; "Who gave the football?", "What did Fred give to
Bill?", "Who received the milk?" etc. need the latest give that the question matches, one fact
(three-argument relations).

The rules follow what the real files show (see ``memsel data inspect``): statements come in blocks
of ``statements_per_question`` (2 in bAbI) and after each block a question is asked if one can be;
in tasks 2 and 3 only about an object whose newest supporting fact is among the last
``RECENT_WINDOW`` statements (as in every real question of those tasks), and with probability
``QUESTION_PROB[task]``, tuned so that story lengths come out close to the real ones. Supporting
ids are written in the real files' order (object event first), not ascending. Task 5 asks, the same
way, about the story's newest give while it is among the last ``RECENT_WINDOW`` statements (as 98%
of the real questions do; the newest give is the latest one every question about it matches). Task
4 writes one question per story, after ``statements_per_question`` relations, as the real files do.

Distractors: with ``distractor_density`` = p, each statement is, with probability p, a move of a
bystander (a person who is never asked about and never touches an object) instead of a statement
of the story (task 4: a relation between two bystander places, ``BYSTANDERS`` places after the
story's, which no question names). Generated files go through the same parser as the real ones.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, NamedTuple

from memsel.data.babi import read_splits
from memsel.data.sample import DATASETS, DatasetSplits
from memsel.files import write_text_atomic
from memsel.registry import check

# Word lists belong to the generator only: networks and environment see token ids, never words.
ACTORS = ("Mary", "John", "Daniel", "Sandra", "Fred", "Bill", "Julie", "Emily", "Jeff", "Greg")
PLACES = ("bathroom", "hallway", "garden", "office", "bedroom", "kitchen", "cinema", "park", "school",
          "market")
OBJECTS = ("football", "apple", "milk", "book", "key", "box", "bag", "hat")
VERBS = ("moved to", "went to", "journeyed to", "travelled to", "went back to")
GET_VERBS = ("got", "grabbed", "took", "picked up")
DROP_VERBS = ("dropped", "left", "discarded", "put down")
GIVE_VERBS = ("gave", "handed", "passed")
OPPOSITE = {"north": "south", "south": "north", "east": "west", "west": "east"}
"""Task 4's relations, each with its converse."""
TASK_ACTORS = {5: ("Mary", "Fred", "Bill", "Jeff", "John", "Daniel", "Sandra", "Julie", "Emily", "Greg")}
"""Tasks whose real files use other names than ``ACTORS``' first ones: the same names, reordered."""

TASKS = (1, 2, 3, 4, 5)
BYSTANDERS = 2
"""People who only ever move, used for distractor statements (names after the actors'); task 4: places."""
RECENT_WINDOW = 5
"""Tasks 2, 3 and 5: a question's newest supporting fact is among this many latest statements."""
DROP_PROB = 0.6
"""Tasks 2 and 3: chance that a person who holds something drops it (the real files: about half)."""
GET_PROB = (0.45, 0.05)
"""Tasks 2 and 3: chance that a person (holding nothing, holding something) gets an object."""
QUESTION_PROB = {2: 0.6, 3: 0.9, 5: 1.0}
"""Tasks 2, 3 and 5: chance to ask, after a block, when a question can be asked."""
THERE_PROB = {2: (1.0, 0.2), 3: (0.2, 0.2), 5: (1.0, 0.17)}
"""Tasks 2, 3 and 5: chance that a (get, drop) statement ends in "there", as in the real files."""
GIVE_PROB = 0.7
"""Task 5: chance that a person who holds something gives it to someone where they are (if anyone is)."""
GIVE_DROP_PROB = 0.5
"""Task 5: chance that a person who holds something and does not give it drops it."""
GIVE_GET_PROB = (0.5, 0.1)
"""Task 5: chance that a person (holding nothing, holding something) gets an object lying there.
With RECEIVER_NEXT, these make story lengths, the share of each kind of statement (about 55% moves,
17% gets, 16% gives, 10% drops) and questions' support ages come out close to the real files'."""
RECEIVER_NEXT = 0.6
"""Task 5: chance that the person who was just given something acts next (the real files: 0.65)."""
OUTER_SUBJECT_PROB = 0.65
"""Task 4: chance that a relation's subject is the place farther from the middle of the story's line
("The office is north of the kitchen. The garden is south of the kitchen.": the real files' 0.65)."""
MAX_BLOCKS_PER_QUESTION = 500
"""A story that cannot ask its next question within this many blocks is refused (bad knobs)."""


def _check_knobs(task: int, num_actors: int, num_places: int, num_objects: int, distractor_density: float,
                 statements_per_question: int = 2) -> None:
    if task not in TASKS:
        raise ValueError(f"the generator writes tasks {list(TASKS)}; asked for task {task}")
    if task == 4:
        _check_relation_knobs(num_places, distractor_density, statements_per_question)
        return
    bystanders = BYSTANDERS if distractor_density > 0 else 0
    least = 2 if task == 5 else 1  # a give needs someone to give to
    if num_actors < least or num_places < 2:
        raise ValueError(f"the generator needs at least {least} actor{'s' if least > 1 else ''} and 2 places "
                         f"for task {task}; asked for {num_actors} and {num_places}")
    if num_actors + bystanders > len(ACTORS) or num_places > len(PLACES):
        raise ValueError(f"the generator knows {len(ACTORS)} actors (distractors use {BYSTANDERS} of them) and "
                         f"{len(PLACES)} places; asked for {num_actors} actors"
                         f"{f' + {bystanders} bystanders' if bystanders else ''} and {num_places} places")
    if task > 1 and not 1 <= num_objects <= len(OBJECTS):
        raise ValueError(f"the generator knows {len(OBJECTS)} objects and task {task} needs at least 1; "
                         f"asked for {num_objects}")
    if not 0.0 <= distractor_density < 1.0:
        raise ValueError(f"distractor_density must be in [0, 1), got {distractor_density}")


def _check_relation_knobs(num_places: int, distractor_density: float, statements_per_question: int) -> None:
    if not 0.0 <= distractor_density < 1.0:
        raise ValueError(f"distractor_density must be in [0, 1), got {distractor_density}")
    bystanders = BYSTANDERS if distractor_density > 0 else 0
    if statements_per_question < 1 or num_places < statements_per_question + 1:
        raise ValueError(f"task 4 puts {statements_per_question} relations on a line of as many places + 1; "
                         f"asked for {num_places} places (and at least 1 relation)")
    if num_places + bystanders > len(PLACES):
        raise ValueError(f"the generator knows {len(PLACES)} places (task 4's distractors use {BYSTANDERS} of "
                         f"them); asked for {num_places} places{f' + {bystanders} bystanders' if bystanders else ''}")


def generate_lines(task: int, stories: int, seed: int, *, questions_per_story: int = 5,
                   statements_per_question: int = 2, num_actors: int = 4, num_places: int = 6,
                   num_objects: int = 3, distractor_density: float = 0.0) -> list[str]:
    """Lines (without newlines) of a generated bAbI file for ``task`` 1 to 5.

    ``statements_per_question``: task 1 puts exactly this many statements between two questions;
    tasks 2, 3 and 5 write statements in blocks of this size until a question can be asked (and is);
    task 4 writes this many relations, then its story's only question (``questions_per_story`` and
    ``num_actors`` are not used). ``num_objects`` is used by tasks 2, 3 and 5 only.
    """
    _check_knobs(task, num_actors, num_places, num_objects, distractor_density, statements_per_question)
    if task == 1:
        return generate_task1_lines(stories, seed, questions_per_story=questions_per_story,
                                    statements_per_question=statements_per_question, num_actors=num_actors,
                                    num_places=num_places, distractor_density=distractor_density)
    if task == 4:
        return generate_task4_lines(stories, seed, statements_per_question=statements_per_question,
                                    num_places=num_places, distractor_density=distractor_density)
    rng = random.Random(seed)
    actors = actors_of(task)
    story = _GiveStory if task == 5 else _ObjectStory
    lines: list[str] = []
    for _ in range(stories):
        lines.extend(story(rng, task, actors[:num_actors], PLACES[:num_places], OBJECTS[:num_objects],
                           _bystanders(num_actors, distractor_density, actors), distractor_density)
                     .write(questions_per_story, statements_per_question))
    return lines


def actors_of(task: int) -> tuple[str, ...]:
    """The names task ``task`` draws its people from, in order (its first ``num_actors``, then bystanders)."""
    return TASK_ACTORS.get(task, ACTORS)


def _bystanders(num_actors: int, distractor_density: float, actors: tuple[str, ...] = ACTORS) -> tuple[str, ...]:
    return actors[num_actors:num_actors + BYSTANDERS] if distractor_density > 0 else ()


def generate_task1_lines(stories: int, seed: int, questions_per_story: int = 5,
                         statements_per_question: int = 2, num_actors: int = 4,
                         num_places: int = 6, distractor_density: float = 0.0) -> list[str]:
    """Lines of a task-1 file (without newlines)."""
    _check_knobs(1, num_actors, num_places, 0, distractor_density)
    rng = random.Random(seed)
    actors, places = ACTORS[:num_actors], PLACES[:num_places]
    bystanders = _bystanders(num_actors, distractor_density)
    lines: list[str] = []
    for _ in range(stories):
        line_id = 0
        where: dict[str, tuple[str, int]] = {}  # actor -> (place, line id of the move)
        elsewhere: dict[str, str] = {}  # bystander -> place
        asked = 0
        while asked < questions_per_story:
            for _s in range(statements_per_question):
                line_id += 1
                # No draw at all when there are no distractors: the default stream stays as it was.
                if bystanders and rng.random() < distractor_density:
                    who = rng.choice(bystanders)
                    place = rng.choice([p for p in places if p != elsewhere.get(who)])
                    elsewhere[who] = place
                    lines.append(f"{line_id} {who} {rng.choice(VERBS)} the {place}.")
                    continue
                actor = rng.choice(actors)
                # A move goes somewhere new, as in bAbI.
                place = rng.choice([p for p in places if p != where.get(actor, ("", 0))[0]])
                lines.append(f"{line_id} {actor} {rng.choice(VERBS)} the {place}.")
                where[actor] = (place, line_id)
            if not where:  # only distractors so far: nobody to ask about yet, write another block
                continue
            actor = rng.choice(sorted(where))
            place, support = where[actor]
            line_id += 1
            lines.append(f"{line_id} Where is {actor}? \t{place}\t{support}")
            asked += 1
    return lines


def generate_task4_lines(stories: int, seed: int, statements_per_question: int = 2, num_places: int = 6,
                         distractor_density: float = 0.0) -> list[str]:
    """Lines of a task-4 file (without newlines): per story, ``statements_per_question`` relations
    between neighbours on a line of places, then one question about one of them."""
    _check_relation_knobs(num_places, distractor_density, statements_per_question)
    rng = random.Random(seed)
    places = PLACES[:num_places]
    bystanders = PLACES[num_places:num_places + BYSTANDERS] if distractor_density > 0 else ()
    lines: list[str] = []
    for _ in range(stories):
        lines.extend(_relation_story(rng, places, statements_per_question, bystanders, distractor_density))
    return lines


def _relation(subject: str, relation: str, obj: str) -> str:
    return f"The {subject} is {relation} of the {obj}."


def _line_relations(rng: random.Random, places: tuple[str, ...], n: int) -> list[tuple[str, str, str]]:
    """``n`` (subject, relation, object) facts between neighbours on a line of n + 1 of ``places``, shuffled."""
    line = rng.sample(places, n + 1)
    far = rng.choice(sorted(OPPOSITE))  # line[i] lies `far` of line[i + 1]
    middle = n // 2
    facts = []
    for i in range(n):
        # Which of the two lies farther from the middle of the line (never a tie on a line).
        first_outer = abs(i - middle) > abs(i + 1 - middle)
        if first_outer == (rng.random() < OUTER_SUBJECT_PROB):
            facts.append((line[i], far, line[i + 1]))
        else:
            facts.append((line[i + 1], OPPOSITE[far], line[i]))
    rng.shuffle(facts)
    return facts


def _relation_story(rng: random.Random, places: tuple[str, ...], n: int, bystanders: tuple[str, ...],
                    density: float) -> list[str]:
    """One task-4 story: its relations (and distractors), then a question whose answer is the subject
    of one relation, asked as "What is R of the O?" or, conversely, "What is the O R' of?"."""
    facts = _line_relations(rng, places, n)
    # Distractors restate one fact about the two bystander places, either way round: never a contradiction.
    aside = (*bystanders, rng.choice(sorted(OPPOSITE))) if bystanders else None
    lines: list[str] = []
    ids: list[int] = []
    while len(ids) < n:
        if aside and rng.random() < density:
            a, b, rel = aside
            text = _relation(a, rel, b) if rng.random() < 0.5 else _relation(b, OPPOSITE[rel], a)
        else:
            text = _relation(*facts[len(ids)])
            ids.append(len(lines) + 1)
        lines.append(f"{len(lines) + 1} {text}")
    k = rng.randrange(n)
    subject, relation, obj = facts[k]
    question = (f"What is {relation} of the {obj}?" if rng.random() < 0.5
                else f"What is the {obj} {OPPOSITE[relation]} of?")
    # No space before the tab in the real task-4 files (tasks 1-3 and 5 have one).
    lines.append(f"{len(lines) + 1} {question}\t{subject}\t{ids[k]}")
    return lines


@dataclass
class _Thing:
    """An object's state while a task-2/3 story is written."""

    holder: str | None = None
    place: str | None = None
    """Where it is; None until someone first gets it."""
    place_move: int = 0
    """Line id of the move that put it (or its carrier) where it is."""
    event: int = 0
    """Line id of the last get or drop of it."""
    trail: list[tuple[str, int]] = field(default_factory=list)
    """Places since its last get, with the line id of the carrier's move into each."""


class _ObjectStory:
    """One task-2 or task-3 story: people move, get and drop objects; questions about objects."""

    def __init__(self, rng: random.Random, task: int, actors: tuple[str, ...], places: tuple[str, ...],
                 objects: tuple[str, ...], bystanders: tuple[str, ...], distractor_density: float):
        self.rng, self.task = rng, task
        self.actors, self.places, self.objects = actors, places, objects
        self.bystanders, self.density = bystanders, distractor_density
        self.line_id = 0
        self.statements: dict[int, int] = {}  # line id -> 0-based statement number
        self.where: dict[str, tuple[str, int]] = {}  # person -> (place, line id of the move)
        self.holding: dict[str, list[str]] = {a: [] for a in actors}
        self.things = {o: _Thing() for o in objects}
        self.lines: list[str] = []

    def _emit(self, text: str) -> int:
        self.line_id += 1
        self.statements[self.line_id] = len(self.statements)
        self.lines.append(f"{self.line_id} {text}")
        return self.line_id

    def _move(self, who: str) -> None:
        here = self.where.get(who, ("", 0))[0]
        place = self.rng.choice([p for p in self.places if p != here])
        line = self._emit(f"{who} {self.rng.choice(VERBS)} the {place}.")
        self.where[who] = (place, line)
        for o in self.holding.get(who, ()):
            t = self.things[o]
            t.place, t.place_move = place, line
            t.trail.append((place, line))

    def _statement(self) -> None:
        rng = self.rng
        if self.bystanders and rng.random() < self.density:
            self._move(rng.choice(self.bystanders))
            return
        actor = rng.choice(self.actors)
        if actor not in self.where:  # "got the apple there" needs a "there" first
            self._move(actor)
            return
        held = self.holding[actor]
        if held and rng.random() < DROP_PROB:
            self._drop(actor)
            return
        if not self._get(actor, GET_PROB[1 if held else 0]):
            self._move(actor)

    def _drop(self, actor: str) -> None:
        rng, held = self.rng, self.holding[actor]
        o = rng.choice(held)
        t = self.things[o]
        there = " there" if rng.random() < THERE_PROB[self.task][1] else ""
        t.event = self._emit(f"{actor} {rng.choice(DROP_VERBS)} the {o}{there}.")
        t.holder = None
        held.remove(o)

    def _get(self, actor: str, prob: float) -> bool:
        """With chance ``prob``, ``actor`` gets an object lying where they are (or never seen yet)."""
        rng = self.rng
        here, move = self.where[actor]
        free = [o for o, t in self.things.items() if t.holder is None and t.place in (None, here)]
        if not (free and rng.random() < prob):
            return False
        o = rng.choice(free)
        t = self.things[o]
        there = " there" if rng.random() < THERE_PROB[self.task][0] else ""
        t.event = self._emit(f"{actor} {rng.choice(GET_VERBS)} the {o}{there}.")
        t.holder, t.place, t.place_move = actor, here, move
        t.trail = [(here, move)]
        self.holding[actor].append(o)
        return True

    def _recent(self, support: tuple[int, ...]) -> bool:
        newest = max(self.statements[s] for s in support)
        return len(self.statements) - 1 - newest < RECENT_WINDOW

    def _questions(self) -> list[tuple[str, str, tuple[int, ...]]]:
        """(question, answer, supporting ids) that can be asked now."""
        out = []
        for o, t in self.things.items():
            if t.place is None:
                continue
            if self.task == 2:
                support: tuple[int, ...] = (t.event, t.place_move)
                if self._recent(support):
                    out.append((f"Where is the {o}?", t.place, support))
                continue
            # Both moves are the carrier's, after its last get (as in every real task-3 question).
            for k in range(2, len(t.trail)):
                place, move = t.trail[k]
                if any(p == place for p, _ in t.trail[k + 1:]):
                    continue  # "before the P" means its latest arrival in P
                before, before_move = t.trail[k - 1]
                support = (t.event, move, before_move)
                if self._recent(support):
                    out.append((f"Where was the {o} before the {place}?", before, support))
        return out

    def write(self, questions: int, block: int) -> list[str]:
        asked = blocks = 0
        while asked < questions:
            for _ in range(block):
                self._statement()
            blocks += 1
            candidates = self._questions()
            if candidates and self.rng.random() < QUESTION_PROB[self.task]:
                question, answer, support = self.rng.choice(candidates)
                self.line_id += 1
                self.lines.append(f"{self.line_id} {question} \t{answer}\t{' '.join(map(str, support))}")
                asked += 1
                blocks = 0
            elif blocks > MAX_BLOCKS_PER_QUESTION:
                raise ValueError(f"task {self.task}: no question could be asked in {MAX_BLOCKS_PER_QUESTION} blocks "
                                 f"of {block} statements; check the generator knobs")
        return self.lines


class _Give(NamedTuple):
    """A give in a task-5 story: its line id and who gave what to whom."""

    line: int
    giver: str
    object: str
    receiver: str


GIVE_QUESTIONS = (
    ("What did {giver} give to {receiver}?", "object"),
    ("What did {giver} give to {receiver}?", "object"),
    ("Who gave the {object}?", "giver"),
    ("Who gave the {object} to {receiver}?", "giver"),
    ("Who received the {object}?", "receiver"),
    ("Who did {giver} give the {object} to?", "receiver"),
)
"""Task 5: (question about a give, the part of it that answers). "What" is listed twice: a third of
the real questions ask for the object, the rest split evenly between giver and receiver."""


class _GiveStory(_ObjectStory):
    """One task-5 story: people move, get, drop and give objects; questions about the gives."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.gives: list[_Give] = []
        self.receiver: str | None = None  # who was just given something: likely to act next

    def _statement(self) -> None:
        rng = self.rng
        if self.bystanders and rng.random() < self.density:
            self._move(rng.choice(self.bystanders))
            return
        follow, self.receiver = self.receiver, None
        actor = follow if follow and rng.random() < RECEIVER_NEXT else rng.choice(self.actors)
        if actor not in self.where:  # "got the apple there" needs a "there" first
            self._move(actor)
            return
        held = self.holding[actor]
        here = self.where[actor][0]
        # Someone at the same place, or not placed yet (then placed there by the give, as in the real files).
        receivers = [a for a in self.actors if a != actor and self.where.get(a, (here, 0))[0] == here]
        if held and receivers and rng.random() < GIVE_PROB:
            self._give(actor, rng.choice(held), rng.choice(receivers))
        elif held and rng.random() < GIVE_DROP_PROB:
            self._drop(actor)
        elif not self._get(actor, GIVE_GET_PROB[1 if held else 0]):
            self._move(actor)

    def _give(self, giver: str, o: str, receiver: str) -> None:
        line = self._emit(f"{giver} {self.rng.choice(GIVE_VERBS)} the {o} to {receiver}.")
        self.holding[giver].remove(o)
        self.holding[receiver].append(o)
        self.things[o].holder, self.things[o].event = receiver, line
        self.where.setdefault(receiver, self.where[giver])
        self.gives.append(_Give(line, giver, o, receiver))
        self.receiver = receiver

    def _questions(self) -> list[tuple[str, str, tuple[int, ...]]]:
        """Questions about the newest give, if it is recent (as nearly every real question is)."""
        if not (self.gives and self._recent((self.gives[-1].line,))):
            return []
        give = self.gives[-1]
        return [(text.format(**give._asdict()), getattr(give, asks), (give.line,)) for text, asks in GIVE_QUESTIONS]


def write_task(path: str | Path, task: int, stories: int, seed: int, **knobs) -> Path:
    """Write a generated file; written to a temporary name first so no half file is left."""
    path = Path(path)
    return write_text_atomic(path, "\n".join(generate_lines(task, stories, seed, **knobs)) + "\n")


def write_task1(path: str | Path, stories: int, seed: int, **knobs) -> Path:
    """Write a generated task-1 file (see :func:`write_task`)."""
    return write_task(path, 1, stories, seed, **knobs)


@dataclass
class GeneratedConfig:
    """``generated``: the generator's knobs, which memsel.config.DataConfig spells (and documents) as ``data.*``."""

    FLAT_PREFIX: ClassVar[str] = ""
    task: int
    train_stories: int
    test_stories: int
    questions_per_story: int
    statements_per_question: int
    num_actors: int
    num_places: int
    num_objects: int
    distractor_density: float

    def validate(self, p: str = "data") -> None:
        for name in ("train_stories", "test_stories", "questions_per_story", "statements_per_question"):
            check(getattr(self, name) >= 1, f"{p}.{name}", "an integer >= 1", getattr(self, name))
        check(self.num_actors >= 1, f"{p}.num_actors", "an integer >= 1", self.num_actors)
        check(self.num_places >= 2, f"{p}.num_places", "an integer >= 2", self.num_places)
        check(self.num_objects >= 1, f"{p}.num_objects", "an integer >= 1", self.num_objects)
        check(0.0 <= self.distractor_density < 1.0, f"{p}.distractor_density", "a number in [0, 1)",
              self.distractor_density)
        check(self.task in TASKS, f"{p}.task", f"one of {list(TASKS)} when {p}.path is empty (the generated tasks)",
              self.task)
        if self.task == 4:  # relations between neighbours on a line of places
            check(self.num_places > self.statements_per_question, f"{p}.num_places",
                  f"more than {p}.statements_per_question ({self.statements_per_question}) with task 4",
                  self.num_places)
        if self.task == 5:
            check(self.num_actors >= 2, f"{p}.num_actors", "an integer >= 2 with task 5 (a give needs two people)",
                  self.num_actors)


def write_splits(config: GeneratedConfig, seed: int, folder: Path) -> tuple[Path, Path]:
    """Generate train/test files of task ``config.task`` into ``folder``, deterministic in the seed."""
    knobs = dict(questions_per_story=config.questions_per_story,
                 statements_per_question=config.statements_per_question, num_actors=config.num_actors,
                 num_places=config.num_places, num_objects=config.num_objects,
                 distractor_density=config.distractor_density)
    train = folder / f"qa{config.task}_generated_train.txt"
    test = folder / f"qa{config.task}_generated_test.txt"
    # The test split gets its own seed stream so that it never repeats the train stories' draws.
    write_task(train, config.task, config.train_stories, seed=seed * 2 + 1, **knobs)
    write_task(test, config.task, config.test_stories, seed=seed * 2 + 2, **knobs)
    return train, test


@DATASETS.register("generated", GeneratedConfig)
def generated(config: GeneratedConfig, seed: int, folder: Path) -> DatasetSplits:
    """``generated``: bAbI-format files written into the run's data folder, then parsed like real ones."""
    return read_splits(*write_splits(config, seed, folder))

"""Seeded generators of bAbI tasks 1, 2 and 3 (one, two, three supporting facts), in the real format.

Task 1: people move between places; "Where is Mary?" needs Mary's most recent move.
Task 2: people also get and drop objects; "Where is the football?" needs the last thing done with
the football and the move that put its carrier where it is (two facts).
Task 3: "Where was the football before the kitchen?" needs the last thing done with the football
and the two moves of its carrier that took it to the place before the kitchen and then into the
kitchen (three facts).

The rules follow what the real files show (see ``memsel data inspect``): statements come in blocks
of ``statements_per_question`` (2 in bAbI) and after each block a question is asked if one can be;
in tasks 2 and 3 only about an object whose newest supporting fact is among the last
``RECENT_WINDOW`` statements (as in every real question of those tasks), and with probability
``QUESTION_PROB[task]``, tuned so that story lengths come out close to the real ones. Supporting
ids are written in the real files' order (object event first), not ascending.

Distractors: with ``distractor_density`` = p, each statement is, with probability p, a move of a
bystander (a person who is never asked about and never touches an object) instead of a statement
of the story. Generated files go through the same parser as the real ones.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

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

TASKS = (1, 2, 3)
BYSTANDERS = 2
"""People who only ever move, used for distractor statements (names after the actors')."""
RECENT_WINDOW = 5
"""Tasks 2 and 3: a question's newest supporting fact is among this many latest statements."""
DROP_PROB = 0.6
"""Tasks 2 and 3: chance that a person who holds something drops it (the real files: about half)."""
GET_PROB = (0.45, 0.05)
"""Tasks 2 and 3: chance that a person (holding nothing, holding something) gets an object."""
QUESTION_PROB = {2: 0.6, 3: 0.9}
"""Tasks 2 and 3: chance to ask, after a block, when a question can be asked."""
THERE_PROB = {2: (1.0, 0.2), 3: (0.2, 0.2)}
"""Tasks 2 and 3: chance that a (get, drop) statement ends in "there", as in the real files."""
MAX_BLOCKS_PER_QUESTION = 500
"""A story that cannot ask its next question within this many blocks is refused (bad knobs)."""


def _check_knobs(task: int, num_actors: int, num_places: int, num_objects: int, distractor_density: float) -> None:
    if task not in TASKS:
        raise ValueError(f"the generator writes tasks {list(TASKS)}; asked for task {task}")
    bystanders = BYSTANDERS if distractor_density > 0 else 0
    if num_actors < 1 or num_places < 2:
        raise ValueError(f"the generator needs at least 1 actor and 2 places; asked for {num_actors} and {num_places}")
    if num_actors + bystanders > len(ACTORS) or num_places > len(PLACES):
        raise ValueError(f"the generator knows {len(ACTORS)} actors (distractors use {BYSTANDERS} of them) and "
                         f"{len(PLACES)} places; asked for {num_actors} actors"
                         f"{f' + {bystanders} bystanders' if bystanders else ''} and {num_places} places")
    if task > 1 and not 1 <= num_objects <= len(OBJECTS):
        raise ValueError(f"the generator knows {len(OBJECTS)} objects and task {task} needs at least 1; "
                         f"asked for {num_objects}")
    if not 0.0 <= distractor_density < 1.0:
        raise ValueError(f"distractor_density must be in [0, 1), got {distractor_density}")


def generate_lines(task: int, stories: int, seed: int, *, questions_per_story: int = 5,
                   statements_per_question: int = 2, num_actors: int = 4, num_places: int = 6,
                   num_objects: int = 3, distractor_density: float = 0.0) -> list[str]:
    """Lines (without newlines) of a generated bAbI file for ``task`` 1, 2 or 3.

    ``statements_per_question``: task 1 puts exactly this many statements between two questions;
    tasks 2 and 3 write statements in blocks of this size until a question can be asked (and is).
    ``num_objects`` is used by tasks 2 and 3 only.
    """
    _check_knobs(task, num_actors, num_places, num_objects, distractor_density)
    if task == 1:
        return generate_task1_lines(stories, seed, questions_per_story=questions_per_story,
                                    statements_per_question=statements_per_question, num_actors=num_actors,
                                    num_places=num_places, distractor_density=distractor_density)
    rng = random.Random(seed)
    lines: list[str] = []
    for _ in range(stories):
        lines.extend(_ObjectStory(rng, task, ACTORS[:num_actors], PLACES[:num_places], OBJECTS[:num_objects],
                                  _bystanders(num_actors, distractor_density), distractor_density)
                     .write(questions_per_story, statements_per_question))
    return lines


def _bystanders(num_actors: int, distractor_density: float) -> tuple[str, ...]:
    return ACTORS[num_actors:num_actors + BYSTANDERS] if distractor_density > 0 else ()


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
        here, move = self.where[actor]
        held = self.holding[actor]
        get_there, drop_there = THERE_PROB[self.task]
        if held and rng.random() < DROP_PROB:
            o = rng.choice(held)
            t = self.things[o]
            there = " there" if rng.random() < drop_there else ""
            t.event = self._emit(f"{actor} {rng.choice(DROP_VERBS)} the {o}{there}.")
            t.holder = None
            held.remove(o)
            return
        free = [o for o, t in self.things.items() if t.holder is None and t.place in (None, here)]
        if free and rng.random() < GET_PROB[1 if held else 0]:
            o = rng.choice(free)
            t = self.things[o]
            there = " there" if rng.random() < get_there else ""
            t.event = self._emit(f"{actor} {rng.choice(GET_VERBS)} the {o}{there}.")
            t.holder, t.place, t.place_move = actor, here, move
            t.trail = [(here, move)]
            held.append(o)
            return
        self._move(actor)

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

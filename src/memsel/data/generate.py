"""A seeded generator of bAbI task 1 (single supporting fact) stories, written in the real format.

People move between places; every few statements someone asks where a person is. The supporting
fact is that person's most recent move, so the answer needs the right memory, not the latest one.
Generated files go through the same parser as the real ones.
"""

from __future__ import annotations

import random
from pathlib import Path

# Word lists belong to the generator only: networks and environment see token ids, never words.
ACTORS = ("Mary", "John", "Daniel", "Sandra", "Fred", "Bill", "Julie", "Emily", "Jeff", "Greg")
PLACES = ("bathroom", "hallway", "garden", "office", "bedroom", "kitchen", "cinema", "park", "school",
          "market")
VERBS = ("moved to", "went to", "journeyed to", "travelled to", "went back to")


def generate_task1_lines(stories: int, seed: int, questions_per_story: int = 5,
                         statements_per_question: int = 2, num_actors: int = 4,
                         num_places: int = 6) -> list[str]:
    """Lines of a task-1 file (without newlines)."""
    if num_actors > len(ACTORS) or num_places > len(PLACES):
        raise ValueError(f"the generator knows {len(ACTORS)} actors and {len(PLACES)} places; "
                         f"asked for {num_actors} and {num_places}")
    rng = random.Random(seed)
    actors, places = ACTORS[:num_actors], PLACES[:num_places]
    lines: list[str] = []
    for _ in range(stories):
        line_id = 0
        where: dict[str, tuple[str, int]] = {}  # actor -> (place, line id of the move)
        for _q in range(questions_per_story):
            for _s in range(statements_per_question):
                actor = rng.choice(actors)
                # A move goes somewhere new, as in bAbI.
                place = rng.choice([p for p in places if p != where.get(actor, ("", 0))[0]])
                line_id += 1
                lines.append(f"{line_id} {actor} {rng.choice(VERBS)} the {place}.")
                where[actor] = (place, line_id)
            actor = rng.choice(sorted(where))
            place, support = where[actor]
            line_id += 1
            lines.append(f"{line_id} Where is {actor}? \t{place}\t{support}")
    return lines


def write_task1(path: str | Path, stories: int, seed: int, **knobs: int) -> Path:
    """Write a generated task-1 file; written to a temporary name first so no half file is left."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(generate_task1_lines(stories, seed, **knobs)) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path

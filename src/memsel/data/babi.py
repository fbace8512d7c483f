"""The bAbI question-answering format: one parser for the real tasks and for generated ones.

Format (as the real files have it): ``ID text`` is a statement; ``ID question?<TAB>answer<TAB>ids``
is a question whose space-separated supporting ids name earlier statements of the same story (a
set, not always ascending). IDs restart at 1 for every story.

Each question becomes one :class:`Sample`: its memories are the story's statements before it, a
list that grows along the story.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path


class BabiFormatError(ValueError):
    """A bAbI file that cannot be read, naming the file and line."""

    def __init__(self, path: str | Path, line: int | None, message: str):
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")
        self.path = str(path)
        self.line = line


@dataclass(frozen=True)
class Sample:
    """One question with the memories it may draw on."""

    memories: tuple[str, ...]
    """The story's statements before the question, oldest first."""
    query: str
    answer: str
    supporting: tuple[int, ...]
    """Indices into ``memories`` of the supporting facts, in the order the file lists them (bAbI's
    reasoning order, which multi-hop pretraining follows)."""
    story: int
    """0-based index of the story within its file."""
    source: str
    """``file:line`` of the question, for error messages and inspection."""


_TOKEN = re.compile(r"\w+")


def tokenize(text: str) -> list[str]:
    """Lower-cased word tokens; punctuation is dropped."""
    return _TOKEN.findall(text.lower())


def parse_babi(path: str | Path) -> list[Sample]:
    """Parse a bAbI file into samples, one per question, refusing malformed lines with file:line."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise BabiFormatError(path, None, f"cannot read file: {e.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise BabiFormatError(path, line, f"bytes that are not UTF-8 (offset {e.start})") from None

    samples: list[Sample] = []
    story = -1
    prev_id = 0
    statements: list[str] = []  # texts of this story's statements so far
    stmt_index: dict[int, int] = {}  # line id -> index into statements
    question_ids: set[int] = set()
    # split("\n"), not splitlines(): the latter also breaks on form feeds and other separators,
    # and line numbers in errors must match what an editor shows.
    for lineno, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        head, sep, rest = line.partition(" ")
        if not sep or not (head.isascii() and head.isdigit()):
            raise BabiFormatError(path, lineno, f"expected 'ID text' with a numeric ID, got {line[:60]!r}")
        line_id = int(head)
        if line_id == 1:
            story += 1
            statements, stmt_index, question_ids = [], {}, set()
        elif line_id != prev_id + 1:
            raise BabiFormatError(path, lineno, f"expected ID {prev_id + 1} (or 1 to start a story), got {line_id}")
        prev_id = line_id
        if "\t" not in rest:
            if not rest.strip():
                raise BabiFormatError(path, lineno, "empty statement")
            if "?" in rest:  # no statement of the real tasks has one: a question that lost its tabs
                raise BabiFormatError(path, lineno, "a question needs 'question<TAB>answer<TAB>supporting ids', "
                                      f"found no tab in {line[:60]!r}")
            stmt_index[line_id] = len(statements)
            statements.append(rest.strip())
            continue
        parts = rest.split("\t")
        if len(parts) < 3:
            raise BabiFormatError(
                path, lineno, "a question needs 'question<TAB>answer<TAB>supporting ids', "
                f"found {len(parts)} tab-separated field(s)")
        query, answer, support_field = parts[0].strip(), parts[1].strip(), parts[2].strip()
        if not query or not answer:
            raise BabiFormatError(path, lineno, "empty question or answer")
        supporting: list[int] = []
        for tok in support_field.split():
            if not (tok.isascii() and tok.isdigit()):
                raise BabiFormatError(path, lineno, f"supporting id {tok!r} is not a number")
            sid = int(tok)
            if sid in question_ids:
                raise BabiFormatError(path, lineno, f"supporting id {sid} names a question, not a statement")
            if sid not in stmt_index:
                raise BabiFormatError(path, lineno, f"supporting id {sid} is not a statement before this "
                                      f"question in its story (IDs 1..{line_id - 1})")
            if stmt_index[sid] not in supporting:
                supporting.append(stmt_index[sid])
        if not supporting:
            raise BabiFormatError(path, lineno, "a question needs at least one supporting id")
        question_ids.add(line_id)
        samples.append(Sample(tuple(statements), query, answer, tuple(supporting), story,
                              f"{path}:{lineno}"))
    if not samples:
        raise BabiFormatError(path, None, "no questions found (empty file or not in bAbI format)")
    return samples


def find_task_files(path: str | Path, task: int) -> tuple[Path, Path]:
    """Resolve ``--data``: a ``*_train.txt`` file (with its ``*_test.txt`` sibling) or a folder + task."""
    p = Path(path)
    if p.is_dir():
        trains = sorted(p.glob(f"qa{task}_*_train.txt"))
        if not trains:
            raise FileNotFoundError(f"{p}: no file qa{task}_*_train.txt for task {task}")
        train = trains[0]
    elif p.is_file():
        train = p
    else:
        raise FileNotFoundError(f"{p}: no such file or folder")
    if not train.name.endswith("_train.txt"):
        raise FileNotFoundError(f"{train}: expected a file named *_train.txt (its *_test.txt sibling is used for testing)")
    test = train.with_name(train.name[: -len("_train.txt")] + "_test.txt")
    if not test.is_file():
        raise FileNotFoundError(f"{test}: test file missing next to {train.name}")
    return train, test

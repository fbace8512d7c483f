"""The bAbI question-answering format: one parser for the real tasks and for generated ones.

Format (as the real files have it): ``ID text`` is a statement; ``ID question?<TAB>answer<TAB>ids``
is a question whose space-separated supporting ids name earlier statements of the same story (a
set, not always ascending). IDs restart at 1 for every story.

Each question becomes one :class:`memsel.data.sample.Sample` (importable from here too): its
memories are the story's statements before it, a list that grows along the story. bAbI files are
the dataset ``babi`` (``data.path``); the generator (memsel.data.generate) writes files in this format.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from memsel.data.sample import DATASETS, DatasetSplits, Sample
from memsel.registry import check

__all__ = ["BabiFilesConfig", "BabiFormatError", "Sample", "babi_files", "find_task_files", "parse_babi",
           "read_splits", "tokenize"]


class BabiFormatError(ValueError):
    """A bAbI file that cannot be read, naming the file and line."""

    def __init__(self, path: str | Path, line: int | None, message: str):
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")
        self.path = str(path)
        self.line = line


_TOKEN = re.compile(r"\w+")


def tokenize(text: str) -> list[str]:
    """Lower-cased word tokens; punctuation is dropped."""
    return _TOKEN.findall(text.lower())


def _question(path: Path, lineno: int, rest: str, line_id: int, stmt_index: dict[int, int],
              question_ids: set[int]) -> tuple[str, str, list[int]]:
    """A question line's text after its ID: (question, answer, indices of its supporting statements)."""
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
    return query, answer, supporting


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
        query, answer, supporting = _question(path, lineno, rest, line_id, stmt_index, question_ids)
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


def read_splits(train_file: str | Path, test_file: str | Path) -> DatasetSplits:
    """A train and a test file in the bAbI format, parsed, with their paths and sha1 as sources."""
    def sha1(path: str | Path) -> str:
        return hashlib.sha1(Path(path).read_bytes()).hexdigest()

    sources = {"train_file": str(Path(train_file).resolve()), "test_file": str(Path(test_file).resolve()),
               "train_sha1": sha1(train_file), "test_sha1": sha1(test_file)}
    return DatasetSplits(parse_babi(train_file), parse_babi(test_file), sources)


@dataclass
class BabiFilesConfig:
    """``babi``: files in the bAbI format; data spells the fields ``data.path`` and ``data.task``."""

    FLAT_PREFIX: ClassVar[str] = ""
    path: str | None
    task: int

    def validate(self, p: str = "data") -> None:
        check(bool(self.path), f"{p}.path", "a bAbI *_train.txt file or a folder with dataset 'babi'", self.path)


@DATASETS.register("babi", BabiFilesConfig)
def babi_files(config: BabiFilesConfig, seed: int, folder: Path) -> DatasetSplits:
    """``babi``: the train/test files ``data.path`` names (a folder: those of ``data.task``)."""
    return read_splits(*find_task_files(config.path, config.task))

"""Statistics of bAbI files (``memsel data inspect``), and generated files next to real ones."""

from __future__ import annotations

import re
import statistics
import tempfile
from pathlib import Path

from memsel.data.babi import Sample, parse_babi, tokenize
from memsel.data.generate import TASKS, write_task

_TASK = re.compile(r"^qa(\d+)_")


def file_stats(samples: list[Sample]) -> dict:
    """Stories, questions, statements per story, supporting facts per question, vocabulary, ...

    A question's memory list is measured in memories (``memories_per_question``) and in words
    (``words_per_question``: word tokens of all its memories together, as memsel.data.babi.tokenize
    counts them), which is what a reader that sees every memory has to read.
    """
    per_story: dict[int, int] = {}
    for s in samples:
        per_story[s.story] = max(per_story.get(s.story, 0), len(s.memories))
    lengths = sorted(per_story.values())
    vocab = {t for s in samples for x in (*s.memories, s.query, s.answer) for t in tokenize(x)}
    support = [len(s.supporting) for s in samples]
    # How far back the oldest supporting fact lies (0 = the newest memory): what a budget must reach.
    reach = [len(s.memories) - 1 - min(s.supporting) for s in samples]
    sizes = {m: len(tokenize(m)) for s in samples for m in s.memories}  # a story's memories recur in its questions
    words = [sum(sizes[m] for m in s.memories) for s in samples]
    return {
        "stories": len(per_story), "questions": len(samples),
        "statements_per_story": {"min": lengths[0], "median": statistics.median(lengths), "max": lengths[-1]},
        "supporting_per_question": {"min": min(support), "mean": statistics.fmean(support), "max": max(support)},
        "memories_per_question": {"mean": statistics.fmean(len(s.memories) for s in samples),
                                  "max": max(len(s.memories) for s in samples)},
        "words_per_question": {"mean": statistics.fmean(words), "max": max(words)},
        "oldest_support_age": {"mean": statistics.fmean(reach), "max": max(reach)},
        "vocabulary": len(vocab),
    }


def task_of(path: str | Path) -> int | None:
    """The bAbI task number in a file name such as ``qa2_two-supporting-facts_train.txt``."""
    m = _TASK.match(Path(path).name)
    return int(m.group(1)) if m else None


def expand(paths: list[str | Path]) -> list[Path]:
    """Files, with folders replaced by their ``*.txt`` files (sorted)."""
    files: list[Path] = []
    for p in map(Path, paths):
        files.extend(sorted(p.glob("*.txt")) if p.is_dir() else [p])
    return files


def inspect_files(paths: list[str | Path], compare_generated: bool = False, seed: int = 0) -> dict[str, dict]:
    """``{file: stats}``; with ``compare_generated`` each file of a generated task (1 to 5) also holds
    ``generated``: the same statistics of as many generated stories of its task (default knobs)."""
    report: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="memsel-inspect-") as tmp:
        for f in expand(paths):
            stats = file_stats(parse_babi(f))
            task = task_of(f)
            if compare_generated and task in TASKS:
                gen = write_task(Path(tmp) / f"qa{task}_generated.txt", task, stats["stories"], seed=seed)
                stats["generated"] = {"task": task, "seed": seed, **file_stats(parse_babi(gen))}
            report[str(f)] = stats
    return report


def format_report(report: dict[str, dict]) -> str:
    """One row per file (and per generated counterpart), fixed-width columns; a question's memory list
    in memories (mem/q) and in words (words/q), mean/max."""
    head = (f"{'file':<44} {'stories':>7} {'questions':>9} {'stmts/story min/med/max':>23} {'support/q':>9} "
            f"{'vocab':>6} {'mem/q mean/max':>14} {'words/q mean/max':>16} {'oldest fact age':>16}")
    lines = [head]

    def row(name: str, r: dict) -> str:
        s, q, m, w, a = (r["statements_per_story"], r["supporting_per_question"], r["memories_per_question"],
                         r["words_per_question"], r["oldest_support_age"])
        return (f"{name[:44]:<44} {r['stories']:>7} {r['questions']:>9} "
                f"{s['min']:>7}/{s['median']:g}/{s['max']:<7} {q['mean']:>9.2f} {r['vocabulary']:>6} "
                f"{m['mean']:>8.1f}/{m['max']:<5} {w['mean']:>10.1f}/{w['max']:<5} "
                f"{a['mean']:>7.1f} (max {a['max']:>2})")

    for f, r in report.items():
        lines.append(row(Path(f).name, r))
        if "generated" in r:
            g = r["generated"]
            lines.append(row(f"  generated: task {g['task']}, seed {g['seed']}", g))
    return "\n".join(lines)

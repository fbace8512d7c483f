"""`memsel bench haystack` (memsel.benchmarks.haystack): the record format, not timings (machines are noisy)."""

from __future__ import annotations

import json
import sys

from memsel.benchmarks import haystack as bench
from memsel.cli import run

KEYS = {"length", "questions", "distinct_sentences", "words_per_question", "seconds", "floor_seconds",
        "memories_per_second", "floor_memories_per_second", "ratio", "torch_threads"}


def test_module_imports_only_the_standard_library_at_top_level():
    source = open(bench.__file__, encoding="utf-8").read().split("\ndef ", 1)[0]
    imported = {line.split()[1].split(".")[0] for line in source.splitlines()
                if line.startswith(("import ", "from ")) and "__future__" not in line}
    assert imported <= set(sys.stdlib_module_names), imported


def test_a_tiny_run_prints_its_table_and_json_records(tmp_path, capsys):
    book = tmp_path / "book.txt"
    book.write_text(" ".join(f"The {w} lamp stood by the {v} door all night." for w in ("red", "old", "tall")
                             for v in ("oak", "iron", "glass", "blue")), encoding="utf-8")
    assert run(["bench", "haystack", "--length", "120", "--stories", "2", "--repeats", "1",
                "--background", str(book), "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert len(records) == 1 and set(records[0]) == KEYS
    r = records[0]
    assert r["length"] == 120 and r["questions"] == 10 and r["ratio"] == r["seconds"] / r["floor_seconds"]
    assert "memsel mem/s" in bench.format_table(records)

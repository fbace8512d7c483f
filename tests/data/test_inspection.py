"""File statistics for `memsel data inspect` (memsel.data.inspection)."""

from __future__ import annotations

from memsel.data.babi import parse_babi
from memsel.data.inspection import expand, file_stats, format_report, inspect_files, task_of

TWO_STORIES = ("1 Mary went to the kitchen.\n2 John went to the garden.\n3 Where is Mary? \tkitchen\t1\n"
               "4 Mary went to the office.\n5 Where is Mary? \toffice\t4\n"
               "1 Sandra went to the park.\n2 Where is Sandra? \tpark\t1\n")


def test_file_stats_by_hand(tmp_path):
    path = tmp_path / "qa1_x_train.txt"
    path.write_text(TWO_STORIES)
    s = file_stats(parse_babi(path))
    assert s["stories"] == 2 and s["questions"] == 3
    assert s["statements_per_story"] == {"min": 1, "median": 2.0, "max": 3}
    assert s["supporting_per_question"] == {"min": 1, "mean": 1.0, "max": 1}
    assert s["memories_per_question"] == {"mean": 2.0, "max": 3}
    # the same lists in words: 5 + 5, 5 + 5 + 5 ("Mary went to the office."), 5
    assert s["words_per_question"] == {"mean": 10.0, "max": 15}
    # oldest supporting fact: age 1 (kitchen, 2 memories), age 0 (office), age 0 (park)
    assert s["oldest_support_age"] == {"mean": 1 / 3, "max": 1}
    words = {"mary", "went", "to", "the", "kitchen", "john", "garden", "where", "is", "office", "sandra", "park"}
    assert s["vocabulary"] == len(words)


def test_task_numbers_and_folders(tmp_path):
    assert task_of("qa12_conjunction_train.txt") == 12 and task_of("notes.txt") is None
    (tmp_path / "qa1_x_train.txt").write_text(TWO_STORIES)
    (tmp_path / "qa1_x_test.txt").write_text(TWO_STORIES)
    (tmp_path / "readme.md").write_text("not a task")
    assert [p.name for p in expand([tmp_path])] == ["qa1_x_test.txt", "qa1_x_train.txt"]


def test_words_count_word_tokens_not_characters_or_punctuation(tmp_path):
    path = tmp_path / "qa5_x_train.txt"
    path.write_text("1 Fred picked up the milk there.\n2 Fred gave the milk to Bill.\n"
                    "3 Who gave the milk? \tFred\t2\n4 Bill went back to the office.\n5 What did Fred give to Bill? "
                    "\tmilk\t2\n")
    s = file_stats(parse_babi(path))
    assert s["memories_per_question"] == {"mean": 2.5, "max": 3}
    assert s["words_per_question"] == {"mean": (12 + 18) / 2, "max": 18}  # 6 + 6, then + 6
    row = format_report({str(path): s}).splitlines()[1]
    assert "2.5/3" in row and "15.0/18" in row


def test_compare_generated_for_tasks_1_to_5_only(tmp_path):
    (tmp_path / "qa1_x_train.txt").write_text(TWO_STORIES)
    (tmp_path / "qa4_z_train.txt").write_text(TWO_STORIES)
    (tmp_path / "qa5_w_train.txt").write_text(TWO_STORIES)
    (tmp_path / "qa7_y_train.txt").write_text(TWO_STORIES)
    report = inspect_files([tmp_path], compare_generated=True)
    one, seven = report[str(tmp_path / "qa1_x_train.txt")], report[str(tmp_path / "qa7_y_train.txt")]
    assert one["generated"]["stories"] == 2 and one["generated"]["task"] == 1
    assert "generated" not in seven
    for task, name in ((4, "qa4_z_train.txt"), (5, "qa5_w_train.txt")):
        g = report[str(tmp_path / name)]["generated"]
        assert g["task"] == task and g["stories"] == 2 and g["supporting_per_question"]["max"] == 1
        assert g["words_per_question"]["mean"] > g["memories_per_question"]["mean"] > 0
    table = format_report(report).splitlines()
    assert len(table) == 1 + 7  # header, 3 files + their generated rows, qa7
    assert "mem/q mean/max" in table[0] and "words/q mean/max" in table[0]

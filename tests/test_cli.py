"""The ``memsel`` command line: help, data generate/inspect, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from memsel.cli import build_parser, run
from memsel.data.babi import parse_babi

QA1_TRAIN = "qa1_single-supporting-fact_train.txt"
COMMANDS = ("pretrain", "train", "tune", "evaluate", "pipeline")


def memsel(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run the installed console script (or ``python -m memsel.cli``) in a subprocess."""
    script = Path(sys.executable).parent / "memsel"
    cmd = [str(script)] if script.is_file() else [sys.executable, "-m", "memsel.cli"]
    return subprocess.run([*cmd, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def _help(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as info:
        run([*argv, "--help"])
    assert info.value.code == 0
    return capsys.readouterr().out


# --------------------------------------------------------------------------- help


def test_top_level_help(capsys):
    out = _help(capsys)
    for command in ("data", *COMMANDS):
        assert command in out
    assert "--verbose" in out
    assert "examples:" in out


@pytest.mark.parametrize("command", COMMANDS)
def test_subcommand_help(capsys, command):
    out = _help(capsys, command)
    for option in ("--config", "--set", "--run-dir", "--seed", "--name", "--tracking-uri", "--ray-address",
                   "--data", "--task"):
        assert option in out, option
    assert ("--json" in out) == (command in ("evaluate", "pipeline", "tune"))
    assert ("--resume" in out and "--fresh" in out) == (command == "tune")


def test_data_help(capsys):
    out = _help(capsys, "data")
    assert "generate" in out and "inspect" in out
    gen = _help(capsys, "data", "generate")
    assert "--out" in gen and "--seed" in gen and "--set" in gen
    assert "--data" not in gen  # generate makes data, it does not read it
    ins = _help(capsys, "data", "inspect")
    assert "PATH" in ins and "--json" in ins


def test_console_script_help_exits_zero(tmp_path):
    out = memsel("--help", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "pipeline" in out.stdout and "usage: memsel" in out.stdout


def test_parser_requires_a_command():
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args([])
    assert info.value.code == 2


# --------------------------------------------------------------------------- data generate / inspect


def test_data_generate_writes_two_files_that_parse(tmp_path, capsys):
    out_dir = tmp_path / "gen"
    assert run(["data", "generate", "--out", str(out_dir), "--seed", "3",
                "--set", "data.train_stories=6", "--set", "data.test_stories=4"]) == 0
    printed = capsys.readouterr().out
    train, test = out_dir / "qa1_generated_train.txt", out_dir / "qa1_generated_test.txt"
    assert sorted(p.name for p in out_dir.iterdir()) == [test.name, train.name]
    assert str(train) in printed and str(test) in printed
    assert len(parse_babi(train)) == 6 * 5
    assert len(parse_babi(test)) == 4 * 5
    assert train.read_text() != test.read_text()  # test split is drawn separately
    # deterministic in --seed
    again = tmp_path / "again"
    run(["data", "generate", "--out", str(again), "--seed", "3",
         "--set", "data.train_stories=6", "--set", "data.test_stories=4"])
    assert (again / train.name).read_text() == train.read_text()
    run(["data", "generate", "--out", str(tmp_path / "other"), "--seed", "4",
         "--set", "data.train_stories=6", "--set", "data.test_stories=4"])
    assert (tmp_path / "other" / train.name).read_text() != train.read_text()


def test_data_generate_default_size(tmp_path, capsys):
    assert run(["data", "generate", "--out", str(tmp_path), "--seed", "3"]) == 0
    capsys.readouterr()
    # the defaults: 200 stories of 5 questions per split, like bAbI's 1k set
    assert len(parse_babi(tmp_path / "qa1_generated_train.txt")) == 1000
    assert len(parse_babi(tmp_path / "qa1_generated_test.txt")) == 1000


def test_data_inspect_real_file_json(babi_en, capsys):
    path = babi_en / QA1_TRAIN
    assert run(["data", "inspect", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert list(report) == [str(path)]
    r = report[str(path)]
    assert r["questions"] == 1000
    assert r["supporting_per_question"] == {"min": 1, "mean": 1.0, "max": 1}  # single supporting fact
    assert r["statements_per_story"]["min"] <= r["statements_per_story"]["median"] <= r["statements_per_story"]["max"]


def test_data_inspect_folder_table(tmp_path, capsys):
    run(["data", "generate", "--out", str(tmp_path), "--set", "data.train_stories=3",
         "--set", "data.test_stories=2"])
    capsys.readouterr()
    assert run(["data", "inspect", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("file")
    rows = {line.split()[0]: line.split() for line in out[1:]}
    assert set(rows) == {"qa1_generated_train.txt", "qa1_generated_test.txt"}
    assert rows["qa1_generated_train.txt"][1:3] == ["3", "15"]  # stories, questions
    assert rows["qa1_generated_test.txt"][1:3] == ["2", "10"]


# --------------------------------------------------------------------------- errors: one line, exit code 2


def test_bad_config_value_exits_2_naming_the_field(tmp_path):
    run_dir = tmp_path / "X"
    out = memsel("pretrain", "--set", "ppo.lr=-1", "--run-dir", str(run_dir), cwd=tmp_path)
    assert out.returncode == 2
    assert "'ppo.lr'" in out.stderr
    assert out.stderr.startswith("memsel: error:")
    assert "Traceback" not in out.stderr
    assert not run_dir.exists()  # refused before anything was written


def test_missing_config_file_exits_2(tmp_path):
    out = memsel("evaluate", "--config", str(tmp_path / "nope.yaml"), "--run-dir", str(tmp_path / "r"),
                 cwd=tmp_path)
    assert out.returncode == 2
    assert "nope.yaml" in out.stderr and "does not exist" in out.stderr


def test_malformed_data_exits_2_naming_file_and_line(tmp_path):
    bad = tmp_path / "bad_train.txt"
    bad.write_text("1 Mary went to the kitchen.\n2 Where is Mary? \tkitchen\t1\n3 John went home\tx\n",
                   encoding="utf-8")
    (tmp_path / "bad_test.txt").write_text("1 Mary went home.\n2 Where is Mary? \thome\t1\n", encoding="utf-8")
    out = memsel("evaluate", "--data", str(bad), "--run-dir", str(tmp_path / "run"), cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert "bad_train.txt:3" in out.stderr
    assert "Traceback" not in out.stderr
    assert out.stdout == ""


def test_missing_test_sibling_exits_2(tmp_path):
    lonely = tmp_path / "lonely_train.txt"
    lonely.write_text("1 Mary went home.\n2 Where is Mary? \thome\t1\n", encoding="utf-8")
    out = memsel("evaluate", "--data", str(lonely), "--run-dir", str(tmp_path / "run"), cwd=tmp_path)
    assert out.returncode == 2
    assert "lonely_test.txt" in out.stderr


def test_inspect_missing_file_exits_2(tmp_path):
    out = memsel("data", "inspect", str(tmp_path / "gone.txt"), cwd=tmp_path)
    assert out.returncode == 2
    assert "gone.txt" in out.stderr


def test_unknown_command_exits_2(tmp_path):
    out = memsel("frobnicate", cwd=tmp_path)
    assert out.returncode == 2
    assert "invalid choice" in out.stderr


# --------------------------------------------------------------------------- data: tasks 2 to 5, comparison


@pytest.mark.parametrize("task, questions, support", [(2, 5, 2), (3, 5, 3), (4, 1, 1), (5, 5, 1)])
def test_data_generate_task(tmp_path, capsys, task, questions, support):
    assert run(["data", "generate", "--task", str(task), "--out", str(tmp_path), "--set", "data.train_stories=5",
                "--set", "data.test_stories=3", "--set", "data.distractor_density=0.1"]) == 0
    capsys.readouterr()
    train = parse_babi(tmp_path / f"qa{task}_generated_train.txt")
    assert len(train) == 5 * questions and {len(s.supporting) for s in train} == {support}
    assert len(parse_babi(tmp_path / f"qa{task}_generated_test.txt")) == 3 * questions


def test_data_generate_refuses_other_tasks_naming_data_task(tmp_path, capsys):
    code, err = _main(capsys, "data", "generate", "--task", "6", "--out", str(tmp_path / "gen"))
    assert code == 2 and "'data.task'" in err and "[1, 2, 3, 4, 5]" in err and err.count("\n") == 1
    assert not (tmp_path / "gen").exists()


def test_data_inspect_compare_generated(babi_en, capsys):
    path = babi_en / "qa2_two-supporting-facts_train.txt"
    assert run(["data", "inspect", "--compare-generated", str(path), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)[str(path)]
    g = r["generated"]
    assert g["task"] == 2 and g["stories"] == r["stories"] == 200 and g["questions"] == r["questions"]
    assert g["supporting_per_question"]["mean"] == r["supporting_per_question"]["mean"] == 2.0
    assert run(["data", "inspect", "--compare-generated", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("qa2_two-supporting-facts_train.txt") and "generated: task 2" in lines[2]
    for line in lines[1:]:
        assert "oldest fact age" in lines[0] and "(max" in line


# --------------------------------------------------------------------------- bad input through the CLI


def _main(capsys, *argv: str) -> tuple[int, str]:
    """Run memsel's entry point in this process; returns (exit code, stderr)."""
    from memsel.cli import main

    with pytest.raises(SystemExit) as info:
        main(list(argv))
    return info.value.code, capsys.readouterr().err


BAD_FILES = {
    "missing_tab": ("1 Mary went home.\n2 Where is Mary? home 1\n", 2),
    "one_tab": ("1 Mary went home.\n2 Where is Mary? \thome\n", 2),
    "non_numeric_id": ("1 Mary went home.\nx2 Where is Mary? \thome\t1\n", 2),
    "support_names_a_question": ("1 Mary went home.\n2 Where is Mary? \thome\t1\n3 Where is Mary? \thome\t2\n", 3),
    "support_outside_story": ("1 Mary went home.\n2 Where is Mary? \thome\t9\n", 2),
    "support_in_previous_story": ("1 Mary went home.\n2 Where is Mary? \thome\t1\n1 John left.\n"
                                  "2 Where is John? \tout\t3\n", 4),
    "empty_file": ("", None),
    "not_utf8": (b"1 Mary went home.\n2 Where is Mary? \t\xe9t\xe9\t1\n", 2),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
@pytest.mark.parametrize("command", ["inspect", "evaluate"])
def test_bad_data_exits_non_zero_naming_file_and_line(tmp_path, capsys, case, command):
    content, line = BAD_FILES[case]
    bad = tmp_path / f"{case}_train.txt"
    (bad.write_bytes if isinstance(content, bytes) else bad.write_text)(content)
    (tmp_path / f"{case}_test.txt").write_text("1 Mary went home.\n2 Where is Mary? \thome\t1\n")
    argv = (["data", "inspect", str(bad)] if command == "inspect" else
            ["evaluate", "--data", str(bad), "--run-dir", str(tmp_path / "run")])
    code, err = _main(capsys, *argv)
    assert code == 2
    assert err.startswith("memsel: error: ") and err.count("\n") == 1  # one line, no traceback
    assert (f"{bad}:{line}:" if line else f"{bad}: no questions") in err


@pytest.mark.parametrize("sets, field", [
    (["env.budget_strategy=truncate"], "env.memory_budget"),  # K = 0 with a budget strategy
    (["env.budget_strategy=sample", "env.memory_budget=-4"], "env.memory_budget"),
    (["env.budget_strategy=oldest"], "env.budget_strategy"),
    (["env.reward_mode=exact"], "env.reward_mode"),
])
def test_bad_env_config_is_refused_before_anything_runs(tmp_path, capsys, sets, field):
    run_dir = tmp_path / "run"
    argv = ["pretrain", "--run-dir", str(run_dir)]
    for s in sets:
        argv += ["--set", s]
    code, err = _main(capsys, *argv)
    assert code == 2 and f"field '{field}'" in err and "expected" in err
    assert not run_dir.exists()


def test_tune_takes_resume_or_fresh_not_both(capsys):
    from memsel.cli import run

    with pytest.raises(SystemExit) as info:
        run(["tune", "--run-dir", "runs/x", "--resume", "--fresh"])
    assert info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err

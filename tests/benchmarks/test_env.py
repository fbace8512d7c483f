"""`memsel bench env` (memsel.benchmarks.env): the record format, not timings (machines are noisy)."""

from __future__ import annotations

import argparse
import json
import sys

import pytest

from memsel.benchmarks import env as bench
from memsel.cli import run

ENV_KEYS = {"budget", "strategy", "memories", "hops", "env_steps_per_s", "env_s_per_step", "env_steps_timed"}
PPO_KEYS = {"ppo_s_per_iteration", "ppo_env_steps_per_iteration", "ppo_s_per_step", "env_share"}


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_module_imports_only_the_standard_library_at_top_level():
    # The CLI imports this module to build its parser; heavy imports belong inside run().
    source = open(bench.__file__, encoding="utf-8").read().split("\ndef ", 1)[0]
    imported = {line.split()[1].split(".")[0] for line in source.splitlines()
                if line.startswith(("import ", "from ")) and "__future__" not in line}
    assert imported <= set(sys.stdlib_module_names), imported


def test_env_only_records(capsys):
    records = bench.run(_args("--quick", "--no-ppo", "--budgets", "16,64,256"))
    out = capsys.readouterr().out
    assert [r["budget"] for r in records] == [16, 64]  # --quick keeps two budgets
    for r in records:
        assert set(r) == ENV_KEYS
        assert r["memories"] == 2 * r["budget"] and r["strategy"] == "sample"
        assert r["env_steps_per_s"] > 0 and r["env_s_per_step"] == pytest.approx(1 / r["env_steps_per_s"])
    assert out.splitlines()[0].split()[:2] == ["K", "memories"] and len(out.splitlines()) == 3


def test_bad_budgets_are_refused():
    with pytest.raises(ValueError, match="--budgets"):
        bench.run(_args("--no-ppo", "--budgets", "0,16"))


@pytest.mark.slow
def test_cli_records_with_ppo_as_json(ray_session, capfd):
    assert run(["bench", "env", "--quick", "--json", "--strategy", "truncate"]) == 0
    records = json.loads(capfd.readouterr().out)
    assert [r["budget"] for r in records] == [16, 64]
    for r in records:
        assert set(r) == ENV_KEYS | PPO_KEYS
        assert r["strategy"] == "truncate" and r["ppo_env_steps_per_iteration"] >= 64
        assert r["env_share"] == pytest.approx(r["env_s_per_step"] / r["ppo_s_per_step"])

"""`memsel bench selector` (memsel.benchmarks.selector): record format and options, not timings."""

from __future__ import annotations

import argparse
import json

import pytest

from memsel.benchmarks import selector as bench
from memsel.cli import run

KEYS = {"family", "n", "batch", "seconds", "floor_seconds", "ratio", "peak_mb"}


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_quick_run_gives_one_record_per_family_size_and_batch(capsys):
    records = bench.run(_args("--quick", "--threads", "1"))  # one thread: quick even on a busy machine
    assert len(records) == len(bench.FAMILIES) * len(bench.QUICK_SIZES) * len(bench.QUICK_BATCHES)
    assert {r["family"] for r in records} == set(bench.FAMILIES)
    for r in records:
        assert set(r) == KEYS | ({"layer_ratio"} if r["family"] in bench.ADDITIVE else set()), r
        assert r.get("layer_ratio", 1.0) > 0
        assert r["n"] in bench.QUICK_SIZES and r["batch"] in bench.QUICK_BATCHES
        assert r["seconds"] > 0 and r["floor_seconds"] > 0
        assert r["ratio"] == pytest.approx(r["seconds"] / r["floor_seconds"])
        assert r["peak_mb"] is None or r["peak_mb"] >= 0
    json.dumps(records)  # plain JSON types only
    table = capsys.readouterr().out
    assert "ratio" in table and "memories/s" in table and "peak MB" in table
    assert "growth ff batch 1" in table and "layer" in table


def test_the_additive_families_bound_line_names_the_hidden_layer():
    records = [{"family": "ff", "n": 16384, "batch": 1, "seconds": 1.0, "floor_seconds": 0.1, "ratio": 10.0,
                "peak_mb": 1.0, "layer_ratio": 6.0}]
    table = bench.format_table(records, 1, _args("--hidden-dim", "64"))
    assert "target ff <= 3x floor at N >= 16k: NOT met" in table
    assert "hidden layer alone" in table and "h=64" in table and "6.0-6.0x" in table
    met = [dict(records[0], seconds=0.2, ratio=2.0)]
    assert "hidden layer alone" not in bench.format_table(met, 1, _args())


def test_cases_over_the_time_budget_are_reported_as_skipped(capsys):
    records = bench.run(_args("--families", "mha+sa:full", "--sizes", "64,4096", "--batches", "1",
                              "--max-call-seconds", "1e-9", "--repeats", "2", "--threads", "1"))
    assert records[0]["seconds"] > 0
    skipped = records[1]
    assert set(skipped) == KEYS | {"skipped"} and skipped["seconds"] is None and skipped["ratio"] is None
    assert "B*N^2" in skipped["skipped"]
    assert "skipped: estimated" in capsys.readouterr().out


def test_cli_json_prints_only_the_records(capsys):
    assert run(["bench", "selector", "--quick", "--families", "ff,mha", "--threads", "1", "--json"]) == 0
    out = capsys.readouterr().out
    records = json.loads(out)  # the table went to stderr
    assert [r["family"] for r in records][::4] == ["ff", "mha"] and all(KEYS <= set(r) for r in records)


def test_threads_option_leaves_the_callers_setting_alone():
    import torch

    before = torch.get_num_threads()
    bench.run(_args("--quick", "--families", "ff", "--sizes", "64", "--batches", "1", "--threads", "1"))
    assert torch.get_num_threads() == before


def test_unknown_family_is_refused():
    with pytest.raises(ValueError, match="--families"):
        bench.run(_args("--families", "ff,lstm"))


def test_fast_cases_repeat_until_the_minimum_time():
    calls = []
    bench._median_times([lambda: calls.append(1)], repeats=3, budget=10.0, least=0.02)
    assert len(calls) > 3  # a no-op call: far more than 3 rounds fill 20 ms
    calls.clear()
    bench._median_times([lambda: calls.append(1)], repeats=3, budget=10.0)
    assert len(calls) == 3

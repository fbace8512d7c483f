"""`memsel bench all`, `bench pretrain` and `bench ppo`: record formats, the generated Markdown, the haystack
benchmark joining only when its module exists. Timings are never checked (machines are noisy); the real
runs are end-to-end tests behind MEMSEL_BENCH_E2E=1."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys

import pytest

from memsel.benchmarks import all as bench_all
from memsel.benchmarks import ppo as bench_ppo
from memsel.benchmarks import pretrain as bench_pretrain
from memsel.benchmarks import summary

E2E = pytest.mark.skipif(os.environ.get("MEMSEL_BENCH_E2E") != "1",
                         reason="real benchmark runs (Lightning fits, PPO iterations): run with MEMSEL_BENCH_E2E=1")


def _args(module, *argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return parser.parse_args(list(argv))


@pytest.mark.parametrize("module", [bench_all, bench_ppo, bench_pretrain, summary])
def test_modules_import_only_the_standard_library_at_top_level(module):
    source = open(module.__file__, encoding="utf-8").read().split("\ndef ", 1)[0]
    imported = {line.split()[1].split(".")[0] for line in source.splitlines()
                if line.startswith(("import ", "from ")) and "__future__" not in line}
    assert imported <= set(sys.stdlib_module_names) | {"memsel"}, imported
    assert "memsel" not in imported or module is summary  # summary needs only memsel.files (standard library)


def test_haystack_joins_only_when_its_module_exists(monkeypatch):
    real = importlib.util.find_spec
    assert "haystack" not in bench_all.available() or real("memsel.benchmarks.haystack") is not None
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object() if name.endswith(".haystack") else real(name))
    assert bench_all.available({"tune"}) == ["selector", "env", "pretrain", "ppo", "haystack"]


PPO_REC = {"env_steps_per_iteration": 512.0, "ppo_s_per_iteration": 2.0, "ppo_steps_per_s": 256.0,
           "env_s_per_step": 1e-4, "network_s_per_iteration": 0.6, "floor_s_per_iteration": 0.6512,
           "floor_steps_per_s": 786.2, "ratio": 0.3256, "target": 0.5, "minibatch_size": 128, "num_epochs": 4,
           "num_envs_per_env_runner": 8, "torch_threads": 2, "profiled_wall_s": 3.0,
           "profile_s": {"torch": 1.0, "RLlib connectors": 0.5}, "rllib_timers": {"timers/learner_update_timer": 1.2}}
PRETRAIN_REC = {"samples_per_run": 900, "epochs": 3, "batch_size": 32, "repeats": 3, "torch_threads": 2,
                "bare_s": 2.0, "lightning_s": 2.1, "bare_runs_s": [2.0], "lightning_runs_s": [2.1],
                "bare_samples_per_s": 450.0, "lightning_samples_per_s": 428.6, "ratio": 0.952, "target": 0.9,
                "lightning_fit_extra_s": 0.8, "bare_extra_s": 0.0}


def test_tables_say_ratio_and_verdict():
    assert "ratio PPO / floor: 0.33  target >= 0.5: NOT met" in bench_ppo.format_table([PPO_REC])
    assert "RLlib connectors" in bench_ppo.format_table([PPO_REC])
    text = bench_pretrain.format_table([PRETRAIN_REC])
    assert "ratio Lightning / bare, samples/s in the epochs: 0.95  target >= 0.9: met" in text
    assert "besides its epochs (setup, teardown): 0.80 s per fit" in text


def test_machine_names_cpu_cores_threads_and_versions():
    info = bench_all.machine()
    assert info["cores"] >= 1 and info["torch_threads"] >= 1 and info["cpu"] and "torch" in info
    assert "cores" in summary._machine({**info, "load_average_after": [0.0, 0.0, 0.0]})


def test_profile_buckets():
    assert bench_ppo._bucket("/x/ray/rllib/connectors/common/batch.py", "f") == "RLlib connectors"
    assert bench_ppo._bucket("/x/ray/rllib/core/learner.py", "f") == "RLlib, other"
    assert bench_ppo._bucket("/x/ray/_private/worker.py", "f") == "Ray core"
    assert bench_ppo._bucket("~", "<method 'run_backward' of 'torch._C._EngineBase' objects>") == "torch"
    assert bench_ppo._bucket("/src/memsel/env.py", "step") == "env (memsel.env)"


def test_all_writes_its_part_of_the_markdown_between_markers(monkeypatch, tmp_path, capsys):
    fake = {"pretrain": [PRETRAIN_REC], "ppo": [PPO_REC],
            "env": [{"budget": 64, "env_share": 0.03}],
            "tune": [{"kind": "target", "name": "speedup_two_nodes", "value": 1.7, "target": ">= 1.6", "met": True}]}
    monkeypatch.setattr(bench_all, "available", lambda skip=None: [n for n in fake if n not in (skip or set())])
    monkeypatch.setattr(bench_all, "run_one", lambda name, argv: {
        "name": name, "command": " ".join(["memsel bench", name, *argv]), "records": fake[name],
        "table": f"table of {name}", "seconds": 1.0})
    monkeypatch.setattr(bench_all, "machine", lambda: {"cpu": "a CPU", "cores": 2, "usable_cores": 2, "torch_threads": 2,
                                                       "load_average": [0.5, 0.4, 0.3], "python": "3.x",
                                                       "platform": "Linux", "torch": "2.x"})
    doc = tmp_path / "BENCHMARKS.md"
    doc.write_text("# Benchmarks\n\nintro\n\n## Tune: overhead and scaling\n\nprose\n", encoding="utf-8")
    records = bench_all.run(_args(bench_all, "--quick", "--out", str(doc)))
    text = doc.read_text(encoding="utf-8")
    assert text.index("intro") < text.index(bench_all.BEGIN) < text.index("## Tune: overhead") and "prose" in text
    assert "| pretrain | Lightning samples/s / bare PyTorch loop samples/s (in the epochs) | 0.95 | >= 0.9 | met |" in text
    assert "| ppo | memsel train env steps/s / floor (env alone + network alone) | 0.33 | >= 0.5 | **not met** |" in text
    assert "| env | env time / PPO time per env step at K = 64 | 3.00% | < 10% | met |" in text
    assert "**`memsel bench tune --quick`**" in text and "table of tune" in text and "**Machine.**" in text
    assert records[0]["name"] == "machine" and records[0]["cores"] >= 1
    first = text
    bench_all.run(_args(bench_all, "--out", str(doc), "--skip", "tune"))  # a second run replaces the part
    text = doc.read_text(encoding="utf-8")
    assert text.count(bench_all.BEGIN) == 1 and "table of tune" not in text and text != first
    json.dumps(records)  # --json prints them
    with pytest.raises(ValueError, match="--skip"):
        bench_all.run(_args(bench_all, "--skip", "nope"))


@E2E
def test_pretrain_quick_records():
    (rec,) = bench_pretrain.run(_args(bench_pretrain, "--quick"))
    assert rec["ratio_of_medians"] == pytest.approx(rec["bare_s"] / rec["lightning_s"]) and rec["samples_per_run"] > 0
    assert rec["ratio"] > 0 and rec["lightning_fit_extra_s"] >= 0


@E2E
def test_ppo_quick_records(ray_session):
    (rec,) = bench_ppo.run(_args(bench_ppo, "--quick"))
    assert rec["env_steps_per_iteration"] >= 64 and rec["profile_s"] and 0 < rec["ratio"]
    assert rec["floor_steps_per_s"] == pytest.approx(rec["env_steps_per_iteration"] / rec["floor_s_per_iteration"])

"""A small report to test against, made in seconds: a run folder (config, a generated test split, an untrained
selector, results.json) and its MLflow runs written with the real MLflow client on SQLite, tagged as memsel
tags them (pretraining, a PPO run, a PBT sweep with two trials, an evaluation)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

RESULTS = {
    "random": {"selection_accuracy": 0.25, "hop_accuracy": [0.25], "questions": 20.0},
    "recency_prior": {"selection_accuracy": 0.4, "hop_accuracy": [0.4], "questions": 20.0},
    "pretrained": {"selection_accuracy": 0.9, "hop_accuracy": [0.9], "questions": 20.0},
    "ppo": {"selection_accuracy": 0.95, "hop_accuracy": [0.95], "questions": 20.0},
}


def make_run_folder(root: Path, seed: int = 0):
    """A run folder that report reads: config.yaml, data/{test.npz,vocab.json}, pretrain/selector.pt, results.json."""
    from memsel.config import Config
    from memsel.data.babi import parse_babi
    from memsel.data.encode import Vocab, encode, spec_for
    from memsel.data.generate import write_task
    from memsel.network import Selector

    cfg = Config(name="tiny", seed=seed, run_dir=str(root))
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.yaml").write_text(cfg.to_yaml(), encoding="utf-8")
    samples = parse_babi(write_task(root / "data" / "qa1_test.txt", 1, 4, seed))
    vocab = Vocab.build(samples)
    spec = spec_for(samples, vocab=vocab)
    encode(samples, vocab, spec).save(root / "data" / "test.npz")
    vocab.save(root / "data" / "vocab.json")
    net = Selector(cfg.selector, spec)
    net.vocab = vocab.tokens
    net.save(root / "pretrain" / "selector.pt")
    (root / "results.json").write_text(json.dumps(RESULTS), encoding="utf-8")
    return cfg


def _log(client, rid: str, series: dict[str, list[float]]) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    client.log_batch(rid, metrics=[Metric(k, v, now, step) for k, values in series.items()
                                   for step, v in enumerate(values, 1)])


def make_runs(cfg) -> dict[str, str]:
    """The MLflow runs of ``cfg``'s run folder; role -> run id (trials as trial0, trial1)."""
    from memsel.tracking import client, experiment_id, run_tags

    c, exp = client(cfg), experiment_id(cfg)
    ids = {}

    def run(stage: str, name: str, **tags: str) -> str:
        rid = c.create_run(exp, run_name=name, tags={**run_tags(cfg, stage), **tags}).info.run_id
        ids[name] = rid
        return rid

    _log(c, run("pretrain", "pretrain"), {"val/selection_accuracy": [0.5, 0.8, 0.9], "train/loss": [1.0, 0.5, 0.3],
                                          "val/loss": [1.1, 0.6, 0.4]})
    ppo = {"env_runners/episode_return_mean": [0.6, 0.7, 0.8], "val/selection_accuracy": [0.8, 0.85, 0.9],
           "learners/default_policy/mean_kl_loss": [0.01, 0.02, 0.01],
           "learners/default_policy/distill_kl": [0.05, 0.04, 0.03],
           "learners/default_policy/distill_coeff": [0.5, 0.5, 0.5]}
    _log(c, run("ppo", "ppo", **{"memsel.trial_id": "a_00000"}), ppo)
    parent = run("tune", "sweep", **{"memsel.role": "sweep", "memsel.sweep_id": "s1"})
    for i, lr in enumerate((1e-4, 3e-4)):
        rid = run("tune", f"trial{i}", **{"memsel.trial_id": f"b_0000{i}", "memsel.sweep_id": "s1",
                                          "mlflow.parentRunId": parent})
        c.log_param(rid, "ppo.lr", str(lr))
        _log(c, rid, {**ppo, "hp/ppo.lr": [lr, lr, lr * (1.2 if i else 0.8)]})
    run("evaluate", "evaluate")
    for rid in ids.values():
        c.set_terminated(rid)
    return ids


def write_haystack(folder: Path) -> Path:
    """Fake haystack result files: tasks 1-2, lengths 100 and 1000, seeds 0-2, methods memsel and bm25."""
    folder.mkdir(parents=True, exist_ok=True)
    for task in (1, 2):
        for length in (100, 1000):
            for seed in range(3):
                acc = 0.9 - 0.1 * task - (0.2 if length == 1000 else 0) + 0.01 * seed
                (folder / f"task{task}_len{length}_seed{seed}.json").write_text(json.dumps(
                    {"task": task, "length": length, "seed": seed,
                     "results": {"memsel": {"selection_accuracy": acc}, "bm25": {"selection_accuracy": acc / 2}}}))
    return folder


@pytest.fixture(scope="session")
def report_run(tmp_path_factory):
    """(run folder, config, MLflow run ids, haystack folder) of a small synthesised run."""
    root = tmp_path_factory.mktemp("report")
    cfg = make_run_folder(root / "run")
    return root / "run", cfg, make_runs(cfg), write_haystack(root / "haystack")


@pytest.fixture(scope="session")
def built_report(report_run, tmp_path_factory):
    """The page ``memsel report --run-dir`` writes for :func:`report_run` (with the haystack files), and its JSON line."""
    import contextlib
    import io

    from memsel.cli import run

    run_dir, _, _, haystack = report_run
    out = tmp_path_factory.mktemp("page")
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert run(["report", "--run-dir", str(run_dir), "--out", str(out), "--haystack", str(haystack),
                    "--stories", "2", "--json"]) == 0
    return Path(json.loads(stdout.getvalue())["page"]), out

"""``memsel report`` (memsel.reporting): the page, its figures, their MLflow artifacts, the haystack files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from memsel.reporting import haystack
from memsel.reporting.collect import role_of


def test_roles_from_memsel_tags():
    assert role_of({"memsel.stage": "pretrain"}) == "pretrain"
    assert role_of({"memsel.stage": "tune", "memsel.role": "sweep"}) == "sweep"
    assert role_of({"memsel.stage": "tune", "memsel.trial_id": "x", "mlflow.parentRunId": "p"}) == "trial"
    assert role_of({"memsel.stage": "ppo_scratch", "memsel.trial_id": "x"}) == "ppo"
    assert role_of({"memsel.stage": "evaluate"}) == "evaluate"


def test_haystack_medians_over_seeds(tmp_path):
    for seed, acc in enumerate((0.2, 0.9, 0.5)):
        (tmp_path / f"task1_len10_seed{seed}.json").write_text(json.dumps(
            {"task": 1, "length": 10, "seed": seed, "results": {"random": {"selection_accuracy": 0.1},
                                                                "memsel": {"selection_accuracy": acc, "x": 1}}}))
    (tmp_path / "task2_len20_seed0.json").write_text(json.dumps(
        {"task": 2, "length": 20, "seed": 0, "results": {"memsel": {"selection_accuracy": 0.7}}}))
    (tmp_path / "task3_len20_seed0.json").write_text("{not json")  # skipped with a warning
    tables = haystack.median_tables(haystack.read_results(tmp_path))
    assert list(tables) == ["memsel", "random"]  # METHOD_ORDER first
    t = tables["memsel"]
    assert t["tasks"] == [1, 2] and t["lengths"] == [10, 20] and t["seeds"] == 3
    assert t["values"] == [[0.5, None], [None, 0.7]]
    assert tables["random"]["values"] == [[0.1, None], [None, None]]
    assert "50.0%" in haystack.format_table(tables)


def test_no_haystack_folder_means_no_records(tmp_path):
    assert haystack.read_results(tmp_path / "absent") == []


@pytest.mark.slow
def test_page_links_every_figure_and_each_file_exists(built_report):
    page, out = built_report
    text = page.read_text(encoding="utf-8")
    sources = re.findall(r"<img src='([^']+)'", text)
    names = {Path(s).name for s in sources}
    assert {"curves_pretrain.png", "curves_ppo.png", "curves_sweep.png", "pbt_schedules.png", "haystack.png"} <= names
    assert len([n for n in names if n.startswith("attention_0_q")]) == 2
    for src in sources:
        assert (page.parent / src).is_file() and (page.parent / src).stat().st_size > 5000, src
    assert "<script" not in text and "http" not in text.replace("http-equiv", "")  # nothing fetched from elsewhere
    assert "pretrained alone (Lightning)" in text and "95.0%" in text  # the results table, as evaluate prints it
    assert "Haystack" in text and "median selection accuracy" in text


@pytest.mark.slow
def test_figures_are_mlflow_artifacts_of_their_runs(built_report, report_run):
    from mlflow.tracking import MlflowClient

    _, cfg, ids, _ = report_run
    c = MlflowClient(cfg.resolved_tracking_uri)

    def listed(name: str) -> set[str]:
        return {Path(a.path).name for a in c.list_artifacts(ids[name], "report")}

    assert listed("pretrain") == {"curves_pretrain.png"}
    assert listed("ppo") == {"curves_ppo.png"}
    assert listed("sweep") == {"curves_sweep.png", "pbt_schedules.png"}
    assert {"haystack.png"} | {n for n in listed("evaluate") if n.startswith("attention_")} == listed("evaluate")
    assert len(listed("evaluate")) == 3


@pytest.mark.slow
def test_experiment_report_without_haystack_or_artifacts(report_run, tmp_path):
    from memsel.reporting.build import report_command

    _, cfg, _, _ = report_run
    page = report_command(None, "memsel", str(tmp_path / "exp"), cfg.resolved_tracking_uri, str(tmp_path / "none"),
                          stories=0, log_artifacts=False)
    text = page.read_text(encoding="utf-8")
    assert "Haystack" not in text and "curves_sweep.png" in text and "attention_" not in text


@pytest.mark.slow
def test_bad_sources_are_refused(tmp_path, report_run):
    from memsel.reporting.build import report_command

    with pytest.raises(ValueError, match="not a memsel run directory"):
        report_command(str(tmp_path), None, None, None, None)
    with pytest.raises(ValueError, match="no MLflow experiment 'nope'"):
        report_command(None, "nope", None, report_run[1].resolved_tracking_uri, None)
    with pytest.MonkeyPatch.context() as mp, pytest.raises(ValueError, match="--tracking-uri"):
        # mlflow.set_tracking_uri (called by earlier tests of the session) also writes this variable
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        report_command(None, "memsel", None, None, None)


def test_curves_colour_by_seed_when_there_are_several(tmp_path):
    from memsel.reporting import figures
    from memsel.reporting.collect import RunRecord

    runs = [RunRecord(f"r{s}{t}", "n", "trial", "tune", str(s), "", f"t{t}",
                      histories={"return": [(1, 0.1 * t), (2, 0.2 * t)]}) for s in (0, 1) for t in range(5)]
    assert figures.seed_colors(runs) == {"0": "C0", "1": "C1"}
    path = figures.curves(runs, ["return", "ppo_kl"], tmp_path / "c.png", "t", "iteration")
    assert path.is_file() and path.stat().st_size > 5000
    assert figures.curves(runs, ["ppo_kl"], tmp_path / "none.png", "t", "iteration") is None  # nothing to draw
    assert figures._label(runs[0], True) == "seed 0 · t0"

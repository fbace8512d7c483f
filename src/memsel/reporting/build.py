"""Put a report together: collect the runs, draw every figure, log each as an MLflow artifact of the runs it
shows (under ``report/``), write the page."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from memsel.reporting import figures
from memsel.reporting.collect import PPO_CURVES, PRETRAIN_CURVES, Collection

log = logging.getLogger(__name__)

PAGE = "report.html"
FIGURES = "figures"
ARTIFACT_DIR = "report"
"""The artifact folder of a run that holds the report's figures about it."""


@dataclass
class Figure:
    """One PNG of the page: its file (under the output folder), what it shows, the MLflow runs it is about."""

    path: Path
    title: str
    caption: str = ""
    runs: list[str] = field(default_factory=list)


@dataclass
class Section:
    """A heading, a sentence, figures, and plain-text blocks (title, text) such as the results table."""

    title: str
    intro: str = ""
    figures: list[Figure] = field(default_factory=list)
    texts: list[tuple[str, str]] = field(default_factory=list)


def curve_section(col: Collection, folder: Path) -> Section:
    """Learning curves: pretraining, the single PPO runs, every sweep's trials, PBT's schedules."""
    sec = Section("Learning curves", "Lines are coloured by seed when the runs span several seeds, else by run. "
                                     "PPO curves are per training iteration, pretraining curves per epoch.")
    groups = [("pretrain", col.by_role("pretrain"), list(PRETRAIN_CURVES), "Pretraining (Lightning)", "epoch"),
              ("ppo", col.by_role("ppo"), list(PPO_CURVES), "PPO fine-tuning (RLlib), single runs", "training iteration"),
              ("sweep", col.by_role("trial"), list(PPO_CURVES), "Sweep trials (Ray Tune)", "training iteration")]
    for name, runs, names, title, xlabel in groups:
        if not runs:
            continue
        owners = [r.run_id for r in runs] if name != "sweep" else [r.run_id for r in col.by_role("sweep")]
        path = figures.curves(runs, names, folder / f"curves_{name}.png", title, xlabel)
        if path:
            sec.figures.append(Figure(path, title, f"{len(runs)} run(s) over {len({r.seed for r in runs})} seed(s)",
                                      owners))
    pbt = figures.pbt_schedules(col.by_role("trial"), folder / "pbt_schedules.png", "PBT's hyperparameter schedules")
    if pbt:
        sec.figures.append(Figure(pbt, "PBT's hyperparameter schedules",
                                  "each trial's searched values per iteration; a jump is an exploit and perturbation",
                                  [r.run_id for r in col.by_role("sweep")]))
    return sec


def results_section(col: Collection, folder: Path) -> Section:
    """The test results of every run folder, as ``memsel evaluate`` prints them, and its results.png."""
    from memsel.evaluate import format_table
    from memsel.layout import RunLayout

    sec = Section("Results on the test split", "Exact-match selection accuracy against the baselines, as "
                                               "`memsel evaluate` prints it.")
    for k, run_dir in enumerate(col.run_dirs()):
        layout = RunLayout(run_dir)
        if not layout.results_json.is_file():
            continue
        results = json.loads(layout.results_json.read_text(encoding="utf-8"))
        sec.texts.append((f"{run_dir} (seed {_seed_of(col, run_dir)})", format_table(results)))
        if layout.results_png.is_file():
            dest = folder / f"results_{k}.png"
            shutil.copyfile(layout.results_png, dest)
            # (no MLflow runs: results.png is already an artifact of its evaluation run)
            sec.figures.append(Figure(dest, f"results.png of {run_dir.name}", str(run_dir)))
    if not sec.texts:
        sec.intro = "No run folder with a results.json was found (run `memsel evaluate`)."
    return sec


def _seed_of(col: Collection, run_dir: Path) -> str:
    return next((r.seed for r in col.runs if r.run_dir and Path(r.run_dir) == run_dir), "?")


def attention_section(col: Collection, folder: Path, stories: int, max_dirs: int = 3) -> Section:
    """Attention heatmaps of the first ``max_dirs`` run folders that hold a test split and selectors."""
    from memsel.reporting.attention import run_dir_stories

    sec = Section("What the selector attended to",
                  "Each column is one selector at one hop: its probability over the question's memories (oldest "
                  "at the top). Green ► marks the true supporting facts; the red box is the memory it chose "
                  "(greedy, as in the evaluation).")
    evaluations = {r.run_dir: r.run_id for r in col.by_role("evaluate")}
    for k, run_dir in enumerate(col.run_dirs()[:max_dirs]):
        for path, story in run_dir_stories(run_dir, folder, f"attention_{k}", stories):
            sec.figures.append(Figure(path, f"{run_dir.name}, test question {story.index}",
                                      f"seed {_seed_of(col, run_dir)}; {story.why}",
                                      [evaluations[str(run_dir)]] if str(run_dir) in evaluations else []))
    if not sec.figures:
        sec.intro = "No run folder with a test split and a trained selector was found."
    return sec


def haystack_section(col: Collection, folder: Path, haystack_dir: Path | None) -> Section | None:
    """The haystack table (task x length, median over seeds) as a heatmap; None without result files."""
    from memsel.reporting import haystack

    records = haystack.read_results(haystack_dir) if haystack_dir is not None else []
    if not records:
        return None
    tables = haystack.median_tables(records)
    path = figures.haystack_heatmap(tables, folder / "haystack.png",
                                    f"Haystack: selection accuracy by task and length ({len(records)} files)")
    sec = Section("Haystack", f"From {haystack_dir}: median selection accuracy over seeds.")
    sec.figures.append(Figure(path, "Haystack: task x length", "", [r.run_id for r in col.by_role("evaluate")]))
    sec.texts.append(("median selection accuracy", haystack.format_table(tables)))
    return sec


def log_figures(col: Collection, sections: list[Section]) -> int:
    """Log every figure as an artifact ``report/<file>`` of each run it is about; returns how many were logged.
    A failure is a warning: the page stands without it."""
    from mlflow.tracking import MlflowClient

    client, logged = MlflowClient(tracking_uri=col.tracking_uri), 0
    for sec in sections:
        for fig in sec.figures:
            for run_id in fig.runs:
                try:
                    client.log_artifact(run_id, str(fig.path), ARTIFACT_DIR)
                    logged += 1
                except Exception as e:  # noqa: BLE001 - MLflow's errors vary by store; the page is what matters
                    log.warning("report: could not log %s to MLflow run %s: %s", fig.path.name, run_id, e)
    return logged


def build_report(col: Collection, out: Path, haystack_dir: Path | None = None, stories: int = 3,
                 log_artifacts: bool = True, title: str = "memsel report") -> Path:
    """Write ``out/report.html`` and ``out/figures/*.png``; returns the page's path."""
    from memsel.reporting.page import write_page

    out = Path(out)
    folder = out / FIGURES
    folder.mkdir(parents=True, exist_ok=True)
    sections = [curve_section(col, folder), results_section(col, folder), attention_section(col, folder, stories)]
    hay = haystack_section(col, folder, haystack_dir)
    if hay is not None:
        sections.append(hay)
    if log_artifacts:
        n = log_figures(col, sections)
        log.info("report: %d figure artifact(s) logged to MLflow under %s/", n, ARTIFACT_DIR)
    page = write_page(out / PAGE, title, col, sections)
    log.info("report: %s", page)
    return page


def report_command(run_dir: str | None, experiment: str | None, out: str | None, tracking_uri: str | None,
                   haystack_dir: str | None, stories: int = 3, log_artifacts: bool = True) -> Path:
    """``memsel report``: the page of a run directory (its config.yaml says where its MLflow store is) or of
    an MLflow experiment (``tracking_uri``, else $MLFLOW_TRACKING_URI); default output ``<run_dir>/report``
    or ``reports/<experiment>``."""
    import os

    from memsel.reporting.collect import collect

    if run_dir:
        from memsel.config import load_config
        from memsel.tracking import experiment_name

        config = Path(run_dir) / "config.yaml"
        if not config.is_file():
            raise ValueError(f"report: {run_dir} is not a memsel run directory (no config.yaml)")
        cfg = load_config(config, run_dir=run_dir, tracking_uri=tracking_uri)
        col = collect(cfg.resolved_tracking_uri, experiment_name(cfg), cfg.run_path)
        target, title = Path(out) if out else cfg.layout.root / "report", f"memsel report: {cfg.name}"
    else:
        uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            raise ValueError("report: --experiment needs --tracking-uri URI (or MLFLOW_TRACKING_URI)")
        col = collect(uri, experiment)
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in experiment)
        target, title = Path(out) if out else Path("reports") / safe, f"memsel report: experiment {experiment}"
    hay = Path(haystack_dir) if haystack_dir else None
    return build_report(col, target, hay, stories, log_artifacts, title)

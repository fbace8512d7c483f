"""What a sweep shows: a compact line per trial while it runs, a summary table (or one JSON object) at the
end, a top-k table and a plot of the searched values against the metric for its parent MLflow run."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from ray import tune

log = logging.getLogger(__name__)


def metric_value(metrics: dict | None, key: str) -> Any:
    """``a/b/c`` -> metrics["a"]["b"]["c"] (Tune's results are nested; its metric names are flat)."""
    node: Any = metrics or {}
    if key in node:
        return node[key]
    for part in key.split("/"):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "-" if v is None else str(v)


class ProgressCallback(tune.Callback):
    """One compact line per trial result: state, iteration, metric, the trial's best and the sweep's best so
    far; one line when a trial ends, fails or is retried."""

    def __init__(self, stage: str, iterations: int, metric: str):
        self.stage, self.iterations, self.metric = stage, iterations, metric
        self.best: dict[str, float] = {}

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        value = metric_value(result, self.metric)
        if isinstance(value, (int, float)) and not math.isnan(value):
            self.best[trial.trial_id] = max(value, self.best.get(trial.trial_id, -math.inf))
        lead = max(self.best.items(), key=lambda kv: kv[1], default=(None, None))
        states = {}
        for t in trials:
            states[t.status] = states.get(t.status, 0) + 1
        ret = metric_value(result, "env_runners/episode_return_mean")
        log.info("%s %s iter %d/%d  %s %s (its best %s)  return %s | sweep best %s (%s) | %s", self.stage,
                 trial.trial_id, result.get("training_iteration", 0), self.iterations, self.metric, _fmt(value),
                 _fmt(self.best.get(trial.trial_id)), _fmt(ret), _fmt(lead[1]), lead[0] or "-",
                 ", ".join(f"{n} {s.lower()}" for s, n in sorted(states.items())))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        log.info("%s %s ended (its best %s %s)", self.stage, trial.trial_id, self.metric,
                 _fmt(self.best.get(trial.trial_id)))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        log.error("%s %s failed: %s", self.stage, trial.trial_id, trial_error(trial))

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        log.warning("%s %s failed, restarting it (tune.max_failures): %s", self.stage, trial.trial_id,
                    trial_error(trial))


def trial_error(trial: Any) -> str:
    """A failed trial, told by itself: the last line of its error and where its full log is."""
    error_file = getattr(trial, "error_file", None) or Path(trial.local_path or "") / "error.txt"
    return error_line(Path(error_file), trial.local_path)


def error_line(error_file: Path, trial_dir: Any) -> str:
    """The last non-empty line of a trial's error file, and where the file and the trial's log are."""
    text = ""
    try:
        text = error_file.read_text(encoding="utf-8", errors="replace")
    except OSError:
        pass
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return f"{lines[-1].strip() if lines else 'no error text'} (full error: {error_file}; trial log: {trial_dir})"


def trial_rows(grid: Any, metric: str, searched: list[str], iterations: int, runs: dict[str, str]) -> list[dict]:
    """One row per trial of a ResultGrid: id, status, iterations, last and best metric, sampled values,
    the node it ended on, its MLflow run, and its error."""
    rows = []
    for r in grid:
        m = r.metrics or {}
        tid = m.get("trial_id") or Path(r.path).name
        df = r.metrics_dataframe
        column = df[metric] if df is not None and metric in df.columns else None
        best = float(column.max()) if column is not None and column.notna().any() else None
        iters = int(m.get("training_iteration") or 0)
        status = "failed" if r.error is not None else ("finished" if iters >= iterations else "stopped")
        config = r.config or {}
        rows.append({"trial_id": tid, "status": status, "iterations": iters, "metric": metric_value(m, metric),
                     "best_metric": best, "return": metric_value(m, "env_runners/episode_return_mean"),
                     "config": {k: _plain(config.get(k)) for k in searched}, "node_id": m.get("node_id"),
                     "mlflow_run_id": runs.get(tid),
                     "error": error_line(Path(r.path) / "error.txt", r.path) if r.error is not None else None})
    return rows


def _plain(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v


def ranked(rows: list[dict]) -> list[dict]:
    """Trials that did not fail, best last metric first (trials without one last)."""
    ok = [r for r in rows if r["status"] != "failed"]
    return sorted(ok, key=lambda r: -(r["metric"] if isinstance(r["metric"], (int, float)) else -math.inf))


def format_table(rows: list[dict], searched: list[str], metric: str) -> str:
    """A plain-text table of trials."""
    head = ["trial", "status", "iter", metric, "best", *searched, "node"]
    body = [[r["trial_id"], r["status"], str(r["iterations"]), _fmt(r["metric"]), _fmt(r["best_metric"]),
             *(_fmt(r["config"].get(k)) for k in searched), (r["node_id"] or "-")[:8]] for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(line, widths)) for line in [head, *body]]
    return "\n".join(lines)


def format_markdown(rows: list[dict], searched: list[str], metric: str) -> str:
    """The same table in Markdown (the parent run's top_trials.md)."""
    head = ["rank", "trial", "status", "iterations", metric, "best", *searched]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, r in enumerate(rows, 1):
        out.append("| " + " | ".join([str(i), r["trial_id"], r["status"], str(r["iterations"]), _fmt(r["metric"]),
                                      _fmt(r["best_metric"]), *(_fmt(r["config"].get(k)) for k in searched)]) + " |")
    return "\n".join(out) + "\n"


def plot_search(rows: list[dict], searched: list[str], metric: str, path: Path) -> Path | None:
    """One panel per searched field: each trial's value against its last metric (failed trials as x marks at
    the bottom); log x for fields spanning more than a decade. None when nothing was searched."""
    if not searched:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(searched), figsize=(4 * len(searched), 3.2), squeeze=False)
    scores = [r["metric"] for r in rows if isinstance(r["metric"], (int, float))]
    floor = min(scores, default=0.0)
    for ax, key in zip(axes[0], searched):
        for r in rows:
            x, y = r["config"].get(key), r["metric"]
            if not isinstance(x, (int, float)):
                continue
            failed = r["status"] == "failed" or not isinstance(y, (int, float))
            ax.scatter([x], [floor if failed else y], marker="x" if failed else "o",
                       color="tab:red" if failed else "tab:blue")
        xs = [r["config"].get(key) for r in rows if isinstance(r["config"].get(key), (int, float))]
        if xs and min(xs) > 0 and max(xs) / min(xs) > 10:
            ax.set_xscale("log")
        ax.set_xlabel(key)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{len(rows)} trials: searched values against {metric} (x: failed)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


class IterationBar(tune.Callback):
    """A progress bar over the experiment's PPO iterations, all trials together (memsel.progress: rate and
    time left on stderr; nothing when bars are off). ``total``: trials x iterations as planned; a trial that
    ends early (ASHA, a failure) takes its remaining iterations off the total."""

    def __init__(self, stage: str, total: int, iterations: int, metric: str):
        self.stage, self.total, self.iterations, self.metric = stage, total, iterations, metric
        self.seen: dict[str, int] = {}
        self.best: float | None = None
        self._bar = None

    def __getstate__(self) -> dict:  # Tune pickles its callbacks with the experiment's state; a bar is not state
        return {k: v for k, v in self.__dict__.items() if k != "_bar"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _bar=None)

    @property
    def bar(self):
        if self._bar is None:
            from memsel import progress

            self._bar = progress.bar(self.total, f"{self.stage}: PPO iterations", unit="iter",
                                     initial=sum(self.seen.values()))
        return self._bar

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        bar = self.bar  # made first: a new bar starts at the iterations already counted
        done = int(result.get("training_iteration", 0))
        step = max(done - self.seen.get(trial.trial_id, 0), 0)
        self.seen[trial.trial_id] = max(done, self.seen.get(trial.trial_id, 0))
        value = metric_value(result, self.metric)
        if isinstance(value, (int, float)) and not math.isnan(value):
            self.best = value if self.best is None else max(self.best, value)
        bar.set_postfix_str(f"best {self.metric} {_fmt(self.best)}", refresh=False)
        bar.update(step)

    def _ended(self, trial: Any) -> None:
        left = self.iterations - self.seen.get(trial.trial_id, 0)
        if left > 0 and self.bar.total:
            self.bar.total = max(self.bar.total - left, self.bar.n)
            self.bar.refresh()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ended(trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ended(trial)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

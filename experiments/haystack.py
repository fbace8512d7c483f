"""bAbI in a haystack on real data: train short, test long. Runs, keeps and reports.

Per task and seed, two commands anyone can rerun (``configs/experiments/haystack.yaml``):

    memsel pipeline --data PATH --task N --config configs/experiments/haystack.yaml --seed S --json
    memsel evaluate --data PATH --task N --config configs/experiments/haystack.yaml --seed S \\
        --lengths 0,1000,4000,16000 --json

The first trains on lists of ``data.haystack`` memories (pretraining, then PPO + distillation); the
second scores the run's selectors, BM25 and the recency baselines on the test split at each length.
Each length's results are kept in experiments/results/haystack/task<N>_len<L>_seed<S>.json (the shape
memsel report reads); ``--report-only`` writes the table and plot into docs/RESULTS.md's haystack section.

    python experiments/haystack.py --data ../shared/babi/tasks_1-20_v1-2/en --tasks 1 2 3 --seeds 0 1 2
    python experiments/haystack.py --experiment haystack_weak --data ... --tasks 1 2 3 --seeds 0
    python experiments/haystack.py --report-only
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENTS = {"haystack": "selection_accuracy", "haystack_weak": "answer_accuracy"}
"""Experiment (configs/experiments/<name>.yaml) -> the metric its table reports."""
LENGTHS = (0, 1000, 4000, 16000)
METHODS = (("ppo", "memsel (PPO + distillation)"), ("bm25", "BM25 (bm25s), h-th best at hop h"), ("recency_prior", "recency prior"),
           ("random", "random (expected)"))
TARGET = {1: 99.0, 2: 97.0, 3: 95.0}
"""Strong supervision at 16k memories: selection accuracy (%) the issue asks for."""
MARK = "<!-- haystack -->"


def results_dir(name: str) -> Path:
    return ROOT / "experiments" / "results" / name


def config_path(name: str) -> Path:
    return ROOT / "configs" / "experiments" / f"{name}.yaml"


def commands(name: str, data: str, task: int, seed: int, run_dir: Path, lengths: tuple[int, ...]) -> list[list[str]]:
    memsel = str(Path(sys.executable).parent / "memsel")
    common = ["--data", data, "--task", str(task), "--config", str(config_path(name)), "--seed", str(seed),
              "--run-dir", str(run_dir), "--json"]
    return [[memsel, "pipeline", *common],
            [memsel, "evaluate", *common, "--lengths", ",".join(str(n) for n in lengths), "--selector", "ppo"]]


def run_one(name: str, data: str, task: int, seed: int, run_root: Path, lengths: tuple[int, ...],
            force: bool) -> None:
    out = results_dir(name)
    done = [out / f"task{task}_len{n}_seed{seed}.json" for n in lengths]
    if all(p.is_file() for p in done) and not force:
        print(f"[task {task} seed {seed}] saved already", flush=True)
        return
    run_root = run_root / name
    run_dir = run_root / f"task{task}" / f"seed{seed}"
    outputs, walls = [], []
    bm25 = _saved_bm25(out, task, lengths)  # the test haystack is the same for every seed: BM25's choices too
    for cmd in commands(name, data, task, seed, run_dir, lengths):
        if bm25 and cmd[1] == "evaluate":
            cmd.append("--no-bm25")
        kept = _kept_output(run_dir, cmd[1], lengths)
        if kept is not None:  # an earlier, interrupted attempt finished this step: nothing is computed twice
            print(f"[task {task} seed {seed}] {cmd[1]}: kept from {run_dir}", flush=True)
            outputs.append(kept)
            walls.append(float("nan"))
            continue
        print(f"[task {task} seed {seed}] {' '.join(cmd)}", flush=True)
        t = time.perf_counter()
        log = run_root / f"task{task}_seed{seed}_{cmd[1]}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w") as err:
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=os.environ.copy())
        walls.append(time.perf_counter() - t)
        if proc.returncode:
            print(f"[task {task} seed {seed}] failed ({proc.returncode}); see {log}", flush=True)
            return
        outputs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    pipeline, by_length = outputs
    for n, (from_seed, scores) in bm25.items():
        by_length[str(n)]["results"]["bm25"] = {**scores, "from_seed": from_seed}
    out.mkdir(parents=True, exist_ok=True)
    for n in lengths:
        record = {"experiment": name, "task": task, "length": n, "seed": seed, **by_length[str(n)],
                  "train_length": _train_length(name), "pipeline_wall_s": walls[0], "evaluate_wall_s": walls[1],
                  "plain_evaluation": {k: v for k, v in pipeline.items() if k != "timings"},
                  "commands": [" ".join(c[1:]) for c in commands(name, "DATA", task, seed, Path("RUN"), lengths)]}
        (out / f"task{task}_len{n}_seed{seed}.json").write_text(json.dumps(record, indent=1) + "\n")
    print(f"[task {task} seed {seed}] done in {sum(walls):.0f} s", flush=True)


def _kept_output(run_dir: Path, step: str, lengths: tuple[int, ...]) -> dict | None:
    """What ``step`` printed, from the files it left in ``run_dir`` when it finished before (else None)."""
    path = run_dir / ("results.json" if step == "pipeline" else "haystack.json")
    if not path.is_file():
        return None
    kept = json.loads(path.read_text())
    if step == "evaluate" and not all(str(n) in kept for n in lengths):
        return None
    return kept


def _saved_bm25(out: Path, task: int, lengths: tuple[int, ...]) -> dict[int, tuple[int, dict]]:
    """{length: (seed, BM25's scores)} from a saved run of ``task`` at every length (else {}): BM25 does not
    learn and the test haystack does not depend on the seed (memsel.data.prepare.TEST_HAYSTACK_SEED)."""
    found = {}
    for n in lengths:
        for p in sorted(out.glob(f"task{task}_len{n}_seed*.json")):
            r = json.loads(p.read_text())
            if "bm25" in r["results"] and "from_seed" not in r["results"]["bm25"]:
                found[n] = (r["seed"], r["results"]["bm25"])
                break
    return found if len(found) == len(lengths) else {}


def _train_length(name: str) -> int:
    import yaml

    return int(yaml.safe_load(config_path(name).read_text())["data"]["haystack"])


def load(name: str) -> dict[tuple[int, int], dict[int, dict]]:
    """{(task, length): {seed: record}}."""
    out: dict[tuple[int, int], dict[int, dict]] = {}
    for p in sorted(results_dir(name).glob("task*_len*_seed*.json")):
        r = json.loads(p.read_text())
        out.setdefault((r["task"], r["length"]), {})[r["seed"]] = r
    return out


def cell(records: dict[int, dict], method: str, key: str = "selection_accuracy") -> str:
    values = [100 * r["results"][method][key] for r in records.values() if method in r["results"]]
    if not values:
        return "-"
    return f"{statistics.median(values):.1f} [{min(values):.1f}-{max(values):.1f}]"


def table(runs: dict[tuple[int, int], dict[int, dict]], metric: str) -> list[str]:
    lines = ["| task | memories | words / question | seeds | " + " | ".join(label for _, label in METHODS)
             + " | memsel memories/s (wall, shared 2 cores) | command |", "|" + "---|" * (len(METHODS) + 6)]
    for (task, length), records in sorted(runs.items()):
        words = statistics.median(r["words_per_question"] for r in records.values())
        speed = [r["results"]["ppo"]["memories_per_second"] for r in records.values() if "ppo" in r["results"]]
        lines.append(f"| {task} | {length:,} | {words:,.0f} | {','.join(str(s) for s in sorted(records))} | "
                     + " | ".join(cell(records, m, metric) for m, _ in METHODS)
                     + (f" | {statistics.median(speed):,.0f} |" if speed else " | - |")
                     + f" `python experiments/haystack.py --data DATA --tasks {task} --seeds "
                     + " ".join(str(s) for s in sorted(records)) + "` |")
    return lines


def plot(runs: dict[tuple[int, int], dict[int, dict]], path: Path, metric: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({t for t, _ in runs})
    fig, axes = plt.subplots(1, len(tasks), figsize=(max(8.0, 4.2 * len(tasks)), 4.0), squeeze=False, sharey=True)
    for ax, task in zip(axes[0], tasks):
        lengths = sorted(n for t, n in runs if t == task)
        x = range(len(lengths))
        for method, label in METHODS:
            ys = [statistics.median([100 * r["results"][method].get(metric, float("nan"))
                                     for r in runs[(task, n)].values() if method in r["results"]] or [float("nan")])
                  for n in lengths]
            ax.plot(x, ys, marker="o", label=label)
        ax.set_xticks(list(x), [f"{n:,}" if n else "plain" for n in lengths])
        ax.set_title(f"task {task}")
        ax.set_xlabel("memories per question")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"{metric.replace('_', ' ')} (%), median of seeds")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(path: Path = ROOT / "docs" / "RESULTS.md") -> None:
    """The haystack section of docs/RESULTS.md (between two MARK lines): per experiment, its table and plot."""
    section = [MARK, (ROOT / "experiments" / "HAYSTACK-header.md").read_text().rstrip()]
    for name, metric in EXPERIMENTS.items():
        runs = load(name)
        if not runs:
            continue
        png = plot(runs, ROOT / "docs" / f"{name}.png", metric)
        title = "strong supervision, selection accuracy" if name == "haystack" else "weak supervision, answer accuracy"
        section += ["", f"### `{name}.yaml`: {title} (%)", "", *table(runs, metric), "",
                    f"![{metric} against list length]({png.name})"]
        print(f"{name}: {len(runs)} (task, length) cells, {png}")
    section.append(MARK)
    text = path.read_text()
    if MARK in text:
        head, _, rest = text.partition(MARK)
        _, _, tail = rest.partition(MARK)
        text = head + "\n".join(section) + tail
    else:
        text = text.rstrip() + "\n\n" + "\n".join(section) + "\n"
    path.write_text(text)
    print(f"wrote {path}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="the bAbI en folder")
    ap.add_argument("--experiment", choices=list(EXPERIMENTS), default="haystack")
    ap.add_argument("--tasks", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--lengths", type=int, nargs="+", default=list(LENGTHS))
    ap.add_argument("--run-root", default="/tmp/memsel-haystack", help="where the run directories go")
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args()
    if not args.report_only:
        if not args.data:
            ap.error("--data is needed (or --report-only)")
        for seed in args.seeds:
            for task in args.tasks:
                run_one(args.experiment, args.data, task, seed, Path(args.run_root), tuple(args.lengths), args.force)
    write_report()
    return 0


if __name__ == "__main__":
    sys.exit(main())

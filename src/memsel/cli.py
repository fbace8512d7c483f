"""The ``memsel`` command line.

Every command takes ``--config FILE`` (YAML overriding the defaults in memsel.config), repeatable
``--set key=value`` overrides, ``--run-dir``, ``--seed``, ``--tracking-uri`` and ``--ray-address``.
Bad input (config, data files) ends with one line naming the field or file:line, and exit code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import statistics
import sys
from pathlib import Path
from typing import Iterator

from memsel.config import Config, ConfigError, load_config

log = logging.getLogger("memsel")

EPILOG = """examples:
  memsel pipeline --config configs/quickstart.yaml
  memsel pipeline --data ../shared/babi/tasks_1-20_v1-2/en --task 1 --seed 1 --json
  memsel pretrain --run-dir runs/exp1 --set pretrain.max_epochs=30
  memsel train --run-dir runs/exp1 --set ppo.distill_coeff=1.0
  memsel tune --run-dir runs/exp1 --ray-address auto
  memsel evaluate --run-dir runs/exp1 --json
"""


def _common(p: argparse.ArgumentParser, data: bool = True) -> None:
    g = p.add_argument_group("configuration")
    g.add_argument("--config", metavar="FILE", help="YAML file overriding the defaults (see configs/)")
    g.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override one field, e.g. --set ppo.lr=1e-4 (repeatable; applied after --config)")
    g.add_argument("--name", help="run name (default from config: quickstart); run dir is runs/<name>")
    g.add_argument("--run-dir", help="directory for everything this run writes (default runs/<name>)")
    g.add_argument("--seed", type=int, help="seed for data generation, splits, initialisation and sampling")
    g.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite:///<run-dir>/mlflow.db)")
    g.add_argument("--ray-address", help="Ray cluster to join, e.g. 'auto' or 'HOST:6379' (default: local Ray)")
    if data:
        g.add_argument("--data", metavar="PATH",
                       help="real bAbI data: a *_train.txt file (its *_test.txt is used for testing) or a folder "
                            "with --task N (default: generate task-1 stories)")
        g.add_argument("--task", type=int, help="bAbI task number when --data is a folder (default 1)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="memsel", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Train attention networks that select the right memory from a growing list: "
                    "supervised pretraining (Lightning), PPO fine-tuning with distillation (RLlib), "
                    "sweeps (Ray Tune), all tracked in MLflow.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = sub.add_parser("data", help="generate or inspect bAbI-format data")
    dsub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    gen = dsub.add_parser("generate", help="write seeded task-1 train/test files in the bAbI format")
    gen.add_argument("--out", required=True, metavar="DIR", help="folder for qa1_generated_{train,test}.txt")
    _common(gen, data=False)
    ins = dsub.add_parser("inspect", help="statistics of bAbI files: stories, questions, memories, vocabulary")
    ins.add_argument("paths", nargs="+", metavar="PATH", help="bAbI files or folders of them")
    ins.add_argument("--json", action="store_true", help="print one JSON object instead of a table")

    for name, text in (
        ("pretrain", "supervised pretraining with Lightning (temporal prior + supporting-fact labels)"),
        ("train", "PPO fine-tuning in RLlib, distilling toward the pretrained selector (one Tune trial)"),
        ("tune", "Ray Tune sweep over PPO settings with ASHA early stopping"),
        ("evaluate", "selection accuracy on the test split: baselines and every trained selector of the run"),
        ("pipeline", "everything: data -> pretrain -> train -> tune -> evaluate, then the results table"),
    ):
        p = sub.add_parser(name, help=text, description=text)
        _common(p)
        if name in ("evaluate", "pipeline"):
            p.add_argument("--json", action="store_true",
                           help="print only one JSON object {method: {metric: value}} on stdout")
    return parser


def _config(args: argparse.Namespace) -> Config:
    sets = list(args.sets)
    if getattr(args, "data", None):
        sets.append(f"data.path={json.dumps(str(Path(args.data).resolve()))}")
    if getattr(args, "task", None) is not None:
        sets.append(f"data.task={args.task}")
    return load_config(args.config, sets, name=args.name, run_dir=args.run_dir, seed=args.seed,
                       tracking_uri=args.tracking_uri, ray_address=args.ray_address)


@contextlib.contextmanager
def stdout_to_stderr(active: bool) -> Iterator[None]:
    """With --json, stdout carries only the JSON: everything else printed meanwhile goes to stderr."""
    if not active:
        yield
        return
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)  # output of C code and child processes
    try:
        with contextlib.redirect_stdout(sys.stderr):  # Python-level prints, whatever fd sys.stdout uses
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _inspect(paths: list[str], as_json: bool) -> int:
    from memsel.data.babi import parse_babi, tokenize

    files: list[Path] = []
    for p in map(Path, paths):
        files.extend(sorted(p.glob("*.txt")) if p.is_dir() else [p])
    report = {}
    for f in files:
        samples = parse_babi(f)
        per_story: dict[int, int] = {}
        for s in samples:
            per_story[s.story] = max(per_story.get(s.story, 0), len(s.memories))
        lengths = sorted(per_story.values())
        vocab = {t for s in samples for x in (*s.memories, s.query, s.answer) for t in tokenize(x)}
        report[str(f)] = {
            "stories": len(per_story), "questions": len(samples),
            "statements_per_story": {"min": lengths[0], "median": statistics.median(lengths), "max": lengths[-1]},
            "supporting_per_question": {"min": min(len(s.supporting) for s in samples),
                                        "mean": statistics.fmean(len(s.supporting) for s in samples),
                                        "max": max(len(s.supporting) for s in samples)},
            "memories_per_question": {"mean": statistics.fmean(len(s.memories) for s in samples),
                                      "max": max(len(s.memories) for s in samples)},
            "vocabulary": len(vocab),
        }
    if as_json:
        print(json.dumps(report, indent=2))
        return 0
    head = f"{'file':<44} {'stories':>7} {'questions':>9} {'stmts/story min/med/max':>23} {'support/q':>9} {'vocab':>6}"
    print(head)
    for f, r in report.items():
        s, q = r["statements_per_story"], r["supporting_per_question"]
        print(f"{Path(f).name[:44]:<44} {r['stories']:>7} {r['questions']:>9} "
              f"{s['min']:>7}/{s['median']:g}/{s['max']:<7} {q['mean']:>9.2f} {r['vocabulary']:>6}")
    return 0


def _finish(cfg: Config, results: dict, as_json: bool, saved: list[str]) -> None:
    from memsel.evaluate import format_table
    from memsel.tracking import ui_hint

    if as_json:
        print(json.dumps(results))
        return
    print()
    print(format_table(results))
    print()
    print(f"Results:  {cfg.run_path}")
    for item in saved:
        print(f"          {item}")
    print(f"MLflow:   {cfg.resolved_tracking_uri}  (experiment '{cfg.experiment}')")
    print(f"Open it:  {ui_hint(cfg)}")


def run(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S",
                        stream=sys.stderr)
    if args.command == "data" and args.data_command == "inspect":
        return _inspect(args.paths, args.json)

    cfg = _config(args)
    if args.command == "data":  # generate
        from memsel.data.prepare import generated_files

        train, test = generated_files(cfg, Path(args.out))
        print(f"wrote {train}\nwrote {test}")
        return 0

    from memsel import pipeline
    from memsel.data.prepare import prepare_data

    as_json = bool(getattr(args, "json", False))
    with stdout_to_stderr(as_json):
        pipeline.save_run_config(cfg)
        if args.command == "pipeline":
            results = pipeline.run_pipeline(cfg)
        else:
            data = prepare_data(cfg)
            if args.command == "pretrain":
                path = pipeline.stage_pretrain(cfg, data)
                print(f"pretrained selector: {path}")
                return 0
            if args.command in ("train", "tune"):
                outcome = pipeline.stage_ppo(cfg, data, sweep=args.command == "tune")
                print(f"fine-tuned selector: {outcome.selector_path}\nRLlib checkpoint:    {outcome.checkpoint}")
                if outcome.best_config:
                    print(f"best trial:          {outcome.best_config}")
                return 0
            results = pipeline.stage_evaluate(cfg, data)
    _finish(cfg, results, as_json, ["results.txt (table)", "results.json", "results.png (plot)",
                                    "config.yaml (full config, reusable with --config)"])
    return 0


def main(argv: list[str] | None = None) -> None:
    try:
        code = run(argv)
    except (ConfigError, FileNotFoundError, ValueError) as e:
        if "-v" in (argv or sys.argv) or "--verbose" in (argv or sys.argv):
            raise
        print(f"memsel: error: {e}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print("memsel: interrupted", file=sys.stderr)
        code = 130
    sys.exit(code)


if __name__ == "__main__":
    main()

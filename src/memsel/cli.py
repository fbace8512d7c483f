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
import sys
from pathlib import Path
from typing import Iterator

from memsel.config import Config, ConfigError, load_config
from memsel import preflight, progress
from memsel.jobs import add_jobs_commands as _add_jobs_commands

log = logging.getLogger("memsel")

EPILOG = """examples:
  memsel data download --dest ../shared/babi
  memsel data generate --task 2 --out data/gen --set data.distractor_density=0.2
  memsel data inspect --compare-generated ../shared/babi/tasks_1-20_v1-2/en/qa2_two-supporting-facts_train.txt
  memsel pipeline --config configs/quickstart.yaml
  memsel pipeline --data ../shared/babi/tasks_1-20_v1-2/en --task 1 --seed 1 --run-dir runs/qa1 --json
  memsel pretrain --run-dir runs/exp1 --set pretrain.max_epochs=30
  memsel train --run-dir runs/exp1 --set ppo.distill_coeff=1.0
  memsel tune --run-dir runs/exp1 --ray-address auto
  memsel evaluate --run-dir runs/exp1 --json
  memsel select --checkpoint runs/exp1/ppo/selector.pt --query "Where is Mary?" --memories-file story.txt
  memsel report --run-dir runs/exp1
  memsel bench selector --quick
"""


def _common(p: argparse.ArgumentParser, data: bool = True) -> None:
    g = p.add_argument_group("configuration")
    g.add_argument("--config", metavar="FILE", help="YAML file overriding the defaults (see configs/)")
    g.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override one field, e.g. --set ppo.lr=1e-4 (repeatable; applied after --config)")
    g.add_argument("--name", help="run name; run dir is runs/<name> (default: the name of --run-dir, or the "
                                   "config file's name; one of them is needed)")
    g.add_argument("--run-dir", help="directory for everything this run writes (default runs/<name>)")
    g.add_argument("--seed", type=int, help="seed for data generation, splits, initialisation and sampling")
    g.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite:///<run-dir>/mlflow.db)")
    g.add_argument("--ray-address", help="Ray cluster to join, e.g. 'auto' or 'HOST:6379' (default: local Ray)")
    if data:
        g.add_argument("--data", metavar="PATH",
                       help="real bAbI data: a *_train.txt file (its *_test.txt is used for testing) or a folder "
                            "with --task N (default: generate task-1 stories)")
        g.add_argument("--task", type=int, help="bAbI task number when --data is a folder (default 1)")


def _add_data_commands(sub: argparse._SubParsersAction) -> None:
    """``memsel data download | generate | inspect``."""
    data = sub.add_parser("data", help="download, generate or inspect bAbI-format data")
    dsub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    down = dsub.add_parser("download", help="fetch the official bAbI archive, verify its SHA-256, unpack it",
                           description="Download tasks_1-20_v1-2.tar.gz from Facebook's public file server, "
                                       "check its SHA-256 and unpack it into DIR/tasks_1-20_v1-2 (nothing is "
                                       "left behind when a step fails). bAbI: Weston et al. 2015, CC BY 3.0.")
    down.add_argument("--dest", default="babi", metavar="DIR", help="where tasks_1-20_v1-2/ goes (default: ./babi)")
    down.add_argument("--url", default=None, metavar="URL", help="another address of the same archive")
    down.add_argument("--sha256", default=None, metavar="HEX", help="expected SHA-256 (default: the published one)")
    down.add_argument("--force", action="store_true", help="download again and replace an existing copy")
    gen = dsub.add_parser("generate", help="write seeded train/test files of bAbI task 1 to 5 in the bAbI format",
                          description="Write seeded qaN_generated_{train,test}.txt files of a bAbI task: 1, 2, 3 "
                                      "(one, two, three supporting facts), 4 (two-argument relations: 'What is "
                                      "north of the kitchen?') or 5 (three-argument relations: 'Who gave the "
                                      "football to Bill?'), read back by the same parser as the real files.")
    gen.add_argument("--out", required=True, metavar="DIR", help="folder for qaN_generated_{train,test}.txt")
    # No argparse choices: data.task's own check refuses other tasks, naming the field (exit code 2).
    gen.add_argument("--task", type=int,
                     help="1, 2 or 3 supporting facts, 4 two-argument or 5 three-argument relations "
                          "(default from config: data.task = 1)")
    _common(gen, data=False)
    hay = dsub.add_parser("haystack", help="hide a task's stories among sentences of background text (BABILong)",
                          description="Write the train and test splits of --data/--task (or of generated stories) "
                                      "with each question's memories a list of --length memories: the story's "
                                      "statements in order, at seeded random positions among sentences of "
                                      "background text. Files: qaN_haystackL_{train,test}.txt in the bAbI format; "
                                      "read them back with --set data.max_memories=L.")
    hay.add_argument("--out", required=True, metavar="DIR", help="folder for the files")
    hay.add_argument("--length", type=int, required=True, metavar="L", help="memories per question, e.g. 1000")
    hay.add_argument("--background", metavar="PATH",
                     help="a text file or a folder of *.txt (default: ../shared/haystack, two novels)")
    _common(hay)
    ins = dsub.add_parser("inspect", help="statistics of bAbI files: stories, questions, memories, vocabulary")
    ins.add_argument("paths", nargs="+", metavar="PATH", help="bAbI files or folders of them")
    ins.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    ins.add_argument("--compare-generated", action="store_true",
                     help="next to every task 1-5 file, the same statistics of as many generated stories")
    ins.add_argument("--seed", type=int, default=0, help="seed of the generated stories (default 0)")


def _add_bench_commands(sub: argparse._SubParsersAction) -> None:
    """``memsel bench NAME``, one per module of memsel.benchmarks."""
    bench = sub.add_parser("bench", help="benchmarks (ratios measured side by side in one run)")
    bsub = bench.add_subparsers(dest="bench_command", required=True, metavar="NAME")
    from memsel.benchmarks import BENCHMARKS

    import importlib

    for bname, btext in BENCHMARKS.items():
        bp = bsub.add_parser(bname, help=btext, description=btext)
        bp.set_defaults(bench_module=bname)
        bp.add_argument("--json", action="store_true", help="print the records as JSON on stdout")
        # Benchmark modules keep heavy imports (torch, ray) inside run(), so --help stays fast.
        importlib.import_module(f"memsel.benchmarks.{bname}").add_arguments(bp)


def _add_select_command(sub: argparse._SubParsersAction) -> None:
    """``memsel select``: rank raw-text memories with a selector file."""
    sel = sub.add_parser("select", help="rank raw-text memories for a question with a trained selector file",
                         description="Rank memories (oldest first) for a query with a selector file "
                                     "(runs/<name>/{pretrain,ppo,tune}/selector.pt); prints each memory's "
                                     "selection probability, most probable first.")
    sel.add_argument("--checkpoint", required=True, metavar="PATH", help="a selector file (selector.pt)")
    sel.add_argument("--query", required=True, help='the question, e.g. "Where is Mary?"')
    sel.add_argument("--memory", dest="memories", action="append", default=[], metavar="TEXT",
                     help="one memory (repeatable, oldest first; after those of --memories-file)")
    sel.add_argument("--memories-file", metavar="FILE", help="memories one per line, oldest first ('-': stdin)")
    sel.add_argument("--ages", metavar="A,B,...", help="age of every memory (default: last memory 0, the one "
                                                        "before it 1, ...)")
    sel.add_argument("--selected", metavar="I,J,...", help="indices of memories chosen at earlier hops")
    sel.add_argument("--vocab", metavar="FILE", help="the run's data/vocab.json, for files saved without one")
    sel.add_argument("--top", type=int, default=0, metavar="K", help="print only the K most probable (default all)")
    sel.add_argument("--json", action="store_true", help="print one JSON object instead of a table")



def _add_manager_command(sub: argparse._SubParsersAction) -> None:
    """``memsel manager train | evaluate``."""
    text = ("the memory manager (K slots: which statement to evict when one arrives): train = Lightning on "
            "Belady's decisions, then PPO; both print retention of FIFO, LIFO, random, LRU, the oracle and the managers")
    man = sub.add_parser("manager", help=text, description=text)
    msub = man.add_subparsers(dest="manager_command", required=True, metavar="ACTION")
    for name, what, split in (("train", "train the run's manager, then print the table", "val"),
                              ("evaluate", "print the table for the run's managers", "test")):
        p = msub.add_parser(name, help=what, description=what)
        _common(p)
        p.add_argument("--split", choices=("train", "val", "test"), default=split,
                       help=f"stories the table is measured on (default {split}; choose settings on val)")
        p.add_argument("--selector", metavar="FILE", help="selector whose attention drives the LRU baseline "
                                                         "(default: the run's pretrain/selector.pt when present)")
        p.add_argument("--json", action="store_true", help="print only one JSON object {method: {metric: value}}")


def _manager(args: argparse.Namespace) -> int:
    """``memsel manager train | evaluate`` on the run directory."""
    from memsel.lifecycle import guarded
    from memsel.manager import train as mt

    cfg = _config(args)
    k = mt.slots(cfg)  # refuses a missing K before anything runs
    selector = Path(args.selector) if args.selector else cfg.layout.pretrained_selector
    if args.selector and not selector.is_file():
        raise FileNotFoundError(f"{selector}: no such selector file (--selector)")
    if args.manager_command == "evaluate" and not any(p.is_file() for p in mt.manager_files(cfg).values()):
        raise FileNotFoundError(f"{cfg.run_path / 'manager'}: no trained manager; run `memsel manager train` first")
    with guarded(cfg.run_path, cfg.resolved_tracking_uri), stdout_to_stderr(args.json):
        data = mt.manager_data(cfg)
        if args.manager_command == "train":
            from memsel.tracking import lightning_logger

            mt.train_manager(cfg, data, logger=lightning_logger(cfg, "manager"))
        results = mt.evaluate_managers(cfg, data, args.split, mt.manager_files(cfg), selector)
    if args.json:
        print(json.dumps(results))
    else:
        print(mt.format_manager_table(results, f"memory retention, K = {k}, {args.split} split ({cfg.run_path})"))


def _add_report_command(sub: argparse._SubParsersAction) -> None:
    """``memsel report``: an HTML page of a run directory or an MLflow experiment."""
    rep = sub.add_parser("report", help="an HTML page with learning curves, results, attention heatmaps (and the "
                                        "haystack table) of a run directory or an MLflow experiment",
                         description="Read MLflow and the run folders; write one self-contained HTML page "
                                     "(report.html) with its PNGs (figures/), and log each figure as an artifact "
                                     "(report/) of the MLflow runs it shows.")
    src = rep.add_mutually_exclusive_group(required=True)
    src.add_argument("--run-dir", metavar="DIR", help="a run directory (its config.yaml names its MLflow store)")
    src.add_argument("--experiment", metavar="NAME", help="an MLflow experiment: every memsel run in it, all seeds")
    rep.add_argument("--out", metavar="DIR", help="output folder (default <run-dir>/report or reports/<experiment>)")
    rep.add_argument("--tracking-uri", help="MLflow tracking URI (default: the run directory's; for --experiment "
                                            "$MLFLOW_TRACKING_URI)")
    rep.add_argument("--haystack", metavar="DIR", default="experiments/results/haystack",
                     help="the haystack evaluation's result files (default experiments/results/haystack; "
                          "the section is left out when there are none)")
    rep.add_argument("--stories", type=int, default=3, metavar="N",
                     help="test questions shown as attention heatmaps per run folder (default 3)")
    rep.add_argument("--no-artifacts", action="store_true", help="do not log the figures to MLflow")
    rep.add_argument("--json", action="store_true", help='print {"page": PATH} as JSON on stdout')


def _report(args: argparse.Namespace) -> int:
    from memsel.reporting.build import report_command

    with stdout_to_stderr(args.json):
        page = report_command(args.run_dir, args.experiment, args.out, args.tracking_uri, args.haystack,
                              args.stories, not args.no_artifacts)
    print(json.dumps({"page": str(page)}) if args.json else f"report: {page}")
    return 0


def _add_tune_flags(p: argparse.ArgumentParser) -> None:
    """``memsel tune --resume | --fresh`` and ``--json``."""
    again = p.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true",
                       help="continue the run directory's sweep after its driver was stopped or killed: finished "
                            "trials kept, unfinished ones from their last checkpoint, each in its MLflow run")
    again.add_argument("--fresh", action="store_true",
                       help="replace the run directory's sweep (its Tune state is deleted; its MLflow runs stay)")
    p.add_argument("--json", action="store_true", help="print only the sweep's summary as one JSON object on stdout")


def tune_mode(args: argparse.Namespace) -> str:
    """What ``memsel tune`` does with a sweep the run directory holds (memsel.tune_jobs.sweep.MODES)."""
    return "resume" if getattr(args, "resume", False) else "fresh" if getattr(args, "fresh", False) else "new"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="memsel", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Train attention networks that select the right memory from a growing list: "
                    "supervised pretraining (Lightning), PPO fine-tuning with distillation (RLlib), "
                    "sweeps (Ray Tune), all tracked in MLflow.")
    noise = parser.add_mutually_exclusive_group()
    noise.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    noise.add_argument("-q", "--quiet", action="store_true",
                       help="for CI logs: no progress bars, only warnings and errors logged (bars are shown only "
                            "when stderr is a terminal anyway; logs go to stderr, --json output to stdout)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    _add_data_commands(sub)
    _add_bench_commands(sub)
    _add_select_command(sub)
    _add_report_command(sub)
    _add_jobs_commands(sub)
    _add_manager_command(sub)
    for name, text in (
        ("pretrain", "supervised pretraining with Lightning (temporal prior + supporting-fact labels)"),
        ("train", "PPO fine-tuning in RLlib, distilling toward the pretrained selector (one Tune trial)"),
        ("tune", "Ray Tune sweep over PPO settings (tune.scheduler: ASHA early stopping by default)"),
        ("evaluate", "selection accuracy on the test split: baselines and every trained selector of the run"),
        ("pipeline", "everything: data -> pretrain -> train -> tune -> evaluate, then the results table"),
    ):
        p = sub.add_parser(name, help=text, description=text)
        _common(p)
        if name in ("evaluate", "pipeline"):
            p.add_argument("--json", action="store_true",
                           help="print only one JSON object {method: {metric: value}} on stdout")
        if name == "evaluate":
            p.add_argument("--lengths", type=_lengths, metavar="L1,L2,...",
                           help="evaluate on the test split hidden in haystacks of these many memories "
                                "(0 = plain bAbI), e.g. 0,1000,4000,16000: the run's selectors, BM25 and the "
                                "recency baselines (writes haystack.json / haystack.txt)")
            p.add_argument("--no-bm25", action="store_true", help="with --lengths: skip the BM25 baseline")
            p.add_argument("--split", choices=("test", "val"), default="test",
                           help="with --lengths: the test split (default) or the run's validation stories, "
                                "for choices that must not see test scores")
            p.add_argument("--selector", dest="selectors", action="append", metavar="NAME",
                           help="with --lengths: only this selector of the run (pretrained, ppo, ppo_tuned, ...; "
                                "repeatable; default all)")
        if name == "tune":
            _add_tune_flags(p)
    return parser


def _lengths(text: str) -> list[int]:
    """``--lengths``: comma-separated integers >= 0."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers >= 0 (e.g. 0,1000,4000), got {text!r}")
    return values


def _config(args: argparse.Namespace) -> Config:
    sets = list(args.sets)
    if getattr(args, "data", None):
        sets.append(f"data.path={json.dumps(str(Path(args.data).resolve()))}")
    if getattr(args, "task", None) is not None:
        sets.append(f"data.task={args.task}")
    # A stage command must say which run it works on: none writes into runs/quickstart unasked.
    return load_config(args.config, sets, require_name=args.command in preflight.STAGES, name=args.name,
                       run_dir=args.run_dir, seed=args.seed, tracking_uri=args.tracking_uri,
                       ray_address=args.ray_address)


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


def _inspect(args: argparse.Namespace) -> int:
    from memsel.data.inspection import format_report, inspect_files

    report = inspect_files(args.paths, compare_generated=args.compare_generated, seed=args.seed)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


def _select(args: argparse.Namespace) -> int:
    from memsel.inference import SelectorPredictor

    memories: list[str] = []
    if args.memories_file:
        text = sys.stdin.read() if args.memories_file == "-" else Path(args.memories_file).read_text(encoding="utf-8")
        memories = [line.strip() for line in text.splitlines() if line.strip()]
    memories += args.memories
    if not memories:
        raise ValueError("select: no memories; give --memory TEXT (repeatable) or --memories-file FILE")
    try:
        ages = [int(a) for a in args.ages.split(",")] if args.ages else None
        selected = [int(i) for i in args.selected.split(",")] if args.selected else []
    except ValueError:
        raise ValueError(f"select: --ages and --selected take comma-separated integers, got "
                         f"{args.ages or args.selected!r}") from None
    ranked = SelectorPredictor.load(args.checkpoint, vocab=args.vocab).rank(memories, args.query, ages, selected)
    if args.top > 0:
        ranked = ranked[:args.top]
    if args.json:
        print(json.dumps({"query": args.query, "checkpoint": str(args.checkpoint),
                          "ranking": [r._asdict() for r in ranked]}))
        return 0
    print(f"query: {args.query}")
    print(f"{'rank':>4}  {'prob':>6}  {'#':>4}  memory")
    for i, r in enumerate(ranked, 1):
        print(f"{i:>4}  {r.probability:6.3f}  {r.index:>4}  {r.text}")
    return 0


def _haystack(args: argparse.Namespace) -> int:
    from memsel.data.prepare import write_haystack_files

    args.sets = [*args.sets, f"data.haystack={args.length}"]
    if args.background:
        args.sets.append(f"data.haystack_background={json.dumps(str(Path(args.background).resolve()))}")
    for path, summary in write_haystack_files(_config(args), Path(args.out)):
        size = path.stat().st_size / 2 ** 20
        print(f"{path} ({size:,.1f} MiB): {summary.describe()}")
    return 0


def _download(args: argparse.Namespace) -> int:
    from memsel.data.download import ARCHIVE_SHA256, ARCHIVE_URL, download_babi

    target = download_babi(args.dest, url=args.url or ARCHIVE_URL, sha256=args.sha256 or ARCHIVE_SHA256,
                           force=args.force)
    print(f"bAbI tasks in {target}\nuse them with: memsel pipeline --data {target / 'en'} --task N --run-dir runs/qaN")
    return 0


def _finish(cfg: Config, results: dict, as_json: bool, saved: list[str], with_timings: bool = False) -> None:
    """Print the results table and where everything is; with ``as_json`` one JSON object: method ->
    metrics (and, after a pipeline, "timings": seconds per stage)."""
    from memsel.evaluate import format_table
    from memsel.tracking import experiment_name, ui_hint

    if as_json:
        timings = cfg.layout.timings
        extra = {"timings": json.loads(timings.read_text(encoding="utf-8"))} if with_timings and timings.is_file() else {}
        print(json.dumps({**results, **extra}))
        return
    print()
    print(format_table(results))
    print()
    print(f"Results:  {cfg.run_path}")
    for item in saved:
        print(f"          {item}")
    print(f"MLflow:   {cfg.resolved_tracking_uri}  (experiment '{experiment_name(cfg)}')")
    print(f"Open it:  {ui_hint(cfg)}")
    print(f"See it:   .venv/bin/memsel report --run-dir {cfg.run_path}   # one HTML page: curves, results, attention maps")


def run(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S",
                        stream=sys.stderr)
    progress.set_quiet(args.quiet)
    with progress.log_above_bars():
        return _dispatch(args)


def _dispatch(args: argparse.Namespace) -> int:
    """Run the command ``args`` names."""
    if args.command == "data" and args.data_command == "inspect":
        return _inspect(args)
    if args.command == "data" and args.data_command == "download":
        return _download(args)
    if args.command == "select":
        return _select(args)
    if args.command == "report":
        return _report(args)
    if args.command == "bench":
        import importlib

        with stdout_to_stderr(args.json):
            module = importlib.import_module(f"memsel.benchmarks.{args.bench_module}")
            records = module.run(args)  # prints its own table; returns the records for --json
        if args.json:
            print(json.dumps(records))
        return 0

    if args.command == "manager":
        return _manager(args)
    if args.command in ("submit", "jobs"):
        from memsel.jobs import run_jobs_command

        return run_jobs_command(args)

    if args.command == "data" and args.data_command == "haystack":
        return _haystack(args)
    cfg = _config(args)
    if args.command == "data":  # generate
        from memsel.data.prepare import generated_files

        train, test = generated_files(cfg, Path(args.out))
        print(f"wrote {train}\nwrote {test}")
        return 0

    from memsel.lifecycle import guarded

    # Before the lock (which creates the run directory): a refused command writes nothing at all.
    preflight.check(cfg, args.command, tune_mode(args))
    with guarded(cfg.run_path, cfg.resolved_tracking_uri):
        return _run_stage(args, cfg)


def _run_stage(args: argparse.Namespace, cfg: Config) -> int:
    """pretrain, train, tune, evaluate or pipeline on ``cfg``'s run directory (which the caller holds)."""
    from memsel import pipeline
    from memsel.data.prepare import prepare_data

    from memsel.manager.budget import with_run_manager

    as_json = bool(getattr(args, "json", False))
    if args.command != "pipeline":  # the pipeline trains the run's manager first when it has none
        cfg = with_run_manager(cfg)
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
                outcome = pipeline.stage_ppo(cfg, data, sweep=args.command == "tune", mode=tune_mode(args))
            elif getattr(args, "lengths", None):
                results = pipeline.stage_lengths(cfg, args.lengths, bm25=not args.no_bm25, only=args.selectors,
                                                 split_name=args.split)
            else:
                results = pipeline.stage_evaluate(cfg, data)
    if getattr(args, "lengths", None):
        _finish_lengths(cfg, results, as_json)
        return 0
    if args.command in ("train", "tune"):
        _print_outcome(cfg, outcome, as_json)
        return 0
    _finish(cfg, results, as_json, ["results.txt (table)", "results.json", "results.png (plot)",
                                    "config.yaml (full config, reusable with --config)"],
            with_timings=args.command == "pipeline")
    return 0


def _finish_lengths(cfg: Config, results: dict, as_json: bool) -> None:
    """After ``evaluate --lengths``: the table of selection accuracy per method and length, or the JSON."""
    from memsel.haystack_eval import format_lengths

    if as_json:
        print(json.dumps(results))
        return
    print()
    print(format_lengths(results))
    print()
    print(f"Results:  {cfg.run_path / 'haystack.json'} (every metric), haystack.txt (this table)")


def _print_outcome(cfg: Config, outcome, as_json: bool) -> None:
    """After train or tune: the trials' table, the best trial, where the selector and the MLflow runs are;
    with ``as_json`` the summary as one JSON object."""
    from memsel.tracking import ui_hint
    from memsel.tune_jobs.report import format_table

    summary = outcome.summary
    if as_json:
        print(json.dumps(summary, default=str))
        return
    searched = list(outcome.best_config)
    print()
    print(format_table(outcome.trials, searched, summary["metric"]))
    counts = ", ".join(f"{n} {s}" for s, n in summary["counts"].items())
    print(f"\n{summary['trials_total']} trial(s): {counts}; metric {summary['metric']}")
    best = summary["best"]
    print(f"best trial:          {best['trial_id']} {best['config'] or ''} ({summary['metric']} {best['metric']})")
    print(f"fine-tuned selector: {outcome.selector_path}\ncheckpoint:          {outcome.checkpoint}")
    if summary.get("registered_model"):
        print(f"registered model:    {summary['registered_model']['uri']}")
    print(f"MLflow:              {cfg.resolved_tracking_uri}\nOpen it:             {ui_hint(cfg)}")


def _exit_code(error: BaseException, verbose: bool) -> int:
    """The exit code of a command that raised ``error`` (after one line on stderr), or re-raise it.

    A signal decides first, whatever exception it turned into on the way out (Lightning turns
    Ctrl-C into ``SystemExit(1)``): 128 + its number, as a shell reports a process a signal ended.
    """
    import signal

    from memsel.lifecycle import LockHeld, StageFailed, received_signal

    sig = received_signal() or (signal.SIGINT if isinstance(error, KeyboardInterrupt) else None)
    if sig:
        print(f"memsel: stopped by {signal.Signals(sig).name}; MLflow runs of this command marked KILLED, "
              "no result file replaced", file=sys.stderr)
        return 128 + sig
    if isinstance(error, StageFailed):
        print(f"memsel: error: {error}", file=sys.stderr)
        return 1
    if isinstance(error, LockHeld) or (isinstance(error, (ConfigError, OSError, ValueError)) and not verbose):
        print(f"memsel: error: {error}", file=sys.stderr)
        return 2
    raise error


def main(argv: list[str] | None = None) -> None:
    """The ``memsel`` console script: :func:`run`, with errors and signals turned into exit codes
    (2: bad input or a run directory in use; 130/143: SIGINT/SIGTERM)."""
    try:
        code = run(argv)
    except BrokenPipeError:  # e.g. `memsel data inspect ... | head`: the reader left, nothing to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        code = 1
    except BaseException as e:  # noqa: BLE001 - _exit_code re-raises what it does not know
        code = _exit_code(e, "-v" in (argv or sys.argv) or "--verbose" in (argv or sys.argv))
    else:
        from memsel.lifecycle import received_signal

        if received_signal():  # a library swallowed the signal's exception: still an interrupted command
            code = _exit_code(KeyboardInterrupt(), False)
    sys.exit(code)


if __name__ == "__main__":
    main()

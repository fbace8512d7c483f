"""The stages behind the CLI: pretrain -> PPO fine-tune -> sweep -> evaluate, and all of them at once.

Each stage reads and writes the run directory (``runs/<name>`` by default), whose paths
memsel.layout.RunLayout names (``cfg.layout``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time
from pathlib import Path

import numpy as np

from memsel.config import PPO_VARIANTS, Config
from memsel.data.budget import Budget, apply_budget, support_outside
from memsel.data.encode import EncodedSamples
from memsel.data.prepare import PreparedData, prepare_data
from memsel.files import write_text_atomic
from memsel.registry import import_plugins

log = logging.getLogger(__name__)


def save_run_config(cfg: Config) -> Path:
    return write_text_atomic(cfg.layout.config, cfg.to_yaml())


def _plugin_hook(modules: list[str]):
    """A worker setup hook (Ray wants a named function) that imports the config's plug-ins."""
    def import_config_plugins() -> None:
        import_plugins(modules)
    return import_config_plugins


def init_ray(cfg: Config | None = None) -> None:
    """Join ``cfg.ray_address`` (or, without one, the cluster that ``RAY_ADDRESS`` names, as inside a
    Ray job), else start a new local Ray of our own; reuse a session that is already up. The one
    place in memsel that starts Ray (``cfg`` None: a local Ray with no plug-ins, as benchmarks want).

    A plain ``ray.init()`` would join any cluster that ``ray start`` left running on this machine,
    so that a "local" run would die with somebody else's cluster (or hang retrying a dead one's
    GCS): memsel asks for ``"local"``. A local Ray listens on 127.0.0.1 only, and a watchdog
    (memsel.lifecycle) kills its processes if this driver dies without shutting it down.
    """
    import os

    import ray

    from memsel.lifecycle import local_ray_settings, start_watchdog, take_signals

    if ray.is_initialized():
        return
    address = (cfg.ray_address if cfg else "") or os.environ.get("RAY_ADDRESS", "")
    plugins = list(cfg.plugins) if cfg else []
    # Every worker (env runners, learners, Tune trials) imports the config's plug-ins before it builds
    # anything, so that their components are registered there too.
    hook = {"runtime_env": {"worker_process_setup_hook": _plugin_hook(plugins)}} if plugins else {}
    if address:
        log.info("joining the Ray cluster at %s", address)
        # A cluster on this machine's loopback address (memsel.local_cluster): without Ray's single-node
        # switch the driver would look for it at the machine's external address and hang.
        loopback = address.rsplit(":", 1)[0] in ("127.0.0.1", "localhost")
        with local_ray_settings() if loopback else contextlib.nullcontext():
            ray.init(address=address, logging_level=logging.WARNING, **hook)
        take_signals()
        return
    with local_ray_settings():
        info = ray.init(address="local", include_dashboard=False, _node_ip_address="127.0.0.1",
                        logging_level=logging.WARNING, **hook)
    take_signals()
    start_watchdog(Path(info.address_info["session_dir"]).name)


_SPLIT_STREAMS = {"train": 1, "val": 2, "test": 3}


def budgeted(cfg: Config, data: EncodedSamples, split: str) -> EncodedSamples:
    """A split seen through ``cfg.env``'s memory budget, as the environment shows it.

    'sample' draws one fixed, seeded set of K memories per question here (the environment draws
    anew every episode); the supporting facts left outside are logged.
    """
    budget = Budget.from_config(cfg.env)
    if budget.strategy == "all":
        return data
    out = apply_budget(data, budget, np.random.default_rng([cfg.seed, _SPLIT_STREAMS[split]]))
    counts = support_outside(out)
    log.info("%s: memory budget %s: %d supporting facts outside it, %d of %d questions with none inside",
             split, budget.describe(), counts["support_outside_budget"], counts["questions_without_support"], len(out))
    return out


def stage_pretrain(cfg: Config, data: PreparedData) -> Path:
    from memsel.pretrain import pretrain
    from memsel.tracking import lightning_logger

    return pretrain(cfg, budgeted(cfg, data.train, "train"), budgeted(cfg, data.val, "val"), data.spec,
                    logger=lightning_logger(cfg, "pretrain"))


def pretrained_path(cfg: Config) -> Path | None:
    """The pretrained selector PPO starts from, or None when PPO runs from scratch."""
    if not cfg.ppo.use_pretrained:
        return None
    path = cfg.layout.pretrained_selector
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no pretrained selector; run `memsel pretrain` with the same --run-dir "
                                "first, or set ppo.use_pretrained=false to train from scratch")
    return path


def variant_config(cfg: Config, variant: str) -> Config:
    """The config of a comparison PPO run (``ppo.compare``): the ppo fields PPO_VARIANTS gives ``variant``."""
    if variant not in PPO_VARIANTS:
        raise ValueError(f"ppo.compare: unknown variant {variant!r}; expected one of {list(PPO_VARIANTS)}")
    return dataclasses.replace(cfg, ppo=dataclasses.replace(cfg.ppo, **PPO_VARIANTS[variant], compare=[]))


def stage_ppo(cfg: Config, data: PreparedData, sweep: bool, stage: str | None = None, mode: str = "fresh"):
    """PPO (one trial) or a sweep; ``mode``: what a sweep does with one the run directory holds
    (memsel.tune_jobs.sweep.MODES; the pipeline replaces it, ``memsel tune`` asks)."""
    from memsel.tune_jobs import run_ppo

    if cfg.tune.trial == "ppo" or not sweep:
        pretrained_path(cfg)  # refuses a missing one (the trials pretrain themselves with tune.trial pipeline)
    init_ray(cfg)
    return run_ppo(cfg, data.files, sweep, stage=stage, mode=mode)


PPO_RUNS = ("ppo_scratch", "ppo_no_distill", "ppo")
"""The single PPO runs (folder = method name) whose learning curves the evaluation compares."""
SELECTOR_FOLDERS = (("pretrained", "pretrain"), *((name, name) for name in PPO_RUNS), ("ppo_tuned", "tune"))


def stage_evaluate(cfg: Config, data: PreparedData) -> dict:
    """Evaluate every selector the run directory holds; write results.{json,txt,png}; log to MLflow."""
    from memsel.evaluate import evaluate, format_table, plot_results, sample_efficiency
    from memsel.tracking import log_evaluation

    run = cfg.layout
    found = {name: run.selector(folder) for name, folder in SELECTOR_FOLDERS}
    reader = run.reader
    results = evaluate(budgeted(cfg, data.test, "test"), {k: p for k, p in found.items() if p.is_file()},
                       hops=cfg.env.hops, reader_path=reader if reader.is_file() else None, device=cfg.device)
    curves = {}
    for name in PPO_RUNS:
        outcome = run.outcome(name)
        if name in results and outcome.is_file():
            curves[name] = json.loads(outcome.read_text(encoding="utf-8"))["curve"]
    for name, steps in sample_efficiency(curves).items():
        if name in results:
            results[name].update(steps)
    src = Path(data.files["test_file"]).name
    files = []
    for path, text in ((run.results_json, json.dumps(results, indent=2)), (run.results_txt, format_table(results))):
        files.append(write_text_atomic(path, text + "\n"))
    files.append(plot_results(results, curves, run.results_png, f"memsel run '{cfg.name}' on {src}"))
    log_evaluation(cfg, results, files)
    return results


def stage_lengths(cfg: Config, lengths: list[int], bm25: bool = True, only: list[str] | None = None,
                  split_name: str = "test") -> dict:
    """The run's selectors (those named in ``only``, or all), BM25 and the recency baselines on its test split
    (or with ``split_name`` 'val' its validation stories) in haystacks of ``lengths`` memories
    (memsel.haystack_eval); writes ``haystack.json`` and ``haystack.txt`` (``haystack-val.*``) in the run
    directory."""
    from memsel.data.encode import Vocab
    from memsel.data.haystack import build_haystack, read_background
    from memsel.data.prepare import TEST_HAYSTACK_SEED, split_by_story
    from memsel.data.sample import DATASETS
    from memsel.haystack_eval import format_lengths, haystack_split, score_methods
    from memsel.network import Selector

    run, d = cfg.layout, cfg.data
    raw = DATASETS.make(d.dataset_name, d, d.dataset_options, "data", "dataset_options", cfg.seed, run.data)
    background = read_background(d.haystack_background, d.haystack_max_words)
    vocab = Vocab.load(run.vocab)
    known = dict(SELECTOR_FOLDERS)
    unknown = sorted(set(only or ()) - set(known))
    if unknown:
        raise ValueError(f"--selector: {unknown} not among {sorted(known)}")
    selectors = {name: Selector.load(run.selector(folder)) for name, folder in SELECTOR_FOLDERS
                 if run.selector(folder).is_file() and (not only or name in only)}
    if only and not selectors:
        raise FileNotFoundError(f"{cfg.run_path}: none of the selectors {only} is trained in this run")
    reader = None
    if run.reader.is_file():
        from memsel.reader import AnswerReader

        reader = AnswerReader.load(run.reader)
    questions = raw.test if split_name == "test" else split_by_story(raw.train, d.val_fraction, cfg.seed)[1]
    results = {}
    for length in lengths:
        t = time.perf_counter()
        seed = TEST_HAYSTACK_SEED if split_name == "test" else "0:val"
        samples, timelines, _ = build_haystack(questions, length, background, seed)
        split = haystack_split(samples, timelines)
        scores = score_methods(split, cfg.env.hops, selectors, vocab, bm25, reader)
        results[str(length)] = {"results": scores, "words_per_question": split.words_per_question(),
                                "memories_per_question": float(split.lengths.mean()), "questions": len(samples)}
        log.info("length %d: %s (%.0f s)", length, ", ".join(
            f"{k} {100 * v['selection_accuracy']:.1f}%" for k, v in scores.items()), time.perf_counter() - t)
    stem = "haystack" if split_name == "test" else f"haystack-{split_name}"
    write_text_atomic(run.root / f"{stem}.json", json.dumps(results, indent=2) + "\n")
    write_text_atomic(run.root / f"{stem}.txt", format_lengths(results) + "\n")
    return results


def stage_manager(cfg: Config) -> Config:
    """With ``env.budget_strategy: managed`` and no manager file: train the run's memory manager (Lightning on
    the oracle's decisions, then PPO; memsel.manager.train) and return ``cfg`` pointing at it; otherwise
    ``cfg`` with the run's manager filled in where none is named (memsel.manager.budget.with_run_manager)."""
    from memsel.manager.budget import with_run_manager

    if cfg.env.budget_strategy != "managed" or (cfg.env.budget_options or {}).get("manager"):
        return cfg
    from memsel.manager.train import train_manager
    from memsel.tracking import lightning_logger

    log.info("[0/4] training the memory manager (K = %d): Lightning on the oracle's decisions, then PPO",
             cfg.env.memory_budget)
    train_manager(cfg, logger=lightning_logger(cfg, "manager"))
    cfg = with_run_manager(cfg)
    save_run_config(cfg)
    return cfg


def run_pipeline(cfg: Config) -> dict:
    """Data -> (the memory manager, for budget_strategy 'managed') -> pretrain -> PPO with distillation (and
    the ``ppo.compare`` runs) -> ASHA sweep (unless ``tune.num_samples`` is 0) -> evaluate; returns the results."""
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    data = prepare_data(cfg)
    timings["data"] = time.perf_counter() - t0
    if cfg.env.budget_strategy == "managed":
        t = time.perf_counter()
        cfg = stage_manager(cfg)
        timings["manager"] = time.perf_counter() - t
    t = time.perf_counter()
    log.info("[1/4] pretraining the selector with Lightning")
    stage_pretrain(cfg, data)
    timings["pretrain"] = time.perf_counter() - t
    t = time.perf_counter()
    log.info("[2/4] fine-tuning with PPO + distillation in RLlib")
    stage_ppo(cfg, data, sweep=False)
    timings["ppo"] = time.perf_counter() - t
    for variant in cfg.ppo.compare:
        t = time.perf_counter()
        log.info("[2/4] comparison: PPO %s", variant.replace("_", " "))
        stage_ppo(variant_config(cfg, variant), data, sweep=False, stage=f"ppo_{variant}")
        timings[f"ppo_{variant}"] = time.perf_counter() - t
    if cfg.tune.num_samples > 0:
        t = time.perf_counter()
        log.info("[3/4] sweeping PPO hyperparameters with Ray Tune (ASHA, %d trials)", cfg.tune.num_samples)
        stage_ppo(cfg, data, sweep=True)
        timings["tune"] = time.perf_counter() - t
    else:
        log.info("[3/4] no sweep (tune.num_samples = 0)")
    t = time.perf_counter()
    log.info("[4/4] evaluating on the test split")
    results = stage_evaluate(cfg, data)
    timings["evaluate"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    write_text_atomic(cfg.layout.timings, json.dumps(timings, indent=2))
    log.info("timings (s): %s", ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
    return results

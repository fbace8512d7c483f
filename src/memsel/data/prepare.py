"""From a config to the encoded train / validation / test splits of a run, cached in the run dir.

The run directory keeps what later commands must agree on: the vocabulary and the shapes
(``data/vocab.json``, ``data/spec.json``) and the encoded splits (``data/*.npz``) that the RL
environment reads. Re-running a command reuses them, so pretraining and PPO see the same ids.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path

import yaml

from memsel import progress
from memsel.config import Config
from memsel.data.encode import DataSpec, EncodedSamples, Vocab, encode, load_spec, save_spec, spec_for
from memsel.data.generate import write_splits
from memsel.data.haystack import HaystackSummary, build_haystack, read_background, timeline_lines
from memsel.data.sample import DATASETS, Sample
from memsel.files import write_text_atomic

log = logging.getLogger(__name__)


@dataclass
class PreparedData:
    train: EncodedSamples
    val: EncodedSamples
    test: EncodedSamples
    vocab: Vocab
    spec: DataSpec
    files: dict[str, str]
    """Source files and the encoded split files (``train_npz`` etc.), absolute paths."""


def generated_files(cfg: Config, folder: Path) -> tuple[Path, Path]:
    """Generate train/test files of task ``data.task`` (1..5) into ``folder``, deterministic in the seed."""
    config = DATASETS.build_config("generated", cfg.data, None, "data", "dataset_options")
    return write_splits(config, cfg.seed, folder)


def split_by_story(samples: list[Sample], fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Hold out whole stories, so that no validation question shares memories with a train question."""
    stories = sorted({s.story for s in samples})
    random.Random(seed).shuffle(stories)
    n_val = int(round(len(stories) * fraction))
    if fraction > 0 and n_val == 0 and len(stories) > 1:
        n_val = 1
    held = set(stories[:n_val])
    return [s for s in samples if s.story not in held], [s for s in samples if s.story in held]


def recorded_seed(cfg: Config) -> int | None:
    """The seed the run directory's data was prepared with: ``data/sources.json``'s, or for runs prepared
    before it was kept there, the seed of the run's ``config.yaml``; None when no data is prepared."""
    layout = cfg.layout
    if not layout.sources.is_file():
        return None
    seed = json.loads(layout.sources.read_text(encoding="utf-8")).get("seed")
    if seed is None and layout.config.is_file():
        seed = (yaml.safe_load(layout.config.read_text(encoding="utf-8")) or {}).get("seed")
    return seed if isinstance(seed, int) else None


def check_run_seed(cfg: Config) -> None:
    """Refuse a seed other than the one the run directory's data was prepared with (the generated
    stories, the validation split and so the vocabulary follow the seed); nothing is written."""
    before = recorded_seed(cfg)
    if before is not None and before != cfg.seed:
        raise ValueError(f"run directory {cfg.run_path} was prepared with seed {before}; this command gives seed "
                         f"{cfg.seed}. Use --seed {before}, or another --run-dir (or --name) for seed {cfg.seed}.")


def check_same_data(cfg: Config, sources: dict) -> None:
    """Refuse data other than the run directory's (its vocabulary and shapes would not fit)."""
    path = cfg.layout.sources
    if not (path.is_file() and cfg.layout.vocab.is_file() and cfg.layout.spec.is_file()):
        return
    previous = {k: v for k, v in json.loads(path.read_text(encoding="utf-8")).items() if k != "seed"}
    if previous != sources:
        raise ValueError(f"run directory {cfg.run_path} was prepared from other data "
                         f"({previous.get('train_file', previous)}, sha1 {previous.get('train_sha1', '?')[:10]}); "
                         f"this command gives {sources.get('train_file', sources)} "
                         f"(sha1 {sources.get('train_sha1', '?')[:10]}), and its vocabulary "
                         "and shapes would not fit. Use another --run-dir (or --name).")


TEST_HAYSTACK_SEED = "0:test"
"""The test split's haystack is the same whatever the run's seed (as the test file is), so that seeds differ
only in training, and baselines that do not learn (BM25, recency) score the same for every seed."""


def in_haystack(cfg: Config, train: list[Sample], test: list[Sample], sources: dict
                ) -> tuple[list[Sample], list[Sample], dict]:
    """The splits hidden in a haystack of ``data.haystack`` memories (unchanged when it is 0); the sources
    then also name the haystack, so that a run directory refuses another one."""
    d = cfg.data
    if not d.haystack:
        return train, test, sources
    background = read_background(d.haystack_background, d.haystack_max_words)
    train, _, summary = build_haystack(train, d.haystack, background, f"{cfg.seed}:train")
    log.info("haystack (train): %s", summary.describe())
    test, _, summary = build_haystack(test, d.haystack, background, TEST_HAYSTACK_SEED)
    log.info("haystack (test): %s", summary.describe())
    return train, test, {**sources, **haystack_sources(cfg, background)}


def haystack_sources(cfg: Config, background=None) -> dict[str, str]:
    """What identifies the run's haystack (nothing without one); reads the background when not given."""
    d = cfg.data
    if not d.haystack:
        return {}
    background = background or read_background(d.haystack_background, d.haystack_max_words)
    return {"haystack": str(d.haystack), "haystack_sha1": background.sha1,
            "haystack_max_words": str(d.haystack_max_words)}


def write_haystack_files(cfg: Config, out: Path) -> list[tuple[Path, HaystackSummary]]:
    """``memsel data haystack``: the config's train and test splits in a haystack of ``data.haystack`` memories,
    written to ``out`` as bAbI-format files (one story per timeline) with their summaries. Read back with
    ``data.max_memories`` = the length, each question keeps exactly its list."""
    d = cfg.data
    if d.haystack < 1:
        raise ValueError(f"data.haystack (--length): expected an integer >= 1, got {d.haystack}")
    background = read_background(d.haystack_background, d.haystack_max_words)
    out.mkdir(parents=True, exist_ok=True)
    splits = DATASETS.make(d.dataset_name, d, d.dataset_options, "data", "dataset_options", cfg.seed, out)
    written = []
    for name, samples in (("train", splits.train), ("test", splits.test)):
        seed = f"{cfg.seed}:train" if name == "train" else TEST_HAYSTACK_SEED
        built, timelines, summary = build_haystack(samples, d.haystack, background, seed)
        path = out / f"qa{d.task}_haystack{d.haystack}_{name}.txt"
        write_text_atomic(path, "\n".join(timeline_lines(timelines, built)) + "\n")
        written.append((path, summary))
    return written


def prepare_data(cfg: Config) -> PreparedData:
    """The run's encoded splits: prepared from ``cfg.data`` (and cached in the run directory) the first
    time, then read back; another seed or other data than the directory's is refused."""
    check_run_seed(cfg)  # before the generated dataset writes its files
    with progress.bar(5, "data", unit="step") as bar:  # read, vocabulary, three splits encoded
        return _prepare(cfg, bar)


def _prepare(cfg: Config, bar) -> PreparedData:
    """:func:`prepare_data`'s work, one step of ``bar`` at a time."""
    folder = cfg.layout.data
    folder.mkdir(parents=True, exist_ok=True)
    d = cfg.data
    bar.set_postfix_str(f"reading {d.dataset_name}", refresh=False)
    splits = DATASETS.make(d.dataset_name, d, d.dataset_options, "data", "dataset_options", cfg.seed, folder)
    bar.update()
    train_all, test, sources = in_haystack(cfg, splits.train, splits.test, splits.sources)
    train, val = split_by_story(train_all, cfg.data.val_fraction, cfg.seed)
    train_name, test_name = splits.describe()
    log.info("data: %s (%s, %d questions -> %d train, %d validation), %s (%d test questions)",
             train_name, d.dataset_name, len(train_all), len(train), len(val), test_name, len(test))

    vocab_path, spec_path, sources_path = cfg.layout.vocab, cfg.layout.spec, cfg.layout.sources
    if vocab_path.exists() and spec_path.exists() and sources_path.exists():
        check_same_data(cfg, sources)
        vocab, spec = Vocab.load(vocab_path), load_spec(spec_path)
    else:
        vocab = Vocab.build(train_all)
        auto = spec_for(train_all + test, cfg.data.max_memories, cfg.data.max_sentence_len, vocab)
        spec = DataSpec(len(vocab), auto.max_memories, auto.max_sentence_len)
        vocab.save(vocab_path)
        save_spec(spec, spec_path)
        write_text_atomic(sources_path, json.dumps({**sources, "seed": cfg.seed}))
    bar.update()

    files = dict(sources)
    encoded = {}
    for name, samples in (("train", train), ("val", val), ("test", test)):
        bar.set_postfix_str(f"encoding {name}", refresh=False)
        enc = encode(samples, vocab, spec)
        bar.update()
        path = folder / f"{name}.npz"
        enc.save(path)
        files[f"{name}_npz"] = str(path)
        encoded[name] = enc
        if enc.dropped_support:
            log.warning("%s: %d supporting facts are older than the %d memory slots and were dropped",
                        name, enc.dropped_support, spec.max_memories)
    return PreparedData(encoded["train"], encoded["val"], encoded["test"], vocab, spec, files)

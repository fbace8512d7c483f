"""From a config to the encoded train / validation / test splits of a run, cached in the run dir.

The run directory keeps what later commands must agree on: the vocabulary and the shapes
(``data/vocab.json``, ``data/spec.json``) and the encoded splits (``data/*.npz``) that the RL
environment reads. Re-running a command reuses them, so pretraining and PPO see the same ids.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path

from memsel.config import Config
from memsel.data.babi import Sample, find_task_files, parse_babi
from memsel.data.encode import DataSpec, EncodedSamples, Vocab, encode, load_spec, save_spec, spec_for
from memsel.data.generate import write_task
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
    """Generate train/test files of task ``data.task`` (1, 2 or 3) into ``folder``, deterministic in the seed."""
    d = cfg.data
    knobs = dict(questions_per_story=d.questions_per_story, statements_per_question=d.statements_per_question,
                 num_actors=d.num_actors, num_places=d.num_places, num_objects=d.num_objects,
                 distractor_density=d.distractor_density)
    train, test = folder / f"qa{d.task}_generated_train.txt", folder / f"qa{d.task}_generated_test.txt"
    # The test split gets its own seed stream so that it never repeats the train stories' draws.
    write_task(train, d.task, d.train_stories, seed=cfg.seed * 2 + 1, **knobs)
    write_task(test, d.task, d.test_stories, seed=cfg.seed * 2 + 2, **knobs)
    return train, test


def split_by_story(samples: list[Sample], fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Hold out whole stories, so that no validation question shares memories with a train question."""
    stories = sorted({s.story for s in samples})
    random.Random(seed).shuffle(stories)
    n_val = int(round(len(stories) * fraction))
    if fraction > 0 and n_val == 0 and len(stories) > 1:
        n_val = 1
    held = set(stories[:n_val])
    return [s for s in samples if s.story not in held], [s for s in samples if s.story in held]


def _sha1(path: str | Path) -> str:
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


def prepare_data(cfg: Config) -> PreparedData:
    folder = cfg.layout.data
    folder.mkdir(parents=True, exist_ok=True)
    if cfg.data.path:
        train_file, test_file = find_task_files(cfg.data.path, cfg.data.task)
    else:
        train_file, test_file = generated_files(cfg, folder)
    train_all, test = parse_babi(train_file), parse_babi(test_file)
    train, val = split_by_story(train_all, cfg.data.val_fraction, cfg.seed)
    log.info("data: %s (%d questions -> %d train, %d validation), %s (%d test questions)",
             train_file, len(train_all), len(train), len(val), test_file, len(test))

    vocab_path, spec_path, sources_path = cfg.layout.vocab, cfg.layout.spec, cfg.layout.sources
    sources = {"train_file": str(Path(train_file).resolve()), "test_file": str(Path(test_file).resolve()),
               "train_sha1": _sha1(train_file), "test_sha1": _sha1(test_file)}
    if vocab_path.exists() and spec_path.exists() and sources_path.exists():
        previous = json.loads(sources_path.read_text(encoding="utf-8"))
        if previous != sources:
            raise ValueError(f"run directory {cfg.run_path} was prepared from other data ({previous['train_file']}, "
                             f"sha1 {previous.get('train_sha1', '?')[:10]}); this command gives "
                             f"{sources['train_file']} (sha1 {sources['train_sha1'][:10]}), and its vocabulary "
                             "and shapes would not fit. Use another --run-dir (or --name).")
        vocab, spec = Vocab.load(vocab_path), load_spec(spec_path)
    else:
        vocab = Vocab.build(train_all)
        auto = spec_for(train_all + test, cfg.data.max_memories, cfg.data.max_sentence_len, vocab)
        spec = DataSpec(len(vocab), auto.max_memories, auto.max_sentence_len)
        vocab.save(vocab_path)
        save_spec(spec, spec_path)
        write_text_atomic(sources_path, json.dumps(sources))

    files = dict(sources)
    encoded = {}
    for name, samples in (("train", train), ("val", val), ("test", test)):
        enc = encode(samples, vocab, spec)
        path = folder / f"{name}.npz"
        enc.save(path)
        files[f"{name}_npz"] = str(path)
        encoded[name] = enc
        if enc.dropped_support:
            log.warning("%s: %d supporting facts are older than the %d memory slots and were dropped",
                        name, enc.dropped_support, spec.max_memories)
    return PreparedData(encoded["train"], encoded["val"], encoded["test"], vocab, spec, files)

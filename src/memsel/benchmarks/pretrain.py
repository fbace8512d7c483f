"""``memsel bench pretrain``: Lightning's pretraining throughput against a bare PyTorch loop.

Both sides train the same network (:class:`memsel.pretrain.SelectorLightningModule`, freshly built from the
same seed for every run) on the same data (generated task-1 stories, as the quickstart's), with the same
batch size, data loader and optimiser (the module's ``configure_optimizers``: Adam), and the same loss
(``module.losses``, memsel.losses). Lightning runs ``Trainer.fit`` as memsel configures it (CPU, deterministic,
no sanity check) minus what is not training: no validation, checkpoints, logger or progress bar; the loss
and its parts are still logged through ``self.log`` every step, as in memsel. The bare loop is
``zero_grad; losses; backward; step`` over the same loader, with deterministic algorithms on as well.

Runs come in back-to-back pairs (bare then Lightning, then Lightning then bare, ...) after one warm-up run
of each. ``samples/s`` is samples trained / the median wall time of the epochs (Lightning's from the start
of its first training epoch to the end of its last, by a callback; the bare loop's likewise), the
throughput a long pretraining sees. ``ratio`` = Lightning's samples/s / the bare loop's, the median over the
pairs of bare seconds / Lightning seconds: on a shared machine whose load changes from minute to minute, the
two runs of a pair see about the same load. The target is at least 0.9. Also reported: the ratio of the
medians and of the fastest runs, and what ``Trainer.fit`` costs besides its epochs (setup, teardown), once
per fit, in seconds.

Top-level imports are standard library only (the CLI builds its parser from this module).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)

TARGET = 0.9
"""Lightning should train at least this fraction of the bare loop's samples per second."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``memsel bench pretrain``."""
    parser.add_argument("--stories", type=int, default=200, help="generated task-1 stories (default 200: ~900 "
                                                                  "training questions, as the quickstart's)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per timed run (default 2)")
    parser.add_argument("--repeats", type=int, default=5, help="timed pairs of runs, median taken (default 5)")
    parser.add_argument("--batch-size", type=int, default=0, help="batch size (default: pretrain.batch_size)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a test of the record format")
    parser.add_argument("--seed", type=int, default=0, help="seed of data and weights (default 0)")


def _data(stories: int, seed: int):
    """Encoded generated task-1 questions and their DataSpec."""
    from memsel.data.babi import parse_babi
    from memsel.data.encode import Vocab, encode, spec_for
    from memsel.data.generate import write_task

    with tempfile.TemporaryDirectory(prefix="memsel-bench-") as tmp:
        samples = parse_babi(write_task(Path(tmp) / "qa1_bench.txt", 1, stories, seed))
    vocab = Vocab.build(samples)
    spec = spec_for(samples, vocab=vocab)
    return encode(samples, vocab, spec), spec


def _module(cfg, train, spec):
    """A fresh SelectorLightningModule, seeded, as memsel.pretrain builds it."""
    from dataclasses import asdict

    import lightning as L

    from memsel.pretrain import SelectorLightningModule, content_words

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    return SelectorLightningModule(asdict(cfg.selector), asdict(spec), asdict(cfg.pretrain), hops=cfg.env.hops,
                                   reader_hops=1, answer_ids=sorted(set(train.answer.tolist())),
                                   content_ids=content_words(train))


def _epoch_clock():
    """A Lightning callback that adds up the wall time of the training epochs (first batch to last)."""
    import lightning as L

    class EpochClock(L.Callback):
        def __init__(self):
            self.seconds, self._start = 0.0, 0.0

        def on_train_epoch_start(self, trainer, module):
            self._start = time.perf_counter()

        def on_train_epoch_end(self, trainer, module):
            self.seconds += time.perf_counter() - self._start

    return EpochClock()


def time_lightning(cfg, train, spec, epochs: int) -> tuple[float, float]:
    """Seconds of ``Trainer.fit`` for ``epochs`` epochs, and of its epochs alone (the rest is fit's setup and
    teardown); the module and loader are built first, as for the bare loop."""
    import lightning as L

    from memsel.devices import trainer_kwargs
    from memsel.pretrain import SelectorDataModule

    module = _module(cfg, train, spec)
    loader = SelectorDataModule(train, train, batch_size=cfg.pretrain.batch_size, seed=cfg.seed).train_dataloader()
    clock = _epoch_clock()
    with tempfile.TemporaryDirectory(prefix="memsel-bench-") as tmp:
        trainer = L.Trainer(max_epochs=epochs, **trainer_kwargs("cpu"), logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, deterministic=True,
                            num_sanity_val_steps=0, limit_val_batches=0, log_every_n_steps=10, default_root_dir=tmp,
                            callbacks=[clock])
        start = time.perf_counter()
        trainer.fit(module, train_dataloaders=loader)
        return time.perf_counter() - start, clock.seconds


def time_bare(cfg, train, spec, epochs: int) -> tuple[float, float]:
    """Seconds of the bare loop (same module, loader, optimiser and loss) for ``epochs`` epochs: all of it, and
    its epochs alone (as for :func:`time_lightning`)."""
    import torch

    from memsel.pretrain import SelectorDataModule

    torch.use_deterministic_algorithms(True)  # as Lightning's deterministic=True does
    module = _module(cfg, train, spec)
    loader = SelectorDataModule(train, train, batch_size=cfg.pretrain.batch_size, seed=cfg.seed).train_dataloader()
    start = time.perf_counter()  # from here on as in time_lightning: optimiser, loop
    opt = module.configure_optimizers()
    module.train()
    in_epochs = 0.0
    for _ in range(epochs):
        epoch = time.perf_counter()
        for batch in loader:
            opt.zero_grad(set_to_none=True)
            loss, _ = module.losses(batch)
            loss.backward()
            opt.step()
        in_epochs += time.perf_counter() - epoch
    return time.perf_counter() - start, in_epochs


def run(args: argparse.Namespace) -> list[dict]:
    """Measure both sides; print a table; return one record."""
    import torch

    from memsel.config import Config

    if args.threads:
        torch.set_num_threads(int(args.threads))
    quick = bool(args.quick)
    cfg = Config(seed=args.seed)
    cfg.pretrain.batch_size = int(args.batch_size) or cfg.pretrain.batch_size
    train, spec = _data(12 if quick else int(args.stories), args.seed)
    epochs, repeats = (1, 1) if quick else (max(1, int(args.epochs)), max(1, int(args.repeats)))
    time_bare(cfg, train, spec, 1)  # warm-ups: first calls, allocator, Lightning's imports
    time_lightning(cfg, train, spec, 1)
    bare, lightning = [], []  # (whole, epochs) seconds per run
    for r in range(repeats):
        order = (("bare", bare), ("lightning", lightning))
        for side, out in (order if r % 2 == 0 else order[::-1]):
            out.append((time_bare if side == "bare" else time_lightning)(cfg, train, spec, epochs))
        log.info("bench pretrain: pair %d/%d done", r + 1, repeats)
    rec = _record(bare, lightning, epochs * len(train), epochs, cfg.pretrain.batch_size)
    rec["torch_threads"] = torch.get_num_threads()
    print(format_table([rec]))
    return [rec]


def _record(bare: list[tuple[float, float]], lightning: list[tuple[float, float]], samples: int, epochs: int,
            batch_size: int) -> dict:
    """The figures of the runs: samples/s in the epochs, the pair ratio, Lightning's fixed cost per fit."""
    b_ep, l_ep = [e for _, e in bare], [e for _, e in lightning]
    rec = {"samples_per_run": samples, "epochs": epochs, "batch_size": batch_size, "repeats": len(bare),
           "bare_s": statistics.median(b_ep), "lightning_s": statistics.median(l_ep), "bare_runs_s": b_ep,
           "lightning_runs_s": l_ep, "lightning_fit_extra_s": statistics.median(w - e for w, e in lightning),
           "bare_extra_s": statistics.median(w - e for w, e in bare)}
    rec.update({"bare_samples_per_s": samples / rec["bare_s"], "lightning_samples_per_s": samples / rec["lightning_s"],
                "ratio": statistics.median(b / lt for b, lt in zip(b_ep, l_ep)),
                "ratio_of_medians": rec["bare_s"] / rec["lightning_s"], "ratio_fastest": min(b_ep) / min(l_ep),
                "target": TARGET})
    return rec


def format_table(records: list[dict]) -> str:
    """Both sides' samples/s and the ratio against the target."""
    lines = []
    for r in records:
        lines += [f"{r['samples_per_run']} samples per run ({r['epochs']} epoch(s), batch {r['batch_size']}), "
                  f"median of {r['repeats']}, {r['torch_threads']} torch thread(s)",
                  f"{'side':<22} {'samples/s':>10} {'s/epochs':>10}  runs, epochs only (s)",
                  f"{'bare PyTorch loop':<22} {r['bare_samples_per_s']:>10.0f} {r['bare_s']:>10.2f}  "
                  + ", ".join(f"{x:.2f}" for x in r["bare_runs_s"]),
                  f"{'Lightning Trainer.fit':<22} {r['lightning_samples_per_s']:>10.0f} {r['lightning_s']:>10.2f}  "
                  + ", ".join(f"{x:.2f}" for x in r["lightning_runs_s"]),
                  f"Lightning's fit() besides its epochs (setup, teardown): {r['lightning_fit_extra_s']:.2f} s per fit "
                  f"(the bare loop's: {r['bare_extra_s']:.2f} s)",
                  f"ratio Lightning / bare, samples/s in the epochs: {r['ratio']:.2f}  target >= {r['target']}: "
                  f"{'met' if r['ratio'] >= r['target'] else 'NOT met'}"
                  + (f"  (of the medians: {r['ratio_of_medians']:.2f}; of the fastest runs: {r['ratio_fastest']:.2f})"
                     if "ratio_fastest" in r else "")]
    return "\n".join(lines)

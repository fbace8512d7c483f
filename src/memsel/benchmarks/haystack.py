"""``memsel bench haystack``: memories per second of the haystack evaluation at 16k memories per question,
next to a floor measured in the same run.

What is timed: :func:`memsel.haystack_eval.selector_choices` on a test split of generated stories hidden
in ``--length`` memories of background text (``../shared/haystack`` or ``--background``): encoding every
distinct sentence once, then for each story's questions gathering their lists from the cache and
scoring them hop by hop (``mha``, d = 64, 8 heads, stick-breaking, log-bucket ages, as
configs/experiments/haystack.yaml). The floor does the least any scorer must: per story and hop, one
matrix-vector product of the same gathered (B, N, d) memory embeddings with the query, after the same
gather. ``ratio`` = seconds / floor_seconds (medians of ``--repeats``, interleaved). Memories per second
count every memory of every question's list once (as ``memsel evaluate --lengths`` reports them).

Top-level imports stay in the standard library (``add_arguments`` runs when the CLI's parser is built).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--length", type=int, default=16000, help="memories per question (default 16000)")
    parser.add_argument("--stories", type=int, default=20, help="generated test stories of task 2 (default 20)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats of each side (default 3)")
    parser.add_argument("--background", metavar="PATH", help="background text (default ../shared/haystack)")
    parser.add_argument("--quick", action="store_true", help="2,000 memories, 4 stories, 1 repeat: the format only")
    parser.add_argument("--seed", type=int, default=0, help="seed of the stories and the haystack (default 0)")


def _split(args: argparse.Namespace):
    from memsel.data.babi import parse_babi
    from memsel.data.generate import write_task
    from memsel.data.haystack import build_haystack, read_background
    from memsel.haystack_eval import haystack_split

    with tempfile.TemporaryDirectory(prefix="memsel-bench-haystack-") as folder:
        samples = parse_babi(write_task(Path(folder) / "qa2_test.txt", 2, args.stories, args.seed))
    built, timelines, summary = build_haystack(samples, args.length, read_background(args.background), args.seed)
    return built, haystack_split(built, timelines), summary


def _floor(split, cache, queries, hops) -> None:
    """Per story and hop: gather the lists, one (B, N, d) x (B, d) product: the least a scorer must do."""
    import torch

    from memsel.haystack_eval import story_batch

    for questions in split.stories:
        x, _, mask, _ = story_batch(split, cache, questions, int(split.lengths.max()))
        u = queries[questions]
        for _ in range(int(hops[questions].max())):
            torch.matmul(x, u.unsqueeze(-1)).squeeze(-1).masked_fill(~mask, -1e30).argmax(-1)


def run(args: argparse.Namespace) -> list[dict]:
    import numpy as np
    import torch

    from memsel.config import SelectorConfig
    from memsel.data.encode import DataSpec, Vocab, question_hops
    from memsel.haystack_eval import token_ids, embed_texts, selector_choices
    from memsel.network import Selector

    if args.quick:
        args.length, args.stories, args.repeats = 2000, 4, 1
    built, split, summary = _split(args)
    vocab = Vocab.build(built)
    torch.manual_seed(args.seed)
    net = Selector(SelectorConfig(kind="mha", embed_dim=64, num_heads=8, attention="stick_breaking",
                                  age_encoding="log"), DataSpec(len(vocab), 250, 25)).eval()
    hops = question_hops(0, np.array([len(s.supporting) for s in built]))
    with torch.inference_mode():
        cache = embed_texts(net, vocab, split.texts)
        queries = net.encode_query(token_ids(vocab, [s.query for s in built], net.spec.max_sentence_len))
    ours, floor = [], []
    for _ in range(max(1, args.repeats)):
        t = time.perf_counter()
        selector_choices(net, vocab, split, hops=0)
        ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        with torch.inference_mode():
            _floor(split, cache, queries, hops)
        floor.append(time.perf_counter() - t)
    memories = float(split.lengths.sum())
    seconds, floor_seconds = statistics.median(ours), statistics.median(floor)
    record = {"length": args.length, "questions": len(built), "distinct_sentences": len(split.texts),
              "words_per_question": summary.words_per_question, "seconds": seconds, "floor_seconds": floor_seconds,
              "memories_per_second": memories / seconds, "floor_memories_per_second": memories / floor_seconds,
              "ratio": seconds / floor_seconds, "torch_threads": torch.get_num_threads()}
    print(format_table([record]))
    return [record]


def format_table(records: list[dict]) -> str:
    head = (f"{'memories/question':>18} {'questions':>9} {'words/question':>15} {'memsel mem/s':>13} "
            f"{'floor mem/s':>12} {'ratio':>6}")
    rows = [head, "-" * len(head)]
    for r in records:
        rows.append(f"{r['length']:>18,} {r['questions']:>9} {r['words_per_question']:>15,.0f} "
                    f"{r['memories_per_second']:>13,.0f} {r['floor_memories_per_second']:>12,.0f} {r['ratio']:>6.2f}")
    return "\n".join(rows)

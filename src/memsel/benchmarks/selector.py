"""``memsel bench selector``: scoring latency, memories/s and peak memory per family, next to a floor.

What is timed: :meth:`memsel.network.Selector.score` on precomputed memory embeddings (B, N, d)
with a query, ages and a full mask, i.e. everything after encoding (memory embeddings of a
growing list can be cached, so scoring is the part paid per query). The floor is one
matrix-vector product over the same (B, N, d) float32 tensor in torch, one query vector per row,
timed in the same process and interleaved with the family (the faster of ``torch.matmul`` and a
per-row ``torch.mv``, which differ by up to 4x on CPU for B > 1). ``seconds`` and
``floor_seconds`` are medians of the repeats (at least ``--repeats`` calls each, and more for fast
cases, until ``--min-case-seconds``); ``ratio`` = seconds / floor_seconds. Families with
the additive score (ff, conv1d, se) add ``layer_ratio``: the bare product of that score's d -> h
hidden layer over the same memories, timed alongside, over the floor (see ``ADDITIVE``).

Peak memory (``peak_mb``): after a warm-up call, freed heap memory is handed back to the OS
(glibc ``malloc_trim``) and the process's peak resident set (Linux VmHWM) is reset through
/proc/self/clear_refs; peak_mb is how far it then rises above the resident set during one
scoring call: the transient memory one call needs on top of its inputs, the weights and the
cached age tables (None where /proc does not allow the reset).

Cases whose estimated time per call exceeds ``--max-call-seconds`` (full self-attention at large
N: O(N^2)) or whose estimated memory exceeds half of the available memory are reported as
skipped, with the reason, instead of run.

Top-level imports stay in the standard library: ``add_arguments`` runs when the CLI's parser is
built; torch is imported inside :func:`run`.
"""

from __future__ import annotations

import argparse
import logging
import re
import statistics
import time
from pathlib import Path

log = logging.getLogger(__name__)

# Label -> SelectorConfig overrides. "mha" is cross-attention only; the "+sa" rows add one
# self-attention layer among memories in each of its three cost modes.
FAMILIES: dict[str, dict] = {
    "ff": {"kind": "ff"},
    "conv1d": {"kind": "conv1d"},
    "se": {"kind": "se"},
    "mha": {"kind": "mha"},
    "mha+sa:full": {"kind": "mha", "self_attention_layers": 1, "self_attention": "full"},
    "mha+sa:chunked": {"kind": "mha", "self_attention_layers": 1, "self_attention": "chunked"},
    "mha+sa:linear": {"kind": "mha", "self_attention_layers": 1, "self_attention": "linear"},
}
SIZES = (64, 1024, 16384, 100_000)
BATCHES = (1, 32)
QUICK_SIZES = (64, 256)
QUICK_BATCHES = (1, 2)
# Rough peak memory of one call in multiples of the input (B, N, d), to skip what cannot fit.
MEMORY_FACTOR = {"conv1d": 5.0, "mha+sa:full": 10.0, "mha+sa:chunked": 10.0, "mha+sa:linear": 10.0}
TARGETS = {"ff": 3.0, "mha": 6.0}
"""Ratio targets at N >= 16k (issue: ff within 3x of the floor, mha cross-attention within 6x)."""
ADDITIVE = ("ff", "conv1d", "se")
"""Families scored by the additive (feed-forward) score: their cases also time its hidden layer's bare
(B, N, d) x (d, h) product in the same interleaved run, ``layer_ratio`` (its time / the floor's):
what the arithmetic of a d -> h layer over every memory costs in torch's BLAS before any
activation, readout or age feature, i.e. about h times the floor's multiply-adds."""


def _int_list(text: str) -> list[int]:
    return [int(float(x)) for x in text.split(",") if x.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``memsel bench selector`` (and of bench/selector.py)."""
    parser.add_argument("--quick", action="store_true",
                        help=f"small run: N {','.join(map(str, QUICK_SIZES))}, batch "
                             f"{','.join(map(str, QUICK_BATCHES))}, 2 repeats (checks that everything runs)")
    parser.add_argument("--families", default=",".join(FAMILIES),
                        help=f"comma-separated subset of {','.join(FAMILIES)} (default: all)")
    parser.add_argument("--sizes", type=_int_list, help="memories per row N (default 64,1024,16384,100000)")
    parser.add_argument("--batches", type=_int_list, help="batch sizes B (default 1,32)")
    parser.add_argument("--embed-dim", type=int, default=64, help="embedding size d (default 64)")
    parser.add_argument("--hidden-dim", type=int, default=64,
                        help="hidden units of the additive score and feed-forward layers (default 64, as selector.hidden_dim)")
    parser.add_argument("--repeats", type=int, default=7, help="timed calls per case, median reported (default 7)")
    parser.add_argument("--case-seconds", type=float, default=4.0,
                        help="stop repeating a case after this long once 3 repeats are in (default 4)")
    parser.add_argument("--min-case-seconds", type=float, default=1.0,
                        help="keep repeating a fast case until this long (up to 2000 calls; default 1): "
                             "steadier medians for sub-millisecond calls")
    parser.add_argument("--max-call-seconds", type=float, default=20.0,
                        help="skip a case whose estimated time per call is longer (default 20)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads (default: torch's choice; 1 gives steadier numbers on a busy machine)")
    parser.add_argument("--seed", type=int, default=0, help="seed of weights and inputs (default 0)")


# ------------------------------------------------------------------------------------ memory


def _status_mb(field: str) -> float | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    m = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    return int(m.group(1)) / 1024 if m else None


def _reset_peak() -> bool:
    """Hand freed heap memory back to the OS, then reset the peak resident set (VmHWM) to the current one.

    Without the trim, a call could reuse pages that an earlier call freed but glibc kept, and its
    memory would not show. False where /proc does not allow the reset.
    """
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _available_mb() -> float:
    try:
        text = Path("/proc/meminfo").read_text()
        return int(re.search(r"^MemAvailable:\s+(\d+) kB", text, re.MULTILINE).group(1)) / 1024
    except (OSError, AttributeError):
        return float("inf")


# ------------------------------------------------------------------------------------ one case


MAX_REPEATS = 2000
"""Upper bound on the rounds of a fast case that ``--min-case-seconds`` keeps repeating."""


def _median_times(fns: list, repeats: int, budget: float, least: float = 0.0) -> list[float]:
    """Call each of ``fns`` in turn, round after round; medians of each one's times.

    ``repeats`` rounds (fewer past ``budget`` seconds, but at least 3), and more while the rounds
    so far took under ``least`` seconds (up to :data:`MAX_REPEATS`): a sub-millisecond case then gets
    hundreds of rounds, so that its median does not hang on a handful of calls.
    """
    times: list[list[float]] = [[] for _ in fns]
    start = time.perf_counter()
    r = 0
    while True:
        for i, fn in enumerate(fns):
            t = time.perf_counter()
            fn()
            times[i].append(time.perf_counter() - t)
        r += 1
        elapsed = time.perf_counter() - start
        if r >= repeats and (elapsed >= least or r >= MAX_REPEATS):
            break
        if r >= 3 and elapsed > budget:
            break
    return [statistics.median(t) for t in times]


def _case(label: str, n: int, batch: int, args: argparse.Namespace) -> dict:
    import torch

    from memsel.config import SelectorConfig
    from memsel.data.encode import DataSpec
    from memsel.network import Selector

    d = args.embed_dim
    torch.manual_seed(args.seed)
    cfg = SelectorConfig(embed_dim=d, hidden_dim=args.hidden_dim, **FAMILIES[label])
    net = Selector(cfg, DataSpec(vocab_size=2, max_memories=n, max_sentence_len=1)).eval()
    g = torch.Generator().manual_seed(args.seed)
    memories = torch.randn(batch, n, d, generator=g)  # (B, N, d)
    query = torch.randn(batch, d, generator=g)  # (B, d)
    ages = torch.arange(n - 1, -1, -1).expand(batch, n).contiguous()  # (B, N), oldest first
    mask = torch.ones(batch, n, dtype=torch.bool)
    vectors = torch.randn(batch, d, generator=g)  # (B, d) the floor's query vectors
    weight = torch.randn(d, args.hidden_dim, generator=g)  # (d, h) the bare hidden layer of the additive score

    def family() -> torch.Tensor:
        return net.score(memories, query, ages, mask)

    def floor_matmul() -> torch.Tensor:
        return torch.matmul(memories, vectors.unsqueeze(-1))  # (B, N, 1)

    def floor_rows() -> torch.Tensor:
        return torch.stack([torch.mv(memories[b], vectors[b]) for b in range(batch)])  # (B, N)

    def hidden_layer() -> torch.Tensor:
        return torch.matmul(memories, weight)  # (B, N, h): the product alone, no activation, no readout

    with torch.inference_mode():
        floors = [floor_matmul, floor_rows] if batch > 1 else [floor_matmul]
        first = _median_times(floors, 3, args.case_seconds)
        floor = floors[first.index(min(first))]
        family()  # warm-up: one-time allocations, the cached age tables
        peak = None
        if _reset_peak():
            before = _status_mb("VmRSS")
            family()
            peak = max(0.0, _status_mb("VmHWM") - before)
        fns = [family, floor] + ([hidden_layer] if label in ADDITIVE else [])
        seconds, floor_seconds, *layer = _median_times(fns, args.repeats, args.case_seconds, args.min_case_seconds)
    rec = {"family": label, "n": n, "batch": batch, "seconds": seconds, "floor_seconds": floor_seconds,
           "ratio": seconds / floor_seconds, "peak_mb": None if peak is None else round(peak, 1)}
    if layer:
        rec["layer_ratio"] = layer[0] / floor_seconds
    return rec


def _skipped(label: str, n: int, batch: int, reason: str) -> dict:
    return {"family": label, "n": n, "batch": batch, "seconds": None, "floor_seconds": None, "ratio": None,
            "peak_mb": None, "skipped": reason}


def _cost(label: str, n: int, batch: int) -> float:
    """How a case's time grows: B * N^2 for full self-attention, B * N for everything else."""
    return batch * n * (n if label == "mha+sa:full" else 1)


# ------------------------------------------------------------------------------------ the run


def run(args: argparse.Namespace) -> list[dict]:
    """Run every (family, N, batch) case; print a table with ratios; return the records."""
    import torch

    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return _run(args)
    finally:
        torch.set_num_threads(threads)  # callers in the same process (tests) keep their setting


def _run(args: argparse.Namespace) -> list[dict]:
    import torch

    labels = [x.strip() for x in args.families.split(",") if x.strip()]
    unknown = [x for x in labels if x not in FAMILIES]
    if unknown:
        raise ValueError(f"--families: unknown {unknown}; choose from {list(FAMILIES)}")
    sizes = args.sizes or (QUICK_SIZES if args.quick else SIZES)
    batches = args.batches or (QUICK_BATCHES if args.quick else BATCHES)
    if args.quick:
        args.repeats, args.case_seconds = min(args.repeats, 2), min(args.case_seconds, 0.5)
        args.min_case_seconds = 0.0
    records = []
    for label in labels:
        last: tuple[float, float] | None = None  # (cost, seconds) of the largest case run so far
        for n in sorted(sizes):
            for batch in sorted(batches):
                input_mb = batch * n * args.embed_dim * 4 / 2**20
                need = input_mb * (1 + MEMORY_FACTOR.get(label, 1.0))
                estimate = last[1] * _cost(label, n, batch) / last[0] if last else 0.0
                if estimate > args.max_call_seconds:
                    rec = _skipped(label, n, batch, f"estimated {estimate:.0f} s per call (> --max-call-seconds "
                                                    f"{args.max_call_seconds:g}): time grows as "
                                                    f"{'B*N^2' if label == 'mha+sa:full' else 'B*N'}")
                elif need > _available_mb() / 2:
                    rec = _skipped(label, n, batch, f"needs about {need:.0f} MB, more than half of the "
                                                    f"{_available_mb():.0f} MB available")
                else:
                    rec = _case(label, n, batch, args)
                    last = (_cost(label, n, batch), rec["seconds"])
                records.append(rec)
                log.info("%s", _row(rec))
    print(format_table(records, torch.get_num_threads(), args))
    return records


def _row(r: dict) -> str:
    head = f"{r['family']:<15} {r['n']:>7} {r['batch']:>5}"
    if r["seconds"] is None:
        return f"{head}  skipped: {r['skipped']}"
    rate = r["n"] * r["batch"] / r["seconds"]
    peak = "n/a" if r["peak_mb"] is None else f"{r['peak_mb']:.1f}"
    layer = f"{r['layer_ratio']:.1f}x" if "layer_ratio" in r else "-"
    return (f"{head} {r['seconds'] * 1e3:>10.3f} {r['floor_seconds'] * 1e3:>10.3f} {r['ratio']:>7.1f}x "
            f"{rate:>12.3g} {peak:>9} {layer:>8}")


def format_table(records: list[dict], threads: int, args: argparse.Namespace) -> str:
    """The human-readable report: one row per case, then the targets and how time grows with N."""
    lines = [f"selector scoring vs floor (one torch matvec over the same (B, N, d) memories); d={args.embed_dim}, "
             f"hidden={args.hidden_dim}, torch threads={threads}; medians",
             f"{'family':<15} {'N':>7} {'batch':>5} {'ms':>10} {'floor ms':>10} {'ratio':>8} "
             f"{'memories/s':>12} {'peak MB':>9} {'layer':>8}"]
    lines += [_row(r) for r in records]
    done = [r for r in records if r["seconds"] is not None]
    lines.append("")
    for label, target in TARGETS.items():
        big = [r for r in done if r["family"] == label and r["n"] >= 16384]
        if big:
            worst = max(big, key=lambda r: r["ratio"])
            verdict = "met" if worst["ratio"] <= target else "NOT met"
            lines.append(f"target {label} <= {target:g}x floor at N >= 16k: {verdict} (worst "
                         f"{worst['ratio']:.1f}x at N={worst['n']}, batch {worst['batch']}; "
                         + ", ".join(f"{r['ratio']:.1f}x N={r['n']} B={r['batch']}" for r in big) + ")")
            bound = [r["layer_ratio"] for r in big if "layer_ratio" in r]
            if bound and verdict != "met" and min(bound) > target:
                lines.append(f"  {label}'s hidden layer alone, one (N, d) x (d, h={args.hidden_dim}) product, takes "
                             f"{min(bound):.1f}-{max(bound):.1f}x the floor at these sizes: above the target before "
                             f"any activation; a smaller selector.hidden_dim (--hidden-dim) is what moves it")
    for label in dict.fromkeys(r["family"] for r in done):
        for batch in sorted({r["batch"] for r in done if r["family"] == label}):
            rows = sorted((r for r in done if r["family"] == label and r["batch"] == batch), key=lambda r: r["n"])
            if len(rows) >= 2:
                a, b = rows[-2], rows[-1]
                more = b["n"] / a["n"]
                lines.append(f"growth {label} batch {batch}: N {a['n']} -> {b['n']} (x{more:.1f}): time per memory "
                             f"x{b['seconds'] / a['seconds'] / more:.2f}, the floor's x"
                             f"{b['floor_seconds'] / a['floor_seconds'] / more:.2f} (1 = linear; the floor shows "
                             f"what caches add)")
    return "\n".join(lines)

"""``memsel bench all``: every benchmark, one after the other in this process (tune starts its own clusters),
then the generated part of docs/BENCHMARKS.md: the machine, each command with its printed table, and a
summary of every figure (a ratio measured side by side in the same run) against its target.

The haystack evaluation's benchmark joins when a module ``memsel.benchmarks.haystack`` exists (with the
same ``add_arguments``/``run`` interface); it is looked for, never required.

Top-level imports are standard library only (the CLI builds its parser from this module).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import importlib
import importlib.util
import io
import logging
import os
import platform
import sys
import time
from pathlib import Path

log = logging.getLogger(__name__)

ORDER = ("selector", "env", "pretrain", "ppo", "tune", "haystack")
FULL_ARGS = {
    "selector": ["--families", "ff,mha,mha+sa:linear", "--sizes", "64,1024,16384", "--batches", "1,32"],
    "env": ["--budgets", "16,64,256", "--ppo-iterations", "2"],
    "pretrain": [],
    "ppo": [],
    "tune": ["--iterations", "10"],
    "haystack": [],
}
"""Each benchmark's arguments in a full run (sizes that finish in about a quarter of an hour on 2 cores)."""
QUICK_ARGS = {
    "selector": ["--families", "ff,mha", "--sizes", "64,1024,16384", "--batches", "32", "--repeats", "3",
                 "--min-case-seconds", "0.3"],
    "env": ["--budgets", "16,64", "--ppo-iterations", "1", "--env-seconds", "1"],
    "pretrain": ["--epochs", "1", "--repeats", "5"],
    "ppo": ["--iterations", "2", "--env-seconds", "1"],
    "tune": ["--quick"],
    "haystack": ["--quick"],
}
"""``--quick``: the same figures on smaller runs (a few minutes; noisier, still measured side by side)."""
BEGIN, END = "<!-- memsel bench all: begin (generated; edit outside these markers) -->", "<!-- memsel bench all: end -->"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``memsel bench all``."""
    parser.add_argument("--quick", action="store_true", help="smaller runs of every benchmark (QUICK_ARGS)")
    parser.add_argument("--skip", default="", metavar="NAME,...", help=f"benchmarks to leave out ({','.join(ORDER)})")
    parser.add_argument("--out", default="docs/BENCHMARKS.md", metavar="FILE",
                        help="the Markdown file whose generated part is replaced (default docs/BENCHMARKS.md)")
    parser.add_argument("--no-write", action="store_true", help="print the generated Markdown, write no file")


def available(skip: set[str] | None = None) -> list[str]:
    """The benchmarks to run, in ORDER: those whose module exists (haystack only when it does), minus ``skip``."""
    return [n for n in ORDER if n not in (skip or set())
            and importlib.util.find_spec(f"memsel.benchmarks.{n}") is not None]


def machine() -> dict:
    """CPU model, cores, torch threads, load, versions: what the figures were measured on."""
    import torch

    model = platform.processor() or "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for name in ("torch", "ray", "lightning", "mlflow"):
        with contextlib.suppress(PackageNotFoundError):
            versions[name] = version(name)
    return {"cpu": model, "cores": os.cpu_count(),
            "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "load_average": list(os.getloadavg()),
            "python": platform.python_version(), "platform": platform.platform(), **versions}


def run_one(name: str, argv: list[str]) -> dict:
    """Run benchmark ``name`` with ``argv``; its records, printed table (also echoed) and seconds."""
    module = importlib.import_module(f"memsel.benchmarks.{name}")
    parser = argparse.ArgumentParser(prog=f"memsel bench {name}")
    module.add_arguments(parser)
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        log.warning("bench all: %s takes no %s; left out", name, " ".join(unknown))
    printed = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(printed):
        records = module.run(args)
    sys.stdout.write(printed.getvalue())
    command = " ".join(["memsel bench", name, *(a for a in argv if a not in unknown)])
    return {"name": name, "command": command, "records": records, "table": printed.getvalue().rstrip(),
            "seconds": time.perf_counter() - start}


def run(args: argparse.Namespace) -> list[dict]:
    """Every available benchmark; then the Markdown (written into --out unless --no-write). Returns one record
    per benchmark plus one for the machine."""
    skip = {s.strip() for s in str(args.skip).split(",") if s.strip()}
    unknown = skip - set(ORDER)
    if unknown:
        raise ValueError(f"--skip: unknown benchmark(s) {sorted(unknown)}; expected some of {list(ORDER)}")
    presets = QUICK_ARGS if args.quick else FULL_ARGS
    info = machine()
    started = time.perf_counter()
    results = []
    for name in available(skip):
        log.info("bench all: %s", name)
        print(f"\n== memsel bench {name}", flush=True)
        results.append(run_one(name, presets.get(name, [])))
    info.update(load_average_after=list(os.getloadavg()), minutes=(time.perf_counter() - started) / 60,
                when=_dt.datetime.now().strftime("%Y-%m-%d %H:%M"), quick=bool(args.quick))
    from memsel.benchmarks.summary import markdown, write_section

    text = markdown(info, results, "memsel bench all" + (" --quick" if args.quick else ""))
    if args.no_write:
        print(text)
    else:
        path = write_section(Path(args.out), text, BEGIN, END)
        print(f"\nwrote the generated part of {path}")
    return [{"name": "machine", **info}, *({k: r[k] for k in ("name", "command", "records", "seconds")}
                                         for r in results)]

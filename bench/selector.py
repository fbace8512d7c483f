#!/usr/bin/env python
"""Selector scoring latency, memories/s and peak memory per family, next to a matrix-vector floor.

The same benchmark as `memsel bench selector` (see src/memsel/benchmarks/selector.py), as a script:

    .venv/bin/python bench/selector.py                        # full run (several minutes on 2 cores)
    .venv/bin/python bench/selector.py --quick --json         # record format only; JSON alone on stdout
    .venv/bin/python bench/selector.py --families ff --hidden-dim 16 --sizes 16384,100000
"""

import argparse
import json
import logging
import sys

from memsel.benchmarks import BENCHMARKS
from memsel.benchmarks import selector as bench
from memsel.cli import stdout_to_stderr


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=BENCHMARKS["selector"])
    parser.add_argument("--json", action="store_true", help="print the records as JSON on stdout (table to stderr)")
    bench.add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with stdout_to_stderr(args.json):
        records = bench.run(args)
    if args.json:
        print(json.dumps(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())

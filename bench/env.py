#!/usr/bin/env python
"""Env steps per second at memory budgets K = 16..1024 next to one PPO iteration's time per step.

The same benchmark as `memsel bench env` (see src/memsel/benchmarks/env.py), as a script:

    .venv/bin/python bench/env.py                 # full run (a few minutes on 2 cores)
    .venv/bin/python bench/env.py --quick --json  # record format only
"""

import argparse
import json
import logging
import sys

from memsel.benchmarks import BENCHMARKS
from memsel.benchmarks import env as bench


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=BENCHMARKS["env"])
    parser.add_argument("--json", action="store_true", help="also print the records as JSON")
    bench.add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    records = bench.run(args)
    if args.json:
        print(json.dumps(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())

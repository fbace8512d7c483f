#!/usr/bin/env python
"""Env steps per second at memory budgets K = 16..1024 next to one PPO iteration's time per step.

The same benchmark as `memsel bench env` (see src/memsel/benchmarks/env.py), as a script:

    .venv/bin/python bench/env.py                 # full run (a few minutes on 2 cores)
    .venv/bin/python bench/env.py --quick --json  # record format only
"""

import sys

from memsel.cli import main

if __name__ == "__main__":
    # Same parser, output and --json handling as `memsel bench env`.
    main(["bench", "env", *sys.argv[1:]])

#!/usr/bin/env python
"""Selector scoring latency, memories/s and peak memory per family, next to a matrix-vector floor.

The same benchmark as `memsel bench selector` (see src/memsel/benchmarks/selector.py), as a script:

    .venv/bin/python bench/selector.py                        # full run (several minutes on 2 cores)
    .venv/bin/python bench/selector.py --quick --json         # record format only; JSON alone on stdout
    .venv/bin/python bench/selector.py --families ff --hidden-dim 16 --sizes 16384,100000
"""

import sys

from memsel.cli import main

if __name__ == "__main__":
    # Same parser, output and --json handling as `memsel bench selector`.
    main(["bench", "selector", *sys.argv[1:]])

#!/usr/bin/env python
"""Ray Tune's overhead per trial on one node and the speedup of a second node, on real local clusters.

The same benchmark as `memsel bench tune` (see src/memsel/benchmarks/tune.py), as a script:

    .venv/bin/python bench/tune.py                 # full run (~5 min on 2 cores)
    .venv/bin/python bench/tune.py --quick --json  # record format only; JSON alone on stdout
    .venv/bin/python bench/tune.py --iterations 20 --repeats 3
"""

import sys

from memsel.cli import main

if __name__ == "__main__":
    # Same parser, output and --json handling as `memsel bench tune`.
    main(["bench", "tune", *sys.argv[1:]])

#!/usr/bin/env python
"""The same benchmark as `memsel bench all` (see src/memsel/benchmarks/all.py), as a script:

    .venv/bin/python bench/all.py            # full run
    .venv/bin/python bench/all.py --quick    # smaller run
"""

import sys

from memsel.cli import main

if __name__ == "__main__":
    # Same parser, output and --json handling as `memsel bench all`.
    main(["bench", "all", *sys.argv[1:]])

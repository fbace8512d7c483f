#!/usr/bin/env python
"""The same benchmark as `memsel bench ppo` (see src/memsel/benchmarks/ppo.py), as a script:

    .venv/bin/python bench/ppo.py            # full run
    .venv/bin/python bench/ppo.py --quick    # smaller run
"""

import sys

from memsel.cli import main

if __name__ == "__main__":
    # Same parser, output and --json handling as `memsel bench ppo`.
    main(["bench", "ppo", *sys.argv[1:]])

#!/usr/bin/env python
"""The same benchmark as `memsel bench pretrain` (see src/memsel/benchmarks/pretrain.py), as a script:

    .venv/bin/python bench/pretrain.py            # full run
    .venv/bin/python bench/pretrain.py --quick    # smaller run
"""

import sys

from memsel.cli import main

if __name__ == "__main__":
    # Same parser, output and --json handling as `memsel bench pretrain`.
    main(["bench", "pretrain", *sys.argv[1:]])

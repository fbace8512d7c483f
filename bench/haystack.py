#!/usr/bin/env python
"""Memories per second of the haystack evaluation at 16k memories per question, next to a floor.

The same benchmark as `memsel bench haystack` (see src/memsel/benchmarks/haystack.py), as a script:

    .venv/bin/python bench/haystack.py                 # 20 stories at 16,000 memories (a few minutes on 2 cores)
    .venv/bin/python bench/haystack.py --quick --json  # record format only
"""

import sys

from memsel.cli import main

if __name__ == "__main__":
    main(["bench", "haystack", *sys.argv[1:]])

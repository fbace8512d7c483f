"""Benchmarks behind `memsel bench NAME` and the scripts in bench/.

Each module NAME here has ``add_arguments(parser)`` (standard-library imports only: it runs when
the CLI parser is built) and ``run(args) -> list[dict]`` (prints a table, returns the records). Benchmarks report
ratios measured side by side in one run (never absolute timings checked by tests: machines are
noisy).
"""

BENCHMARKS = {
    "env": "environment steps per second at several memory budgets, next to one PPO iteration",
    "haystack": "memories/s of the haystack evaluation at 16k memories per question, next to a matrix-vector floor",
    "selector": "selector latency, memories/s and peak memory per family, next to a matrix-vector floor",
    "tune": "Ray Tune's cost per trial on one node and the speedup of a second node (real local clusters)",
    "pretrain": "Lightning's pretraining samples/s against a bare PyTorch loop on the same network, data and optimiser",
    "ppo": "PPO end to end: env steps/s of a memsel train iteration against the env alone plus the network alone, "
           "with a profile of where the rest goes",
    "all": "every benchmark in one run; writes the generated part of docs/BENCHMARKS.md",
}

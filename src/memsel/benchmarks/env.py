"""Environment cost next to PPO's: env steps per second with random valid actions at memory budgets
K = 16, 64, 256, 1024, and the time of one PPO iteration (RLlib, same env, same K) per env step.

The figure that matters is the ratio ``env_share`` = env seconds per step / PPO seconds per step:
the environment should cost well under 10% of PPO's time per step (target at K = 64).

Data: generated task-1 stories with 2K statements before their question, so every budget has
twice as many memories to choose from as it keeps. The PPO side builds the PPOConfig memsel
trains with (memsel.rl.build_ppo_config: the selector RLModule, the distillation learner with no
teacher, default PPO settings) on a fresh network whose age table has K rows.

Top-level imports are standard library only (the CLI builds its parser from this module);
numpy, torch and ray are imported inside :func:`run`.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_BUDGETS = (16, 64, 256, 1024)
TARGET = 0.10
"""The environment should cost less than this share of PPO's time per step (at K = 64)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--budgets", default=",".join(map(str, DEFAULT_BUDGETS)), metavar="K,K,...",
                        help=f"memory budgets to measure (default {','.join(map(str, DEFAULT_BUDGETS))})")
    parser.add_argument("--strategy", choices=("truncate", "sample"), default="sample",
                        help="budget strategy of the env (default sample: a fresh draw every episode, the dearest)")
    parser.add_argument("--hops", type=int, default=1, help="selections per episode (default 1)")
    parser.add_argument("--env-seconds", type=float, default=2.0,
                        help="how long to step the env per budget (default 2 s)")
    parser.add_argument("--ppo-iterations", type=int, default=2,
                        help="timed PPO iterations per budget, after one warm-up iteration (default 2)")
    parser.add_argument("--no-ppo", action="store_true", help="measure the env alone (no Ray)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes, for a test of the record format (timings meaningless)")
    parser.add_argument("--seed", type=int, default=0, help="seed for data, env and PPO (default 0)")


def _data(k: int, stories: int, seed: int):
    """Encoded generated task-1 questions, each with 2k memories."""
    from memsel.data.babi import parse_babi
    from memsel.data.encode import Vocab, encode, spec_for
    from memsel.data.generate import write_task

    with tempfile.TemporaryDirectory(prefix="memsel-bench-") as tmp:
        path = write_task(Path(tmp) / "qa1_bench.txt", 1, stories, seed, questions_per_story=1,
                          statements_per_question=2 * k)
        samples = parse_babi(path)
    vocab = Vocab.build(samples)
    spec = spec_for(samples, vocab=vocab)
    return encode(samples, vocab, spec), spec


def time_env(env_config: dict, seconds: float, seed: int) -> tuple[float, int]:
    """Step the env with random valid actions for about ``seconds``; returns (seconds per step, steps)."""
    import numpy as np

    from memsel.env import MemorySelectionEnv

    env = MemorySelectionEnv(env_config)
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    steps = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(100):  # check the clock every 100 steps only
            valid = np.flatnonzero(obs["mask"])
            obs, _, done, _, _ = env.step(valid[rng.integers(len(valid))])
            if done:
                obs, _ = env.reset()
            steps += 1
        now = time.perf_counter()
        if now >= deadline:
            return (now - start) / steps, steps


def time_ppo(env: "EnvConfig", k: int, vocab_size: int, data_path: str, iterations: int, quick: bool,
             seed: int) -> tuple[float, float]:
    """Seconds of one PPO iteration and env steps it sampled (means over ``iterations`` after a warm-up)."""
    from memsel.config import Config
    from memsel.data.encode import DataSpec
    from memsel.rl import build_ppo_config

    cfg = Config(seed=seed)
    cfg.env = env
    cfg.ppo.use_pretrained = False
    if quick:
        cfg.ppo.train_batch_size, cfg.ppo.minibatch_size, cfg.ppo.num_epochs = 64, 32, 1
    cfg.validate()
    # The RLModule's selector is built for K slots (ages past K-1 share its last age embedding).
    algo = build_ppo_config(cfg, data_path, DataSpec(vocab_size, k, 0), None).build_algo()
    try:
        algo.train()  # warm-up: first forward passes, connector setup
        seconds, steps = [], []
        for _ in range(iterations):
            t = time.perf_counter()
            result = algo.train()
            seconds.append(time.perf_counter() - t)
            steps.append(float(result["env_runners"]["num_env_steps_sampled"]))
    finally:
        algo.stop()
    return sum(seconds) / len(seconds), sum(steps) / len(steps)


def run(args: argparse.Namespace) -> list[dict]:
    """Measure every budget; print a table; return one record per budget."""
    budgets = [int(b) for b in str(args.budgets).split(",") if b.strip()]
    if not budgets or min(budgets) < 1:
        raise ValueError(f"--budgets: expected comma-separated integers >= 1, got {args.budgets!r}")
    quick = bool(args.quick)
    if quick:
        budgets = budgets[:2]
    env_seconds = 0.2 if quick else float(args.env_seconds)
    iterations = 1 if quick else max(1, int(args.ppo_iterations))
    started_ray = False
    if not args.no_ppo:
        import ray

        from memsel.pipeline import init_ray

        if not ray.is_initialized():
            # init_ray: a local Ray of our own (a plain ray.init() joined, or hung on, whatever cluster
            # `ray start` had left on the machine), on loopback, cleaned up if this process dies.
            init_ray(None)
            started_ray = True
    records = []
    try:
        for k in budgets:
            data, spec = _data(k, 8 if quick else 64, args.seed)
            from memsel.config import EnvConfig
            from memsel.env import make_env_config

            env = EnvConfig(memory_budget=k, budget_strategy=args.strategy, hops=int(args.hops))
            env.validate()
            env_s, env_steps = time_env(make_env_config(env, data=data, seed=args.seed, vocab_size=spec.vocab_size),
                                        env_seconds, args.seed)
            record = {"budget": k, "strategy": args.strategy, "memories": int(data.mask.shape[1]),
                      "hops": int(args.hops), "env_steps_per_s": 1.0 / env_s, "env_s_per_step": env_s,
                      "env_steps_timed": env_steps}
            if not args.no_ppo:
                with tempfile.TemporaryDirectory(prefix="memsel-bench-") as tmp:
                    npz = Path(tmp) / "train.npz"
                    data.save(npz)
                    ppo_s, ppo_steps = time_ppo(env, k, spec.vocab_size, str(npz), iterations, quick, args.seed)
                record.update({"ppo_s_per_iteration": ppo_s, "ppo_env_steps_per_iteration": ppo_steps,
                               "ppo_s_per_step": ppo_s / ppo_steps, "env_share": env_s / (ppo_s / ppo_steps)})
            records.append(record)
            log.info("bench env: K=%d done", k)
    finally:
        if started_ray:
            import ray

            ray.shutdown()
    print(format_table(records))
    return records


def format_table(records: list[dict]) -> str:
    lines = [f"{'K':>5} {'memories':>8} {'strategy':>8} {'env steps/s':>11} {'env us/step':>11} "
             f"{'PPO s/iter':>10} {'PPO us/step':>11} {'env / PPO':>9}"]
    for r in records:
        ppo = (f"{r['ppo_s_per_iteration']:>10.2f} {r['ppo_s_per_step'] * 1e6:>11.0f} {r['env_share'] * 100:>8.2f}%"
               if "env_share" in r else f"{'-':>10} {'-':>11} {'-':>9}")
        lines.append(f"{r['budget']:>5} {r['memories']:>8} {r['strategy']:>8} {r['env_steps_per_s']:>11.0f} "
                     f"{r['env_s_per_step'] * 1e6:>11.1f} {ppo}")
    at64 = [r for r in records if r["budget"] == 64 and "env_share" in r]
    if at64:
        share = at64[0]["env_share"]
        lines.append(f"target: env < {TARGET:.0%} of PPO's time per step at K = 64: "
                     f"{share:.2%} ({'met' if share < TARGET else 'NOT met'})")
    return "\n".join(lines)

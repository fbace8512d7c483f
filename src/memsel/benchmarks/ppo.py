"""``memsel bench ppo``: PPO end to end against a floor made of the environment alone and the network alone.

PPO: the PPOConfig ``memsel train`` builds (memsel.rl.build_ppo_config: the selector RLModule, the
distillation learner with a teacher, default ppo settings: 512 env steps per iteration, minibatches of 128,
4 epochs, one local env runner with 8 envs, a local learner) on generated task-1 stories as the
quickstart's; ``ppo_steps_per_s`` = env steps sampled / wall time of ``algo.train()``, over the timed
iterations after a warm-up one.

The floor, per iteration of the same size, measured in the same process:
- env alone: the same env with random valid actions (memsel.benchmarks.env.time_env), seconds per step;
- network alone, on the same batches: the policy's forward pass at every env step (batches of as many
  observations as the env runner has envs, no gradient), one forward pass over the train batch for the
  values, and per minibatch of every epoch the student's forward (logits and features), the value head,
  the teacher's forward, a loss of the same terms (policy-gradient, value, distillation KL), backward and
  an Adam step.
Each timed PPO iteration is followed at once by the env alone and the network alone, so that both sides
see the same load on a shared machine; medians over the iterations. ``floor_steps_per_s`` = steps / (steps
x env seconds per step + network seconds); ``ratio`` = ``ppo_steps_per_s`` / ``floor_steps_per_s``; the
target is at least 0.5.

Where the rest goes: one more iteration under cProfile (everything runs in this process: no remote env
runners or learners), its own time split by where the code lives (RLlib's connectors, the rest of RLlib,
Ray's core, torch, numpy, the env, other), plus RLlib's own timers of that iteration.

Top-level imports are standard library only (the CLI builds its parser from this module).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)

TARGET = 0.5
"""A memsel train iteration should reach at least this fraction of the floor's env steps per second."""
CATEGORIES = (("RLlib connectors", "ray/rllib/connectors/"), ("env (memsel.env)", "memsel/env.py"),
              ("RLlib, other", "ray/rllib/"), ("Ray core", "ray/"), ("torch", "torch"), ("numpy", "numpy"),
              ("gymnasium", "gymnasium/"), ("memsel, other", "memsel/"), ("tree / other Python", ""))
"""Profile buckets, first match of the function's file (built-ins: of their name) wins."""
STAGES = (("sampling (env runner)", "rllib/env/single_agent_env_runner.py", "_sample"),
          ("  policy forward at each step", "rl_module/torch/torch_rl_module.py", "forward_exploration"),
          ("  env steps (vectorised)", "rllib/env/env_runner.py", "_try_env_step"),
          ("  env-to-module connectors", "env_to_module/env_to_module_pipeline.py", "__call__"),
          ("  module-to-env connectors (get_actions)", "module_to_env/get_actions.py", "__call__"),
          ("learner update", "core/learner/learner.py", "update"),
          ("  learner connectors (GAE, values)", "connectors/learner/learner_connector_pipeline.py", "__call__"),
          ("  student forward (forward_train)", "core/rl_module/rl_module.py", "forward_train"),
          ("  teacher forward + distillation KL", "memsel/rllib_models/learner.py", "_distill_term"),
          ("  backward (compute_gradients)", "learner/torch/torch_learner.py", "compute_gradients"),
          ("  optimiser step (apply_gradients)", "learner/torch/torch_learner.py", "apply_gradients"))
"""Stages of an iteration: (label, end of the file's path, function); their cumulative time in the profile."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``memsel bench ppo``."""
    parser.add_argument("--iterations", type=int, default=3,
                        help="timed PPO iterations after a warm-up, each followed by the floor's parts (default 3)")
    parser.add_argument("--stories", type=int, default=200, help="generated task-1 stories (default 200)")
    parser.add_argument("--env-seconds", type=float, default=2.0,
                        help="seconds of env alone per timed iteration, times two (default 2: 1 s after each)")
    parser.add_argument("--no-profile", action="store_true", help="skip the profiled iteration")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a test of the record format")
    parser.add_argument("--seed", type=int, default=0, help="seed of data, weights, env and PPO (default 0)")


def _setup(args: argparse.Namespace, tmp: Path):
    """Config, data, spec, the train split's file and a teacher file (a fresh selector)."""
    from memsel.benchmarks.pretrain import _data
    from memsel.config import Config
    from memsel.network import Selector

    cfg = Config(seed=args.seed)
    if args.quick:
        cfg.ppo.train_batch_size, cfg.ppo.minibatch_size, cfg.ppo.num_epochs = 64, 32, 1
    cfg.validate()
    data, spec = _data(12 if args.quick else int(args.stories), args.seed)
    npz, teacher = tmp / "train.npz", tmp / "teacher.pt"
    data.save(npz)
    Selector(cfg.selector, spec).save(teacher)
    return cfg, data, spec, npz, teacher


def time_ppo(algo, iterations: int) -> tuple[list[float], list[float]]:
    """Wall seconds and env steps sampled of ``iterations`` calls of ``algo.train()``."""
    seconds, steps = [], []
    for _ in range(iterations):
        start = time.perf_counter()
        result = algo.train()
        seconds.append(time.perf_counter() - start)
        steps.append(float(result["env_runners"]["num_env_steps_sampled"]))
    return seconds, steps


def _obs(data, index):
    import torch

    t = {k: torch.from_numpy(v[index]) for k, v in data.tensors().items()}
    t["selected"] = torch.zeros(t["mask"].shape)
    return t


def time_network(cfg, data, spec, steps: int) -> float:
    """Seconds of the network's work in one PPO iteration of ``steps`` env steps (see the module docstring)."""
    import numpy as np
    import torch
    from torch import nn

    from memsel.rllib_models.learner import distillation_kl
    from memsel.network import Selector

    p, envs = cfg.ppo, cfg.ppo.num_envs_per_env_runner
    rng = np.random.default_rng(cfg.seed)
    student, teacher = Selector(cfg.selector, spec), Selector(cfg.selector, spec)
    value = nn.Sequential(nn.Linear(student.feature_dim, cfg.selector.hidden_dim), nn.Tanh(),
                          nn.Linear(cfg.selector.hidden_dim, 1))
    opt = torch.optim.Adam([*student.parameters(), *value.parameters()], lr=p.lr)
    batch = rng.integers(len(data), size=steps)
    start = time.perf_counter()
    with torch.no_grad():
        for i in range(0, steps, envs):  # acting: one forward per env step, batched over the envs
            student(_obs(data, batch[i:i + envs]))
        value(student(_obs(data, batch), return_features=True)[1])  # values of the whole batch (GAE)
    for _ in range(p.num_epochs):
        for i in range(0, steps, p.minibatch_size):
            obs = _obs(data, batch[i:i + p.minibatch_size])
            logits, features = student(obs, return_features=True)
            with torch.no_grad():
                target = teacher(obs)
            actions = torch.distributions.Categorical(logits=logits.detach()).sample()
            logp = torch.log_softmax(logits, -1).gather(-1, actions[:, None]).squeeze(-1)
            loss = -(logp * torch.randn_like(logp)).mean() + (value(features.detach()).squeeze(-1) ** 2).mean() \
                + distillation_kl(target, logits, obs["mask"]).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return time.perf_counter() - start


def _bucket(filename: str, name: str) -> str:
    where = filename if filename not in ("~", "") else name
    for label, part in CATEGORIES:
        if part in where:
            return label
    return CATEGORIES[-1][0]


def profile_iteration(algo) -> dict:
    """One ``algo.train()`` under cProfile: its wall seconds, own time per bucket (CATEGORIES), and RLlib's timers."""
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    result = algo.train()
    profiler.disable()
    wall = time.perf_counter() - start
    buckets: dict[str, float] = {}
    stages = {label: 0.0 for label, _, _ in STAGES}
    for (filename, _, name), (_, _, own, cumulative, _) in pstats.Stats(profiler).stats.items():
        path = filename.replace("\\", "/")
        key = _bucket(path, name)
        buckets[key] = buckets.get(key, 0.0) + own
        for label, suffix, function in STAGES:
            if name == function and path.endswith(suffix):
                stages[label] += cumulative
    runner = result.get("env_runners", {})
    timers = {f"timers/{k}": float(v) for k, v in (result.get("timers") or {}).items() if isinstance(v, (int, float))}
    timers.update({f"env_runners/{k}": float(v) for k, v in runner.items()
                   if k.endswith("_timer") and isinstance(v, (int, float))})
    return {"profiled_wall_s": wall, "profile_s": dict(sorted(buckets.items(), key=lambda kv: -kv[1])),
            "stages_s": stages,
            "rllib_timers": timers, "profiled_steps": float(runner.get("num_env_steps_sampled", 0))}


def _measure(args: argparse.Namespace, tmp: Path) -> dict:
    """PPO iterations interleaved with the floor's two parts (so that both see the same load on a shared
    machine), then one profiled iteration; all in this process."""
    from memsel.benchmarks.env import time_env
    from memsel.env import make_env_config
    from memsel.rl import build_ppo_config

    cfg, data, spec, npz, teacher = _setup(args, tmp)
    env_config = make_env_config(cfg.env, data=data, seed=args.seed, vocab_size=spec.vocab_size)
    env_seconds = 0.2 if args.quick else float(args.env_seconds) / 2
    algo = build_ppo_config(cfg, str(npz), spec, teacher, teacher_return=0.5).build_algo()
    seconds, steps, env_s, net_s = [], [], [], []
    try:
        _, (warm_steps,) = time_ppo(algo, 1)  # warm-ups: first forward passes, connector setup
        time_network(cfg, data, spec, int(warm_steps))
        for _ in range(1 if args.quick else max(1, int(args.iterations))):
            s, n = time_ppo(algo, 1)
            seconds += s
            steps += n
            env_s.append(time_env(env_config, env_seconds, args.seed)[0])
            net_s.append(time_network(cfg, data, spec, int(n[0])))
        profile = {} if args.no_profile else profile_iteration(algo)
    finally:
        algo.stop()
    ppo_s, ppo_steps = statistics.median(seconds), statistics.median(steps)
    env, net = statistics.median(env_s), statistics.median(net_s)
    floor_s = ppo_steps * env + net
    return {"env_steps_per_iteration": ppo_steps, "ppo_s_per_iteration": ppo_s, "ppo_runs_s": seconds,
            "ppo_steps_per_s": ppo_steps / ppo_s, "env_s_per_step": env, "network_s_per_iteration": net,
            "network_runs_s": net_s, "floor_s_per_iteration": floor_s, "floor_steps_per_s": ppo_steps / floor_s,
            "ratio": floor_s / ppo_s, "target": TARGET, "train_batch_size": cfg.ppo.train_batch_size,
            "minibatch_size": cfg.ppo.minibatch_size, "num_epochs": cfg.ppo.num_epochs,
            "num_envs_per_env_runner": cfg.ppo.num_envs_per_env_runner, **profile}


def run(args: argparse.Namespace) -> list[dict]:
    """Measure; print a table; return one record."""
    import ray
    import torch

    from memsel.pipeline import init_ray

    if args.threads:
        torch.set_num_threads(int(args.threads))
    started = not ray.is_initialized()
    if started:
        init_ray(None)  # a local Ray of our own, on loopback, cleaned up if this process dies
    try:
        with tempfile.TemporaryDirectory(prefix="memsel-bench-") as tmp:
            rec = _measure(args, Path(tmp))
    finally:
        if started:
            ray.shutdown()
    rec["torch_threads"] = torch.get_num_threads()
    print(format_table([rec]))
    return [rec]


def format_table(records: list[dict]) -> str:
    """PPO against the floor, and where a profiled iteration's time went."""
    lines = []
    for r in records:
        steps = r["env_steps_per_iteration"]
        lines += [f"{steps:.0f} env steps per iteration (minibatch {r['minibatch_size']}, {r['num_epochs']} epochs, "
                  f"{r['num_envs_per_env_runner']} envs), {r['torch_threads']} torch thread(s)",
                  f"{'':<34} {'s/iteration':>11} {'env steps/s':>11}",
                  f"{'memsel train iteration (RLlib)':<34} {r['ppo_s_per_iteration']:>11.2f} {r['ppo_steps_per_s']:>11.0f}",
                  f"{'floor: env alone':<34} {steps * r['env_s_per_step']:>11.2f}",
                  f"{'floor: network alone':<34} {r['network_s_per_iteration']:>11.2f}",
                  f"{'floor: env + network':<34} {r['floor_s_per_iteration']:>11.2f} {r['floor_steps_per_s']:>11.0f}",
                  f"ratio PPO / floor: {r['ratio']:.2f}  target >= {r['target']}: "
                  f"{'met' if r['ratio'] >= r['target'] else 'NOT met'}"]
        if r.get("profile_s"):
            total = sum(r["profile_s"].values()) or 1.0
            lines.append(f"profile of one more iteration ({r['profiled_wall_s']:.2f} s wall under cProfile; timed "
                         f"median {r['ppo_s_per_iteration']:.2f} s), own time by where the code lives:")
            lines += [f"  {k:<24} {v:>7.2f} s  {v / total:>5.1%}" for k, v in r["profile_s"].items() if v / total >= 0.005]
        if r.get("stages_s"):
            lines.append("stages of that iteration (cumulative time under cProfile; indented: part of the line above):")
            lines += [f"  {k:<42} {v:>7.2f} s  {v / r['profiled_wall_s']:>5.1%}" for k, v in r["stages_s"].items()]
        if r.get("rllib_timers"):
            lines.append("RLlib's timers (s): " + ", ".join(f"{k} {v:.3g}" for k, v in r["rllib_timers"].items()))
    return "\n".join(lines)

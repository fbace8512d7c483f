"""``memsel bench tune``: what Ray Tune costs per trial on one node, and what a second node buys.

Three sweeps of ``memsel tune --fresh --json``, each a separate driver process joined to a real
Ray cluster of ``ray start`` nodes on this machine (memsel.local_cluster), all on one tiny,
pretrained run directory prepared once in a temporary folder:

* W1: one trial alone (``tune.num_samples=1``) on a one-node cluster with 1 CPU;
* W4: four trials (``num_samples=4``, ``max_concurrent_trials=4``) on the same one-node cluster:
  one CPU, so Tune runs them one after another;
* W4b: the same four trials on a two-node cluster (head 1 CPU + worker 1 CPU): two at a time.

Each W is the ``fit_wall_s`` of the driver's summary (the seconds ``Tuner.fit`` took: trial actors
started, PPO built, trained, evaluated, checkpointed; not the driver's imports and ``ray.init``).
The figures: ``overhead_one_node`` = W4 / (4 W1) (what running trials back to back in one sweep
adds to a lone trial's time; target <= 1.25), trials per hour = 4 * 3600 / W4 (one node) and
4 * 3600 / W4b (two nodes), ``speedup`` = their ratio = W4 / W4b (target >= 1.6). The summary
also tells which node ran each trial: in the two-node case both must have run some.

Side by side, before and after the sweeps: the throughput of two CPU-bound processes at once over one
alone (:func:`machine_scaling`; kind "machine"), what this machine's two cores can give a second node
at that moment (about 2 on quiet cores, about 1 when other work takes a core).

Trials: PPO from the run's pretrained selector, ``tune.scheduler=none`` (every trial runs its
``--iterations``), a ``choice`` over ``ppo.lr``, no model registration, checkpoints in a storage
folder both nodes reach. With ``--repeats R`` every sweep runs R times (W1 and W4 alternate on the
one-node cluster); each W is the median.

Top-level imports are standard library only (the CLI builds its parser from this module).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)

TRIALS = 4
"""Trials of the W4 and W4b sweeps."""
TARGET_OVERHEAD = 1.25
"""W4 / (4 W1) on one node must stay at or below this."""
TARGET_SPEEDUP = 1.6
"""Trials per hour on two nodes over one node must reach this."""

# name, label, nodes, trials; the one-node cases share one cluster
CASES = (("one_trial", "1 trial, 1 node (W1)", 1, 1), ("four_trials", "4 trials, 1 node (W4)", 1, TRIALS),
         ("four_trials_two_nodes", "4 trials, 2 nodes (W4b)", 2, TRIALS))
FULL = {"train_stories": 40, "test_stories": 10, "max_epochs": 3, "minibatch_size": 64}
QUICK = {"train_stories": 20, "test_stories": 5, "max_epochs": 1, "minibatch_size": 32}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``memsel bench tune`` (standard library only: runs when the CLI's parser is built)."""
    parser.add_argument("--iterations", type=int, default=30,
                        help="PPO iterations per trial (default 30: ~20 s a trial on 2 quiet cores)")
    parser.add_argument("--train-batch-size", type=int, default=256,
                        help="ppo.train_batch_size of every trial (default 256; minibatch 64, 1 epoch)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="runs of each sweep; each W is the median (default 1)")
    parser.add_argument("--timeout", type=float, default=1800,
                        help="seconds one driver (one sweep) may take before it is stopped (default 1800)")
    parser.add_argument("--keep", metavar="DIR",
                        help="prepare and keep everything (run directory, checkpoints, node logs) in DIR "
                             "instead of a temporary folder")
    parser.add_argument("--quick", action="store_true",
                        help="1 iteration of 64 steps, a tinier run: a test of the record format (timings meaningless)")
    parser.add_argument("--seed", type=int, default=0, help="seed of data, pretraining and trials (default 0)")


def _settings(args: argparse.Namespace, storage: Path) -> list[str]:
    """The ``--set`` overrides every command of the benchmark gets (pretrain and the sweeps)."""
    size = QUICK if args.quick else FULL
    iterations = 1 if args.quick else int(args.iterations)
    batch = 64 if args.quick else int(args.train_batch_size)
    sets = [f"seed={args.seed}", "device=cpu", f"data.train_stories={size['train_stories']}",
            f"data.test_stories={size['test_stories']}", f"pretrain.max_epochs={size['max_epochs']}",
            f"ppo.train_batch_size={batch}", f"ppo.minibatch_size={min(size['minibatch_size'], batch)}",
            "ppo.num_epochs=1", "tune.scheduler=none", f"tune.iterations={iterations}",
            "tune.register_model=false", f"tune.storage_path={storage}",
            "tune.search_space={lr: {choice: [1.0e-4, 3.0e-4]}}"]
    return [a for s in sets for a in ("--set", s)]


def _child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment with this memsel's source first on ``PYTHONPATH`` (so that drivers,
    nodes and trials run the same code as the benchmark) and no cluster address of its own."""
    import memsel

    src = str(Path(memsel.__file__).resolve().parents[1])
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH", "")) if p)
    env.update(extra or {})
    return env


def _memsel(argv: list[str], env: dict[str, str], log_path: Path, timeout: float) -> str:
    """Run ``memsel ARGV`` as a child process (its own process session; stderr to ``log_path``) and
    return its stdout. On a timeout, an error or an interruption of this process the child gets
    SIGTERM (memsel ends cleanly on it), then SIGKILL; a failure raises RuntimeError with its stderr."""
    with open(log_path, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "memsel.cli", *argv], env=env, stdout=subprocess.PIPE,
                                stderr=err, stdin=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        tail = log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"memsel {argv[0]} did not end within {timeout:.0f} s (log: {log_path}):\n{tail}") from None
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)  # its own session: the driver and nothing else of ours
                proc.wait()
    if proc.returncode != 0:
        tail = log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"memsel {argv[0]} exited {proc.returncode} (log: {log_path}):\n{tail}")
    return out


def _trained_seconds(experiment_path: str) -> float:
    """Seconds the sweep's trials spent inside their training steps (Tune's ``time_total_s``, summed
    over trials; each step is one PPO iteration and its validation): the rest of a one-node sweep's
    ``fit_wall_s`` is the trials' start-up, their checkpoints and Tune's own work."""
    total = 0.0
    for result in Path(experiment_path).glob("*/result.json"):
        lines = [ln for ln in result.read_text(errors="replace").splitlines() if ln.strip()]
        if lines:
            total += float(json.loads(lines[-1]).get("time_total_s") or 0.0)
    return total


# A CPU-bound loop that times itself (interpreter start-up excluded); argv[1]: its length.
_CPU_LOOP = "import sys, time\nt = time.perf_counter(); x = 0\nfor i in range(int(sys.argv[1])): x += i * i\n" \
            "print(time.perf_counter() - t)"


def machine_scaling(loop: int) -> float:
    """Throughput of two CPU-bound processes at once over one alone (2.0: two free cores; ~1: one core's
    worth, e.g. cores that others use meanwhile): the ceiling of what a second node can buy here, now."""
    def timed(n: int) -> list[float]:
        procs = [subprocess.Popen([sys.executable, "-c", _CPU_LOOP, str(loop)], stdout=subprocess.PIPE, text=True,
                                  env=_child_env()) for _ in range(n)]
        return [float(p.communicate()[0]) for p in procs]

    one = timed(1)[0]
    return 2 * one / max(timed(2))


def _cpu_times(pids: list[int]) -> dict[tuple[int, str], float]:
    """(pid, start time) -> CPU seconds (user + system, not counting reaped children) of each live
    process of ``pids``."""
    tick = os.sysconf("SC_CLK_TCK")
    times = {}
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = Path(f"/proc/{pid}/stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            times[(pid, fields[19])] = (int(fields[11]) + int(fields[12])) / tick
    return times


def _ray_cpu_seconds(before: dict, after: dict) -> float:
    """CPU seconds that the nodes' processes alive before and after a sweep used meanwhile: Ray's own
    (GCS, raylets, agents, dashboard, idle workers). Trial actors end with their trial and are not in it."""
    return sum(after[key] - before[key] for key in after.keys() & before.keys())


def _sweep(args: argparse.Namespace, work: Path, cluster, names: dict[str, str], trials: int, tag: str) -> dict:
    """One ``memsel tune --fresh --json`` sweep of ``trials`` trials, joined to ``cluster``; returns its
    fit time, the trials per node (by node name) and their statuses."""
    argv = ["tune", "--fresh", "--json", "--run-dir", str(work / "run"), *_settings(args, work / "storage"),
            "--set", f"tune.num_samples={trials}", "--set", f"tune.max_concurrent_trials={trials}"]
    started, ray_before = time.perf_counter(), _cpu_times(cluster.alive_pids())
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = _memsel(argv, _child_env(cluster.client_env()), work / f"driver-{tag}.log", args.timeout)
    driver_s = time.perf_counter() - started
    children = resource.getrusage(resource.RUSAGE_CHILDREN)  # the driver, now reaped
    driver_cpu = children.ru_utime + children.ru_stime - children_before.ru_utime - children_before.ru_stime
    ray_cpu = _ray_cpu_seconds(ray_before, _cpu_times(cluster.alive_pids()))
    summary = json.loads(out)
    per_node: dict[str, int] = {}
    for trial in summary["trials"]:
        name = names.get(trial["node_id"], f"unknown:{str(trial['node_id'])[:8]}")
        per_node[name] = per_node.get(name, 0) + 1
    log.info("bench tune: %s: fit %.1f s, driver %.1f s (CPU %.1f s), Ray's processes CPU %.1f s, trials per "
             "node %s", tag, summary["fit_wall_s"], driver_s, driver_cpu, ray_cpu, per_node)
    return {"fit_wall_s": float(summary["fit_wall_s"]), "driver_wall_s": driver_s, "trials_per_node": per_node,
            "counts": summary["counts"], "iterations": sorted({t["iterations"] for t in summary["trials"]}),
            "trained_s": _trained_seconds(summary["experiment_path"]), "driver_cpu_s": driver_cpu,
            "ray_cpu_s": ray_cpu}


def _start(cluster, nodes: int) -> dict[str, str]:
    """Start a head of 1 CPU and ``nodes - 1`` workers of 1 CPU each; returns node id -> node name."""
    handles = [cluster.start_head(num_cpus=1)]
    handles += [cluster.add_worker(num_cpus=1) for _ in range(nodes - 1)]
    alive = cluster.wait_for_nodes(nodes, timeout=120)
    return {cluster.node_id(h, alive): h.name for h in handles}


def _measure(args: argparse.Namespace, work: Path) -> dict[str, list[dict]]:
    """Every sweep of every case, ``--repeats`` times: case name -> its runs."""
    from memsel.local_cluster import LocalCluster

    runs: dict[str, list[dict]] = {name: [] for name, *_ in CASES}
    for nodes in (1, 2):
        cases = [(name, trials) for name, _, n, trials in CASES if n == nodes]
        logs = work / f"nodes-{nodes}"
        logs.mkdir(parents=True, exist_ok=True)
        with LocalCluster(log_dir=logs, env={"PYTHONPATH": _child_env()["PYTHONPATH"]}) as cluster:
            started = time.perf_counter()
            names = _start(cluster, nodes)
            log.info("bench tune: %d-node cluster up in %.1f s", nodes, time.perf_counter() - started)
            for r in range(max(1, int(args.repeats))):
                for name, trials in cases:  # alternate the cases of one cluster, repeat after repeat
                    runs[name].append(_sweep(args, work, cluster, names, trials, f"{name}-{r + 1}"))
    return runs


def _records(runs: dict[str, list[dict]], args: argparse.Namespace) -> list[dict]:
    """One record per case (kind "sweep", W = the median fit time) and one per target (kind "target")."""
    records, w = [], {}
    for name, label, nodes, trials in CASES:
        fits = [r["fit_wall_s"] for r in runs[name]]
        w[name] = statistics.median(fits)
        last = runs[name][-1]
        records.append({"kind": "sweep", "case": name, "label": label, "nodes": nodes, "cpus_per_node": 1,
                        "trials": trials, "iterations": 1 if args.quick else int(args.iterations),
                        "fit_wall_s": w[name], "fit_wall_s_runs": fits,
                        "driver_wall_s": statistics.median(r["driver_wall_s"] for r in runs[name]),
                        **{k: statistics.median(r[k] for r in runs[name])
                           for k in ("trained_s", "driver_cpu_s", "ray_cpu_s")},
                        "trials_per_hour": trials * 3600 / w[name], "trials_per_node": last["trials_per_node"],
                        "nodes_used": min(len(r["trials_per_node"]) for r in runs[name]),
                        "counts": last["counts"], "quick": bool(args.quick)})
    overhead = w["four_trials"] / (TRIALS * w["one_trial"])
    speedup = w["four_trials"] / w["four_trials_two_nodes"]
    two = records[-1]
    records += [
        {"kind": "target", "name": "overhead_one_node", "value": overhead, "target": f"<= {TARGET_OVERHEAD}",
         "met": overhead <= TARGET_OVERHEAD},
        {"kind": "target", "name": "speedup_two_nodes", "value": speedup, "target": f">= {TARGET_SPEEDUP}",
         "met": speedup >= TARGET_SPEEDUP},
        {"kind": "target", "name": "both_nodes_ran_trials", "value": two["nodes_used"], "target": "== 2",
         "met": two["nodes_used"] == 2},
    ]
    return records


@contextlib.contextmanager
def _unwind_on_sigterm():
    """SIGTERM unwinds like Ctrl-C (clusters and drivers stopped by the ``finally`` blocks) and the CLI
    exits 143; without it a SIGTERM would end this process and leave its cluster running."""
    from memsel.lifecycle import _on_signal  # the handler memsel's guarded commands use

    saved = signal.signal(signal.SIGTERM, _on_signal)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, saved)


def run(args: argparse.Namespace) -> list[dict]:
    """Prepare a tiny pretrained run, time the three sweeps, print a table, return the records."""
    if int(args.iterations) < 1 or int(args.train_batch_size) < 1 or int(args.repeats) < 1:
        raise ValueError("--iterations, --train-batch-size and --repeats take integers >= 1")
    with contextlib.ExitStack() as stack:
        stack.enter_context(_unwind_on_sigterm())
        if args.keep:
            work = Path(args.keep).resolve()
            work.mkdir(parents=True, exist_ok=True)
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="memsel-bench-tune-")))
        (work / "storage").mkdir(exist_ok=True)
        started = time.perf_counter()
        _memsel(["pretrain", "--run-dir", str(work / "run"), *_settings(args, work / "storage")], _child_env(),
                work / "pretrain.log", args.timeout)
        log.info("bench tune: run directory prepared in %.1f s", time.perf_counter() - started)
        loop = 2_000_000 if args.quick else 10_000_000
        before = machine_scaling(loop)
        runs = _measure(args, work)
        records = _records(runs, args) + [{"kind": "machine", "name": "two_process_scaling", "before": before,
                                           "after": machine_scaling(loop), "cores": os.cpu_count()}]
    print(format_table(records))
    return records


def format_table(records: list[dict]) -> str:
    """The sweeps, the targets and whether each was met, and what shared the cores."""
    sweeps = [r for r in records if r["kind"] == "sweep"]
    first = sweeps[0]
    lines = [f"{first['iterations']} PPO iteration(s) per trial, 1 CPU per node, {os.cpu_count()} cores on this "
             f"machine{' (--quick: timings meaningless)' if first['quick'] else ''}",
             f"{'case':<24} {'fit_wall_s':>10} {'in train()':>10} {'trials/hour':>11} {'driver s':>8} "
             f"{'driver CPU':>10} {'Ray CPU':>7}  trials per node"]
    for r in sweeps:
        per_node = ", ".join(f"{k} {v}" for k, v in sorted(r["trials_per_node"].items()))
        runs = f" (runs {', '.join(f'{x:.1f}' for x in r['fit_wall_s_runs'])})" if len(r["fit_wall_s_runs"]) > 1 else ""
        lines.append(f"{r['label']:<24} {r['fit_wall_s']:>10.1f} {r['trained_s']:>10.1f} {r['trials_per_hour']:>11.0f} "
                     f"{r['driver_wall_s']:>8.1f} {r['driver_cpu_s']:>10.1f} {r['ray_cpu_s']:>7.1f}  {per_node}{runs}")
    text = {"overhead_one_node": "overhead, one node: W4 / (4 W1)", "speedup_two_nodes": "speedup, two nodes: W4 / W4b",
            "both_nodes_ran_trials": "nodes that ran trials, two-node case"}
    for r in (r for r in records if r["kind"] == "target"):
        value = f"{r['value']:.2f}" if isinstance(r["value"], float) else str(r["value"])
        lines.append(f"{text[r['name']]:<40} {value:>6}  target {r['target']}: {'met' if r['met'] else 'NOT met'}")
    for r in (r for r in records if r["kind"] == "machine"):
        lines.append(f"this machine, side by side: two CPU-bound processes at once do {r['before']:.2f}x (before the "
                     f"sweeps) and {r['after']:.2f}x (after) the work of one: the ceiling of the two-node speedup now")
    lines.append(f"note: the two-node case gives each node 1 CPU; on {os.cpu_count()} cores the driver (Tune's "
                 "controller) and Ray's own processes (GCS, raylets, agents) share those cores with the trials.")
    lines.append("seconds: in train() = the trials' time in their training steps, summed; driver = the driver "
                 "process's wall and CPU time (imports and ray.init included); Ray CPU = CPU time of the nodes' "
                 "long-lived processes during the sweep (not the trials')")
    return "\n".join(lines)

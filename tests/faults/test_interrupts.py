"""Every stage, stopped by SIGINT (Ctrl-C), SIGTERM or SIGKILL at a point its log shows, leaves a
run directory that the next command uses: no result file replaced by a partial one, no process
left, no MLflow run RUNNING, and the next command succeeds.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

EPOCH = r"pretrain epoch 1/"
PPO_ITER = r"ppo \S+ iter 1/"
TUNE_ITER = r"tune \S+ iter 1/"


def _next_command_recovers(memsel, check, run_dir: Path, killed: bool) -> None:
    """The next command on the run directory succeeds and leaves no MLflow run RUNNING; after a
    SIGKILL it says that it took over the dead command's lock."""
    nxt = memsel("evaluate")
    assert nxt.wait() == 0, nxt.stderr()[-3000:]
    if killed:
        assert "died without cleaning up" in nxt.stderr(), nxt.stderr()[-3000:]
    assert check.running_mlflow_runs(run_dir) == []
    assert not (run_dir / ".memsel.lock").exists()
    assert not (run_dir.parent / "mlruns").exists(), "MLflow wrote into the current directory"


def _stopped(m, sig: int) -> None:
    """``m`` ended by ``sig`` cleanly: exit 128 + sig, one line saying so, nothing of it left."""
    code = m.wait()
    assert code == 128 + sig, (code, m.stderr()[-3000:])
    assert f"memsel: stopped by {signal.Signals(sig).name}" in m.stderr()
    assert "Traceback" not in m.stderr().split("memsel: stopped by")[-1]
    assert m.left() == [], "processes left: " + ", ".join(map(str, m.left(0)))


def test_pretrain_sigint_mid_training_and_a_second_command_refused(memsel, check, run_dir):
    before = check.checksums(run_dir)
    m = memsel("pretrain", "--set", "pretrain.max_epochs=200")
    m.wait_for(EPOCH)
    second = memsel("evaluate")
    assert second.wait() == 2
    assert f"in use by memsel PID {m.proc.pid}" in second.stderr()
    m.signal_group(signal.SIGINT)
    _stopped(m, signal.SIGINT)
    assert check.running_mlflow_runs(run_dir) == []  # marked KILLED by the command itself
    check.assert_complete(run_dir, before)
    _next_command_recovers(memsel, check, run_dir, killed=False)


def test_pretrain_sigkill_mid_training(memsel, check, run_dir):
    before = check.checksums(run_dir)
    m = memsel("pretrain", "--set", "pretrain.max_epochs=200")
    m.wait_for(EPOCH)
    m.kill_driver()
    m.wait()
    assert m.left() == []
    assert check.running_mlflow_runs(run_dir) != []  # what a SIGKILL leaves: the next command cleans up
    check.assert_complete(run_dir, before)
    _next_command_recovers(memsel, check, run_dir, killed=True)


def test_train_sigterm_mid_training(memsel, check, run_dir):
    before = check.checksums(run_dir)
    m = memsel("train", "--set", "ppo.iterations=50")
    m.wait_for(PPO_ITER)
    m.signal_group(signal.SIGTERM)  # what `ray job stop` and most supervisors send
    _stopped(m, signal.SIGTERM)
    assert check.running_mlflow_runs(run_dir) == []
    check.assert_complete(run_dir, before)
    _next_command_recovers(memsel, check, run_dir, killed=False)


def test_train_sigkill_of_the_driver_leaves_no_ray_process(memsel, check, run_dir):
    before = check.checksums(run_dir)
    m = memsel("train", "--set", "ppo.iterations=50")
    m.wait_for(PPO_ITER)
    m.track()
    assert len(m.seen) > 4, "Ray's processes were not seen"
    assert m.listening_outside_loopback() == []
    m.kill_driver()
    m.wait()
    assert m.left(grace=15) == [], "orphans of the killed driver's Ray"
    check.assert_complete(run_dir, before)
    _next_command_recovers(memsel, check, run_dir, killed=True)


def test_tune_sigint_mid_sweep_exports_nothing(memsel, check, run_dir):
    before = check.checksums(run_dir)
    m = memsel("tune", "--set", "tune.iterations=20", "--set", "tune.num_samples=3")
    m.wait_for(TUNE_ITER)
    m.signal_group(signal.SIGINT)
    _stopped(m, signal.SIGINT)
    assert check.running_mlflow_runs(run_dir) == []
    check.assert_complete(run_dir, before)
    _next_command_recovers(memsel, check, run_dir, killed=False)


def test_evaluate_sigint(memsel, check, run_dir):
    before = check.checksums(run_dir)
    m = memsel("evaluate")
    m.wait_for(r"memsel.data.prepare: data:")
    m.signal_group(signal.SIGINT)
    code = m.wait()
    # evaluate may finish its half second of work before the signal lands: then it must be whole
    assert code in (0, 130), m.stderr()[-3000:]
    assert m.left() == []
    check.assert_complete(run_dir, before, unchanged=() if code == 0 else ("results.json", "results.txt"))
    _next_command_recovers(memsel, check, run_dir, killed=False)


@pytest.mark.parametrize("point, sig", [
    (r"\[1/4\]", signal.SIGKILL),  # just after data preparation, before Lightning starts
    (r"\[2/4\]", signal.SIGTERM),  # while the local Ray starts
    (TUNE_ITER, signal.SIGINT),  # mid-sweep, after pretrain and PPO replaced their files
])
def test_pipeline(memsel, check, run_dir, point, sig):
    before = check.checksums(run_dir)
    m = memsel("pipeline", "--set", "tune.iterations=20")
    m.wait_for(point)
    if sig == signal.SIGKILL:
        m.kill_driver()
        m.wait()
        assert m.left(grace=15) == []
    else:
        m.signal_group(sig)
        _stopped(m, sig)
    # what the stages before the signal finished they replaced with complete files; the rest is as it was
    done = {r"\[1/4\]": (), r"\[2/4\]": ("pretrain/selector.pt",),
            TUNE_ITER: ("pretrain/selector.pt", "ppo/selector.pt")}[point]
    check.assert_complete(run_dir, before, unchanged=tuple(f for f in before if f not in done))
    _next_command_recovers(memsel, check, run_dir, killed=sig == signal.SIGKILL)

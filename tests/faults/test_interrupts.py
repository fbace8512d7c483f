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


def _fault(memsel, check, run_dir: Path, args: list[str], point: str, sig: int,
           replaced: tuple[str, ...] = (), before_signal=None) -> None:
    """Start ``memsel *args``, wait for ``point`` on its stderr, send ``sig`` (SIGKILL: to the driver
    alone; else to the group, as Ctrl-C does), check what it left, then run the next command.
    ``replaced``: result files that stages finished before the signal may have replaced (with whole ones)."""
    before = check.checksums(run_dir)
    m = memsel(*args)
    m.wait_for(point)
    if before_signal:
        before_signal(m)
    if sig == signal.SIGKILL:
        m.kill_driver()
        m.wait()
        assert m.left(grace=15) == [], "processes outlived the killed driver"
    else:
        m.signal_group(sig)
        _stopped(m, sig)
        assert check.running_mlflow_runs(run_dir) == []  # marked KILLED by the command itself
    check.assert_complete(run_dir, before, unchanged=tuple(f for f in before if f not in replaced))
    _next_command_recovers(memsel, check, run_dir, killed=sig == signal.SIGKILL)


def test_pretrain_sigint_mid_training_and_a_second_command_refused(memsel, check, run_dir):
    def second_command_refused(m) -> None:
        second = memsel("evaluate")
        assert second.wait() == 2
        assert f"in use by memsel PID {m.proc.pid}" in second.stderr()

    _fault(memsel, check, run_dir, ["pretrain", "--set", "pretrain.max_epochs=200"], EPOCH, signal.SIGINT,
           before_signal=second_command_refused)


def test_pretrain_sigkill_mid_training(memsel, check, run_dir):
    _fault(memsel, check, run_dir, ["pretrain", "--set", "pretrain.max_epochs=200"], EPOCH, signal.SIGKILL)


def test_train_sigterm_mid_training(memsel, check, run_dir):
    # SIGTERM to the group: what `ray job stop` and most supervisors send
    _fault(memsel, check, run_dir, ["train", "--set", "ppo.iterations=50"], PPO_ITER, signal.SIGTERM)


def test_train_sigkill_of_the_driver_leaves_no_ray_process(memsel, check, run_dir):
    def ray_is_up_on_loopback_only(m) -> None:
        m.track()
        assert len(m.seen) > 4, "Ray's processes were not seen"
        assert m.listening_outside_loopback() == []

    _fault(memsel, check, run_dir, ["train", "--set", "ppo.iterations=50"], PPO_ITER, signal.SIGKILL,
           before_signal=ray_is_up_on_loopback_only)


def test_tune_sigint_mid_sweep_exports_nothing(memsel, check, run_dir):
    _fault(memsel, check, run_dir, ["tune", "--fresh", "--set", "tune.iterations=20", "--set", "tune.num_samples=3"],
           TUNE_ITER, signal.SIGINT)


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


@pytest.mark.parametrize("point, sig, replaced", [
    (r"\[1/4\]", signal.SIGKILL, ()),  # just after data preparation, before Lightning starts
    (r"\[2/4\]", signal.SIGTERM, ("pretrain/selector.pt",)),  # while the local Ray starts
    (TUNE_ITER, signal.SIGINT, ("pretrain/selector.pt", "ppo/selector.pt")),  # mid-sweep
])
def test_pipeline(memsel, check, run_dir, point, sig, replaced):
    _fault(memsel, check, run_dir, ["pipeline", "--set", "tune.iterations=20"], point, sig, replaced)

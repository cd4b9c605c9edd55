"""Ctrl-C and SIGTERM end a job the same way: one line, a true status, the step reached saved.

The end-to-end tests send a real SIGINT to ``python -m trainer`` (in training, and after it,
while the run checks, evaluates and exports), then rerun the same command and compare the
final weights bit for bit with an uninterrupted run's. The others check the signal module's
rules in small processes that need no TensorFlow.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# A tiny job on in-memory faces: 3 epochs x 4 steps, a checkpoint every 3 steps.
TINY = ["debug=smoke", "data=memory", "data.image_size=24", "data.train_identities=16",
        "data.images_per_identity=4", "data.test_identities=6", "data.test_images_per_identity=4",
        "eval.pairs=24", "eval.untrained=false", "logger=none", "trainer.epochs=3",
        "trainer.steps_per_epoch=4", "callbacks.checkpoint.every_steps=3", "callbacks.checkpoint.keep=10"]
# Steps slow enough for a signal sent from outside to land mid-training (a file in the job's
# folder: configs may name a class of a module there).
SLOW_STEPS = """
import time

import keras


class SlowSteps(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        time.sleep(0.4)
"""


def environment():
    return {**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "3", "WANDB_MODE": "disabled"}


def start(args, cwd):
    return subprocess.Popen([sys.executable, "-m", "trainer", *args], cwd=cwd, env=environment(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def metrics(run_dir):
    with open(os.path.join(run_dir, "metrics.json")) as f:
        return json.load(f)


def latest_step(run_dir):
    try:
        with open(os.path.join(run_dir, "checkpoints", "latest.json")) as f:
            return json.load(f)["step"]
    except (OSError, ValueError, KeyError):
        return None


def wait_for_step(run_dir, step, process, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1][-3000:]
        if (latest_step(run_dir) or 0) >= step:
            return
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint at step {step} within {timeout} s")


def h5_arrays(path):
    import h5py

    arrays = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: arrays.__setitem__(name, obj[()])
                     if isinstance(obj, h5py.Dataset) else None)
    return arrays


def assert_same_final_weights(run_dir, reference_dir):
    final = "ckpt-000000012.weights.h5"  # model, optimizer (iterations, moments), loss state
    ours = h5_arrays(os.path.join(run_dir, "checkpoints", final))
    theirs = h5_arrays(os.path.join(reference_dir, "checkpoints", final))
    assert ours.keys() == theirs.keys()
    for key in ours:
        np.testing.assert_array_equal(ours[key], theirs[key], err_msg=key)


def interrupt(process, signum=signal.SIGINT):
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=180)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr[-3000:]  # one line, no traceback
    return process.returncode, lines[0], stdout


@pytest.mark.e2e
def test_ctrl_c_in_training_saves_the_step_reached_and_the_rerun_matches_an_uninterrupted_run(tmp_path):
    (tmp_path / "slow_steps.py").write_text(SLOW_STEPS)
    slow = "+callbacks.slow={name: slow_steps.SlowSteps}"
    reference = start([*TINY, "run.name=reference"], tmp_path)  # beside the interrupted one
    run_dir = str(tmp_path / "runs" / "interrupted")
    process = start([*TINY, slow, "run.name=interrupted"], tmp_path)
    wait_for_step(run_dir, 3, process)

    code, line, _ = interrupt(process)
    assert code == 130, line
    step = latest_step(run_dir)
    assert 3 <= step < 12  # mid-training: stopped at a step boundary, saved exactly there
    assert line == (f"interrupted (Ctrl-C) at step {step}: saved "
                    f"runs/interrupted/checkpoints/ckpt-{step:09d}.weights.h5; rerun the same command to resume")
    recorded = metrics(run_dir)
    assert recorded["status"] == "interrupted" and recorded["interruption"] == line
    saved = json.loads((tmp_path / "runs" / "interrupted" / "checkpoints" / f"ckpt-{step:09d}.json").read_text())
    assert saved["optimizer_step"] == step and saved["epoch"] * 4 + saved["batch"] == step

    rerun = start([*TINY, slow, "run.name=interrupted"], tmp_path)  # the same command
    stdout, stderr = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, stderr[-3000:]
    assert f"resumed from {run_dir}/checkpoints/ckpt-{step:09d}.weights.h5" in stdout
    assert reference.wait(timeout=300) == 0, reference.stderr.read()[-3000:]
    resumed = metrics(run_dir)
    assert resumed["status"] == "finished" and resumed["resumed_from_step"] == step
    assert resumed["optimizer_steps"] == metrics(str(tmp_path / "runs" / "reference"))["optimizer_steps"] == 12
    assert_same_final_weights(run_dir, str(tmp_path / "runs" / "reference"))


@pytest.mark.e2e
def test_ctrl_c_after_training_keeps_the_final_step_and_the_rerun_evaluates_it(tmp_path):
    # A large evaluation: the signal lands while the run checks, evaluates or exports.
    args = [*TINY, "callbacks.checkpoint.every_steps=0", "callbacks.checkpoint.every_seconds=0",
            "data.test_identities=40", "data.test_images_per_identity=8", "eval.pairs=3000"]
    run_dir = str(tmp_path / "runs" / "late")
    process = start([*args, "run.name=late"], tmp_path)
    wait_for_step(run_dir, 12, process)  # the last epoch's checkpoint: training is over

    code, line, _ = interrupt(process)
    assert code == 130, line
    assert line == ("interrupted (Ctrl-C) at step 12: saved runs/late/checkpoints/ckpt-000000012.weights.h5; "
                    "rerun the same command to resume")
    recorded = metrics(run_dir)
    assert recorded["status"] == "interrupted" and "final" not in recorded
    weights = h5_arrays(os.path.join(run_dir, "checkpoints", "ckpt-000000012.weights.h5"))

    rerun = start([*args, "run.name=late"], tmp_path)
    stdout, stderr = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, stderr[-3000:]
    assert "resumed from" in stdout and "final verification" in stdout  # re-evaluated, not retrained
    finished = metrics(run_dir)
    assert finished["status"] == "finished" and finished["optimizer_steps"] == 12
    assert os.path.exists(os.path.join(run_dir, "export", "embedding.keras"))
    for key, value in h5_arrays(os.path.join(run_dir, "checkpoints", "ckpt-000000012.weights.h5")).items():
        np.testing.assert_array_equal(value, weights[key], err_msg=key)


class SignalAt(keras.callbacks.Callback):
    """Sends this process ``signum`` after global step ``step`` (a person pressing Ctrl-C)."""

    def __init__(self, step, signum="SIGINT", run_dir=None, config=None):
        super().__init__()
        self.step, self.signum, self.seen = int(step), getattr(signal, signum), 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen == self.step:
            os.kill(os.getpid(), self.signum)


@pytest.mark.e2e
def test_a_run_without_callbacks_saves_where_it_was_interrupted_and_resumes_there(tmp_path):
    import trainer
    from trainer.run import RunInterrupted

    def config(run_dir, *extra):
        return trainer.compose([*TINY[:10], "callbacks=none", "trainer.epochs=2", "trainer.steps_per_epoch=3",
                                "runtime.jit_compile=false", f"run.dir={run_dir}", *extra])

    assert trainer.train(config(tmp_path / "whole"))["status"] == "finished"
    # sent after step 3: the boundary before step 4 sees it, step 4 runs, the run stops there
    stopper = f"+callbacks.ctrl_c={{name: {SignalAt.__module__}.SignalAt, step: 3}}"
    with pytest.raises(RunInterrupted, match=r"^interrupted \(Ctrl-C\) at step 4: saved .*ckpt-000000004"):
        trainer.train(config(tmp_path / "resumed", stopper))
    assert sorted(os.listdir(tmp_path / "resumed" / "checkpoints")) == [
        "ckpt-000000004.json", "ckpt-000000004.weights.h5", "fingerprint.json", "latest.json"]
    metrics = trainer.train(config(tmp_path / "resumed"))
    assert metrics["status"] == "finished" and metrics["resumed_from_step"] == 4
    whole, resumed = (keras.saving.load_model(str(tmp_path / name / "export" / "embedding.keras")).get_weights()
                      for name in ("whole", "resumed"))
    for a, b in zip(whole, resumed, strict=True):
        np.testing.assert_array_equal(a, b)


# -- the signal module's rules, in small processes (no TensorFlow) -------------------------------
SIGNALS_SCRIPT = """
import os, signal, sys, time
from trainer import signals

stage = sys.argv[1]
signum = getattr(signal, sys.argv[2])
with signals.handling(on_exit_now=lambda: print("status written", flush=True)):
    try:
        if stage == "outside":  # start-up, evaluation, export: raised where it lands
            os.kill(os.getpid(), signum)
            time.sleep(5)
            print("not interrupted")
        else:  # inside fit: only remembered until the step's end, then raised at the boundary
            with signals.deferred():
                os.kill(os.getpid(), signum)
                time.sleep(0.2)
                print("step finished, pending", signals.pending() == signum, flush=True)
                if stage == "twice":
                    os.kill(os.getpid(), signum)
                    time.sleep(5)
                    print("not exited")
            signals.raise_if_pending()
    except signals.Interrupted as interruption:
        print(f"interrupted {interruption.name} {interruption.exit_code}", flush=True)
        sys.exit(interruption.exit_code)
"""


def run_signals_script(tmp_path, stage, name):
    script = tmp_path / "signals_script.py"
    script.write_text(textwrap.dedent(SIGNALS_SCRIPT))
    return subprocess.run([sys.executable, str(script), stage, name], env=environment(), capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize("name, name_shown, code", [("SIGINT", "Ctrl-C", 130), ("SIGTERM", "SIGTERM", 143)])
@pytest.mark.parametrize("stage", ["outside", "deferred"])
def test_sigint_and_sigterm_stop_the_same_way(tmp_path, stage, name, name_shown, code):
    result = run_signals_script(tmp_path, stage, name)
    assert result.returncode == code, result.stderr
    expected = ([] if stage == "outside" else ["step finished, pending True"]) + [f"interrupted {name_shown} {code}"]
    assert result.stdout.splitlines() == expected
    assert result.stderr == ""


def test_a_second_ctrl_c_exits_at_once_with_one_line(tmp_path):
    result = run_signals_script(tmp_path, "twice", "SIGINT")
    assert result.returncode == 130
    assert result.stdout.splitlines() == ["step finished, pending True", "status written"]
    assert result.stderr.splitlines() == [
        "interrupted again (Ctrl-C): exiting now; the checkpoints saved before stay, rerun the same command to resume"]


def test_the_previous_handlers_come_back_after_a_run():
    from trainer import signals

    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with signals.handling():
        assert signal.getsignal(signal.SIGINT) is not before[0]
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before

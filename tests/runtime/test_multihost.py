"""Several JAX processes, one job (trainer.processes, trainer.launch), on 127.0.0.1 with CPU devices.

Every test starts real processes with gloo CPU collectives; sizes are the smallest that
still shard the Partial FC head over 8 devices (16 identities, 256 rows, batch 16).
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.runtime.test_runtime_processes import TINY, environment, export_weights, metrics

pytestmark = pytest.mark.e2e

# SGD: AdamW divides the rounding noise of that gradient-free bias by its own tiny scale and
# turns it into whole steps (measured: 1.4e-4 whole-model relative error with AdamW, 1.5e-7 with SGD).
SHARDED = [*TINY, "head=partial_fc", "optimizer=sgd"]


def launch(args, cwd, processes=2, devices=4):
    return subprocess.Popen([sys.executable, "-m", "trainer.launch", f"processes={processes}",
                             f"runtime.logical_devices={devices}", *args], cwd=cwd,
                            env=environment(KERAS_BACKEND="jax"), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def single(args, cwd, devices=8):
    return subprocess.Popen([sys.executable, "-m", "trainer", "runtime=jax", f"runtime.logical_devices={devices}",
                             *args], cwd=cwd, env=environment(KERAS_BACKEND="jax"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(process, timeout=900):
    output, _ = process.communicate(timeout=timeout)
    return process.returncode, output


def assert_same_weights(left, right, tolerance=1e-5):
    """Whole-model relative error ||left - right|| / ||right|| over every weight.

    The processes sum gradients in another order than one process does (gloo against
    XLA's in-process all-reduce), so weights agree to rounding, not bitwise. Per tensor the
    check would fail on the neck's dense bias, which BatchNorm makes gradient-free: it
    holds rounding noise only.
    """
    assert left.keys() == right.keys()
    difference = sum(float(((np.asarray(left[k], np.float64) - np.asarray(right[k], np.float64)) ** 2).sum())
                     for k in left)
    size = sum(float((np.asarray(right[k], np.float64) ** 2).sum()) for k in right)
    assert (difference / size) ** 0.5 <= tolerance


def accuracy(run_dir):
    return metrics(run_dir)["final"]["verification"].get("accuracy")


@pytest.mark.parametrize("sample_rate", ["1.0", "0.1"])
def test_two_processes_of_four_devices_train_as_one_process_of_eight(tmp_path, sample_rate):
    args = [*SHARDED, f"head.sample_rate={sample_rate}"]
    both = launch([*args, "run.name=two"], tmp_path)
    one = single([*args, "run.name=one"], tmp_path)
    (code_two, out_two), (code_one, out_one) = finish(both), finish(one)
    assert code_two == 0, out_two[-3000:]
    assert code_one == 0, out_one[-3000:]
    two_dir, one_dir = str(tmp_path / "runs" / "two"), str(tmp_path / "runs" / "one")
    assert_same_weights(export_weights(two_dir), export_weights(one_dir))
    assert accuracy(two_dir) == accuracy(one_dir)
    assert metrics(two_dir)["replicas"] == 8
    # The head's rows are split over the global mesh: each device of 2 x 4 holds what each of 1 x 8 does.
    assert metrics(two_dir)["head_per_device"] == metrics(one_dir)["head_per_device"]
    assert metrics(one_dir)["head_per_device"]["devices"] == 8
    assert "[0] head memory per device:" in out_two
    # One writer of results: process 1 exported nothing, logged into its own folder.
    worker = tmp_path / "runs" / "two" / "workers" / "worker-1"
    assert not (worker / "export").exists() and (worker / "train.log").exists()
    assert "[0] " in out_two and "[1] " in out_two


def test_simclr_on_two_processes_trains_as_on_one(tmp_path):
    # Two augmented views, NT-Xent over the global batch: each process feeds its rows of both views.
    args = [*TINY, "experiment=simclr", "optimizer=sgd", "trainer.epochs=1", "trainer.steps_per_epoch=3",
            "trainer.batch_size=16"]
    both, one = launch([*args, "run.name=two"], tmp_path), single([*args, "run.name=one"], tmp_path)
    (code_two, out_two), (code_one, out_one) = finish(both), finish(one)
    assert code_two == 0, out_two[-3000:]
    assert code_one == 0, out_one[-3000:]
    two_dir, one_dir = str(tmp_path / "runs" / "two"), str(tmp_path / "runs" / "one")
    assert_same_weights(export_weights(two_dir), export_weights(one_dir))
    assert accuracy(two_dir) == accuracy(one_dir)


def wait_for_step(run_dir, process, step, timeout=600):
    deadline = time.monotonic() + timeout
    path = os.path.join(run_dir, "workers", "worker-1", "metrics.json")
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read()[-3000:]
        try:
            with open(path) as f:
                if json.load(f).get("epochs"):
                    return
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"no epoch ended within {timeout} s")


def test_sigterm_to_one_process_stops_both_with_one_checkpoint_and_the_rerun_matches(tmp_path):
    args = [*SHARDED, "head.sample_rate=0.1", "trainer.epochs=2", "trainer.steps_per_epoch=16"]
    # The reference is an uninterrupted 2 × 4 run: over 32 steps rounding differences between
    # 2 × 4 and 1 × 8 grow past 1e-5 (measured 4 % at step 16 with SGD at this toy size), so
    # comparing with 1 × 8 would test that, not resume.
    reference = launch([*args, "run.name=reference"], tmp_path)
    interrupted = launch([*args, "run.name=job"], tmp_path)
    run_dir = str(tmp_path / "runs" / "job")
    wait_for_step(run_dir, interrupted, 3)
    children = subprocess.run(["pgrep", "-f", "runtime.process_id=1", "-P", str(interrupted.pid)],
                              capture_output=True, text=True).stdout.split()
    os.kill(int(children[0]), signal.SIGTERM)  # one host preempted
    code, output = finish(interrupted)
    assert code == 143, output[-3000:]
    assert output.count("interrupted (SIGTERM)") == 2  # both processes, each one line
    saved = sorted(n for n in os.listdir(os.path.join(run_dir, "checkpoints")) if n.endswith(".weights.h5"))
    assert metrics(run_dir)["status"] == "interrupted"
    code, output = finish(launch([*args, "run.name=job"], tmp_path))
    assert code == 0, output[-3000:]
    assert "resumed from" in output and saved
    assert finish(reference)[0] == 0
    assert_same_weights(export_weights(run_dir), export_weights(str(tmp_path / "runs" / "reference")))


def test_a_two_by_four_checkpoint_resumes_on_one_by_eight_and_one_by_four(tmp_path):
    # 2 × 4 trains 2 epochs; its epoch-1 checkpoint, copied alone, resumes on 1 × 8 and 1 × 4,
    # which must end where 2 × 4 ended.
    args = [*SHARDED, "head.sample_rate=0.1", "trainer.epochs=2", "trainer.steps_per_epoch=2"]
    code, output = finish(launch([*args, "run.name=two"], tmp_path))
    assert code == 0, output[-3000:]
    written = os.path.join(tmp_path, "runs", "two", "checkpoints")
    first = sorted(n for n in os.listdir(written) if n.endswith(".weights.h5"))[0]
    for devices in (8, 4):
        target = tmp_path / "runs" / f"on{devices}" / "checkpoints"
        os.makedirs(target)
        for name, copy in ((first, first), (first.replace(".weights.h5", ".json"),) * 2,
                           (first.replace(".weights.h5", ".json"), "latest.json"), ("fingerprint.json",) * 2):
            with open(os.path.join(written, name), "rb") as f, open(target / copy, "wb") as g:
                g.write(f.read())
        code, output = finish(single([*args, f"run.name=on{devices}"], tmp_path, devices=devices))
        assert code == 0 and "resumed from" in output, output[-3000:]
        assert_same_weights(export_weights(str(tmp_path / "runs" / f"on{devices}")),
                            export_weights(str(tmp_path / "runs" / "two")))


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def error_lines(output):
    return [line for line in output.splitlines() if line.startswith("error:")]


def test_process_id_out_of_range_is_one_line(tmp_path):
    code, output = finish(single([*TINY, "runtime.coordinator=127.0.0.1:1", "runtime.num_processes=2",
                                  "runtime.process_id=2"], tmp_path, devices=1), timeout=300)
    assert code == 2
    assert error_lines(output) == ["error: runtime.process_id=2 is out of range: with runtime.num_processes=2 "
                                   "it is one of 0 … 1"]


def test_an_unreachable_coordinator_is_one_line(tmp_path):
    code, output = finish(single([*TINY, f"runtime.coordinator=127.0.0.1:{free_port()}",
                                  "runtime.num_processes=2", "runtime.process_id=1",
                                  "runtime.connect_timeout_s=5"], tmp_path, devices=1), timeout=300)
    assert code == 2
    [line] = error_lines(output)
    assert "was not reachable within 5 s" in line


def test_a_taken_coordinator_port_is_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, output = finish(single([*TINY, f"runtime.coordinator=127.0.0.1:{port}", "runtime.num_processes=2",
                                      "runtime.process_id=0"], tmp_path, devices=1), timeout=300)
    assert code == 2
    [line] = error_lines(output)
    assert f"process 0 cannot listen on port {port}" in line


def test_processes_started_with_different_configs_all_refuse(tmp_path):
    port = free_port()
    started = [single([*TINY, f"trainer.seed={seed}", f"runtime.coordinator=127.0.0.1:{port}",
                       "runtime.num_processes=2", f"runtime.process_id={i}", "run.name=mixed"], tmp_path, devices=1)
               for i, seed in enumerate((1, 2))]
    for process in started:
        code, output = finish(process, timeout=300)
        assert code == 2, output[-3000:]
        [line] = error_lines(output)
        assert "were started with different configs" in line

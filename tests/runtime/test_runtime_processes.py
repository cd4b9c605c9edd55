"""Real processes: SIGTERM/SIGKILL then rerun, two workers over TF_CONFIG, JAX without TensorFlow."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import zipfile
from io import BytesIO

import numpy as np
import pytest

pytestmark = pytest.mark.e2e

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# A few steps of a tiny job on in-memory faces (no TFDS generation, no untrained evaluation).
TINY = ["debug=smoke", "data=memory", "data.image_size=24", "data.train_identities=16",
        "data.images_per_identity=4", "data.test_identities=6", "data.test_images_per_identity=4",
        "eval.pairs=24", "eval.untrained=false", "logger=none"]


def environment(**extra):
    return {**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "3", "WANDB_MODE": "disabled",
            **extra}


def start(args, cwd, **env):
    return subprocess.Popen([sys.executable, "-m", "trainer", *args], cwd=cwd, env=environment(**env),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def run(args, cwd, **env):
    process = start(args, cwd, **env)
    output, _ = process.communicate(timeout=300)
    return process.returncode, output


def metrics(run_dir):
    with open(os.path.join(run_dir, "metrics.json")) as f:
        return json.load(f)


def h5_arrays(handle):
    import h5py

    arrays = {}
    with h5py.File(handle, "r") as f:
        f.visititems(lambda name, obj: arrays.__setitem__(name, obj[()])
                     if isinstance(obj, h5py.Dataset) else None)
    return arrays


def export_weights(run_dir):
    with zipfile.ZipFile(os.path.join(run_dir, "export", "embedding.keras")) as archive:
        return h5_arrays(BytesIO(archive.read("model.weights.h5")))


def wait_for_save(run_dir, step, process, timeout=240):
    latest = os.path.join(run_dir, "checkpoints", "latest.json")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read()[-3000:]
        try:
            with open(latest) as f:
                if json.load(f)["step"] >= step:
                    return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"no checkpoint at step {step} within {timeout} s")


def test_sigterm_then_sigkill_then_rerun_matches_an_uninterrupted_run(tmp_path):
    # 3 epochs x 4 steps; a save every 3 steps lands mid-epoch (steps 3, 6, 9).
    args = [*TINY, "trainer.epochs=3", "trainer.steps_per_epoch=4",
            "callbacks.checkpoint.every_steps=3", "callbacks.checkpoint.keep=10"]
    reference = start([*args, "run.name=reference"], tmp_path)   # runs beside the interrupted one
    run_dir = str(tmp_path / "runs" / "interrupted")

    process = start([*args, "run.name=interrupted"], tmp_path)
    wait_for_save(run_dir, 3, process)
    process.send_signal(signal.SIGTERM)            # preemption: save at the end of the step, exit 143
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 143, output[-3000:]
    assert metrics(run_dir)["status"] == "interrupted"
    saved_at = json.load(open(os.path.join(run_dir, "checkpoints", "latest.json")))
    assert saved_at["step"] >= 3
    assert f"interrupted (SIGTERM) at step {saved_at['step']}: saved runs/interrupted/checkpoints/" in output

    process = start([*args, "run.name=interrupted"], tmp_path)
    wait_for_save(run_dir, saved_at["step"] + 3, process)
    process.kill()                                  # SIGKILL: no chance to save anything
    process.wait(timeout=60)

    code, output = run([*args, "run.name=interrupted"], tmp_path)
    assert code == 0, output[-3000:]
    assert "resumed from" in output
    assert reference.wait(timeout=300) == 0, reference.stdout.read()[-3000:]

    resumed, uninterrupted = metrics(run_dir), metrics(str(tmp_path / "runs" / "reference"))
    assert resumed["status"] == uninterrupted["status"] == "finished"
    assert resumed["steps"] == uninterrupted["steps"] == 12
    assert resumed["optimizer_steps"] == uninterrupted["optimizer_steps"] == 12
    final = "ckpt-000000012.weights.h5"
    ours = h5_arrays(os.path.join(run_dir, "checkpoints", final))
    theirs = h5_arrays(str(tmp_path / "runs" / "reference" / "checkpoints" / final))
    assert ours.keys() == theirs.keys()            # model, optimizer (iterations, momenta), loss state
    for key in ours:
        np.testing.assert_allclose(ours[key], theirs[key], rtol=1e-5, atol=1e-6, err_msg=key)


@pytest.mark.parametrize("data", ["memory", "synthetic_faces"])
def test_every_batch_of_every_epoch_trains_on_several_replicas(tmp_path, data):
    """Under a strategy Keras's pre-fit build took one batch from the training iterator: on
    NumPy sources 2 of 3 steps per epoch ran and the epoch-end checkpoints never came due."""
    args = [*TINY, f"data={data}", "runtime.logical_devices=2", "runtime.jit_compile=false",
            "trainer.epochs=2", "trainer.steps_per_epoch=3", "run.name=replicas"]
    if data == "synthetic_faces":  # the tf.data path: a small rendered set
        args += ["data.test_identities=6"]
    code, output = run(args, tmp_path)
    assert code == 0, output[-3000:]
    run_dir = tmp_path / "runs" / "replicas"
    saved = sorted(p.name for p in (run_dir / "checkpoints").glob("ckpt-*.json"))
    assert saved == ["ckpt-000000003.json", "ckpt-000000006.json"], saved  # each epoch end, at 3 steps
    assert (metrics(run_dir)["steps"], metrics(run_dir)["optimizer_steps"]) == (6, 6)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_workers_over_tf_config_end_with_identical_weights(tmp_path):
    cluster = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    args = [*TINY, "runtime=multiworker", "runtime.jit_compile=false", "trainer.steps_per_epoch=3",
            "run.name=cluster", "callbacks.checkpoint.every_seconds=0"]
    workers = [start(args, tmp_path, TF_CONFIG=json.dumps(
        {"cluster": {"worker": cluster}, "task": {"type": "worker", "index": index}}))
        for index in range(2)]
    outputs = [worker.communicate(timeout=300)[0] for worker in workers]
    for worker, output in zip(workers, outputs):
        assert worker.returncode == 0, output[-3000:]
    chief_dir = str(tmp_path / "runs" / "cluster")
    other_dir = os.path.join(chief_dir, "workers", "worker-1")
    assert metrics(chief_dir)["replicas"] == 2 and metrics(other_dir)["status"] == "finished"
    chief, other = export_weights(chief_dir), export_weights(other_dir)
    trainable = [k for k in chief if "batch_normalization" not in k and "features" not in k]
    assert len(trainable) > 4
    for key in trainable:  # all-reduced gradients: the same weights bit for bit
        np.testing.assert_array_equal(chief[key], other[key], err_msg=key)
    assert not os.path.exists(os.path.join(other_dir, "checkpoints"))  # only the chief saves


BLOCK_TENSORFLOW = """
import runpy, sys
class BlockTensorFlow:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "tensorflow_datasets", "tf_keras"):
            raise ImportError(name + " is blocked by this test")
sys.meta_path.insert(0, BlockTensorFlow())
sys.argv = ["trainer", *sys.argv[1:]]
runpy.run_module("trainer", run_name="__main__", alter_sys=True)
"""


def test_jax_trains_without_tensorflow_installed(tmp_path):
    (tmp_path / "no_tf.py").write_text(BLOCK_TENSORFLOW)
    # Two CPU devices: keras.distribution.DataParallel really splits the batch.
    process = subprocess.run(
        [sys.executable, "no_tf.py", *TINY, "runtime=jax", "run.name=jax"], cwd=tmp_path,
        env=environment(KERAS_BACKEND="jax", XLA_FLAGS="--xla_force_host_platform_device_count=2"),
        capture_output=True, text=True, timeout=300)
    assert process.returncode == 0, (process.stdout + process.stderr)[-3000:]
    result = metrics(str(tmp_path / "runs" / "jax"))
    assert result["status"] == "finished" and result["replicas"] == 2
    assert result["versions"]["keras_backend"] == "jax"
    assert result["final"]["verification"]["pairs"] > 0
    assert f"final verification (heldout): accuracy {result['final']['verification']['accuracy']:.4f}" \
        in process.stdout
    assert (tmp_path / "runs" / "jax" / "export" / "embedding.keras").exists()

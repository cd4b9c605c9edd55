"""No framework callback makes the host wait for the device at a step boundary.

The rule (``trainer.callbacks.base``): per-step work happens at ``on_train_batch_begin``
on positions counted on the host; a batch-end hook exists only where a step's logs must
be read, and is ``async_safe``. Checked on every callback class the project defines
(found, not listed), on the runner's whole list for a job, and by watching a real job
under JAX: Keras ran every batch-end hook off the training thread, and the training
state was written back to the variables only where the job needed it (epoch ends,
saves), not at every step.
"""

import importlib
import json
import os
import subprocess
import sys

import keras
import pytest

from trainer.callbacks.base import per_step_waits

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACKAGES = ("trainer", "loops", "models", "losses", "augment")
# A batch-end hook that must stay on the training thread, and why.
WAITS_BY_DESIGN = {
    # skip mode reads the optimizer's loss scale after each step (documented in its module)
    "NanGuard": "on_nan=skip",
    # Keras's own TensorBoard callback (TensorFlow only, where Keras never dispatches asynchronously)
    "TensorBoard": "keras",
}


def project_callback_classes():
    # The source files themselves: a package's search path also holds the commands' folder
    # (`python -m trainer.<command>`), whose modules must not be imported under those names.
    # Commands are applications (their callbacks live in the core); the test harness's replica
    # module configures devices when imported.
    for package in PACKAGES:
        root = os.path.join(REPO, package)
        for folder, subfolders, files in os.walk(root):
            subfolders[:] = [d for d in subfolders if d not in ("commands", "testing", "__pycache__")]
            for name in files:
                if not name.endswith(".py") or name == "__main__.py":
                    continue
                relative = os.path.relpath(os.path.join(folder, name), REPO)[:-3].replace(os.sep, ".")
                try:
                    importlib.import_module(relative.removesuffix(".__init__"))
                except ImportError:  # an optional extra (wandb, optuna, onnx) that is not installed
                    continue
    found, pending = set(), list(keras.callbacks.Callback.__subclasses__())
    while pending:
        kind = pending.pop()
        if kind not in found:
            found.add(kind)
            pending.extend(kind.__subclasses__())
    return sorted((k for k in found if k.__module__.split(".")[0] in PACKAGES), key=lambda k: k.__qualname__)


@pytest.mark.parametrize("kind", project_callback_classes(), ids=lambda k: k.__qualname__)
def test_no_project_callback_waits_for_every_step(kind):
    ends = [hook for hook in ("on_batch_end", "on_train_batch_end")
            if getattr(kind, hook) is not getattr(keras.callbacks.Callback, hook)]
    if not ends or kind.__name__ in WAITS_BY_DESIGN:
        return
    assert "async_safe" in dir(kind), (
        f"{kind.__qualname__} has {ends[0]}: move its work to on_train_batch_begin, or mark it async_safe "
        "if it only reads the logs (trainer/callbacks/base.py)")


def test_the_detector_names_a_blocking_callback_and_passes_the_others():
    class ReadsLogs(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            pass

    class ReadsLogsOffThread(ReadsLogs):
        async_safe = True

    class AtBegin(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            pass

    assert per_step_waits([ReadsLogs(), ReadsLogsOffThread(), AtBegin()]) == ["ReadsLogs"]
    from trainer.callbacks.nan_guard import NanGuard

    assert per_step_waits([NanGuard("run", on_nan="stop")]) == []
    assert per_step_waits([NanGuard("run", on_nan="skip")]) == ["NanGuard"]


@pytest.fixture(scope="module")
def watched_job(tmp_path_factory):
    pytest.importorskip("jax")
    run_dir = tmp_path_factory.mktemp("jax") / "run"
    env = {**os.environ, "PYTHONPATH": REPO, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu",
           "TF_CPP_MIN_LOG_LEVEL": "3", "WANDB_MODE": "disabled"}
    done = subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "step_boundaries_worker.py"),
                           str(run_dir), "callbacks.checkpoint.every_steps=3"],
                          capture_output=True, text=True, timeout=600, env=env, cwd=REPO)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    return json.loads(lines[-1]), done.stdout


@pytest.mark.e2e
def test_a_jax_job_never_waits_for_a_step_on_the_training_thread(watched_job):
    result, stdout = watched_job
    assert result["status"] == "finished" and result["steps"] == 16
    assert result["threads"] == ["worker"]  # every batch-end hook ran off the training thread
    assert "waits for the device at every step" not in stdout
    # written back at the 2 epoch ends and the 4 mid-epoch saves (steps 3, 6, 9, 12, 15 less
    # none at an epoch end), never once per step
    assert result["syncs"] <= 2 + 5 < 16


@pytest.mark.e2e
def test_a_jax_job_saves_at_the_configured_steps(watched_job):
    result, _ = watched_job
    # every 3 steps mid-epoch and at both epoch ends (8, 16); `keep: 2` leaves the newest two
    assert result["checkpoints"] == ["ckpt-000000015.weights.h5", "ckpt-000000016.weights.h5"]


def test_a_periodic_callback_without_its_work_is_refused_when_built():
    from trainer.callbacks.base import EveryNSteps

    class Forgot(EveryNSteps):
        pass

    with pytest.raises(TypeError, match="evaluate"):
        Forgot()

"""A run directory never lies and never loses work: reruns, a second writer, kills, bad state.

Each test reproduces a case that lost or misreported work before (issue: reruns overwrote a
finished run with an untrained model; a typo in trainer.resume restarted from scratch; killed
saves left temporaries; a truncated checkpoint stopped the run; NaN state was called good).
"""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

import trainer
from trainer.io import write_json
from trainer.callbacks.checkpoint import Checkpoint, restorable_checkpoint
from trainer.registry import ConfigError
from trainer.run import AlreadyFinished, RunFailed, check_final_model
from trainer.run_dir import RunDirectoryBusy, RunLock

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMOKE = ["debug=smoke", "eval.pairs=32"]


# Whole training jobs or subprocesses: the end-to-end tier.
pytestmark = pytest.mark.e2e


def job(run_dir, *overrides):
    return trainer.compose([*SMOKE, f"run.dir={run_dir}", *overrides])


def digest(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def embeddings_of(path):
    model = keras.saving.load_model(str(path))
    images = np.random.default_rng(1).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    return np.asarray(model(images))


def mark_unfinished(run_dir):
    """What a SIGKILL during the final evaluation leaves: status running, no export."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics["status"] = "running"
    metrics.pop("final", None)
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    for name in os.listdir(run_dir / "export"):
        os.remove(run_dir / "export" / name)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("finished") / "a"
    metrics = trainer.train(job(run_dir, "trainer.epochs=2"))
    assert metrics["status"] == "finished"
    return run_dir, metrics


def test_rerunning_a_finished_run_changes_nothing(finished_run):
    run_dir, _ = finished_run
    before = {name: digest(run_dir / name) for name in ("metrics.json", "export/embedding.keras", "config.yaml")}
    with pytest.raises(AlreadyFinished, match="already holds a finished run"):
        trainer.train(job(run_dir, "trainer.epochs=2"))
    assert before == {name: digest(run_dir / name) for name in before}


def test_killed_during_final_evaluation_resumes_with_the_trained_weights(finished_run, tmp_path):
    import shutil

    source, metrics = finished_run
    run_dir = tmp_path / "a"
    shutil.copytree(source, run_dir)
    expected = embeddings_of(source / "export" / "embedding.keras")
    mark_unfinished(run_dir)
    again = trainer.train(job(run_dir, "trainer.epochs=2"))
    assert again["status"] == "finished"
    assert again["final"]["verification"]["accuracy"] == metrics["final"]["verification"]["accuracy"]
    # the steps the restored weights were trained for, as the uninterrupted run reported them
    assert (again["steps"], again["optimizer_steps"]) == (metrics["steps"], metrics["optimizer_steps"])
    np.testing.assert_allclose(embeddings_of(run_dir / "export" / "embedding.keras"), expected, atol=1e-5)


def test_a_second_writer_is_refused_with_the_holder_named(tmp_path):
    run_dir = tmp_path / "busy"
    with RunLock(str(run_dir)):
        with pytest.raises(RunDirectoryBusy, match=f"in use by process {os.getpid()}"):
            trainer.train(job(run_dir))
    assert not (run_dir / "metrics.json").exists()  # nothing written by the refused job


def test_a_dead_process_lock_is_taken_over(tmp_path):
    run_dir = tmp_path / "stale"
    run_dir.mkdir()
    (run_dir / ".lock").write_text("process 999999 on elsewhere since 2020-01-01\n")
    with RunLock(str(run_dir)) as lock:  # no live flock behind the file: free
        assert f"process {os.getpid()}" in open(lock.path).read()


def dead_pid() -> int:
    """The id of a process that has ended (a temporary's writer killed before it finished)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_the_lock_survives_its_folder_being_deleted(tmp_path):
    import shutil

    run_dir = tmp_path / "deleted"
    with RunLock(str(run_dir)):
        shutil.rmtree(run_dir)  # a user removes the folder while the job runs
        with pytest.raises(RunDirectoryBusy, match=f"in use by process {os.getpid()}"):
            trainer.train(job(run_dir))  # the same command again: refused, not a second writer
    with RunLock(str(run_dir)):  # released with the job
        pass


def test_only_temporaries_of_dead_writers_are_removed(tmp_path):
    from trainer.run_dir import remove_leftover_temporaries

    living = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / "checkpoints").mkdir()
        kept = [tmp_path / f".tmp-{living.pid}-metrics.json",  # a writer still at work (another job)
                tmp_path / "checkpoints" / f".tmp-{os.getpid()}-ckpt-000000003.weights.h5",  # this process's
                tmp_path / ".tmp-unnamed-metrics.json"]  # no writer named: not known to be dead
        removed = tmp_path / "checkpoints" / f".tmp-{dead_pid()}-ckpt-000000003.weights.h5"
        for path in [*kept, removed]:
            path.write_text("half")
        assert remove_leftover_temporaries(str(tmp_path)) == [str(removed)]
        assert all(path.exists() for path in kept)
    finally:
        living.kill()
        living.wait()


def test_a_misspelt_resume_is_one_line_before_any_work(tmp_path):
    run_dir = tmp_path / "typo"
    with pytest.raises(ConfigError, match=r"trainer.resume='atuo' is not auto, never or an existing"):
        trainer.train(job(run_dir, "trainer.resume=atuo"))
    assert not run_dir.exists()


def test_resume_never_keeps_and_resume_from_a_path_continues(finished_run, tmp_path):
    source, _ = finished_run
    run_dir = tmp_path / "fresh"
    (run_dir / "checkpoints").mkdir(parents=True)
    old = run_dir / "checkpoints" / "ckpt-000000999.weights.h5"
    old.write_bytes((source / "checkpoints" / "ckpt-000000006.weights.h5").read_bytes())
    assert trainer.train(job(run_dir, "trainer.resume=never"))["status"] == "finished"
    assert old.exists()  # another run's checkpoint is never pruned

    from_path = tmp_path / "from_path"
    metrics = trainer.train(job(from_path, "trainer.epochs=3",
                                f"trainer.resume={source / 'checkpoints' / 'ckpt-000000003.weights.h5'}"))
    assert metrics["status"] == "finished" and metrics["resumed_from_step"] == 3
    assert metrics["optimizer_steps"] == 9


def test_leftover_temporaries_are_removed_and_a_truncated_checkpoint_falls_back(finished_run, tmp_path, capsys):
    import shutil

    source, _ = finished_run
    run_dir = tmp_path / "b"
    shutil.copytree(source, run_dir)
    mark_unfinished(run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics["epochs"] = metrics["epochs"][:1]
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    dead = dead_pid()
    leftovers = [run_dir / f".tmp-{dead}-metrics.json", run_dir / "checkpoints" / f".tmp-{dead}-ckpt-000000009.weights.h5"]
    for path in leftovers:
        path.write_text("half")
    newest = run_dir / "checkpoints" / "ckpt-000000006.weights.h5"
    newest.write_bytes(newest.read_bytes()[:1000])  # a truncated copy
    assert restorable_checkpoint(str(run_dir / "checkpoints"))["step"] == 3

    again = trainer.train(job(run_dir, "trainer.epochs=2"))
    assert again["status"] == "finished" and again["resumed_from_step"] == 3
    assert "is unreadable (truncated or corrupt); falling back" in capsys.readouterr().out
    assert not any(path.exists() for path in leftovers)


def test_a_checkpoint_with_non_finite_state_is_not_written(tmp_path):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2), keras.layers.BatchNormalization()])
    model.compile(optimizer="adam", loss="mse")
    model.fit(np.ones((4, 4)), np.ones((4, 2)), verbose=0)
    checkpoint = Checkpoint(str(tmp_path))
    checkpoint.set_model(model)
    assert checkpoint.save(1, 0, 1) is not None
    model.layers[1].moving_variance.assign(np.full((2,), np.inf, "float32"))
    assert checkpoint.save(1, 1, 2) is None
    assert sorted(os.listdir(tmp_path / "checkpoints")) == [
        "ckpt-000000001.json", "ckpt-000000001.weights.h5", "latest.json"]


def test_a_model_with_zero_or_non_finite_embeddings_fails_the_run():
    class Job:
        pass

    zero = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(),
                             keras.layers.Dense(4, kernel_initializer="zeros")])
    Job.loop = type("Loop", (), {"embedding_model": zero})
    with pytest.raises(RunFailed, match="embeddings are not finite or are zero"):
        check_final_model(Job)
    zero.layers[-1].kernel.assign(np.full((192, 4), np.nan, "float32"))
    with pytest.raises(RunFailed, match="is not finite"):
        check_final_model(Job)


def test_metrics_json_is_strict(tmp_path):
    path = tmp_path / "metrics.json"
    write_json(str(path), {"loss": float("nan"), "scale": np.float32("inf"), "ok": [1.5, float("-inf")]})

    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    assert json.loads(path.read_text(), parse_constant=refuse) == {"loss": None, "scale": None, "ok": [1.5, None]}


@pytest.mark.e2e
def test_sigterm_during_start_up_records_interrupted(tmp_path):
    """SIGTERM while the data set is generated: exit 143 and status interrupted, not running."""
    env = {**os.environ, "PYTHONPATH": REPO, "TFDS_DATA_DIR": str(tmp_path / "tfds")}
    process = subprocess.Popen([sys.executable, "-m", "trainer", "run.name=s", "data.train_identities=400",
                                "logger=none"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    metrics_path = tmp_path / "runs" / "s" / "metrics.json"
    deadline = time.time() + 120
    while not metrics_path.exists() and time.time() < deadline:  # the job has started
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr[-2000:]
    assert json.loads(metrics_path.read_text())["status"] == "interrupted"
    assert "interrupted" in stderr and "Traceback" not in stderr


def corrupt_folder(root):
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(12):
        (root / f"p{i:02d}").mkdir(parents=True)
        for j in range(3):
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(root / f"p{i:02d}" / f"{j}.png")
    bad = root / "p09" / "2.png"
    bad.write_bytes(bad.read_bytes()[:40])  # truncated: passes the first-records preflight, fails mid-epoch
    return root


@pytest.mark.parametrize("on_corrupt", ["stop", "skip"])
def test_corrupt_data_is_one_line_or_counted(on_corrupt, tmp_path):
    root = corrupt_folder(tmp_path / "people")
    cfg = trainer.compose(["data=folder", f"data.path={root}", "data.image_size=16", "data.holdout=0",
                           f"data.on_corrupt={on_corrupt}", "trainer.batch_size=8", "trainer.epochs=1",
                           "logger=none", "eval=verification", "eval.pairs=10", f"run.dir={tmp_path / 'run'}"])
    if on_corrupt == "stop":
        with pytest.raises(RunFailed) as failure:
            trainer.train(cfg)
        assert str(failure.value).startswith("corrupt record") and "p09/2.png" in str(failure.value)
        assert "\n" not in str(failure.value)
        return
    metrics = trainer.train(cfg)
    assert metrics["corrupt_records"]["count"] == 1
    assert metrics["corrupt_records"]["records"][0]["file"].endswith("p09/2.png")


def test_a_misspelt_resume_changes_is_one_line_before_any_work():
    with pytest.raises(ConfigError, match=r"^trainer.resume_changes='alow' is not refuse or allow$"):
        trainer.compose([*SMOKE, "trainer.resume_changes=alow"])


def test_a_rerun_that_changes_loss_or_optimizer_is_refused_before_training(finished_run, tmp_path):
    import shutil

    source, _ = finished_run
    run_dir = tmp_path / "changed"
    shutil.copytree(source, run_dir)
    mark_unfinished(run_dir)
    saved, config = sorted(os.listdir(run_dir / "checkpoints")), digest(run_dir / "config.yaml")
    with pytest.raises(ConfigError) as refused:  # the epoch count may change: it is not named
        trainer.train(job(run_dir, "trainer.epochs=3", "loss=cosface", "optimizer=sgd"))
    line = str(refused.value)
    assert line.startswith(f"resume refused: the checkpoint in {run_dir / 'checkpoints'} was trained with "
                           "other settings: ") and "\n" not in line
    assert "loss.name (arcface -> cosface)" in line and "optimizer.name (adamw -> sgd)" in line
    assert "trainer.epochs" not in line and line.endswith("trainer.resume_changes=allow")
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == f"failed: {line}"
    assert sorted(os.listdir(run_dir / "checkpoints")) == saved  # nothing trained, nothing written
    assert digest(run_dir / "config.yaml") == config  # it still says what the checkpoints were trained with

    accepted = trainer.train(job(run_dir, "trainer.epochs=3", "loss=cosface", "trainer.resume_changes=allow"))
    assert accepted["status"] == "finished" and accepted["resumed_from_step"] == 6
    assert {"loss.name", "loss.margin"} <= set(accepted["resume_changes_accepted"])


def faces_folder(root, identities=12, images=3):
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(identities):
        (root / f"p{i:02d}").mkdir(parents=True)
        for j in range(images):
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(root / f"p{i:02d}" / f"{j}.png")
    return root


def folder_job(root, run_dir, *overrides):
    return trainer.compose(["data=folder", f"data.path={root}", "data.image_size=16", "data.holdout=0",
                            "trainer.batch_size=8", "trainer.epochs=1", "logger=none", "eval=verification",
                            "eval.pairs=10", f"run.dir={run_dir}", *overrides])


def test_photos_moved_to_other_identities_are_refused_on_resume(tmp_path):
    root = faces_folder(tmp_path / "people")
    run_dir = tmp_path / "run"
    assert trainer.train(folder_job(root, run_dir))["status"] == "finished"
    mark_unfinished(run_dir)
    # each person's photos moved into the next person's folder: same names, same counts
    os.rename(root / "p11", root / "moved")
    for i in range(10, -1, -1):
        os.rename(root / f"p{i:02d}", root / f"p{i + 1:02d}")
    os.rename(root / "moved", root / "p00")
    with pytest.raises(ConfigError, match=r"other settings: data\.sample \("):
        trainer.train(folder_job(root, run_dir, "trainer.epochs=2"))


def test_a_run_whose_optimizer_never_stepped_fails(tmp_path):
    root = faces_folder(tmp_path / "people")
    for path in root.glob("*/*.png"):
        path.write_bytes(path.read_bytes()[:40])  # every training image undecodable
    run_dir = tmp_path / "run"
    with pytest.raises(RunFailed) as failure:
        trainer.train(folder_job(root, run_dir, "data.on_corrupt=skip"))
    assert str(failure.value) == ("the optimizer never stepped: all 36 training images read were skipped as "
                                  "corrupt (data.on_corrupt=skip); nothing was trained, so nothing is evaluated "
                                  "or exported")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == f"failed: {failure.value}" and metrics["optimizer_steps"] == 0
    assert not (run_dir / "export" / "embedding.keras").exists()

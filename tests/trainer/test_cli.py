"""The command line end to end (in subprocesses, as users run it)."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

pytestmark = pytest.mark.e2e


def read_metrics(run_dir):
    with open(os.path.join(run_dir, "metrics.json")) as f:
        return json.load(f)


def test_smoke_job_leaves_a_complete_run_directory(run_cli, tmp_path):
    result = run_cli("debug=smoke", "run.name=smoke")
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "runs" / "smoke"
    metrics = read_metrics(run_dir)
    assert metrics["status"] == "finished"
    final = metrics["final"]["verification"]
    # the number on the console is the one recorded, on the pairs asked for (eval.pairs=64 each way)
    assert f"final verification (heldout): accuracy {final['accuracy']:.4f}" in result.stdout
    assert final["pairs"] == 128 and final["accuracy"] == metrics["final"]["verification"]["accuracy"]
    assert metrics["git_commit"] and metrics["versions"]["keras"] == keras.__version__
    assert metrics["epochs"][0]["epoch"] == 1 and np.isfinite(metrics["epochs"][0]["loss"])
    assert (run_dir / "config.yaml").exists() and (run_dir / ".hydra" / "overrides.yaml").exists()
    assert (run_dir / "checkpoints" / "latest.json").exists()

    # The export is image in, unit-length embedding out, and loads with plain Keras in a
    # fresh interpreter: no custom objects, no framework import.
    check = (
        "import keras, numpy as np\n"
        f"model = keras.saving.load_model({str(run_dir / 'export' / 'embedding.keras')!r})\n"
        "images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype('float32')\n"
        "e = np.asarray(model(images))\n"
        "print(np.round(np.linalg.norm(e, axis=1), 5).tolist(), e.shape)\n")
    loaded = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True,
                            timeout=300, cwd=tmp_path)
    assert loaded.stdout.strip().splitlines()[-1] == "[1.0, 1.0, 1.0, 1.0] (4, 512)", loaded.stderr[-2000:]


@pytest.mark.parametrize("argument,expected", [
    ("loss=arcfce", "did you mean 'arcface'"),
    ("loss.margn=0.3", "did you mean 'margin'"),
])
def test_mistakes_exit_non_zero_with_one_line(run_cli, argument, expected):
    result = run_cli(argument, timeout=120)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: ") and expected in lines[-1]
    assert "Traceback" not in result.stderr


def test_data_dir_that_is_a_file_is_one_line_and_leaves_no_run(run_cli, tmp_path):
    not_a_folder = tmp_path / "data.txt"
    not_a_folder.write_text("not a folder")
    result = run_cli("debug=smoke", "run.name=bad", f"data.data_dir={not_a_folder}", timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: data.data_dir={not_a_folder} is a file, not a folder; "
        "point it at a folder for the generated data set")
    # refused before its work started: no run folder is left to look finished or to resume
    assert not (tmp_path / "runs" / "bad").exists()


def test_nan_loss_names_the_step_and_the_run_is_not_finished(run_cli, tmp_path):
    result = run_cli("debug=smoke", "run.name=nan", "optimizer.lr=1e30", "logger=none", timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the arcface loss became nan at step "), last
    assert "Traceback" not in result.stderr
    assert read_metrics(tmp_path / "runs" / "nan")["status"].startswith("failed: the arcface loss")

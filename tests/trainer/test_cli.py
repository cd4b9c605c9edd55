"""The command line end to end (in subprocesses, as users run it)."""

import json
import os

import keras
import numpy as np
import pytest

pytestmark = pytest.mark.slow


def read_metrics(run_dir):
    with open(os.path.join(run_dir, "metrics.json")) as f:
        return json.load(f)


def test_smoke_job_leaves_a_complete_run_directory(run_cli, tmp_path):
    result = run_cli("debug=smoke", "run.name=smoke")
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "runs" / "smoke"
    metrics = read_metrics(run_dir)
    assert metrics["status"] == "finished"
    assert 0.0 <= metrics["final"]["verification"]["accuracy"] <= 1.0
    assert metrics["git_commit"] and metrics["versions"]["keras"] == keras.__version__
    assert metrics["epochs"][0]["epoch"] == 1 and np.isfinite(metrics["epochs"][0]["loss"])
    assert (run_dir / "config.yaml").exists() and (run_dir / ".hydra" / "overrides.yaml").exists()
    assert (run_dir / "checkpoints" / "latest.json").exists()

    # The export is image in, unit-length embedding out, and loads with plain Keras.
    model = keras.saving.load_model(run_dir / "export" / "embedding.keras")
    images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    embeddings = np.asarray(model(images))
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    assert np.asarray(model(images)).tolist() == embeddings.tolist()


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


def test_missing_data_is_one_line_and_the_run_is_not_marked_finished(run_cli, tmp_path):
    result = run_cli("debug=smoke", "run.name=bad", "data.data_dir=/nonexistent/place", timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    metrics = read_metrics(tmp_path / "runs" / "bad")
    assert metrics["status"].startswith("failed")

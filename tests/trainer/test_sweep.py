"""--multirun sweeps: the Optuna preset maximises the jobs' held-out verification accuracy."""

import glob
import json
import os

import pytest
import yaml

pytestmark = pytest.mark.slow


def test_optuna_sweep_maximises_heldout_accuracy(run_cli, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    result = run_cli("--multirun", "sweep=optuna", "debug=smoke", "hydra.sweeper.n_trials=2",
                     "logger=none", "callbacks=none", timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep_dir,) = glob.glob(str(tmp_path / "runs" / "multirun" / "*"))
    accuracies = []
    for trial in ("0", "1"):
        with open(os.path.join(sweep_dir, trial, "metrics.json")) as f:
            metrics = json.load(f)
        assert metrics["status"] == "finished"
        accuracies.append(metrics["final"]["verification"]["accuracy"])
    with open(os.path.join(sweep_dir, "optimization_results.yaml")) as f:
        best = yaml.safe_load(f)
    assert best["best_value"] == pytest.approx(max(accuracies))
    assert set(best["best_params"]) == {"optimizer.lr", "loss.scale", "loss.margin"}

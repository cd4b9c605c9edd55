"""--multirun sweeps: the Optuna preset maximises the jobs' held-out verification accuracy, prunes
trials from per-epoch accuracy, and a rerun resumes the study stored in the sweep folder."""

import json
import os

import pytest
import yaml

optuna = pytest.importorskip("optuna")

from trainer import sweep  # noqa: E402

SMOKE = ["--multirun", "sweep=optuna", "debug=smoke", "logger=none", "callbacks=none", "trainer.epochs=2"]
# A pruner that stops every trial at its first report: accuracy is never above 1.
PRUNE_ALL = ["sweep/pruner@pruner=none", "hydra.sweeper.pruner._target_=optuna.pruners.ThresholdPruner",
             "+hydra.sweeper.pruner.lower=1.01"]


def test_search_space_from_config_and_command_line():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = sweep.flatten({"optimizer": {"lr": "tag(log, interval(0.0003, 0.03))"},
                            "loss.scale": "choice(16.0, 32.0)", "loss.margin": "interval(0.1, 0.5)",
                            "trainer.epochs": "tag(int, interval(1, 4))"})
    space, fixed = sweep.search_space(params, ["debug=smoke", "loss.margin=0.2,0.3", "trainer.seed=range(0,3)"],
                                      OverridesParser.create())
    assert fixed == ["debug=smoke"]
    assert space["optimizer.lr"] == optuna.distributions.FloatDistribution(0.0003, 0.03, log=True)
    assert space["loss.scale"] == optuna.distributions.CategoricalDistribution([16.0, 32.0])
    assert space["loss.margin"] == optuna.distributions.CategoricalDistribution([0.2, 0.3])  # the command line wins
    assert space["trainer.epochs"] == optuna.distributions.IntDistribution(1, 4)
    assert space["trainer.seed"] == optuna.distributions.CategoricalDistribution([0, 1, 2])
    from trainer.registry import ConfigError

    with pytest.raises(ConfigError, match="not a search space"):
        sweep.search_space({"loss.margin": "0.3"}, [], OverridesParser.create())


def test_no_trial_outside_a_sweep():
    assert sweep.active_trial() is None


def trial_metrics(sweep_dir, number):
    with open(os.path.join(sweep_dir, str(number), "metrics.json")) as f:
        return json.load(f)


@pytest.mark.e2e
def test_pruned_sweep_resumes_from_its_sqlite_study(run_cli, tmp_path):
    result = run_cli(*SMOKE, *PRUNE_ALL, "hydra.sweeper.n_trials=2", timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    sweep_dir = tmp_path / "runs" / "sweeps" / "facetrain"
    storage = f"sqlite:///{sweep_dir / 'optuna.db'}"
    study = optuna.load_study(study_name="facetrain", storage=storage)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.PRUNED] * 2
    for trial in study.trials:
        # Pruned after its first epoch (of two), on the held-out accuracy of that epoch.
        assert list(trial.intermediate_values) == [1]
        assert 0.0 < trial.intermediate_values[1] < 1.0
        assert trial_metrics(sweep_dir, trial.number)["status"] == "pruned"

    # The same command with more trials and no pruning continues the study: one new trial.
    result = run_cli(*SMOKE, "sweep/pruner@pruner=none", "hydra.sweeper.n_trials=3", timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    study = optuna.load_study(study_name="facetrain", storage=storage)
    states = [t.state for t in study.trials]
    assert states == [optuna.trial.TrialState.PRUNED] * 2 + [optuna.trial.TrialState.COMPLETE]
    metrics = trial_metrics(sweep_dir, 2)
    assert metrics["status"] == "finished"
    assert study.trials[2].value == metrics["final"]["verification"]["accuracy"]
    assert study.trials[2].intermediate_values[2] == pytest.approx(study.trials[2].value)
    with open(sweep_dir / "optimization_results.yaml") as f:
        best = yaml.safe_load(f)
    assert best["best_value"] == pytest.approx(study.trials[2].value)
    assert set(best["best_params"]) == {"optimizer.lr", "loss.scale", "loss.margin"}
    assert best["trials"]["pruned"] == 2 and best["trials"]["complete"] == 1
    # Trials sample new points: the resumed sampler knows the pruned ones.
    assert study.trials[2].params != study.trials[0].params

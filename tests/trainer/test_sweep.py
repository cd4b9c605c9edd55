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
    (sweep_dir,) = (tmp_path / "runs" / "sweeps").iterdir()  # named after the study
    storage = f"sqlite:///{sweep_dir / 'optuna.db'}"
    study = optuna.load_study(study_name=sweep_dir.name, storage=storage)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.PRUNED] * 2
    for trial in study.trials:
        # Pruned after its first epoch (of two), on the held-out accuracy of that epoch.
        assert list(trial.intermediate_values) == [1]
        assert 0.0 < trial.intermediate_values[1] < 1.0
        assert trial_metrics(sweep_dir, trial.number)["status"] == "pruned"

    # The same command with more trials and no pruning continues the study: one new trial.
    result = run_cli(*SMOKE, "sweep/pruner@pruner=none", "hydra.sweeper.n_trials=3", timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resuming study '{sweep_dir.name}': 2 of 3 trials done, 1 left" in result.stdout
    study = optuna.load_study(study_name=sweep_dir.name, storage=storage)
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


def test_the_study_is_named_after_its_base_config_not_its_swept_values():
    from omegaconf import OmegaConf

    space = {"optimizer.lr": optuna.distributions.FloatDistribution(0.001, 0.1, log=True)}

    def config(lr=0.003, epochs=12, run_dir=None):
        return OmegaConf.create({"optimizer": {"name": "adamw", "lr": lr}, "trainer": {"epochs": epochs},
                                 "run": {"dir": run_dir}, "hydra": {"sweep": {"dir": "anywhere"}}})

    name = sweep.derived_study_name(config(), space)
    assert name.startswith("facetrain-") and len(name) == len("facetrain-") + 8
    assert sweep.derived_study_name(config(lr=0.01, run_dir="elsewhere"), space) == name
    assert sweep.derived_study_name(config(epochs=3), space) != name  # another base config
    wider = {"optimizer.lr": optuna.distributions.FloatDistribution(0.0001, 0.1, log=True)}
    assert sweep.derived_study_name(config(), wider) != name  # another search space


def test_the_trial_table_lists_every_trial_and_the_best(tmp_path):
    from trainer.sweep_report import TABLE, write_table

    study = optuna.create_study(direction="maximize")
    for value in (0.8, 0.9, None):
        trial = study.ask({"optimizer.lr": optuna.distributions.FloatDistribution(0.001, 0.1)})
        state = optuna.trial.TrialState.COMPLETE if value else optuna.trial.TrialState.PRUNED
        study.tell(trial, value, state=state)
    table = write_table(study, str(tmp_path))
    lines = table.splitlines()
    assert lines[0].split() == ["trial", "state", "value", "optimizer.lr"]
    assert [line.split()[:3] for line in lines[1:4]] == [["0", "complete", "0.8"], ["1", "complete", "0.9"],
                                                          ["2", "pruned", "-"]]
    assert lines[-1].startswith("best: trial 1, value 0.9 (optimizer.lr=")
    assert (tmp_path / TABLE).read_text() == table + "\n"


@pytest.mark.e2e
def test_a_sweep_of_a_changed_base_config_runs_its_own_trials(run_cli, tmp_path):
    """Rerunning with another base config is a new study in a new folder: it trains, and says so."""
    tiny = ["--multirun", "sweep=optuna", "sweep/pruner@pruner=none", "debug=smoke", "logger=none",
            "callbacks=none", "data=memory", "data.train_identities=12", "data.test_identities=8",
            "data.image_size=24", "eval.pairs=16", "hydra.sweeper.n_trials=1"]
    first = run_cli(*tiny, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    changed = run_cli(*tiny, "neck.embedding_dim=16", timeout=900)
    assert changed.returncode == 0, changed.stderr[-3000:]
    folders = sorted((tmp_path / "runs" / "sweeps").iterdir())
    assert len(folders) == 2 and all(f.name.startswith("facetrain-") for f in folders)
    for folder, result in zip(folders, (first, changed) if folders[0].name in first.stdout else (changed, first)):
        assert trial_metrics(folder, 0)["status"] == "finished"
        assert f"study '{folder.name}': 1 trials" in result.stdout
        table = (folder / "trials.txt").read_text()
        assert table in result.stdout and "best: trial 0, value" in table
        assert yaml.safe_load((folder / "optimization_results.yaml").read_text())["name"] == folder.name

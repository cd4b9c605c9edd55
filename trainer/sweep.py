"""Optuna sweeps (optuna >= 4) for ``python -m trainer --multirun sweep=optuna``.

A thin Hydra sweeper: each trial is one training job launched by Hydra's
launcher, its value the number the job returns (held-out verification
accuracy). The study lives in a database, by default ``optuna.db`` (SQLite) in
the sweep folder, so rerunning the same command resumes it: finished and pruned
trials count towards ``n_trials`` and the sampler sees them all; any SQLAlchemy
URL in ``storage`` lets several machines share one study.

The study is named after what it searches (``study_name``, by default
``facetrain-<digest>`` of the base config and the search space, the swept values
left out), and the sweep folder carries that name: a sweep of a different base
config is a new study in a new folder, never a resumption of an old one whose
finished trial folders it would find. The sweep ends with a table of its trials
(``trainer.sweep_report``).

Pruning: the ``optuna_pruning`` callback reports held-out accuracy after each
epoch to the trial of the running job (``active_trial``) and stops the job when
the pruner (median, Hyperband, ...) says so. Jobs are matched to trials by
Hydra's job number, which is the trial number; that needs an in-process
launcher (Hydra's default), other launchers run trials without pruning.

Hydra only instantiates sweepers that live under ``hydra_plugins``: the class
Hydra sees is ``hydra_plugins.facetrain_sweeper.optuna_sweeper.OptunaSweeper``,
a subclass of ``OptunaSweeperBase`` here.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

from trainer.sweep_report import write_results, write_table

log = logging.getLogger(__name__)

DATABASE = "optuna.db"
_RUNNING: dict[int, Any] = {}  # Hydra job number (= trial number) -> the trial it evaluates


@dataclass
class OptunaSweeperConf:
    """``hydra/sweeper: facetrain_optuna``; every key can be set as ``hydra.sweeper.<key>=...``."""

    _target_: str = "hydra_plugins.facetrain_sweeper.optuna_sweeper.OptunaSweeper"
    _recursive_: bool = False                   # the sweeper builds sampler and pruner itself (reseeding)
    direction: str = "maximize"                 # maximize | minimize the jobs' return value
    study_name: Any = None                      # null: facetrain-<digest of the base config and search space>
    storage: Any = None                         # null: sqlite:///<sweep dir>/optuna.db
    n_trials: int = 12                          # finished + pruned trials in the study, reruns included
    n_jobs: int = 1                             # trials handed to the launcher at once
    max_failures_in_a_row: int = 3              # stop: the same mistake is failing every trial
    sampler: Any = field(default_factory=lambda: {"_target_": "optuna.samplers.TPESampler", "seed": 0})
    pruner: Any = field(default_factory=lambda: {"_target_": "optuna.pruners.NopPruner"})
    params: Any = field(default_factory=dict)   # override name -> choice(...) | range(...) | interval(...)
    #                                             (tag(log, ...) log scale, tag(int, ...) whole numbers)


def active_trial():
    """The Optuna trial the running Hydra job evaluates, or None (not in an Optuna sweep)."""
    if not _RUNNING:
        return None
    try:
        from hydra.core.hydra_config import HydraConfig

        return _RUNNING.get(int(HydraConfig.get().job.num))
    except (ValueError, TypeError):  # no Hydra job is running (Python API)
        return None


def flatten(params, prefix: str = "") -> dict[str, str]:
    """``{optimizer: {lr: ...}}`` (command-line style) and ``{"optimizer.lr": ...}`` alike."""
    flat = {}
    for key, value in (params or {}).items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = str(value)
    return flat


def search_space(params: dict[str, str], arguments, parser) -> tuple[dict, list[str]]:
    """(Optuna distributions by override name, fixed overrides for every trial).

    The config's ``params`` and the command line's sweeps (``a=1,2``, ``b=interval(0,1)``)
    use Hydra's override grammar; the command line wins for a name in both.
    """
    import optuna.distributions as d
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep

    from trainer.registry import ConfigError

    specs = {name: f"{name}={text}" for name, text in params.items()}
    fixed = []
    for override in parser.parse_overrides(list(arguments)):
        if override.is_sweep_override():
            specs[override.get_key_element()] = override.input_line
        else:
            fixed.append(override.input_line)
    space = {}
    for name, line in specs.items():
        override = parser.parse_overrides([line])[0]
        value = override.value()
        if isinstance(value, ChoiceSweep):
            space[name] = d.CategoricalDistribution(list(override.sweep_iterator()))
        elif isinstance(value, RangeSweep):
            space[name] = d.CategoricalDistribution(list(override.sweep_iterator()))
        elif isinstance(value, IntervalSweep):
            # Hydra's intervals are floats; tag(int, interval(a, b)) asks for whole numbers.
            log_scale = "log" in value.tags
            if "int" in value.tags:
                space[name] = d.IntDistribution(int(value.start), int(value.end), log=log_scale)
            else:
                space[name] = d.FloatDistribution(float(value.start), float(value.end), log=log_scale)
        else:
            raise ConfigError(f"hydra.sweeper.params.{name}={override.input_line.partition('=')[2]}: "
                              "not a search space; use choice(a,b), range(a,b) or interval(a,b) "
                              "(tag(log, interval(a,b)) for a log scale, tag(int, interval(a,b)) for whole numbers)")
    return space, fixed


def _override(name: str, value) -> str:
    # Hydra parses the value again: strings that read as other types are quoted.
    if isinstance(value, str):
        return f"{name}='{value}'"
    return f"{name}={value}"


def _instantiate(node, offset: int = 0):
    """A sampler or pruner from its config node; a ``seed`` is moved on by ``offset``.

    A resumed study must not replay the points of the first run: a sampler built again
    with the same seed draws the same random start-up points, so the seed moves on by
    the number of trials the study already holds (still reproducible).
    """
    from hydra.utils import instantiate

    if not isinstance(node, (dict, DictConfig)):
        return node  # already an object (Python API)
    node = OmegaConf.to_container(node) if isinstance(node, DictConfig) else dict(node)
    if offset and node.get("seed") is not None:
        node["seed"] = int(node["seed"]) + offset
    return instantiate(node)


class OptunaSweeperBase:
    """Hydra ``Sweeper`` body; ``hydra_plugins.facetrain_sweeper`` mixes it with Hydra's base class."""

    def __init__(self, direction="maximize", study_name=None, storage=None, n_trials=12, n_jobs=1,
                 max_failures_in_a_row=3, sampler=None, pruner=None, params=None, **unknown):
        from trainer.registry import ConfigError, did_you_mean

        if unknown:
            key = next(iter(unknown))
            raise ConfigError(f"hydra.sweeper.{key} is not a key of the Optuna sweeper: "
                              f"{did_you_mean(key, OptunaSweeperConf.__dataclass_fields__)}")
        if direction not in ("maximize", "minimize"):
            raise ConfigError(f"hydra.sweeper.direction={direction!r}: maximize or minimize")
        self.direction, self.storage = direction, storage
        self.study_name = str(study_name) if study_name else None  # None: named from the base config
        self.n_trials, self.n_jobs = int(n_trials), max(int(n_jobs), 1)
        self.max_failures_in_a_row = int(max_failures_in_a_row)
        self.sampler_node, self.pruner_node = sampler, pruner
        self.params = flatten(OmegaConf.to_container(params) if isinstance(params, DictConfig) else params)
        self.config = self.launcher = self.hydra_context = None

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def storage_url(self, sweep_dir: str) -> str:
        return str(self.storage) if self.storage else f"sqlite:///{os.path.abspath(os.path.join(sweep_dir, DATABASE))}"

    def sweep(self, arguments: list[str]):
        try:
            import optuna
        except ImportError:
            raise SystemExit("error: sweep=optuna needs Optuna: pip install \".[sweep]\" "
                             "(or .[dev])") from None
        from hydra.core.override_parser.overrides_parser import OverridesParser

        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        space, fixed = search_space(self.params, arguments, parser)
        self.study_name = self.study_name or derived_study_name(self.config, space)
        sweep_dir = self.name_sweep(self.study_name)
        fixed.append(_override("hydra.sweeper.study_name", self.study_name))  # each trial's folder too
        os.makedirs(sweep_dir, exist_ok=True)
        OmegaConf.save(self.config, os.path.join(sweep_dir, "multirun.yaml"))
        storage = self.storage_url(sweep_dir)
        try:
            held = len(optuna.load_study(study_name=self.study_name, storage=storage).get_trials(deepcopy=False))
        except KeyError:  # a new study
            held = 0
        study = optuna.create_study(study_name=self.study_name, storage=storage,
                                    sampler=_instantiate(self.sampler_node, held),
                                    pruner=_instantiate(self.pruner_node), direction=self.direction,
                                    load_if_exists=True)
        done = self._done(study)
        left = max(self.n_trials - done, 0)
        print(f"resuming study {self.study_name!r}: {done} of {self.n_trials} trials done, {left} left"
              if done else f"study {self.study_name!r}: {self.n_trials} trials", f"(in {sweep_dir})", flush=True)
        failures_in_a_row = 0
        while done < self.n_trials:
            trials = [study.ask(space) for _ in range(min(self.n_jobs, self.n_trials - done))]
            batch = [[*fixed, *(_override(k, v) for k, v in t.params.items())] for t in trials]
            self.validate_batch_is_legal(batch)
            for trial, outcome in zip(trials, self._launch(trials, batch)):
                state, value = outcome
                study.tell(trial, value if state == optuna.trial.TrialState.COMPLETE else None, state=state)
                log.info(f"trial {trial.number}: {state.name.lower()}"
                         + (f", value {value:.4f}" if value is not None else "")
                         + (" (Hydra reports the pruned job as an error)" if state.name == "PRUNED" else ""))
                failures_in_a_row = failures_in_a_row + 1 if state == optuna.trial.TrialState.FAIL else 0
            write_results(study, sweep_dir)
            if failures_in_a_row >= self.max_failures_in_a_row:
                from trainer.registry import ConfigError

                raise ConfigError(f"{failures_in_a_row} trials in a row failed; see their metrics.json "
                                  f"in {sweep_dir}")
            done = self._done(study)
        write_results(study, sweep_dir)
        print(write_table(study, sweep_dir), flush=True)
        return study

    def name_sweep(self, name: str) -> str:
        """Give the sweep its study's name (``hydra.sweep.dir`` reads it); returns the sweep folder."""
        from omegaconf import open_dict, read_write

        with read_write(self.config.hydra), open_dict(self.config.hydra):
            self.config.hydra.sweeper.study_name = name
        return str(self.config.hydra.sweep.dir)

    @staticmethod
    def _done(study) -> int:
        import optuna

        states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        return len(study.get_trials(deepcopy=False, states=states))

    def _launch(self, trials, batch) -> list[tuple]:
        """(state, value) per trial. Job numbers are trial numbers, so each trial keeps its folder."""
        import optuna

        numbers = [t.number for t in trials]
        if numbers != list(range(numbers[0], numbers[0] + len(numbers))):  # other workers took numbers between
            return [o for t, b in zip(trials, batch) for o in self._launch([t], [b])]
        _RUNNING.clear()
        _RUNNING.update({t.number: t for t in trials})
        try:
            returns = self.launcher.launch(batch, initial_job_idx=numbers[0])
        except SystemExit as stop:
            # A job's user error or failed run (exit 2, its one line printed) fails its trial; a
            # preempted sweep (143) marks the trial failed and stops, and a rerun resumes the study.
            if stop.code != 2:
                for trial in trials:
                    trial.study.tell(trial, state=optuna.trial.TrialState.FAIL)
                raise
            return [(optuna.trial.TrialState.FAIL, None) for _ in trials]
        finally:
            _RUNNING.clear()
        return [outcome(r) for r in returns]


def outcome(job_return) -> tuple:
    """(trial state, value) of one finished Hydra job."""
    import optuna

    try:
        value = job_return.return_value  # re-raises what the job raised
    except optuna.TrialPruned:
        return optuna.trial.TrialState.PRUNED, None
    except Exception as error:  # a trial that crashes is a failed trial, not a failed sweep
        log.warning(f"trial failed: {type(error).__name__}: {error}")
        return optuna.trial.TrialState.FAIL, None
    if value is None:
        log.warning("trial returned no value (is eval set? the job returns held-out accuracy)")
        return optuna.trial.TrialState.FAIL, None
    return optuna.trial.TrialState.COMPLETE, float(value)


def derived_study_name(config: DictConfig, space: dict) -> str:
    """``facetrain-<8 hex>``: a digest of the base config and the search space.

    The base config is the job's config without Hydra's node, without the keys the
    sweep varies (their values are the trials') and without the keys that only say
    where and how a run is kept (``run.name``, ``run.dir``, ``trainer.resume*``);
    a changed base config or search space is a new study, the same command resumes.
    """
    base = OmegaConf.to_container(config, resolve=False)
    base.pop("hydra", None)
    for name in [*space, "run.name", "run.dir", "trainer.resume", "trainer.resume_changes"]:
        *parents, leaf = name.split(".")
        node = base
        for parent in parents:
            node = node.get(parent) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    searched = {name: repr(distribution) for name, distribution in sorted(space.items())}
    text = json.dumps({"config": base, "space": searched}, sort_keys=True, default=str)
    return f"facetrain-{hashlib.sha256(text.encode()).hexdigest()[:8]}"

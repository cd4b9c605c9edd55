"""What a sweep leaves for people: ``optimization_results.yaml`` and a table of its trials.

The table (number, state, value, parameters, then the best trial) is printed when
the sweep ends and written beside the results as ``trials.txt``, so a resumed or
finished study answers "how did it go?" without opening the database.
"""

from __future__ import annotations

import os

from omegaconf import OmegaConf

RESULTS = "optimization_results.yaml"
TABLE = "trials.txt"


def best_trial(study):
    """The best completed trial, or None while no trial has completed."""
    try:
        return study.best_trial
    except ValueError:
        return None


def write_results(study, sweep_dir: str) -> None:
    """``optimization_results.yaml``: the best trial so far and how the trials ended."""
    import optuna

    from trainer.io import write_text

    trials = study.get_trials(deepcopy=False)
    summary = {"name": study.study_name, "direction": study.direction.name.lower(),
               "trials": {state.name.lower(): sum(t.state == state for t in trials)
                          for state in optuna.trial.TrialState}}
    best = best_trial(study)
    if best is not None:
        summary.update(best_trial=best.number, best_value=best.value, best_params=dict(best.params))
    write_text(os.path.join(sweep_dir, RESULTS), OmegaConf.to_yaml(OmegaConf.create(summary)))


def trial_table(study) -> str:
    """Every trial of the study as a fixed-width table, then a line naming the best one."""
    trials = study.get_trials(deepcopy=False)
    names = list(dict.fromkeys(name for trial in trials for name in trial.params))
    rows = [["trial", "state", "value", *names]]
    for trial in trials:
        rows.append([str(trial.number), trial.state.name.lower(), _number(trial.value),
                     *(_number(trial.params[name]) if name in trial.params else "-" for name in names)])
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    best = best_trial(study)
    if best is None:
        lines.append("best: none yet (no trial has completed)")
    else:
        settings = ", ".join(f"{name}={_number(value)}" for name, value in best.params.items())
        lines.append(f"best: trial {best.number}, value {_number(best.value)} ({settings})")
    return "\n".join(lines)


def write_table(study, sweep_dir: str) -> str:
    """``trials.txt`` beside the results; returns the table."""
    from trainer.io import write_text

    table = trial_table(study)
    write_text(os.path.join(sweep_dir, TABLE), table + "\n")
    return table


def _number(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)

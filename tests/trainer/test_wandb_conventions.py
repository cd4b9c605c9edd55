"""wandb follows the environment's conventions and is an extra: WANDB_MODE / WANDB_DISABLED are
honoured, and a default logger without wandb installed falls back to TensorBoard with one note."""

import sys

import pytest
from omegaconf import OmegaConf

from trainer import records

OFFLINE = {"logger": {"tensorboard": False, "wandb": {"mode": "offline", "project": "facetrain"}}}


@pytest.mark.parametrize("environment, configured, mode", [
    ({}, "offline", "offline"),
    ({"WANDB_MODE": "disabled"}, "offline", "disabled"),
    ({"WANDB_DISABLED": "true"}, "online", "disabled"),
    ({"WANDB_MODE": "dryrun"}, "online", "offline"),
    ({"WANDB_MODE": "online"}, "disabled", "disabled"),  # logger=none stays without wandb
])
def test_the_environment_chooses_within_the_configured_logger(monkeypatch, environment, configured, mode):
    for name in ("WANDB_MODE", "WANDB_DISABLED"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert records.wandb_mode(configured) == mode


@pytest.mark.parametrize("name, value", [("WANDB_MODE", "disabled"), ("WANDB_DISABLED", "true")])
def test_disabled_by_the_environment_writes_no_wandb_folder(monkeypatch, tmp_path, name, value):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv(name, value)
    result = records.loggers(OmegaConf.create(OFFLINE), str(tmp_path))
    assert result.wandb_run is None and result.callbacks == []
    assert not (tmp_path / "wandb").exists()


def test_without_wandb_installed_the_logger_says_so_once(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb raises ImportError
    result = records.loggers(OmegaConf.create(OFFLINE), str(tmp_path))
    assert result.wandb_run is None and not (tmp_path / "wandb").exists()
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and lines[0].startswith("note: wandb is not installed") and ".[wandb]" in lines[0]
    records.ScalarWriter(None).write({"a": 1.0}, step=0)  # no wandb to look for a run in: no error

"""Bad values fail before any work, in one line that names the key and the valid range.

Most cases run in-process (``compose``/``validate`` and the command line's own ``main``);
a few run ``python -m trainer`` in a subprocess, as a user would.
"""

import os

import pytest

from tests.helpers import one_error_line
from omegaconf import OmegaConf

import trainer
import trainer.__main__ as cli
from trainer.config import compose, preflight, validate
from trainer.registry import ConfigError


def compose_error(overrides, **kwargs) -> str:
    with pytest.raises(ConfigError) as error:
        compose(overrides, **kwargs)
    message = str(error.value)
    assert "\n" not in message, message
    return message


@pytest.mark.parametrize("overrides,expected", [
    (["trainer.epochs=abc"], "trainer.epochs='abc' is not a number: trainer.epochs must be an integer >= 1"),
    (["trainer.epochs=0"], "trainer.epochs=0 is out of range: trainer.epochs must be an integer >= 1"),
    (["trainer.epochs=1.5"], "trainer.epochs=1.5 is not a whole number: trainer.epochs must be an integer >= 1"),
    (["trainer.batch_size=0"], "trainer.batch_size=0 is out of range: trainer.batch_size must be an integer >= 1"),
    (["trainer.batch_size=-4"], "trainer.batch_size=-4 is out of range: trainer.batch_size must be an integer >= 1"),
    (["trainer.batch_size=true"], "trainer.batch_size=True is not a number"),
    (["trainer.steps_per_epoch=0"], "trainer.steps_per_epoch=0 is out of range: "
                                    "trainer.steps_per_epoch must be an integer >= 1 or null"),
    (["trainer.steps_per_epoch=-3"], "trainer.steps_per_epoch=-3 is out of range"),
    (["trainer.seed=x"], "trainer.seed='x' is not a number: trainer.seed must be an integer in [0, 4294967295]"),
    (["trainer.seed=4294967296"], "trainer.seed=4294967296 is out of range: trainer.seed must be an integer in "
                                  "[0, 4294967295]"),
    (["optimizer.lr=-1"], "optimizer.lr=-1 is out of range: optimizer.lr must be a number > 0"),
    (["optimizer.lr=0"], "optimizer.lr=0 is out of range: optimizer.lr must be a number > 0"),
    (["optimizer.lr=nan"], "optimizer.lr=nan is not finite"),
    (["optimizer.lr=abc"], "optimizer.lr='abc' is not a number"),
    (["data.image_size=abc"], "data.image_size='abc' is not a number"),
    (["~trainer.epochs"], "trainer.epochs is not set: it must be an integer >= 1"),
])
def test_top_level_numbers_are_checked_against_their_range(overrides, expected):
    assert expected in compose_error(overrides)


@pytest.mark.parametrize("overrides,expected", [
    (["loss.margin=abc"], "loss.margin='abc' is not a number"),
    (["loss=cosface", "loss.scale=sixty"], "loss.scale='sixty' is not a number"),
    (["neck.embedding_dim=big"], "neck.embedding_dim='big' is not a number"),
    (["neck.embedding_dim=0"], "neck.embedding_dim=0 is out of range: neck 'gap' takes embedding_dim >= 1"),
    (["neck=gdc", "neck.embedding_dim=-3"], "neck.embedding_dim=-3 is out of range: neck 'gdc' takes embedding_dim >= 1"),
    (["schedule.warmup_epochs=half"], "schedule.warmup_epochs='half' is not a number"),
    (["backbone.remat=yes"], "backbone.remat='yes' is not true or false"),
    (["augment.ops=[{name: flip, p: often}]"], "augment.ops[0].p='often' must be a number in [0, 1]"),
])
def test_component_numbers_are_checked_against_the_constructor(overrides, expected):
    assert compose_error(overrides).startswith(expected)


def test_image_size_is_checked_against_the_backbone_minimum_before_any_data():
    assert ("data.image_size=7 is too small for backbone=tiny: data.image_size must be an "
            "integer >= 8") in compose_error(["data.image_size=7"])
    # The minimum follows the backbone's own parameters: fewer stages, smaller images.
    cfg = trainer.compose(["data.image_size=7", "backbone.widths=[8,16]", "backbone.blocks=[1,1]"])
    assert cfg.data.image_size == 7
    assert "integer >= 16" in compose_error(["backbone=iresnet18", "data.image_size=12"])
    assert "integer >= 9" in compose_error(["backbone=vit_t", "data.image_size=8"])
    assert "integer >= 32" in compose_error(["backbone=resnet50", "data.image_size=16"])


def test_an_image_size_whose_batch_cannot_fit_in_memory_is_one_line_before_any_data():
    line = compose_error(["debug=smoke", "data.image_size=100000"])
    assert line.startswith("data.image_size=100000 with trainer.batch_size=16 needs 1,788 GiB for one batch")
    trainer.compose(["debug=smoke", "data.image_size=112"])  # an ordinary size is not refused


def test_an_interpolation_that_cannot_resolve_is_one_line_naming_the_key(monkeypatch):
    monkeypatch.delenv("FACETRAIN_UNSET_VARIABLE", raising=False)
    line = compose_error(["debug=smoke", "trainer.epochs=${oc.env:FACETRAIN_UNSET_VARIABLE}"])
    assert line.startswith("trainer.epochs cannot be resolved: Environment variable "
                           "'FACETRAIN_UNSET_VARIABLE' not found")
    monkeypatch.setenv("FACETRAIN_UNSET_VARIABLE", "mine")
    assert trainer.compose(["debug=smoke", "run.name=${oc.env:FACETRAIN_UNSET_VARIABLE}"]).run.name == "mine"


def test_every_built_in_backbone_declares_the_minimum_it_enforces():
    from trainer.registry import BACKBONES

    for name in BACKBONES.names():
        rule = getattr(BACKBONES.get(name), "minimum_input_size", None)
        assert rule is not None, f"backbone {name} declares no minimum_input_size"
        assert rule() >= 1


def test_validate_catches_values_set_after_composition():
    # trainer.train(cfg) calls validate first: a value set in Python is checked too.
    cfg = trainer.compose([])
    OmegaConf.update(cfg, "trainer.batch_size", 0)
    with pytest.raises(ConfigError, match=r"^trainer.batch_size=0 is out of range"):
        validate(cfg)


def test_valid_edge_values_pass():
    cfg = trainer.compose(["trainer.epochs=1", "trainer.batch_size=1", "trainer.steps_per_epoch=null",
                           "optimizer.lr=1e-6", "data.image_size=8", "loss.margin=0"])
    assert cfg.trainer.batch_size == 1 and cfg.loss.margin == 0


# -- Hydra's ~key deletion -----------------------------------------------------

def test_tilde_deletes_a_key():
    assert "scale" not in trainer.compose(["~loss.scale"]).loss
    assert "scale" not in trainer.compose(["~loss.scale=32"]).loss
    preflight(["~loss.scale", "loss.margin=0.2"])  # a deletion is not an unknown key


def test_tilde_of_a_misspelled_key_says_so_with_the_spelling():
    message = compose_error(["~loss.scael"])
    assert message == ("~loss.scael: 'scael' is not a key of loss, so there is nothing to "
                       "delete: did you mean 'scale'?")


def test_command_line_checks_the_config_with_its_deletions():
    # A deletion is an override like any other: the config checked before the job starts
    # is the one the job will get.
    assert cli._arguments(["~trainer.epochs", "loss=cosface"])[0] == ["~trainer.epochs", "loss=cosface"]


# -- YAML syntax errors in user config folders -----------------------------------

@pytest.fixture
def broken_config_dir(tmp_path):
    folder = tmp_path / "my conf"
    (folder / "loss").mkdir(parents=True)
    (folder / "local").mkdir()
    broken = "name: arcface\nscale: [64\nmargin: 0.5\n"
    (folder / "loss" / "broken.yaml").write_text(broken)
    (folder / "local" / "broken.yaml").write_text("trainer:\n  epochs: 3\n   batch_size: 8\n")
    (folder / "loss" / "mine.yaml").write_text("name: cosface\nscale: 30.0\nmargin: 0.2\n")
    return folder


def test_yaml_error_in_a_config_dir_is_file_line_column(broken_config_dir):
    path = broken_config_dir / "loss" / "broken.yaml"
    message = compose_error(["loss=broken"], config_dirs=[str(broken_config_dir)])
    assert message.startswith(f"{path}:3:7: YAML syntax error: "), message


def test_yaml_error_through_hydra_searchpath_and_a_local_file(broken_config_dir):
    searchpath = f"hydra.searchpath=[file://{broken_config_dir}]"
    message = compose_error([searchpath, "local=broken"])
    assert message.startswith(f"{broken_config_dir / 'local' / 'broken.yaml'}:3:"), message
    assert "YAML syntax error" in message


def test_a_user_config_dir_adds_options_and_keeps_plugin_paths(broken_config_dir):
    cfg = compose(["loss=mine"], config_dirs=[str(broken_config_dir)])
    assert cfg.loss.name == "cosface" and cfg.loss.scale == 30.0
    # a mistake elsewhere still names the right thing, not the user's option
    message = compose_error(["loss=mine", "loss.scael=3"], config_dirs=[str(broken_config_dir)])
    assert "did you mean 'scale'" in message


# -- values the shell or Hydra cannot read ---------------------------------------

def test_value_with_special_characters_says_how_to_quote():
    message = compose_error(["data=folder", "data.path=/my(photos)"])
    assert message.startswith("data.path=/my(photos): Hydra cannot read this value")
    assert "\"data.path='/my(photos)'\"" in message


def test_quoted_path_with_spaces_is_one_value():
    assert trainer.compose(["data=folder", "data.path=/my photos/x"]).data.path == "/my photos/x"


def run_main(capsys, *argv):
    status = cli.main(list(argv))
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    return status, lines


def test_unquoted_path_with_spaces_says_how_to_quote(capsys):
    # The shell split ``data.path=/my photos/x`` into two arguments.
    status, lines = run_main(capsys, "data=folder", "data.path=/my", "photos/x")
    assert status == 2 and len(lines) == 1, lines
    assert lines[0] == ("error: 'photos/x' is not key=value: it looks like the rest of data.path; "
                        "quote a value with spaces as one argument: 'data.path=/my photos/x'")


@pytest.mark.parametrize("argument,expected", [
    ("trainer.batch_size=0", "error: trainer.batch_size=0 is out of range"),
    ("loss.margin=abc", "error: loss.margin='abc' is not a number"),
    ("data.image_size=7", "error: data.image_size=7 is too small for backbone=tiny"),
])
def test_command_line_prints_one_error_line_and_exits_2(capsys, argument, expected):
    status, lines = run_main(capsys, argument)
    assert status == 2 and len(lines) == 1 and lines[0].startswith(expected), lines


def test_command_line_config_dir_is_checked_before_the_job(capsys, broken_config_dir):
    status, lines = run_main(capsys, "--config-dir", str(broken_config_dir), "loss=broken")
    assert status == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"error: {broken_config_dir / 'loss' / 'broken.yaml'}:3:7: ")


# -- end to end, as a user runs it (each costs a TensorFlow import) ---------------

@pytest.mark.e2e
def test_cli_batch_size_zero_is_one_line_and_no_run(run_cli, tmp_path):
    line = one_error_line(run_cli("trainer.batch_size=0", timeout=300))
    assert line.startswith("error: trainer.batch_size=0 is out of range: trainer.batch_size must "
                           "be an integer >= 1")
    assert not os.path.exists(tmp_path / "runs")


@pytest.mark.e2e
def test_cli_yaml_error_in_config_dir_is_one_line(run_cli, broken_config_dir):
    line = one_error_line(run_cli(f"--config-dir={broken_config_dir}", "loss=broken", timeout=300))
    assert line.startswith(f"error: {broken_config_dir / 'loss' / 'broken.yaml'}:3:7: YAML syntax error")

"""Every option of every config group composes, validates and builds; bad keys fail in one line."""

import pytest

import trainer
from trainer.config import COMPONENT_GROUPS, RUNTIME_VALUES, config_groups, group_options
from trainer.registry import REGISTRIES, ConfigError, accepted_parameters, split_node

# Components that build in milliseconds, with the run-time values the trainer would pass.
CHEAP_TO_BUILD = {
    "loss": {"num_classes": 10},
    "head": {"num_classes": 10},
    "neck": {},
    "preprocess": {},
    "optimizer": {},
    "schedule": {"base_lr": 0.1, "steps_per_epoch": 10, "total_steps": 100},
    "evaluator": {},
}


# Groups under conf/ that another command reads, never composed into a training job.
OTHER_COMMANDS = {"gate"}  # python -m trainer.gate


def all_options():
    for group in config_groups():
        if group in OTHER_COMMANDS:
            continue
        for option in group_options(group):
            yield group, option


@pytest.mark.parametrize("group,option", list(all_options()))
def test_every_option_composes_validates_and_lists_only_real_parameters(group, option):
    if group == "sweep":
        pytest.importorskip("optuna")
    cfg = trainer.compose([f"{group}={option}"])  # validates every component node
    assert cfg.trainer.epochs >= 1
    if group in COMPONENT_GROUPS:
        kind = COMPONENT_GROUPS[group]
        name, params = split_node(cfg[group], kind)
        accepted, _, _ = accepted_parameters(REGISTRIES[kind].get(name))
        assert set(params) <= accepted
        assert not set(params) & RUNTIME_VALUES.get(kind, set()), "run-time values are never typed"
        if kind in CHEAP_TO_BUILD:  # backbones, data and loops are built by their own tests
            assert REGISTRIES[kind].build(cfg[group], **CHEAP_TO_BUILD[kind]) is not None
    if group == "augment":
        from augment.pipeline import build_augmentation

        build_augmentation(cfg.augment)


def test_default_job_config():
    cfg = trainer.compose([])
    assert cfg.loss.name == "arcface" and cfg.data.name == "synthetic_faces"
    assert cfg.loop.name == "supervised"


def test_overrides_apply_as_on_the_command_line():
    cfg = trainer.compose(["loss=cosface", "optimizer.lr=0.05", "trainer.epochs=3"])
    assert cfg.loss.name == "cosface" and cfg.optimizer.lr == 0.05 and cfg.trainer.epochs == 3


@pytest.mark.parametrize("overrides,expected", [
    (["loss=arcfce"], "unknown loss 'arcfce': did you mean 'arcface'"),
    (["loss.margn=0.3"], "'margn' is not a key of loss: did you mean 'margin'"),
    (["trainer.epochz=3"], "'epochz' is not a key of trainer: did you mean 'epochs'"),
    (["+loss.margn=0.3"], "loss: loss 'arcface' has no parameter 'margn': did you mean 'margin'"),
    (["backbone=iresnet5"], "unknown backbone 'iresnet5'"),
])
def test_mistakes_are_one_line_with_the_right_spelling(overrides, expected):
    with pytest.raises(ConfigError) as error:
        trainer.compose(overrides)
    assert expected in str(error.value)
    assert "\n" not in str(error.value)

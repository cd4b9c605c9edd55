"""Keras's private names that the framework relies on still exist in the installed Keras.

When a Keras release moves one, this test names it: update trainer/keras_private.py
(the only module that reaches into ``keras.src``) and the Keras bound in setup.py.
"""

import ast
import importlib
import pathlib

import keras
import pytest

from trainer import keras_private

REPO = pathlib.Path(__file__).resolve().parents[2]
PACKAGES = ("trainer", "losses", "augment", "models", "loops")


@pytest.mark.parametrize("module, name", keras_private.PRIVATE_SYMBOLS,
                         ids=[f"{m}.{n}" for m, n in keras_private.PRIVATE_SYMBOLS])
def test_private_symbol_exists(module, name):
    assert hasattr(importlib.import_module(module), name), \
        f"keras {keras.__version__} no longer has {module}.{name}"


def test_private_members_of_a_live_data_layer():
    from trainer.registry import build

    layer = build("augment", {"name": "flip", "seed": 1})
    assert isinstance(layer, keras_private.DataLayer)
    for owner, member in keras_private.PRIVATE_MEMBERS:
        if owner in ("Model", "Optimizer", "Callback"):  # checked on live ones below
            continue
        target = layer
        for part in member.split("."):
            assert hasattr(target, part), f"keras {keras.__version__}: {owner}.{member} is gone"
            target = getattr(target, part)
    assert keras_private.backend_name(layer) == keras.backend.backend()
    assert keras_private.seed_generator(layer) is not None
    with keras_private.using_backend(layer, "tensorflow"):
        assert keras_private.backend_name(layer) == "tensorflow"
    assert keras_private.backend_name(layer) == keras.backend.backend()
    model = keras.Sequential([keras.layers.Dense(2)])
    for owner, member in keras_private.PRIVATE_MEMBERS:
        if owner == "Model":
            assert hasattr(model, member), f"keras {keras.__version__}: Model.{member} is gone"
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.5)
    optimizer = keras.optimizers.SGD(schedule)
    assert hasattr(optimizer, "_learning_rate"), f"keras {keras.__version__}: Optimizer._learning_rate is gone"
    assert keras_private.learning_rate_schedule(optimizer) is schedule
    assert keras_private.learning_rate_schedule(keras.optimizers.LossScaleOptimizer(optimizer)) is schedule
    assert keras_private.learning_rate_schedule(keras.optimizers.SGD(0.1)) is None
    callback = keras.callbacks.Callback()
    callback.set_model(model)
    assert hasattr(callback, "_model"), f"keras {keras.__version__}: Callback._model is gone"
    assert keras_private.unsynced_model(callback) is model


def test_no_other_module_imports_keras_src():
    offenders = []
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            if path.name == "keras_private.py":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                offenders += [f"{path.relative_to(REPO)}: {n}" for n in names if n.startswith("keras.src")]
    assert not offenders, offenders

"""A config names components; it cannot run code. Model files are data.

A dotted path builds only a class of the seam's base type, checked before anything
is called; functions, other classes and the standard library are refused in one line.
Each hostile case asserts that its side effect (a file) did not happen.
"""

import pytest

from tests.helpers import one_error_line

import trainer
from trainer.registry import AUGMENTS, LOSSES, REGISTRIES, ConfigError, build


@pytest.fixture
def marker(tmp_path):
    return tmp_path / "ran"


def refused(function, *args, **kwargs) -> str:
    with pytest.raises(ConfigError) as error:
        function(*args, **kwargs)
    message = str(error.value)
    assert "\n" not in message, message
    return message


def test_loss_os_system_runs_nothing(marker):
    message = refused(trainer.compose, ["loss.name=os.system", f"+loss.command=touch {marker}"])
    assert message.startswith("loss: loss 'os.system' is refused: configs may not name the "
                              "Python standard library ('os')"), message
    refused(LOSSES.build, {"name": "os.system", "command": f"touch {marker}"})
    assert not marker.exists()


def test_augment_op_os_system_runs_nothing(marker):
    op = f"augment.ops=[{{name: os.system, command: 'touch {marker}'}}]"
    assert "augment.ops[0]: augment 'os.system' is refused" in refused(trainer.compose, [op])
    from augment.pipeline import build_augmentation

    refused(build_augmentation, {"ops": [{"name": "os.system", "command": f"touch {marker}"}]})
    views = f"+augment.views=[{{ops: [{{name: os.system, command: 'touch {marker}'}}]}}]"
    assert "augment.views[0].ops[0]" in refused(trainer.compose, [views])
    assert not marker.exists()


@pytest.mark.parametrize("kind,node", [
    ("augment", {"name": "subprocess.run", "args": "touch {marker}", "shell": True}),
    ("loss", {"name": "subprocess.Popen", "args": "touch {marker}", "shell": True}),
    ("callback", {"name": "builtins.exec", "source": "open('{marker}', 'w')"}),
    ("optimizer", {"name": "shutil.copy", "src": __file__, "dst": "{marker}"}),
    ("dataset", {"name": "pathlib.Path.touch", "self": "{marker}"}),
])
def test_standard_library_is_refused_before_import(kind, node, marker):
    node = {k: v.format(marker=marker) if isinstance(v, str) else v for k, v in node.items()}
    message = refused(build, kind, node)
    assert "is refused: configs may not name the Python standard library" in message
    assert not marker.exists()


def test_functions_outside_the_standard_library_are_refused(marker):
    # numpy.save writes a file when called: a function is never called from a config.
    message = refused(AUGMENTS.build, {"name": "numpy.save", "file": str(marker), "arr": 1})
    assert message == ("augment 'numpy.save' is a function, not a class: a dotted augment must be a "
                       "subclass of keras.layers.Layer, and functions are never called from a "
                       "config (register a factory to use one; docs/trust.md)")
    assert not marker.exists()


def test_classes_of_another_base_type_are_refused(marker):
    # numpy.memmap creates its file when instantiated; it is no Keras layer.
    message = refused(AUGMENTS.build, {"name": "numpy.memmap", "filename": str(marker),
                                       "mode": "w+", "shape": 4})
    assert "augment 'numpy.memmap' is not a subclass of keras.layers.Layer" in message
    assert not marker.exists()
    assert "is not a subclass of keras.losses.Loss" in refused(
        trainer.compose, ["loss.name=keras.layers.Dense", "~loss.scale", "~loss.margin",
                          "~loss.gradient", "+loss.units=3"])


def test_evaluators_are_registered_only():
    message = refused(build, "evaluator", {"name": "trainer.evaluation.verification.VerificationEvaluator"})
    assert "evaluators are built from registered names only" in message


@pytest.mark.parametrize("kind,path", [
    ("augment", "keras.layers.RandomFlip"),
    ("backbone", "keras.Sequential"),
    ("loss", "keras.losses.CategoricalCrossentropy"),
    ("loop", "keras.Model"),
    ("optimizer", "keras.optimizers.SGD"),
    ("schedule", "keras.optimizers.schedules.ExponentialDecay"),
    ("callback", "keras.callbacks.TerminateOnNaN"),
    ("dataset", "trainer.data.sources.memory.MemorySource"),
])
def test_classes_of_the_seam_base_type_are_accepted(kind, path):
    target = REGISTRIES[kind].get(path)
    assert isinstance(target, type) and issubclass(target, REGISTRIES[kind].base_classes())


def test_registered_components_are_unaffected():
    loss = build("loss", {"name": "cosface", "margin": 0.35, "scale": 64}, num_classes=4)
    assert type(loss).__name__ == "CosFaceLoss"


def test_model_files_with_code_are_refused_and_say_why(tmp_path, marker):
    import keras

    from trainer.export.model_files import load_embedding_model

    images = keras.Input((4, 4, 3))
    # The Lambda's code would write the marker if it ever ran.
    target = str(marker)
    output = keras.layers.Lambda(lambda x: (open(target, "w").close(), x)[1])(images)
    path = tmp_path / "with_code.keras"
    keras.Model(images, output).save(path)
    assert marker.exists()  # saving traced it once; the load must not run it again
    marker.unlink()
    message = refused(load_embedding_model, str(path))
    assert message == (f"model={path} holds Python code (a Lambda layer) and is refused: model "
                       "files are loaded in Keras safe mode, which never runs code from a file "
                       "(docs/trust.md); re-export it without Lambda layers")
    assert not marker.exists()


# -- end to end, as a user runs it (each costs a TensorFlow import) ---------------

@pytest.mark.e2e
def test_cli_loss_os_system_runs_nothing(run_cli, marker):
    line = one_error_line(run_cli("loss.name=os.system", f"+loss.command=touch {marker}", timeout=300))
    assert line.startswith("error: loss: loss 'os.system' is refused")
    assert not marker.exists()


@pytest.mark.e2e
def test_cli_augment_os_system_runs_nothing(run_cli, marker):
    line = one_error_line(run_cli(f"augment.ops=[{{name: os.system, command: 'touch {marker}'}}]",
                                  timeout=300))
    assert line.startswith("error: augment.ops[0]: augment 'os.system' is refused")
    assert not marker.exists()

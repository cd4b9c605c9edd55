"""Registry behaviour: registration, duplicates, suggestions, key checks, dotted paths."""

import keras
import pytest

from trainer.registry import (ConfigError, Registry, accepted_parameters, build, closest,
                              registry)


def make_registry():
    reg = Registry("widget")

    @reg.register("round_widget", aliases=["circle"])
    class RoundWidget:
        """A round widget."""

        def __init__(self, radius=1.0, colour="red"):
            self.radius, self.colour = radius, colour

    @reg.register()
    def square_widget(side, colour="blue"):
        return ("square", side, colour)

    return reg, RoundWidget


def test_register_and_build_with_parameters():
    reg, RoundWidget = make_registry()
    widget = reg.build({"name": "round_widget", "radius": 2.5})
    assert isinstance(widget, RoundWidget) and widget.radius == 2.5 and widget.colour == "red"
    assert reg.build({"name": "circle"}).radius == 1.0
    assert reg.names() == ["circle", "round_widget", "square_widget"]
    assert reg.names("*square*") == ["square_widget"]


def test_unknown_name_suggests_closest():
    reg, _ = make_registry()
    with pytest.raises(ConfigError) as error:
        reg.build({"name": "round_widgit"})
    message = str(error.value)
    assert "\n" not in message
    assert "unknown widget 'round_widgit'" in message and "'round_widget'" in message


def test_misspelled_parameter_names_group_key_and_spelling():
    reg, _ = make_registry()
    with pytest.raises(ConfigError) as error:
        reg.build({"name": "round_widget", "raduis": 3})
    assert str(error.value) == "widget 'round_widget' has no parameter 'raduis': did you mean 'radius'?"


def test_missing_required_parameter_is_reported_unless_provided_at_run_time():
    reg, _ = make_registry()
    with pytest.raises(ConfigError, match="needs side"):
        reg.build({"name": "square_widget"})
    assert reg.build({"name": "square_widget"}, side=3) == ("square", 3, "blue")


def test_runtime_values_only_reach_constructors_that_accept_them():
    reg, _ = make_registry()
    widget = reg.build({"name": "round_widget"}, side=3)  # round widgets take no side
    assert widget.radius == 1.0


def test_duplicate_registration_is_an_error():
    reg, _ = make_registry()
    with pytest.raises(ConfigError, match="registered twice"):
        @reg.register("round_widget")
        class Other:
            pass


def test_dotted_path_builds_an_outside_component():
    layer = build("augment", {"name": "keras.layers.RandomFlip", "mode": "horizontal"})
    assert isinstance(layer, keras.layers.RandomFlip)
    with pytest.raises(ConfigError, match="has no parameter 'mdoe'"):
        build("augment", {"name": "keras.layers.RandomFlip", "mdoe": "horizontal"})
    with pytest.raises(ConfigError, match="cannot be imported"):
        build("augment", {"name": "keras.layers.NoSuchLayer"})


def test_keras_layers_accept_base_class_keywords():
    params, required, is_open = accepted_parameters(keras.layers.Dense)
    assert {"units", "activation", "name", "dtype"} <= params and required == {"units"}
    assert not is_open


def test_kinds_accept_plurals_and_suggest():
    assert registry("losses").kind == "loss"
    assert registry("backbones").kind == "backbone"
    with pytest.raises(ConfigError, match="did you mean 'loss'"):
        registry("los")


def test_builtin_modules_are_registered_without_importing_them():
    # A fresh interpreter: nothing but the registry is imported, yet the names exist.
    import subprocess
    import sys

    code = ("from trainer.registry import LOSSES, OPTIMIZERS, LOOPS;"
            "print(sorted(set(['arcface','cosface']) & set(LOSSES.names())), 'sgd' in OPTIMIZERS,"
            " 'supervised' in LOOPS)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "['arcface', 'cosface'] True True", out.stderr


def test_closest_prefers_near_spellings():
    assert closest("arcfce", ["arcface", "cosface", "adaface"])[0] == "arcface"


def test_base_types_resolve_without_importing_keras_at_registry_import():
    import subprocess
    import sys

    code = ("import sys; from trainer.registry import EVALUATORS, LOSSES; "
            "print('keras' in sys.modules, LOSSES.base, EVALUATORS.base)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "False ('keras.losses.Loss',) ()", out.stderr


def test_registry_without_base_refuses_dotted_paths_and_with_one_checks_the_class():
    reg, _ = make_registry()
    with pytest.raises(ConfigError, match="built from registered names only"):
        reg.get("keras.layers.Dense")
    layers = Registry("thing", base="keras.layers.Layer")
    assert layers.get("keras.layers.Dense") is keras.layers.Dense
    with pytest.raises(ConfigError, match="is a function, not a class"):
        layers.get("keras.ops.relu")
    with pytest.raises(ConfigError, match="is refused: configs may not name the Python standard"):
        layers.get("os.path.join")


def test_numeric_and_boolean_parameters_are_typed_from_defaults_and_annotations():
    reg, _ = make_registry()

    @reg.register("typed")
    def typed(size: int = 3, ratio=0.5, flag=False, scale: "float | None" = None, label="x"):
        return size

    with pytest.raises(ConfigError) as error:
        reg.check({"name": "typed", "ratio": "half"}, where="widget")
    assert str(error.value) == "widget.ratio='half' is not a number (widget 'typed' takes a number for ratio)"
    with pytest.raises(ConfigError, match="flag='on' is not true or false"):
        reg.check({"name": "typed", "flag": "on"})
    with pytest.raises(ConfigError, match="size=None is not a number"):
        reg.check({"name": "typed", "size": None})
    # Ranges as lists, None where the annotation allows it and words where the default is a word pass.
    reg.check({"name": "typed", "ratio": [0.1, 0.9], "scale": None, "label": 3, "flag": 1})

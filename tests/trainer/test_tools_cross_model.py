"""Cross-model verification: the function BCT reports with, and its command-line tool."""

import json

import keras
import numpy as np
import pytest

from trainer.evaluation.cross_model import cross_model_verification
from trainer.registry import ConfigError
from trainer.commands.tools import cross_model as tool


def identity_images(identities=20, per_identity=6, seed=0):
    """Images whose identity is a fixed 4x4x3 pattern plus a little per-image noise."""
    rng = np.random.default_rng(seed)
    patterns = rng.uniform(0, 255, (identities, 4, 4, 3))
    labels = np.repeat(np.arange(identities), per_identity)
    images = patterns[labels] + rng.normal(0, 4, (len(labels), 4, 4, 3))
    return images.astype("float32"), labels


def linear_model(kernel):
    """Flattened pixels times ``kernel``: a fixed embedding model (no training)."""
    inputs = keras.Input((4, 4, 3))
    outputs = keras.layers.Dense(kernel.shape[1], use_bias=False, trainable=False)(
        keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, outputs)
    model.layers[-1].set_weights([kernel.astype("float32")])
    return model


def test_a_rotated_copy_is_as_good_alone_and_incompatible_with_the_original():
    images, labels = identity_images()
    rng = np.random.default_rng(1)
    kernel = rng.normal(size=(48, 16))
    rotation, _ = np.linalg.qr(rng.normal(size=(16, 16)))
    old, rotated = linear_model(kernel), linear_model(kernel @ rotation)

    same = cross_model_verification(old, linear_model(kernel), images, labels, pairs=200)
    assert same["old"] == same["new"] == same["cross"] > 0.95

    scores = cross_model_verification(old, rotated, images, labels, pairs=200)
    # A rotation keeps every distance within one model: the same pairs, the same accuracy.
    assert scores["new"] == pytest.approx(scores["old"], abs=1e-9)
    # Across the two spaces a distance says nothing about identity: near chance.
    assert scores["cross"] < 0.75


def test_embeddings_of_different_sizes_are_one_clear_line():
    images, labels = identity_images()
    rng = np.random.default_rng(2)
    with pytest.raises(ConfigError, match="16 dimensions and the new model's 8"):
        cross_model_verification(linear_model(rng.normal(size=(48, 16))),
                                 linear_model(rng.normal(size=(48, 8))), images, labels, pairs=50)


def test_help_answers_with_its_usage_and_exit_status_0(capsys):
    assert tool.main(["--help"]) == 0
    assert "python -m trainer.tools.cross_model old_model=A.keras new_model=B.keras" in capsys.readouterr().out


def test_a_missing_model_file_is_one_error_line(tmp_path, capsys):
    assert tool.main([f"old_model={tmp_path / 'none.keras'}", f"new_model={tmp_path / 'none.keras'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: old_model=") and "does not exist" in err[0]


def test_the_old_flags_name_the_new_keys(tmp_path, capsys):
    assert tool.main(["--old", "a.keras", "--new", "b.keras"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "old_model=" in err[0]


def test_two_exports_on_in_memory_data(tmp_path, capsys):
    """The tool end to end: two exported 32x32 models, the held-out identities of data=memory."""
    from trainer.export.model_files import exportable

    paths = []
    for seed in (0, 1):
        inputs = keras.Input((32, 32, 3))
        x = keras.layers.Conv2D(8, 3, strides=2, kernel_initializer=keras.initializers.GlorotUniform(seed))(
            keras.layers.Rescaling(1 / 255)(inputs))
        model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
        paths.append(str(tmp_path / f"m{seed}.keras"))
        exportable(model).save(paths[-1])
    def scores(old, new):
        code = tool.main([f"old_model={old}", f"new_model={new}", "pairs=100", "data=memory"])
        captured = capsys.readouterr()
        assert code == 0, captured.err[-2000:]
        return json.loads(captured.out.strip().splitlines()[-1])

    same = scores(paths[0], paths[0])
    assert same["old"] == same["new"] == same["cross"]
    different = scores(paths[0], paths[1])
    # The same held-out pairs every time: the old model's accuracy does not depend on the new one.
    assert different["old"] == same["old"] and set(different) == {"old", "new", "cross"}

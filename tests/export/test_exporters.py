"""SavedModel, TFLite and ONNX exports: each runs in its own runtime and agrees with the Keras model.

Small model (tiny + gap, 24 px, 8-d), held-out images drawn at random; the
numbers the default job reaches are in docs/export.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import trainer
from trainer.builders import build_embedding_model
from trainer.export.model_files import exportable
from trainer.registry import ConfigError

SIZE = 24
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def small_model(seed=0):
    import keras

    keras.utils.set_random_seed(seed)
    cfg = trainer.compose(["backbone.widths=[8,8,16]", "backbone.stem_width=8", "neck.embedding_dim=8"])
    return exportable(build_embedding_model(cfg, SIZE))


def heldout(identities=12, per_identity=4, seed=0):
    """Identities as a shared base image plus noise, so pairs of one identity are closer."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0, 255, (identities, 1, SIZE, SIZE, 3))
    images = np.clip(base + rng.normal(0, 25, (identities, per_identity, SIZE, SIZE, 3)), 0, 255)
    labels = np.repeat(np.arange(identities), per_identity)
    return images.reshape(-1, SIZE, SIZE, 3).astype(np.uint8), labels.astype(np.int32)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    for package in ("tf2onnx", "onnxruntime"):  # the [export] extra; CI may run without it
        pytest.importorskip(package)
    from trainer.export.deploy import export_and_check

    folder = tmp_path_factory.mktemp("export")
    images, labels = heldout()
    model = small_model()
    report = export_and_check(model, str(folder), ["savedmodel", "tflite", "onnx"], images, labels,
                              pairs=40, folds=4, calibration=32, with_latency=False)
    return model, folder, report, images


@pytest.mark.e2e
def test_every_format_is_written_and_agrees_in_its_own_runtime(exported):
    _, folder, report, images = exported
    assert list(report["formats"]) == ["savedmodel", "tflite_float32", "tflite_float16", "tflite_int8", "onnx"]
    written = json.loads((folder / "parity.json").read_text())
    assert written["formats"].keys() == report["formats"].keys() and written["passed"] == report["passed"]
    assert written["heldout_images"] == len(images) and written["pairs"] == 80
    for name, row in report["formats"].items():
        assert "error" not in row, (name, row.get("error"))
        assert os.path.exists(row["path"]) and row["file_bytes"] > 1000, name
    runtimes = {name: row["runtime"] for name, row in report["formats"].items()}
    assert runtimes["savedmodel"] == "tf.saved_model.load" and runtimes["onnx"] == "onnxruntime"
    assert "LiteRT" in runtimes["tflite_float32"] or "tf.lite" in runtimes["tflite_float32"]
    for name in ("savedmodel", "tflite_float32", "onnx"):
        row = report["formats"][name]
        assert row["min_cosine"] >= 0.99999 and row["max_abs_diff"] < 1e-4, name
        assert abs(row["accuracy_delta"]) <= 0.0005 and row["passed"], name
    assert report["formats"]["tflite_float16"]["min_cosine"] >= 0.9999
    int8 = report["formats"]["tflite_int8"]
    # Quantised, so not equal, but clearly the same embedding (a random one has cosine ~0).
    assert 0.9 < int8["min_cosine"] < 0.999999 and int8["max_abs_diff"] > 1e-4
    assert report["formats"]["tflite_int8"]["file_bytes"] < report["formats"]["tflite_float32"]["file_bytes"]


def test_savedmodel_serves_float_and_uint8_pixels_with_a_free_batch(exported):
    import tensorflow as tf

    model, folder, _, images = exported
    loaded = tf.saved_model.load(str(folder / "embedding_savedmodel"))
    default, uint8 = loaded.signatures["serving_default"], loaded.signatures["serving_uint8"]
    assert default.structured_input_signature[1]["image"].shape.as_list() == [None, SIZE, SIZE, 3]
    for batch in (1, 5):
        expected = np.asarray(model(images[:batch].astype(np.float32), training=False))
        from_float = default(image=tf.constant(images[:batch].astype(np.float32)))["embedding"].numpy()
        from_uint8 = uint8(image=tf.constant(images[:batch]))["embedding"].numpy()
        np.testing.assert_allclose(from_float, expected, atol=1e-6)
        np.testing.assert_allclose(from_uint8, expected, atol=1e-6)
        np.testing.assert_allclose(np.linalg.norm(from_float, axis=1), 1.0, atol=1e-5)


def test_int8_tflite_is_full_integer_with_uint8_pixels_in(exported):
    from trainer.export.runtimes import tflite_interpreter_class

    _, folder, _, _ = exported
    interpreter_class, _ = tflite_interpreter_class()
    interpreter = interpreter_class(model_path=str(folder / "embedding_int8.tflite"))
    assert interpreter.get_input_details()[0]["dtype"] == np.uint8
    output = interpreter.get_output_details()[0]
    assert output["dtype"] == np.int8 and output["quantization"][0] > 0
    float_ops = [d for d in interpreter.get_tensor_details()
                 if d["dtype"] == np.float32 and d["name"] and "input" not in d["name"].lower()]
    quantised = [d for d in interpreter.get_tensor_details() if d["dtype"] == np.int8]
    assert len(quantised) > 3 * len(float_ops)


def test_the_onnx_file_names_its_input_and_output_and_takes_any_batch(exported):
    import onnxruntime

    model, folder, _, images = exported
    session = onnxruntime.InferenceSession(str(folder / "embedding.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    assert [o.name for o in session.get_outputs()] == ["embedding"]
    for batch in (1, 7):
        got = session.run(None, {"image": images[:batch].astype(np.float32)})[0]
        np.testing.assert_allclose(got, np.asarray(model(images[:batch].astype(np.float32), training=False)),
                                   atol=1e-5)


def test_a_format_outside_its_tolerance_is_failed_with_its_numbers():
    from trainer.export import parity

    failures = parity.judge("onnx", {"min_cosine": 0.9991, "accuracy": 0.951}, 0.9563)
    assert len(failures) == 2 and "0.9991000 < 0.99999" in failures[0] and "0.0053" in failures[1]
    assert parity.judge("tflite_float16", {"min_cosine": 0.99995, "accuracy": 0.5}, 0.95) == []
    drop = parity.judge("tflite_int8", {"min_cosine": 0.99, "accuracy": 0.93}, 0.9563)
    assert len(drop) == 1 and "0.0263 below" in drop[0]
    assert parity.judge("tflite_int8", {"min_cosine": 0.99, "accuracy": 0.95}, 0.9563) == []
    report = {"reference": {"runtime": "keras", "accuracy": 0.9563},
              "formats": {"onnx": {"runtime": "onnxruntime", "min_cosine": 0.9991, "accuracy": 0.951,
                                   "passed": False, "failures": failures},
                          "tflite_int8": {"passed": False, "error": "ValueError: no"}}}
    text = parity.table(report)
    assert "FAILED: min cosine 0.9991000" in text and "FAILED: ValueError: no" in text


def test_agreement_is_measured_against_a_naive_loop():
    from trainer.export.parity import agreement

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(6, 5)), rng.normal(size=(6, 5))
    cosines = [np.dot(x, y) / np.sqrt(np.dot(x, x) * np.dot(y, y)) for x, y in zip(a, b)]
    result = agreement(a, b)
    assert result["min_cosine"] == pytest.approx(min(cosines), abs=1e-12)
    assert result["max_abs_diff"] == pytest.approx(max(abs(x - y) for x, y in zip(a.ravel(), b.ravel())))


def test_formats_are_checked_before_any_work(monkeypatch):
    import importlib.util

    from trainer.export import check_available, resolve_formats

    assert resolve_formats(["tflite"]) == ["tflite_float32", "tflite_float16", "tflite_int8"]
    assert resolve_formats("[onnx,savedmodel]") == ["savedmodel", "onnx"]
    with pytest.raises(ConfigError, match="did you mean 'onnx'"):
        resolve_formats(["onx"])
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tf2onnx" else real(name, *a))
    with pytest.raises(ConfigError, match=r"tf2onnx \(for onnx\).*facetrain\[export\]"):
        check_available(["savedmodel", "onnx"])


def cli(*args, cwd):
    environment = {**os.environ, "PYTHONPATH": REPO}
    return subprocess.run([sys.executable, "-m", "trainer.export", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600, env=environment)


@pytest.mark.e2e
def test_the_command_answers_help_and_refuses_mistakes_in_one_line(tmp_path):
    helped = cli("--help", cwd=tmp_path)
    assert helped.returncode == 0 and "model=" in helped.stdout and "strict=" in helped.stdout
    wrong = cli("model=x.keras", "formats=[onx]", cwd=tmp_path)
    assert wrong.returncode == 2 and wrong.stderr.strip().splitlines()[-1].startswith("error: unknown export format")
    missing = cli("model=none.keras", "formats=[savedmodel]", cwd=tmp_path)
    assert missing.returncode == 2 and "does not exist" in missing.stderr


@pytest.mark.e2e
def test_the_command_writes_parity_json_and_strict_fails_on_a_missed_tolerance(tmp_path, monkeypatch):
    pytest.importorskip("tf2onnx")
    pytest.importorskip("onnxruntime")
    from trainer.commands import command_config
    from trainer.commands import export as command_module
    from trainer.export import parity

    run_dir = tmp_path / "runs" / "r"
    path = run_dir / "export" / "embedding.keras"
    path.parent.mkdir(parents=True)
    small_model().save(str(path))
    data = ["data=memory", "data.kind=random", "data.train_identities=2", "data.images_per_identity=2",
            "data.test_identities=10", "data.test_images_per_identity=4"]
    args = [f"model={path}", "formats=[onnx]", "pairs=20", "folds=4", "latency=false", *data]
    message, status = command_module.command(command_config.parse("export", args), data)
    assert status == 0 and "parity.json" in message
    report = json.loads((path.parent / "parity.json").read_text())
    assert report["formats"]["onnx"]["passed"] and report["heldout_images"] == 40
    monkeypatch.setitem(parity.TOLERANCES, "onnx", {parity.MIN_COSINE: 1.5})  # impossible
    message, status = command_module.command(command_config.parse("export", [*args, "strict=true"]), data)
    assert status == 1 and "onnx" in message
    assert command_module.command(command_config.parse("export", args), data)[1] == 0  # not strict: reported, exit 0


def test_one_format_name_on_the_command_line_is_read_whole_before_training(tmp_path):
    """``run.export_formats=onnx`` is a string to Hydra; it must not be split into letters."""
    import trainer
    from trainer.registry import ConfigError

    cfg = trainer.compose(["debug=smoke", "logger=none", "run.export_formats=onnxx", f"run.dir={tmp_path / 'r'}"])
    with pytest.raises(ConfigError, match="unknown export format 'onnxx': did you mean 'onnx'"):
        trainer.train(cfg)
    assert not (tmp_path / "r" / "metrics.json").exists()  # refused before the run started


def test_a_backend_other_than_tensorflow_is_refused_before_any_work(monkeypatch):
    import keras

    from trainer.export import check_available
    from trainer.registry import ConfigError

    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    with pytest.raises(ConfigError, match="written with the TensorFlow backend, not jax"):
        check_available(["savedmodel"])
    check_available([])  # nothing to export: nothing to refuse

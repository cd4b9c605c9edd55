"""``python -m trainer.evaluate`` with ijb= and retrieval=true: report.json, ijb_roc.png, summary.html."""

import json

import keras
import numpy as np
import pytest

from trainer.commands import evaluate as evaluate_command
from trainer.evaluation import suite as evaluate
from trainer.evaluation import ijb
from trainer.evaluation.ijb_synthetic import write_synthetic_ijb
from trainer.evaluation.retrieval import retrieval_metrics
from trainer.evaluation.verification import embed
from trainer.registry import ConfigError

SIZE = 16


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    images = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Dense(8, kernel_initializer=keras.initializers.RandomNormal(seed=3))(
        keras.layers.Flatten()(keras.layers.Rescaling(1 / 255.0)(images)))
    x = keras.layers.UnitNormalization(axis=-1, name="l2_normalize")(x)
    path = str(tmp_path_factory.mktemp("model") / "embedding.keras")
    keras.Model(images, x).save(path)
    return path


def write_folder(root, images, labels):
    import tensorflow as tf

    for i, (image, label) in enumerate(zip(images, labels)):
        (root / f"id{label}").mkdir(parents=True, exist_ok=True)
        tf.io.write_file(str(root / f"id{label}" / f"{i}.png"), tf.io.encode_png(image))
    return str(root)


@pytest.mark.e2e
def test_ijb_and_retrieval_from_the_command_line(tmp_path, model_path, capsys):
    root = str(tmp_path / "ijb")
    write_synthetic_ijb(root, subjects=10, seed=1, image_size=32)
    rng = np.random.default_rng(0)
    folder = write_folder(tmp_path / "people", rng.integers(0, 256, (24, SIZE, SIZE, 3), dtype=np.uint8),
                          np.repeat(np.arange(6), 4))
    output = tmp_path / "out"
    status = evaluate_command.main([f"model={model_path}", f"ijb={root}", "ijb.subset=IJBC",
                            "ijb.detector_score=false", "retrieval=true", f"folder={folder}",
                            "retrieval_k=[1,3]", "pairs=20", "folds=2", f"output={output}"])
    assert status == 0
    report = json.loads((output / "report.json").read_text())
    model = evaluate.load_model(model_path)
    expected = ijb.evaluate_ijb(model, root, "IJBC", detector_score=False)
    assert report["ijb"]["verification"] == expected["verification"]
    assert report["ijb"]["identification"] == expected["identification"]
    assert not report["ijb"]["detector_score"] and report["ijb"]["norm_score"]
    assert (output / "ijb_roc.png").stat().st_size > 1000

    _, images, labels = evaluate.identity_folder(folder, SIZE)
    retrieval = report["retrieval"]
    assert {k: retrieval[k] for k in ("precision_at_1", "r_precision", "map_at_r", "recall_at_k")} == {
        k: v for k, v in retrieval_metrics(embed(model, images), labels, ks=(1, 3)).items()
        if k in ("precision_at_1", "r_precision", "map_at_r", "recall_at_k")}
    page = (output / "summary.html").read_text()
    assert "IJBC (IJB)" in page and "ijb_roc.png" in page and "MAP@R" in page
    printed = capsys.readouterr().out
    assert "IJBC 1:1 TAR at FAR" in printed and "IJBC 1:N G1" in printed and "retrieval: precision@1" in printed


def test_retrieval_against_a_gallery_matches_identities_by_name(tmp_path, model_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (30, SIZE, SIZE, 3), dtype=np.uint8)
    queries = write_folder(tmp_path / "q", images[:12], np.repeat([0, 1, 2], 4))
    # The gallery lacks id0, so its id1 and id2 are labels 0 and 1 there: matching must go by name.
    gallery = write_folder(tmp_path / "g", images[12:], np.repeat([1, 2, 5], 6))
    report = evaluate.evaluate({"model_path": model_path, "retrieval": True, "folder": queries,
                                "retrieval_gallery": gallery, "output": str(tmp_path / "out")})
    model = evaluate.load_model(model_path)
    query_embeddings = embed(model, evaluate.identity_folder(queries, SIZE)[1])
    gallery_embeddings = embed(model, evaluate.identity_folder(gallery, SIZE)[1])
    expected = retrieval_metrics(query_embeddings, np.repeat([0, 1, 2], 4), gallery_embeddings,
                                 np.repeat([1, 2, 5], 6))
    got = report["retrieval"]
    assert got["queries"] == 8 and got["skipped"] == 4  # id0 has nothing to find in the gallery
    assert {k: got[k] for k in expected} == expected


def test_ijb_option_mistakes_are_one_line(tmp_path, model_path, capsys):
    assert evaluate_command.main([f"model={model_path}", f"ijb={tmp_path}", "ijb.subsett=IJBB"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and "subsett" in error and "did you mean 'subset'" in error
    with pytest.raises(ConfigError, match="ijb_face_tid_mid.txt is missing|ijbb_face_tid_mid.txt is missing"):
        evaluate.evaluate({"model_path": model_path, "ijb": {"root": str(tmp_path), "subset": "IJBB"},
                           "output": str(tmp_path / "out")})

"""The retrieval callback: its numbers are the evaluator's on the same embeddings; it runs in a job."""

import json
import types

import keras
import numpy as np
import pytest

import trainer
from trainer.callbacks.retrieval import RetrievalCallback
from trainer.evaluation.retrieval import retrieval_metrics
from trainer.evaluation.verification import embed
from trainer.registry import ConfigError

TINY = ["debug=smoke", "logger=none", "data=memory", "data.image_size=24", "data.train_identities=12",
        "data.images_per_identity=4", "data.test_identities=6", "data.test_images_per_identity=4",
        "eval.pairs=16", "eval.untrained=false", "neck.embedding_dim=16"]


def write_folder(root, images, labels, prefix="p"):
    import tensorflow as tf

    for i, (image, label) in enumerate(zip(images, labels)):
        folder = root / f"{prefix}{label}"
        folder.mkdir(parents=True, exist_ok=True)
        tf.io.write_file(str(folder / f"{i}.png"), tf.io.encode_png(image))
    return str(root)


def fake_loop(embedding_model, step):
    """What the callback reads from the loop: its embedding model and optimizer step."""
    optimizer = types.SimpleNamespace(iterations=keras.Variable(step, dtype="int64"))
    return types.SimpleNamespace(embedding_model=embedding_model, optimizer=optimizer)


def tiny_model(size=12):
    images = keras.Input((size, size, 3))
    x = keras.layers.Dense(6, kernel_initializer=keras.initializers.RandomNormal(seed=4))(
        keras.layers.Flatten()(keras.layers.Rescaling(1 / 255.0)(images)))
    return keras.Model(images, x)


@pytest.mark.parametrize("with_gallery", [False, True])
def test_callback_reports_the_metrics_of_its_embeddings(tmp_path, with_gallery):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (30, 12, 12, 3), dtype=np.uint8)
    labels = np.repeat(np.arange(6), 5)
    queries = write_folder(tmp_path / "q", images[:18], labels[:18])
    gallery = write_folder(tmp_path / "g", images[18:], labels[18:] % 4) if with_gallery else None
    callback = RetrievalCallback(str(tmp_path / "run"), folder=queries, gallery=gallery, every_steps=2, ks=(1, 3))
    model = tiny_model()
    callback.set_model(fake_loop(model, 0))
    callback.on_train_begin()
    callback.on_epoch_begin(0)
    for batch in (0, 1, 2):  # the step boundaries fit passes: at a batch's begin, `batch` steps are done
        callback.on_train_batch_begin(batch)
    callback.model.optimizer.iterations.assign(3)
    callback.on_train_end()
    history = json.loads((tmp_path / "run" / "retrieval.json").read_text())
    assert [h["step"] for h in history] == [2, 3]  # every 2 steps, and at the end

    from trainer.evaluation.suite import identity_folder

    names, query_images, query_labels = identity_folder(queries, 12)
    if with_gallery:
        gallery_names, gallery_images, gallery_labels = identity_folder(gallery, 12)
        # The gallery's folders p0…p3 are the queries' p0…p3: match them by name.
        mapped = np.asarray([names.index(n) for n in gallery_names])[gallery_labels]
        expected = retrieval_metrics(embed(model, query_images), query_labels, embed(model, gallery_images),
                                     mapped, ks=(1, 3))
    else:
        expected = retrieval_metrics(embed(model, query_images), query_labels, ks=(1, 3))
    assert history[-1]["results"] == expected  # same embeddings, same ranking: identical numbers


def test_a_gallery_without_queries_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="needs callbacks.retrieval.folder"):
        RetrievalCallback(str(tmp_path), gallery=str(tmp_path))


@pytest.mark.e2e
def test_a_job_with_the_retrieval_callback_records_its_history(tmp_path):
    cfg = trainer.compose([*TINY, "callbacks=with_retrieval", "callbacks.retrieval.every_steps=2",
                           f"run.dir={tmp_path / 'run'}"])
    trainer.train(cfg)
    history = json.loads((tmp_path / "run" / "retrieval.json").read_text())
    assert [h["step"] for h in history] == [2, 3]
    result = history[-1]["results"]
    # Held-out identities of data=memory: 6 people × 4 photos, each photo a query with R = 3.
    assert result["queries"] == 24 and result["references"] == 24 and result["self_reference"]
    assert set(result["recall_at_k"]) == {"1", "5", "10"}

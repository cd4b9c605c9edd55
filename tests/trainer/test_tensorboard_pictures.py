"""TensorBoard as a person looks at it, read back from the event files: step curves, held-out
accuracy per epoch, the final ROC and score images, the embedding projector and a sweep job's hparams."""

import numpy as np
import pytest
from google.protobuf import text_format
from PIL import Image

from tests.helpers import read_tensorboard_hparams, read_tensorboard_images, read_tensorboard_series

TINY = ["--multirun", "debug=smoke", "logger.tensorboard=true", "trainer.epochs=2", "callbacks=none",
        "data=memory", "data.train_identities=12", "data.test_identities=8", "data.image_size=24",
        "eval.pairs=16", "logger.pictures.step_every=2", "logger.pictures.heldout_pairs=10",
        "logger.pictures.projector_faces=20"]


@pytest.mark.e2e
def test_a_sweep_job_has_every_picture(run_cli, tmp_path):
    result = run_cli(*TINY, timeout=900)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    (board,) = (tmp_path / "runs" / "multirun").glob("*/0/tensorboard")

    steps = read_tensorboard_series(board / "steps")
    assert [step for step, _ in steps["step/loss"]] == [2, 4, 6]  # 2 epochs of 3 steps, every 2nd
    assert all(np.isfinite(loss) and loss > 0 for _, loss in steps["step/loss"])
    assert [step for step, _ in steps["step/learning_rate"]] == [2, 4, 6]

    accuracy = read_tensorboard_series(board / "heldout")["heldout/accuracy"]
    assert [step for step, _ in accuracy] == [0, 1] and all(0.0 <= a <= 1.0 for _, a in accuracy)

    images = read_tensorboard_images(board / "evaluation")
    assert set(images) == {"final/heldout_roc", "final/heldout_scores"}
    assert all(width > 100 and height > 100 for width, height in images.values())
    assert "final/heldout/accuracy" in read_tensorboard_series(board / "evaluation")

    from tensorboard.plugins.projector import projector_config_pb2

    config = text_format.Parse((board / "evaluation" / "projector_config.pbtxt").read_text(),
                               projector_config_pb2.ProjectorConfig())
    (embedding,) = config.embeddings
    vectors = np.loadtxt(board / "evaluation" / embedding.tensor_path, delimiter="\t")
    labels = (board / "evaluation" / embedding.metadata_path).read_text().splitlines()
    assert vectors.shape[0] == len(labels) == 20
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert len(set(labels)) == 8  # spread over the held-out identities
    side = list(embedding.sprite.single_image_dim)
    assert side == [24, 24]
    assert Image.open(board / "evaluation" / embedding.sprite.image_path).size == (5 * 24, 5 * 24)

    hparams = read_tensorboard_hparams(board)
    assert hparams["trainer.epochs"] == 2 and hparams["data"] == "memory"


def test_the_projector_sample_spreads_over_identities():
    from trainer.tensorboard_pictures import spread_sample

    labels = np.repeat(np.arange(5), [1, 2, 3, 4, 10])
    chosen = spread_sample(labels, 7, seed=0)
    assert len(set(chosen)) == 7 and set(labels[chosen[:5]]) == set(range(5))  # every person first
    assert np.array_equal(spread_sample(labels, 7, seed=0), chosen)  # seeded
    assert len(spread_sample(labels, 100, seed=0)) == len(labels)


def test_no_hparams_outside_a_multirun():
    from trainer.tensorboard_pictures import sweep_hparams

    assert sweep_hparams() is None

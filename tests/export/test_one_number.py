"""One number per model and pair set: the run's final held-out accuracy, ``trainer.evaluate`` on
``make_bin``'s file and the export parity report's Keras reference are the same number.

They once differed (0.9562 vs 0.9543 on the default job): parity summed each image's *unit*
embedding with its mirror's, while the run sums the un-normalised ones before normalising. A
model whose embedding norm changes under mirroring tells the two apart, so this one does.
"""

import keras
import numpy as np

from trainer.commands.tools.make_bin import make_bin
from trainer.evaluation.verification import VerificationEvaluator, evaluate_bin
from trainer.export.deploy import export_and_check
from trainer.export.model_files import export_embedding_model, exportable, load_embedding_model

SIZE = 16
PAIRS, SEED, FOLDS = 60, 3, 10


class HeldOutOnly:
    """The part of a data source the evaluation reads: its held-out (images, labels)."""

    def __init__(self, images, labels):
        self.images, self.labels = images, labels

    def heldout(self):
        return self.images, self.labels


def embedding_model():
    images = keras.Input((SIZE, SIZE, 3))
    # Position-dependent weights: a mirrored face gets another norm, so where the sum is taken matters.
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255.0)(images))
    x = keras.layers.Dense(6, kernel_initializer=keras.initializers.RandomNormal(seed=7))(x)
    return keras.Model(images, x)


def test_run_bin_and_parity_reference_are_one_number(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 5).astype(np.int32)
    centres = rng.integers(0, 256, (10, SIZE, SIZE, 3))
    images = np.clip(centres[labels] + rng.normal(0, 60, (50, SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
    source = HeldOutOnly(images, labels)
    model = embedding_model()

    run = VerificationEvaluator(pairs=PAIRS, folds=FOLDS, seed=SEED).evaluate(model, source)["heldout"]

    path = export_embedding_model(exportable(model), str(tmp_path / "run"))
    exported = load_embedding_model(path)
    bin_path = str(tmp_path / "heldout.bin")
    make_bin(source, bin_path, pairs=PAIRS, seed=SEED)
    from_bin = evaluate_bin(exported, bin_path, FOLDS)

    report = export_and_check(exported, str(tmp_path / "formats"), ["savedmodel"], images, labels,
                              pairs=PAIRS, seed=SEED, folds=FOLDS, with_latency=False, source_path=path)
    reference = report["reference"]

    assert run["accuracy"] == from_bin["accuracy"] == reference["accuracy"]
    assert run["pairs"] == from_bin["pairs"] == reference["pairs"]
    # The formats are judged against Keras measured their way (unit outputs), shown beside it.
    assert report["formats"]["savedmodel"]["accuracy"] == reference["unit_output_accuracy"]
    assert report["formats"]["savedmodel"]["passed"]

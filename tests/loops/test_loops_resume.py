"""Every built-in loop resumes mid-epoch to bit-identical weights, on tf.data and on NumPy batches.

The run is stopped the way a preempted job is (SIGTERM: the run stops at the next step
boundary and saves there), rerun with the same config, and its export compared with
an uninterrupted run's: the batches (sampling, views, augmentation draws) are a function of
their position, so the resumed run must train on exactly the same data.
"""

import os
import signal

import keras
import numpy as np
import pytest

import trainer
from trainer.run import RunInterrupted

pytestmark = pytest.mark.e2e
STOP_AT_STEP = 4  # mid-epoch: the second epoch of 3 steps


class SigtermAt(keras.callbacks.Callback):
    """Sends this process SIGTERM after global step ``step`` (as a preempting scheduler would)."""

    def __init__(self, step=STOP_AT_STEP, run_dir=None, config=None):
        super().__init__()
        self.step, self.seen = int(step), 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


DATA = {
    "tf.data": ["data.image_size=16", "data.train_identities=12", "data.images_per_identity=4",
                "data.test_identities=4", "data.test_images_per_identity=2"],
    "numpy": ["data=memory", "data.image_size=16", "data.train_identities=12", "data.images_per_identity=4",
              "data.test_identities=4", "data.test_images_per_identity=2"],
}
LOOPS = {
    "supervised": [],
    "pair": ["experiment=triplet", "loop.images_per_identity=4"],
    "simclr": ["experiment=simclr"],
    "supcon": ["experiment=supcon"],
    "gan": ["experiment=gan"],
    # the sampled, sharded head: its rows, their slots and its sample counter are restored
    "partial_fc": ["head=partial_fc", "head.sample_rate=0.5", "head.shard_multiple=8", "optimizer=sgd"],
}


def config(run_dir, loop, path, *extra):
    return trainer.compose([*LOOPS[loop], *DATA[path], "trainer.epochs=2", "trainer.steps_per_epoch=3",
                            "trainer.batch_size=8", "eval.pairs=10", "eval.folds=2", "logger=none", "runtime.jit_compile=false",
                            f"run.dir={run_dir}", *extra])


def exported_weights(run_dir):
    model = keras.saving.load_model(str(run_dir / "export" / "embedding.keras"))
    return model.get_weights()


@pytest.mark.parametrize("path", list(DATA))
@pytest.mark.parametrize("loop", list(LOOPS))
def test_resumed_mid_epoch_equals_uninterrupted(loop, path, tmp_path):
    whole = tmp_path / "whole"
    assert trainer.train(config(whole, loop, path))["status"] == "finished"

    resumed = tmp_path / "resumed"
    # sent after the step before: the next boundary sees it, that call runs, and the run stops
    stopper = f"+callbacks.sigterm={{name: {__name__}.SigtermAt, step: {STOP_AT_STEP - 1}}}"
    with pytest.raises(RunInterrupted):
        trainer.train(config(resumed, loop, path, stopper))
    metrics = trainer.train(config(resumed, loop, path))
    assert metrics["status"] == "finished"
    assert metrics["resumed_from_step"] == STOP_AT_STEP  # saved where the run stopped
    for a, b in zip(exported_weights(whole), exported_weights(resumed), strict=True):
        np.testing.assert_array_equal(a, b)

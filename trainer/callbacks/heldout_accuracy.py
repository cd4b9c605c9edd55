"""Held-out verification accuracy after every epoch, cheaply, for TensorBoard's epoch curves.

The final evaluation measures thousands of pairs once; a curve needs a number per
epoch at little cost. This draws a small fixed sample of held-out pairs once
(seeded, ``pairs`` positive and as many negative), embeds only the images those
pairs use, and writes the 10-fold accuracy as ``heldout/accuracy`` into
``<run>/tensorboard/heldout`` at the epoch (0-based, as Keras's ``epoch_*`` curves).
The held-out images are the run's own (``LoopData.heldout``, read once); a data
set without held-out identities simply has no curve (the final evaluation says why).
"""

from __future__ import annotations

import keras
import numpy as np

from trainer.records import ScalarWriter


class HeldoutAccuracy(keras.callbacks.Callback):
    """``heldout/accuracy`` on a fixed pair sample every ``every_epochs`` epochs."""

    def __init__(self, folder: str, heldout, pairs: int = 150, seed: int = 0, every_epochs: int = 1,
                 folds: int = 10, batch_size: int = 256):
        super().__init__()
        self.heldout = heldout  # a callable: (images, labels) of the held-out identities, or None
        self.pairs, self.seed, self.folds = int(pairs), int(seed), int(folds)
        self.every_epochs, self.batch_size = max(int(every_epochs), 1), int(batch_size)
        self._scalars = ScalarWriter(folder)
        self._sample = None

    def on_train_begin(self, logs=None):
        from trainer.evaluation.verification import sample_pairs

        if self._sample is not None:
            return
        arrays = self.heldout()
        if arrays is None:
            self._sample = ()
            return
        images, labels = arrays
        try:
            first, second, issame = sample_pairs(labels, self.pairs, self.seed)
        except ValueError:  # too few held-out people for pairs: no curve
            self._sample = ()
            return
        used = np.unique(np.concatenate([first, second]))
        self._sample = (images[used], np.searchsorted(used, first), np.searchsorted(used, second), issame)

    def on_epoch_end(self, epoch, logs=None):
        if not self._sample or (epoch + 1) % self.every_epochs:
            return
        from trainer.evaluation.verification import embed, squared_distances, ten_fold_accuracy

        images, first, second, issame = self._sample
        embeddings = embed(self.model.embedding_model, images, self.batch_size)
        accuracy, _, _ = ten_fold_accuracy(squared_distances(embeddings[first], embeddings[second]), issame,
                                           min(self.folds, len(issame) // 2))
        self._scalars.write({"heldout/accuracy": float(accuracy)}, step=epoch)

    def on_train_end(self, logs=None):
        self._scalars.close()

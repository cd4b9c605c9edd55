"""A Keras callback that fails like a bug would (tests of the failure contract name it by path)."""

import keras


class Boom(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        raise ZeroDivisionError("a bug inside training")

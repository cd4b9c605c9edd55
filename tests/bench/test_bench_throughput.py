"""``trainer.records.Throughput``: counts steps without a batch-end hook."""

import keras


def test_throughput_counts_steps_without_batch_end_hook():
    """No batch-end hook (so Keras may dispatch ahead); steps from the begin indices, first skipped."""
    import numpy as np

    from trainer.records import Throughput

    assert "on_train_batch_end" not in Throughput.__dict__
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse", steps_per_execution=2)
    throughput = Throughput(batch_size=4)
    x, y = np.zeros((40, 2), "float32"), np.zeros((40, 1), "float32")
    model.fit(x, y, batch_size=4, epochs=2, callbacks=[throughput], verbose=0)
    # 10 steps per epoch in calls of 2; the first call of each epoch is not timed: 8 steps x 4 x 2 epochs
    assert throughput.images == 64 and throughput.images_per_second() > 0

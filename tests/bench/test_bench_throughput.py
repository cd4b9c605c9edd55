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


def test_the_bench_waits_for_background_work_before_the_next_window():
    # tf.data refills its buffers on its own threads after a pipeline window; the next window
    # (the framework step's) must not pay for that work
    import threading
    import time

    from trainer.commands.bench.measure import wait_until_quiet

    done = threading.Event()

    def refill():
        end = time.perf_counter() + 0.6
        while time.perf_counter() < end:
            sum(i * i for i in range(1000))
        done.set()

    threading.Thread(target=refill, daemon=True).start()
    time.sleep(0.05)
    wait_until_quiet(max_seconds=10)
    assert done.is_set()
    assert wait_until_quiet(max_seconds=10) < 10  # a quiet process goes on at once

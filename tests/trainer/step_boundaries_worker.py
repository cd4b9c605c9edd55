"""Subprocess worker (KERAS_BACKEND=jax): a whole job with the default callbacks, watched.

Prints one JSON line: on which threads Keras ran the batch-end hooks (the main thread
means the host waited for every step's logs before dispatching the next step), how
many times the training state was written back to the model's variables during fit
(each one a full device-to-variable sync), the steps trained and where the
checkpoints landed.
"""

import json
import os
import sys
import threading

import keras

import trainer

run_dir = sys.argv[1]
extra = sys.argv[2:]

threads: set[str] = set()
syncs = {"during_fit": 0}
original_end = keras.callbacks.CallbackList._on_train_batch_end
original_sync = keras.Model.jax_state_sync


def watched_end(self, batch, logs=None):
    threads.add("main" if threading.current_thread() is threading.main_thread() else "worker")
    return original_end(self, batch, logs)


def watched_sync(self):
    if getattr(self, "_jax_state", None) and not self._jax_state_synced:
        syncs["during_fit"] += 1
    return original_sync(self)


keras.callbacks.CallbackList._on_train_batch_end = watched_end
keras.Model.jax_state_sync = watched_sync

cfg = trainer.compose(["debug=smoke", "data=memory", "data.image_size=16", "data.train_identities=12",
                       "data.images_per_identity=4", "data.test_identities=4",
                       "data.test_images_per_identity=4", "eval.pairs=24", "eval.untrained=false",
                       "logger=none", "runtime=jax", "trainer.epochs=2", "trainer.steps_per_epoch=8",
                       "callbacks.checkpoint.every_seconds=0", f"run.dir={run_dir}", *extra])
metrics = trainer.train(cfg)
checkpoints = sorted(name for name in os.listdir(os.path.join(run_dir, "checkpoints"))
                     if name.endswith(".weights.h5"))
print(json.dumps({"status": metrics["status"], "steps": metrics.get("optimizer_steps"),
                  "threads": sorted(threads), "syncs": syncs["during_fit"], "checkpoints": checkpoints}))

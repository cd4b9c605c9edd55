"""Subprocess worker: 2-replica MirroredStrategy vs one device, one JSON verdict per line.

Reads a JSON list of loss specs on stdin (see ``harness.check_replicas``). Must run
in a fresh process: the two logical CPU devices have to exist before TensorFlow
initialises. Each replica gets its own complete shard; the one-device reference is
the mean of the shard losses (fresh loss copies, so stateful losses start equal),
which is what Keras's per-replica scaling plus gradient summing must reproduce.
"""

import json
import sys

import tensorflow as tf

_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    _cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])

import importlib  # noqa: E402

import numpy as np  # noqa: E402

from trainer.errors import first_line  # noqa: E402
from trainer.testing.harness import LossUnderTest, close, loss_fn, max_error  # noqa: E402
from trainer.testing.inputs import make_batch  # noqa: E402
from trainer.testing import backends  # noqa: E402


def subject_from_spec(spec, num_classes=5):
    if "node" in spec:
        return LossUnderTest(spec["node"], num_classes)
    module, _, name = spec["class"].partition(":")
    cls = getattr(importlib.import_module(module), name)
    return LossUnderTest(cls.from_config(spec["config"]) if spec["config"] else cls, num_classes)


def compare(subject, strategy, shard_size=8):
    shards = [make_batch(subject.input_kind, shard_size, seed=seed) for seed in (0, 1)]
    if shards[0].kernel is not None:  # one classifier for both replicas
        shards[1].kernel = shards[0].kernel
    reference = [backends.value_and_grad(loss_fn(subject.build(True), s), s.x) for s in shards]
    expected_loss = np.mean([value for value, _ in reference])
    expected_grad = np.concatenate([grad / 2 for _, grad in reference])

    with strategy.scope():
        loss = subject.build(True)
    xs = strategy.experimental_distribute_values_from_function(
        lambda context: tf.constant(shards[context.replica_id_in_sync_group].x))

    def replica_step(x):
        shard = shards[0]
        replica = tf.distribute.get_replica_context().replica_id_in_sync_group
        labels = None
        if shard.labels is not None:
            labels = tf.gather(tf.constant(np.stack([s.labels for s in shards])), replica)
        with tf.GradientTape() as tape:
            tape.watch(x)
            value = loss(labels, shard.prediction(x))
        return value, tape.gradient(value, x)

    values, grads = strategy.run(tf.function(replica_step), args=(xs,))
    got_loss = float(strategy.reduce("SUM", values, axis=None))
    got_grad = np.concatenate([g.numpy() for g in strategy.experimental_local_results(grads)])
    detail = (f"loss {got_loss:.6g} vs {expected_loss:.6g}, "
              f"max grad error {max_error(got_grad, expected_grad):.2e}{subject.note(True)}")
    if not (close(got_loss, expected_loss, 1e-4, 1e-5) and close(got_grad, expected_grad, 1e-4, 1e-4)):
        ratio = got_loss / expected_loss if expected_loss else float("nan")
        hint = " (x2: call() must return per-sample values, not a reduced scalar)" if abs(ratio - 2) < 1e-3 else ""
        return "FAIL", "2 replicas differ from one device: " + detail + hint
    return "PASS", "2 replicas match one device: " + detail


def main():
    specs = json.loads(sys.stdin.read())
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    for spec in specs:
        try:
            status, detail = compare(subject_from_spec(spec), strategy)
        except Exception as error:  # one broken loss must not hide the others' verdicts
            message = first_line(error)[:200]
            status, detail = "FAIL", f"raised {type(error).__name__}: {message}"
        print(json.dumps({"check": "replicas", "status": status, "detail": detail}), flush=True)


if __name__ == "__main__":
    main()

"""Subprocess worker: the partial_fc head on 8 devices against the cosine head on one.

``python partial_fc_worker.py LOSS [LOSS ...]`` prints one JSON line per loss:
the loss and the gradients (embedding model and class centres) of one step on a
global batch, sharded (8 replicas / devices, sample_rate 1.0) and on one device.
``python partial_fc_worker.py --train OPTIMIZER`` (TensorFlow): three ``fit`` steps
of ArcFace, 8 replicas whose head updates its own rows against the cosine head
and the Keras optimizer on one device; prints the relative error of each update.
It must be a fresh process: under TensorFlow the 8 logical CPUs must exist before
TensorFlow initialises, under JAX the host-platform device count is an XLA flag
read when JAX starts (the caller sets KERAS_BACKEND and XLA_FLAGS).
"""

import json
import sys

import keras

DEVICES = 8
BACKEND = keras.backend.backend()
if BACKEND == "tensorflow":
    import tensorflow as tf

    _cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        _cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(DEVICES)])

import numpy as np  # noqa: E402

import trainer  # noqa: E402

CLASSES, DIM, INPUT, BATCH = 100, 16, 6, 32


def make_loop(loss_name, head_node, optimizer=None):
    loss = trainer.build("loss", {"name": loss_name}, num_classes=CLASSES)
    node = {**head_node, **loss.head_requirements()}
    head = trainer.build("head", node, num_classes=CLASSES)
    inputs = keras.Input((INPUT,))
    embedding = keras.Model(inputs, keras.layers.Dense(DIM, name="fc")(inputs))
    loop = trainer.build("loop", "supervised", embedding_model=embedding, head=head, loss=loss)
    if optimizer is not None:
        loop.compile(optimizer=optimizer, jit_compile=False)
    loop(np.zeros((BATCH, INPUT), "float32"))  # build every part
    return loop


def set_weights(reference, sharded, seed):
    rng = np.random.default_rng(seed)
    kernel = rng.normal(size=(INPUT, DIM)).astype("float32")
    bias = rng.normal(size=(DIM,)).astype("float32")
    centres = rng.normal(size=(DIM, CLASSES)).astype("float32")
    for loop in (reference, sharded):
        loop.embedding_model.get_layer("fc").set_weights([kernel, bias])
    reference.head.kernel.assign(centres)
    padded = sharded.head.whole_centers()
    padded[:CLASSES, 0] = centres.T
    padded[CLASSES:, 0] = rng.normal(size=(padded.shape[0] - CLASSES, DIM))
    sharded.head.assign_whole_centers(padded)


def grads_of(loop, trainables, x, y):
    # compute_loss's reduction already scales by 1 / replicas, as in Keras's train_step.
    with tf.GradientTape() as tape:
        loss = loop.compute_loss(x, y, loop(x, training=True), training=True)
    return loss, [tf.convert_to_tensor(g) for g in tape.gradient(loss, trainables)]


def tensorflow_case(loss_name, x, y):
    reference = make_loop(loss_name, {"name": "cosine"})
    strategy = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(DEVICES)])
    with strategy.scope():
        sharded = make_loop(loss_name, {"name": "partial_fc", "shard_multiple": DEVICES})
    set_weights(reference, sharded, 1)
    ref_vars = [*reference.embedding_model.trainable_variables, reference.head.kernel]
    loss_ref, grads_ref = grads_of(reference, ref_vars, tf.constant(x), tf.constant(y))
    per = BATCH // DEVICES
    xs = strategy.experimental_distribute_values_from_function(
        lambda c: tf.constant(x[c.replica_id_in_sync_group * per:(c.replica_id_in_sync_group + 1) * per]))
    ys = strategy.experimental_distribute_values_from_function(
        lambda c: tf.constant(y[c.replica_id_in_sync_group * per:(c.replica_id_in_sync_group + 1) * per]))
    variables = sharded.embedding_model.trainable_variables
    shard_shape = tuple(sharded.head.centers.shape)

    def replica_step(a, b):  # what OwnUpdateStep.train_step (models/heads/own_update.py) differentiates
        with tf.GradientTape() as tape:
            with sharded.head.recording(tape) as sampled:
                loss = sharded.compute_loss(a, b, sharded(a, training=True), training=True)
        grads = tape.gradient(loss, [*variables, sampled.weights])
        # Each replica's gradient of its own rows is already the whole batch's: no sum.
        own_rows = tf.scatter_nd(sampled.rows[:, None], grads[-1][0], shard_shape)
        return loss, [tf.convert_to_tensor(g) for g in grads[:-1]], own_rows

    loss, grads, own_rows = strategy.run(tf.function(replica_step), args=(xs, ys))
    loss = strategy.reduce("SUM", loss, axis=None)
    grads = [strategy.reduce("SUM", g, axis=None).numpy() for g in grads]
    centres = np.concatenate([r.numpy() for r in strategy.experimental_local_results(own_rows)])
    return (float(loss_ref), [g.numpy() for g in grads_ref], float(loss), [*grads, centres],
            [int(sharded.head.rows // DEVICES)])


def train_case(optimizer_name):
    """Three fit steps: 8 replicas, the head's own row updates, against Keras's on one device."""
    def optimizer():
        if optimizer_name == "sgd":
            return keras.optimizers.SGD(0.1, momentum=0.9, weight_decay=5e-4)
        return keras.optimizers.AdamW(0.01, weight_decay=5e-4)

    rng = np.random.default_rng(2)
    x = (rng.normal(size=(BATCH * 3, INPUT)) * 3).astype("float32")
    y = rng.integers(0, CLASSES, BATCH * 3).astype("int32")
    reference = make_loop("arcface", {"name": "cosine"}, optimizer())
    keras.utils.set_random_seed(5)
    one_device = make_loop("arcface", {"name": "partial_fc", "shard_multiple": DEVICES}, optimizer())
    strategy = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(DEVICES)])
    keras.utils.set_random_seed(5)
    with strategy.scope():
        sharded = make_loop("arcface", {"name": "partial_fc", "shard_multiple": DEVICES}, optimizer())
    initial = sharded.head.whole_centers()
    same_start = bool(np.array_equal(initial, one_device.head.whole_centers()))
    set_weights(reference, sharded, 1)
    start_centres = sharded.head.whole_centers()[:CLASSES, 0]
    start_kernel = reference.embedding_model.get_layer("fc").kernel.numpy()
    losses = {}
    for name, loop in (("reference", reference), ("sharded", sharded)):
        data = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH)
        losses[name] = loop.fit(data, epochs=1, verbose=0).history["loss"][0]

    def relative(got, expected):
        return float(np.max(np.abs(got - expected)) / max(np.max(np.abs(expected)), 1e-30))

    centre_update = sharded.head.whole_centers()[:CLASSES, 0] - start_centres
    kernel_update = sharded.embedding_model.get_layer("fc").kernel.numpy() - start_kernel
    return {"optimizer": optimizer_name, "loss_ref": losses["reference"], "loss_sharded": losses["sharded"],
            "centre_update_error": relative(centre_update, reference.head.kernel.numpy().T - start_centres),
            "kernel_update_error": relative(
                kernel_update, reference.embedding_model.get_layer("fc").kernel.numpy() - start_kernel),
            "steps": int(sharded.head.sample_step.numpy()),
            "slots": sorted(sharded.head.row_state.slots), "shard_rows": list(sharded.head.centers.shape)[:1],
            "memory": sharded.head.memory_per_device(sharded.optimizer),
            "same_start_on_1_and_8": same_start, "initial_std": float(initial.std())}


def jax_case(loss_name, x, y):
    import jax

    def value_and_grads(loop, x, y):
        trainable = [v.value for v in loop.trainable_variables]
        others = [v.value for v in loop.non_trainable_variables]

        def objective(trainable, others, x, y):
            y_pred, others = loop.stateless_call(trainable, others, x, training=True)
            mapping = [*zip(loop.trainable_variables, trainable), *zip(loop.non_trainable_variables, others)]
            with keras.StatelessScope(state_mapping=mapping):
                return loop.compute_loss(x, y, y_pred, training=True)

        value, grads = jax.jit(jax.value_and_grad(objective))(trainable, others, x, y)
        by_path = {v.path: np.asarray(g) for v, g in zip(loop.trainable_variables, grads)}
        return float(value), by_path

    keras.distribution.set_distribution(None)
    reference = make_loop(loss_name, {"name": "cosine"})
    distribution = keras.distribution.DataParallel(devices=keras.distribution.list_devices("cpu"))
    keras.distribution.set_distribution(distribution)
    sharded = make_loop(loss_name, {"name": "partial_fc", "shard_multiple": DEVICES})
    set_weights(reference, sharded, 1)
    loss_ref, ref = value_and_grads(reference, x, y)
    layout = distribution.get_data_layout(x.shape).backend_layout
    loss, got = value_and_grads(sharded, jax.device_put(x, layout),
                                jax.device_put(y, distribution.get_data_layout(y.shape).backend_layout))
    keras.distribution.set_distribution(None)
    order = lambda loop, grads, head_var: [grads[v.path] for v in  # noqa: E731
                                           [*loop.embedding_model.trainable_variables, head_var]]
    rows = {s.data.shape[0] for s in sharded.head.centers.value.addressable_shards}
    return (loss_ref, order(reference, ref, reference.head.kernel), loss,
            order(sharded, got, sharded.head.centers), sorted(rows))


def main():
    if sys.argv[1] == "--train":
        print(json.dumps(train_case(sys.argv[2])), flush=True)
        return
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(BATCH, INPUT)) * 3).astype("float32")
    y = rng.integers(0, CLASSES, BATCH).astype("int32")
    for loss_name in sys.argv[1:]:
        case = tensorflow_case if BACKEND == "tensorflow" else jax_case
        loss_ref, grads_ref, loss, grads, shard_rows = case(loss_name, x, y)
        centres = grads[-1]
        grads[-1] = centres[:CLASSES, 0].T
        errors = [float(np.max(np.abs(g - r)) / max(np.max(np.abs(r)), 1e-30)) for g, r in zip(grads, grads_ref)]
        print(json.dumps({"loss": loss_name, "backend": BACKEND, "loss_ref": loss_ref, "loss_sharded": loss,
                          "grad_rel_errors": errors, "padding_grad": float(np.max(np.abs(centres[CLASSES:]))),
                          "shard_rows": shard_rows}), flush=True)


if __name__ == "__main__":
    main()

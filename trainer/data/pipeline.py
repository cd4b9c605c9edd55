"""From a data source to the batches ``fit`` consumes.

Order of work, chosen for speed: decode/resize per example (sources do it),
cache small sets in memory, shuffle per epoch under a seed, batch with static
shapes, then augment *whole batches* (per-sample random draws, vectorised),
then prefetch. Pixels stay float32 in 0..255; normalisation is the model's
first layer, so an exported model takes plain images.

Everything a batch depends on is a function of its position (epoch, batch):
each epoch is shuffled with its own seed and the augmentation's random state
is set from the batch's global index before it is drawn. A run resumed at any
batch therefore sees exactly the batches an uninterrupted run would.

Two paths give the same structure: ``tf.data`` for sources that yield a
``tf.data.Dataset``, and a plain Python generator for in-memory NumPy sources
(``source.train_arrays()``), which needs no TensorFlow at all (JAX hosts).
TensorFlow is imported only inside the ``tf.data`` functions.
"""

from __future__ import annotations

import numpy as np

from trainer.seeding import mix_seed


def epoch_seed(seed: int, epoch: int) -> int:
    """A distinct, reproducible shuffle seed per epoch (so resuming at epoch e replays epoch e)."""
    return mix_seed(int(seed), int(epoch))


def training_batches(source, batch_size: int, seed: int, steps_per_epoch: int, epochs: int,
                     augment=None, start_epoch: int = 0, skip_batches: int = 0,
                     shuffle_buffer: int = 20_000):
    """``(images, labels)`` batches for epochs ``start_epoch … epochs-1``, in order.

    Each epoch is shuffled with its own seed and cut to ``steps_per_epoch``
    full batches, so Keras epochs and data epochs coincide. ``skip_batches``
    drops the first batches of ``start_epoch`` (a run resumed mid-epoch).
    ``augment`` maps a batch ``(images, labels)`` to the same structure
    (multi-view included). Returns a ``tf.data.Dataset``, or a generator of
    NumPy batches for array sources.
    """
    if source.in_memory:
        images, labels = source.train_arrays()
        return array_batches(images, labels, batch_size, seed, steps_per_epoch, epochs,
                             augment=augment, start_epoch=start_epoch, skip_batches=skip_batches)
    shuffled_epoch = epoch_shuffler(source, seed, shuffle_buffer)
    return positioned_batches(lambda epoch: shuffled_epoch(epoch).batch(batch_size, drop_remainder=True),
                              seed, steps_per_epoch, epochs, augment, start_epoch, skip_batches)


def positioned_batches(one_epoch, seed: int, steps_per_epoch: int, epochs: int, augment=None,
                       start_epoch: int = 0, skip_batches: int = 0):
    """``tf.data`` batches of ``one_epoch(epoch)``, each keyed on its global position.

    Epochs are cut to ``steps_per_epoch`` (wrapping around a short one); the
    first ``skip_batches`` of ``start_epoch`` are dropped before augmentation.
    """
    import tensorflow as tf

    def positioned(epoch: int):
        return (one_epoch(epoch)
                .repeat()  # a steps_per_epoch larger than the data set wraps around
                .take(steps_per_epoch)
                .enumerate(start=epoch * steps_per_epoch))  # the batch's global position

    batches = positioned(start_epoch).skip(skip_batches)
    for epoch in range(start_epoch + 1, epochs):
        batches = batches.concatenate(positioned(epoch))
    if augment is None:
        batches = batches.map(lambda position, batch: batch)
    else:
        batches = batches.map(positional_augmentation(augment, seed, graph=True),
                              num_parallel_calls=None)  # in order: the seeds are set per call
    return batches.prefetch(tf.data.AUTOTUNE)


def array_batches(images, labels, batch_size: int, seed: int, steps_per_epoch: int, epochs: int,
                  augment=None, start_epoch: int = 0, skip_batches: int = 0, order_of=None):
    """The NumPy twin of ``training_batches``: a generator of (float32 images, int32 labels).

    ``order_of(epoch)`` gives an epoch's example indices (default: ``epoch_order``).
    """
    images = np.asarray(images)
    labels = np.asarray(labels)
    if len(images) < batch_size:
        raise ValueError(f"{len(images)} images are fewer than one batch of {batch_size}")
    apply = positional_augmentation(augment, seed, graph=False) if augment is not None else None
    order_of = order_of or (lambda epoch: epoch_order(len(images), batch_size, steps_per_epoch, seed, epoch))

    def generate():
        for epoch in range(start_epoch, epochs):
            order = order_of(epoch)
            first = skip_batches if epoch == start_epoch else 0
            for index in range(first, steps_per_epoch):
                chosen = order[index * batch_size:(index + 1) * batch_size]
                batch = (images[chosen].astype(np.float32), labels[chosen].astype(np.int32))
                if apply is not None:
                    batch = _to_numpy(apply(epoch * steps_per_epoch + index, batch))
                yield batch

    return generate()


def epoch_order(count: int, batch_size: int, steps_per_epoch: int, seed: int, epoch: int) -> np.ndarray:
    """Example indices of one epoch: seeded permutations, each cut to whole batches, repeated."""
    rng = np.random.default_rng(epoch_seed(seed, epoch))
    usable = (count // batch_size) * batch_size
    needed = steps_per_epoch * batch_size
    parts, total = [], 0
    while total < needed:
        parts.append(rng.permutation(count)[:usable])
        total += usable
    return np.concatenate(parts)[:needed]


# -- augmentation keyed on the batch's position ------------------------------------

def positional_augmentation(augment, seed: int, graph: bool):
    """``fn(position, (images, labels))``: reseed the augmentation from the position, then augment.

    ``augment`` is reseedable (``augment.reseeding``: a pipeline, a multi-view or its
    view-axis form): its generators' states are set from (``seed``, its own seed,
    position) before each batch, so each batch's draws depend on where it is in the
    run only. ``graph``: inside ``tf.data``, where data layers compute with TensorFlow.
    """
    if graph:
        import tensorflow as tf

        augment.seed_generators("tensorflow")  # made now: tf.data cannot create variables while tracing

        def apply(position, batch):
            augment.reseed(tf.cast(position, tf.int64), seed, backend="tensorflow")
            return augment(*batch)
        return apply

    def apply_eager(position, batch):
        augment.reseed(int(position), seed)
        return augment(*batch)
    return apply_eager


def _to_numpy(batch):
    import keras

    if isinstance(batch, dict):
        return {k: _to_numpy(v) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(_to_numpy(v) for v in batch)
    return keras.ops.convert_to_numpy(batch) if batch is not None else None


def epoch_shuffler(source, seed: int, shuffle_buffer: int = 20_000):
    """``epoch -> dataset`` of the source's (float pixels, int32 label) in that epoch's seeded order.

    Small sets are cached decoded in memory after the first pass.
    """
    import tensorflow as tf

    examples = source.train()
    if source.fits_in_memory:
        examples = examples.cache()
    buffer = min(shuffle_buffer, max(source.num_examples, 1))

    def shuffled(epoch: int):
        return (examples.shuffle(buffer, seed=epoch_seed(seed, epoch))
                .map(as_float_pixels, num_parallel_calls=tf.data.AUTOTUNE))

    return shuffled


def as_float_pixels(image, label):
    import tensorflow as tf

    return tf.cast(image, tf.float32), tf.cast(label, tf.int32)


def materialise(dataset, batch_size: int = 512):
    """(images uint8 [N,H,W,3], labels int32 [N]) as NumPy arrays, for evaluation sets.

    ``dataset`` is a ``tf.data.Dataset`` of (image, label), or already a pair
    of arrays (in-memory sources).
    """
    if isinstance(dataset, (tuple, list)):
        images, labels = dataset
        return np.asarray(images), np.asarray(labels).astype(np.int32)
    images, labels = [], []
    for image_batch, label_batch in dataset.batch(batch_size).as_numpy_iterator():
        images.append(image_batch)
        labels.append(label_batch)
    if not images:
        return np.zeros((0, 1, 1, 3), np.uint8), np.zeros((0,), np.int32)
    return np.concatenate(images), np.concatenate(labels).astype(np.int32)


"""Each process of a multi-process job feeds its own rows of every global batch.

Under ``keras.distribution`` with several processes, every process hands Keras a
per-process batch and Keras assembles the global array from them
(``jax.make_array_from_process_local_data``) in process order, which is the order of
the mesh's devices. So process ``i`` of ``N`` feeds rows ``[i·B/N, (i+1)·B/N)`` of the
global batch ``B``, and the global batch at every position is exactly the one a
single process would train on (exact resume holds; the equivalence tests check it).

The rows are cut *after* the batch is augmented: augmentations draw per sample from a
generator keyed on the batch's position, so augmenting only a share would change the
draws. Each process therefore still decodes and augments the whole batch and keeps
its share: correct for any augmentation, at N× the input work. An input pipeline
that is the bottleneck on many hosts would key draws per sample and cut first.
"""

from __future__ import annotations


def this_process_share(batches, batch_size: int):
    """``batches`` (a ``tf.data.Dataset`` or an iterable of NumPy batches) cut to this process's rows."""
    from trainer import processes

    if not processes.multi_process():
        return batches
    rows = processes.process_share(batch_size)
    if hasattr(batches, "element_spec"):  # tf.data
        return batches.map(lambda *parts: take_rows(parts if len(parts) > 1 else parts[0], rows))
    return (take_rows(batch, rows) for batch in batches)


def take_rows(batch, rows: slice):
    """The rows ``rows`` of every array in ``batch`` (tuples, lists and dicts kept)."""
    if isinstance(batch, dict):
        return {key: take_rows(value, rows) for key, value in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(take_rows(value, rows) for value in batch)
    return None if batch is None else batch[rows]

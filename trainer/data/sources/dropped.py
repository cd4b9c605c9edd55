"""Records that ``tf.data`` dropped, found by the gap they leave, so each can be named.

TensorFlow's decoders and readers fail inside ``tf.data`` with a message that names no file
(``jpeg::Uncompress failed``, ``corrupted record at 0``). Catching each record's failure in
the graph costs a dataset per record (about six times slower), so the fast path stays plain:

1. every record is numbered (``enumerate``) before anything that can fail, and a sentinel
   record (``END``) follows the last one;
2. decoding runs as usual, and ``ignore_errors`` drops a record whose decoding fails (the
   number it was given is consumed all the same);
3. a ``scan`` over chunks of records compares each number with the one before: a gap means
   records were dropped between those two neighbours, and Python (run only then) is handed
   the neighbours' (file, record) to find, replay and name the records between them.

The sentinel makes a record dropped at the very end visible too.
"""

from __future__ import annotations

END = "<end of records>"  # the sentinel's file name


def numbered(records):
    """``records`` of (data, label, file, index), with the sentinel, as (position, record)."""
    import tensorflow as tf

    sentinel = tf.data.Dataset.from_tensors((tf.constant(b""), tf.constant(0, tf.int32), tf.constant(END),
                                             tf.constant(-1, tf.int64)))
    return records.concatenate(sentinel).enumerate()


def is_sentinel(file):
    import tensorflow as tf

    return tf.equal(file, END)


def report_gaps(dataset, report, chunk: int = 64):
    """``dataset`` of (position, image, label, file, index) after ``ignore_errors``, checked for gaps.

    ``report(previous_file, previous_index, file, index)`` runs in Python for each gap (the
    previous record is ``("", -1)`` at the start; ``file`` is ``END`` at the end); it may raise
    (the error then stops the pipeline) or return to go on. The sentinel is removed.

    The check runs on ``chunk`` records at a time (a ``scan`` is sequential: per record it halved
    the pipeline's throughput; per chunk it costs next to nothing).
    """
    import tensorflow as tf

    def report_all(last_files, last_indices, files, indices):
        for gap in zip(last_files.numpy(), last_indices.numpy(), files.numpy(), indices.numpy()):
            report(*(tf.constant(value) for value in gap))
        return True

    def step(state, chunk_of):
        last_position, last_file, last_index = state
        positions, images, labels, files, indices = chunk_of
        before = (tf.concat([[last_position], positions[:-1]], 0), tf.concat([[last_file], files[:-1]], 0),
                  tf.concat([[last_index], indices[:-1]], 0))
        gap = positions > before[0] + 1
        checked = tf.cond(tf.reduce_any(gap), lambda: tf.py_function(
            report_all, [tf.boolean_mask(before[1], gap), tf.boolean_mask(before[2], gap),
                         tf.boolean_mask(files, gap), tf.boolean_mask(indices, gap)], tf.bool),
            lambda: tf.constant(True))
        with tf.control_dependencies([checked]):
            positions = tf.identity(positions)
        return (positions[-1], files[-1], indices[-1]), (positions, images, labels, files, indices)

    start = (tf.constant(-1, tf.int64), tf.constant(""), tf.constant(-1, tf.int64))
    return (dataset.batch(chunk).scan(start, step).unbatch()
            .filter(lambda position, image, label, file, index: tf.logical_not(is_sentinel(file)))
            .map(lambda position, image, label, file, index: (image, label)))

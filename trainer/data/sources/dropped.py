"""Records that ``tf.data`` dropped, found by the gap they leave, so each can be named.

TensorFlow's decoders and readers fail inside ``tf.data`` with a message that names no file
(``jpeg::Uncompress failed``, ``corrupted record at 0``). Catching each record's failure in
the graph costs a dataset per record (about six times slower), so the fast path stays plain:

1. every record is numbered (``enumerate``) before anything that can fail, and a sentinel
   record (``END``) follows the last one;
2. decoding runs as usual, and ``ignore_errors`` drops a record whose decoding fails (the
   number it was given is consumed all the same);
3. a ``scan`` compares each surviving record's number with the previous one: a gap means
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


def report_gaps(dataset, report):
    """``dataset`` of (position, image, label, file, index) after ``ignore_errors``, checked for gaps.

    ``report(previous_file, previous_index, file, index)`` runs in Python for each gap (the
    previous record is ``("", -1)`` at the start; ``file`` is ``END`` at the end); it may raise
    (the error then stops the pipeline) or return to go on. The sentinel is removed.
    """
    import tensorflow as tf

    def step(state, element):
        last_position, last_file, last_index = state
        position, image, label, file, index = element
        checked = tf.cond(position > last_position + 1,
                          lambda: tf.py_function(report, [last_file, last_index, file, index], tf.bool),
                          lambda: tf.constant(True))
        with tf.control_dependencies([checked]):
            position = tf.identity(position)
        return (position, file, index), (position, image, label, file, index)

    start = (tf.constant(-1, tf.int64), tf.constant(""), tf.constant(-1, tf.int64))
    return (dataset.scan(start, step)
            .filter(lambda position, image, label, file, index: tf.logical_not(is_sentinel(file)))
            .map(lambda position, image, label, file, index: (image, label)))

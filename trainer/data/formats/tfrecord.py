"""TFRecord shards of face images: one ``tf.train.Example`` per image.

Features: ``image`` (bytes: the encoded JPEG/PNG, stored as given) and
``label`` (int64 identity index). Shards are named
``<prefix>-00000-of-00008.tfrecord``; ``dataset_info.json`` beside them records
the counts so reading starts without a scan.
"""

from __future__ import annotations

import json
import os

INFO_FILE = "dataset_info.json"


def shard_name(prefix: str, index: int, count: int) -> str:
    return f"{prefix}-{index:05d}-of-{count:05d}.tfrecord"


def encode_example(image: bytes, label: int, image_key: str = "image", label_key: str = "label") -> bytes:
    import tensorflow as tf

    feature = {
        image_key: tf.train.Feature(bytes_list=tf.train.BytesList(value=[bytes(image)])),
        label_key: tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def parse_example(serialized, image_key: str = "image", label_key: str = "label"):
    """(encoded image string, int32 label) of one serialized example (graph mode)."""
    import tensorflow as tf

    parsed = tf.io.parse_single_example(serialized, {
        image_key: tf.io.FixedLenFeature([], tf.string),
        label_key: tf.io.FixedLenFeature([], tf.int64),
    })
    return parsed[image_key], tf.cast(parsed[label_key], tf.int32)


def write_shards(examples, folder: str, num_shards: int, prefix: str = "train",
                 num_classes: int | None = None, extra_info: dict | None = None,
                 write_info: bool = True) -> dict:
    """Write ``(encoded image, label)`` pairs round-robin over ``num_shards`` files.

    Round-robin keeps every shard's labels spread over the whole set, so
    reading shards in parallel mixes identities. Returns the info written to
    ``dataset_info.json``.
    """
    import tensorflow as tf

    tf.io.gfile.makedirs(folder)
    names = [shard_name(prefix, i, num_shards) for i in range(num_shards)]
    writers = [tf.io.TFRecordWriter(os.path.join(folder, n)) for n in names]
    count, max_label = 0, -1
    try:
        for image, label in examples:
            writers[count % num_shards].write(encode_example(image, label))
            count += 1
            max_label = max(max_label, int(label))
    finally:
        for writer in writers:
            writer.close()
    info = {"num_examples": count, "num_classes": int(num_classes if num_classes is not None else max_label + 1),
            "files": names, **(extra_info or {})}
    if write_info:
        with tf.io.gfile.GFile(os.path.join(folder, INFO_FILE), "w") as f:
            json.dump(info, f, indent=2)
    return info


def read_info(folder: str) -> dict | None:
    import tensorflow as tf

    path = os.path.join(folder, INFO_FILE)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)

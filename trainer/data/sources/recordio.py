"""insightface RecordIO (MS1MV2/MS1MV3/Glint360K as distributed), read without mxnet."""

from __future__ import annotations

import os

import numpy as np

from trainer.data.formats import recordio
from trainer.data.errors import DataError
from trainer.data.sources.encoded import EncodedImageSource, require_path
from trainer.registry import DATASETS


def read_property(path: str) -> tuple[int, int, int]:
    """(num_classes, height, width) from insightface's ``property`` file."""
    import tensorflow as tf

    with tf.io.gfile.GFile(path, "rb") as f:
        text = f.read().decode("ascii", errors="replace").strip()
    try:
        classes, height, width = (int(float(x)) for x in text.split(","))
    except ValueError:
        raise DataError(f"{path} should read 'num_classes,height,width', got {text[:60]!r}") from None
    return classes, height, width


@DATASETS.register("recordio")
class RecordIOSource(EncodedImageSource):
    """``path/train.rec`` + ``train.idx`` + ``property`` (insightface layout).

    Before training, every image record's header is read (32 bytes each, no
    image) to count images and check labels against ``property``; on very large
    remote sets turn ``check_labels`` off (labels are then asserted as read).
    """

    def __init__(self, path=None, image_size=112, resize=True, on_corrupt="stop", check_labels=True,
                 rec_file="train.rec", idx_file="train.idx"):
        self._setup(image_size, resize, on_corrupt)
        self.path = require_path(path, "data.path", "train.rec, train.idx and property", folder=True)
        self.rec_path = require_path(os.path.join(self.path, rec_file), "data.rec_file")
        self.idx_path = require_path(os.path.join(self.path, idx_file), "data.idx_file")
        property_path = os.path.join(self.path, "property")
        self.property = read_property(property_path) if _exists(property_path) else None
        try:
            with recordio.IndexedRecordReader(self.rec_path, self.idx_path) as reader:
                self.keys = self._image_keys(reader)
                self.labels = self._scan_labels(reader) if check_labels else None
        except recordio.RecordIOError as error:
            raise DataError(f"{error}; is data.path an insightface RecordIO folder?") from None
        if self.property is not None:
            self.num_classes = self.property[0]
        elif self.labels is not None:
            self.num_classes = int(self.labels.max()) + 1 if len(self.labels) else 0
        else:
            raise DataError(f"{property_path} is missing and data.check_labels=false, so the class "
                            "count is unknown; add the property file or set data.check_labels=true")
        if self.labels is not None and len(self.labels):
            top = int(self.labels.max())
            if top >= self.num_classes or int(self.labels.min()) < 0:
                raise DataError(f"{property_path} says {self.num_classes} classes but labels in "
                                f"{self.rec_path} reach {top}; fix the property file or the records")
        self.num_examples = len(self.keys)
        if not self.num_examples:
            raise DataError(f"{self.rec_path} holds no image records")
        self.preflight()

    def _image_keys(self, reader) -> list[int]:
        """Keys of image records: ``1 … label[0]-1`` after an insightface header, else all keys."""
        keys = reader.keys()
        if 0 in reader.index:
            header = reader.read_header(0)
            if header.flag > 0:
                first_identity = int(header.label[0])
                identity_records = int(header.label[1]) - first_identity if header.flag > 1 else None
                if (identity_records and self.property is not None
                        and identity_records != self.property[0]):
                    raise DataError(f"{self.path}/property says {self.property[0]} classes but the "
                                    f"record header lists {identity_records} identities; fix the property file")
                return [k for k in range(1, first_identity) if k in reader.index]
        return keys

    def _scan_labels(self, reader) -> np.ndarray:
        labels = np.empty(len(self.keys), np.int64)
        for i, key in enumerate(self.keys):
            labels[i] = recordio.image_label(reader.read_header(key))
        return labels

    def _records(self, heldout: bool = False):
        import tensorflow as tf

        keys = self.keys
        num_shards, index = self.shard_spec
        if num_shards > 1 and not heldout:  # explicit sharding: this worker's keys only
            keys = keys[index::num_shards]
        rec_path, idx_path = self.rec_path, self.idx_path
        corrupt = self._corrupt

        def generate():
            with recordio.IndexedRecordReader(rec_path, idx_path) as reader:
                for key in keys:
                    try:
                        header, image = recordio.unpack(reader.read(key))
                        label = recordio.image_label(header)
                    except recordio.RecordIOError as error:
                        corrupt(rec_path, key, f"is not a RecordIO image record ({error})")  # stop: raises
                        continue
                    yield image, label, rec_path, key

        return tf.data.Dataset.from_generator(generate, output_signature=(
            tf.TensorSpec([], tf.string), tf.TensorSpec([], tf.int32),
            tf.TensorSpec([], tf.string), tf.TensorSpec([], tf.int64)))

    def _layout(self, heldout: bool):
        keys = self.keys
        num_shards, index = self.shard_spec
        labels = self.labels if self.labels is not None else [None] * len(keys)
        return [(self.rec_path, keys[i], labels[i]) for i in range(index, len(keys), num_shards)]

    def _read_record(self, file: str, index: int) -> bytes:
        try:
            with recordio.IndexedRecordReader(self.rec_path, self.idx_path) as reader:
                return recordio.unpack(reader.read(index))[1]
        except recordio.RecordIOError as error:
            raise OSError(str(error)) from None

    def train(self):
        # Sharding is applied to the keys in ``_records`` (before any bytes are read).
        return self._decoded(self._records())


def _exists(path: str) -> bool:
    import tensorflow as tf

    return tf.io.gfile.exists(path)

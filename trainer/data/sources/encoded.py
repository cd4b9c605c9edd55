"""Shared machinery of the sources that store encoded images (folders, TFRecord, RecordIO).

A subclass lists its records as a ``tf.data.Dataset`` of
``(encoded bytes, int32 label, file, record index)``; this class decodes them
to uint8 (H, W, 3) at ``image_size`` and deals with the user's data mistakes:

* sizes: ``resize: true`` resizes (area-averaging when shrinking); ``false``
  makes a size other than ``image_size`` an error;
* corrupt records: bytes that are not a complete JPEG/PNG/GIF/BMP (wrong
  signature, truncated JPEG or PNG) are reported with file and record, then skipped
  and counted (``on_corrupt: skip``) or the job stops (``on_corrupt: stop``).
  In skip mode a record that passes these checks but still fails to decode
  is dropped as well (TensorFlow logs it); in stop mode it stops the job
  with TensorFlow's decoder message;
* before training, ``preflight`` decodes the first few records in Python so a
  wrong path, format or size is one clear line, not a traceback mid-epoch.
"""

from __future__ import annotations

import abc
import logging
import threading

from trainer.data.errors import DataError
from trainer.data.sources.base import DataSource
from trainer.errors import first_line

ON_CORRUPT = ("skip", "stop")
PREFLIGHT_RECORDS = 4
log = logging.getLogger(__name__)


def looks_like_image(data):
    """Graph-mode check: a known image signature and, for JPEG, an end-of-image marker near the end."""
    import tensorflow as tf

    length = tf.strings.length(data)
    head = tf.strings.substr(data, 0, 8)
    jpeg = tf.strings.substr(head, 0, 3) == b"\xff\xd8\xff"
    png = head == b"\x89PNG\r\n\x1a\n"
    gif = tf.strings.substr(head, 0, 4) == b"GIF8"
    bmp = tf.strings.substr(head, 0, 2) == b"BM"
    # Encoders end JPEGs with FF D9; allow a little trailing padding after it.
    tail_length = tf.minimum(length, 32)
    tail = tf.io.decode_raw(tf.strings.substr(data, length - tail_length, tail_length), tf.uint8)
    has_end = tf.reduce_any(tf.logical_and(tf.equal(tail[:-1], 255), tf.equal(tail[1:], 217)))
    # PNGs end with the IEND chunk (type + CRC).
    png_end = tf.strings.substr(data, tf.maximum(length - 8, 0), 8) == b"IEND\xaeB`\x82"
    return tf.logical_and(length >= 16, tf.reduce_any(tf.stack([
        tf.logical_and(jpeg, has_end), tf.logical_and(png, png_end), gif, bmp])))


class EncodedImageSource(DataSource):
    """Base for sources of encoded images; subclasses implement ``_records`` (and ``_heldout_records``)."""

    def _setup(self, image_size, resize, on_corrupt) -> None:
        self.image_size = int(image_size)
        self.resize = bool(resize)
        if on_corrupt not in ON_CORRUPT:
            raise DataError(f"data.on_corrupt={on_corrupt!r} is not one of {', '.join(ON_CORRUPT)}")
        self.on_corrupt = on_corrupt
        self.corrupt_records: list[tuple[str, int, str]] = []  # (file, record, reason), skipped so far
        self._lock = threading.Lock()

    # -- what subclasses provide -----------------------------------------------------
    @abc.abstractmethod
    def _records(self, heldout: bool = False):
        """``tf.data.Dataset`` of (encoded bytes, int32 label, file string, int64 record index)."""

    def _has_heldout(self) -> bool:
        return False

    # -- DataSource ------------------------------------------------------------------
    def train(self):
        return self._decoded(self.apply_shard(self._records()))

    def heldout(self):
        return self._decoded(self._records(heldout=True)) if self._has_heldout() else None

    def encoded_examples(self, heldout: bool = False):
        """Python iterator of (encoded bytes, label) in order, undecoded (for converters)."""
        for data, label, _, _ in self._records(heldout).as_numpy_iterator():
            yield data, int(label)

    # -- checks ----------------------------------------------------------------------
    def preflight(self, count: int = PREFLIGHT_RECORDS) -> None:
        """Decode the first records now: a wrong format or size fails before training."""
        import tensorflow as tf

        for data, label, file, index in self._records().take(count).as_numpy_iterator():
            where = f"record {index} of {file.decode()}"
            if not bool(looks_like_image(tf.constant(data))):
                if self.on_corrupt == "stop":
                    raise DataError(f"{where} is not a JPEG/PNG image; check data.path and the format "
                                    "(or data.on_corrupt=skip to skip such records)")
                continue
            try:
                image = tf.io.decode_image(data, channels=3, expand_animations=False)
            except tf.errors.OpError as error:
                raise DataError(f"{where} cannot be decoded ({first_line(error)})") from None
            height, width = int(image.shape[0]), int(image.shape[1])
            if not self.resize and (height, width) != (self.image_size, self.image_size):
                raise DataError(f"{where} is {height}x{width}, not data.image_size={self.image_size}; "
                                f"set data.image_size={height} or data.resize=true")
            if not 0 <= int(label) < self.num_classes:
                raise DataError(f"{where} has label {int(label)} outside [0, {self.num_classes}); "
                                "the class count does not match the data")

    def _report_corrupt(self, file, index, ok):
        """Called (in Python) only for records that failed the check: log, count, or stop."""
        if bool(ok):
            return True
        file = file.numpy().decode() if hasattr(file, "numpy") else str(file)
        index = int(index)
        reason = "not a complete JPEG/PNG image"
        if self.on_corrupt == "stop":
            raise DataError(f"corrupt record {index} of {file}: {reason}; fix or remove it, or set "
                            "data.on_corrupt=skip")
        with self._lock:
            self.corrupt_records.append((file, index, reason))
            count = len(self.corrupt_records)
        log.warning("skipped corrupt record %d of %s (%s); %d skipped so far", index, file, reason, count)
        print(f"warning: skipped corrupt record {index} of {file} ({reason}); {count} skipped so far",
              flush=True)
        return False

    # -- decoding --------------------------------------------------------------------
    def _decoded(self, records):
        import tensorflow as tf

        size, num_classes = self.image_size, self.num_classes

        def check(data, label, file, index):
            ok = looks_like_image(data)
            # Python runs only for bad records, so the common path stays in the graph.
            ok = tf.cond(ok, lambda: tf.constant(True),
                         lambda: tf.py_function(self._report_corrupt, [file, index, ok], tf.bool))
            ok = tf.ensure_shape(ok, [])
            return ok, data, label, file, index

        def decode(ok, data, label, file, index):
            image = tf.io.decode_image(data, channels=3, expand_animations=False)
            image.set_shape([None, None, 3])
            shape = tf.shape(image)
            if self.resize:
                image = tf.cond(
                    tf.logical_and(tf.equal(shape[0], size), tf.equal(shape[1], size)),
                    lambda: image,
                    lambda: tf.cast(tf.clip_by_value(tf.round(tf.image.resize(
                        image, [size, size], method="area")), 0, 255), tf.uint8))
            else:
                tf.debugging.assert_equal(shape[:2], [size, size], message=tf.strings.join(
                    ["wrong image size (data.resize=false) in record ",
                     tf.strings.as_string(index), " of ", file]))
            tf.debugging.assert_less(label, num_classes, message=tf.strings.join(
                ["label beyond the class count in record ", tf.strings.as_string(index), " of ", file]))
            image = tf.ensure_shape(image, [size, size, 3])
            return image, label

        dataset = records.map(check).filter(lambda ok, *rest: ok)
        dataset = dataset.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        if self.on_corrupt == "skip":
            dataset = dataset.ignore_errors(log_warning=True)
        return dataset


def require_path(path, key: str = "data.path", what: str = "data") -> str:
    """``path`` as a string; a clear line when it is missing (local or ``gs://``)."""
    import tensorflow as tf

    if path is None or str(path) in ("", "None", "???"):
        raise DataError(f"{key} is not set; pass {key}=/path/to/{what}")
    path = str(path)
    if not tf.io.gfile.exists(path):
        raise DataError(f"{key}={path} does not exist; check the path")
    return path

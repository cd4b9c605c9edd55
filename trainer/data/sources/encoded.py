"""Shared machinery of the sources that store encoded images (folders, TFRecord, RecordIO).

A subclass lists its records as a ``tf.data.Dataset`` of
``(encoded bytes, int32 label, file, record index)``; this class decodes them
to uint8 (H, W, 3) at ``image_size`` and deals with the user's data mistakes:

* sizes: ``resize: true`` resizes (area-averaging when shrinking); ``false``
  makes a size other than ``image_size`` an error;
* corrupt records: a record that cannot be used (not a complete JPEG/PNG/GIF/BMP, a
  decoder error, a file that cannot be read, a wrong size or label) is named with its file
  and record, wherever ``tf.data`` dropped it (``dropped``: found by the gap it leaves and
  replayed in Python), then skipped and counted (``on_corrupt: skip``) or the job stops
  (``on_corrupt: stop``), in training and held-out data alike;
* before training, ``preflight`` decodes the first few records in Python so a
  wrong path, format or size is one clear line, not a traceback mid-epoch.
"""

from __future__ import annotations

import abc
import logging
import threading

from trainer.data.errors import DataError
from trainer.data.sources import dropped
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
        return self._decoded(self.apply_shard(self._records()), heldout=False)

    def heldout(self):
        return self._decoded(self._records(heldout=True), heldout=True) if self._has_heldout() else None

    def encoded_examples(self, heldout: bool = False):
        """Python iterator of (encoded bytes, label) in order, undecoded (for converters)."""
        for data, label, _, _ in self._records(heldout).as_numpy_iterator():
            yield data, int(label)

    # -- checks ----------------------------------------------------------------------
    def preflight(self, count: int = PREFLIGHT_RECORDS) -> None:
        """Decode the first records now: a wrong format or size fails before training."""
        import tensorflow as tf

        last = None
        try:
            for data, label, file, index in self._records().take(count).as_numpy_iterator():
                last = (file.decode(), int(index))
                problem = self.record_problem(data, label)
                if problem is None:
                    continue
                if problem.startswith(("is ", "has ")) and "; " in problem:  # the data set's size or labels
                    raise DataError(f"record {index} of {file.decode()} {problem}")
                if self.on_corrupt == "stop":
                    raise DataError(f"record {index} of {file.decode()} {problem}; check data.path and the "
                                    "format (or data.on_corrupt=skip to skip such records)")
        except tf.errors.OpError:  # a reader failed: name the record it could not read
            if self.on_corrupt == "stop":
                for file, index, reason in self._dropped_between(last, None, heldout=False, limit=1):
                    raise DataError(f"record {index} of {file} {reason}; check data.path and the format "
                                    "(or data.on_corrupt=skip to skip such records)") from None
                raise

    def record_problem(self, data: bytes, label=None) -> str | None:
        """Why one encoded record cannot train, as a verb phrase (None: it can), decoded here in Python.

        The same checks the pipeline's graph makes, so a record the pipeline dropped is named
        with its reason.
        """
        import tensorflow as tf

        if not bool(looks_like_image(tf.constant(data))):
            return "is not a complete JPEG/PNG image"
        try:
            image = tf.io.decode_image(data, channels=3, expand_animations=False)
        except tf.errors.OpError as error:
            return f"cannot be decoded ({first_line(error)})"
        height, width = int(image.shape[0]), int(image.shape[1])
        if not self.resize and (height, width) != (self.image_size, self.image_size):
            return (f"is {height}x{width}, not data.image_size={self.image_size}; "
                    f"set data.image_size={height} or data.resize=true")
        if label is not None and not 0 <= int(label) < self.num_classes:
            return (f"has label {int(label)} outside [0, {self.num_classes}); "
                    "the class count does not match the data")
        return None

    def _corrupt(self, file: str, index: int, reason: str) -> None:
        """One record that cannot be used: stop the job naming it, or count and skip it."""
        if self.on_corrupt == "stop":
            note = reason[3:] if reason.startswith("is ") else reason  # "...: not a complete JPEG/PNG image"
            raise DataError(f"corrupt record {index} of {file}: {note}; fix or remove it, or set "
                            "data.on_corrupt=skip")
        with self._lock:
            if (file, index, reason) in self.corrupt_records:  # an epoch that is read again
                return
            self.corrupt_records.append((file, index, reason))
            count = len(self.corrupt_records)
        log.warning("skipped corrupt record %d of %s (%s); %d skipped so far", index, file, reason, count)
        print(f"warning: skipped corrupt record {index} of {file} ({reason}); {count} skipped so far",
              flush=True)

    def _report_gap(self, heldout: bool):
        """The Python side of ``dropped.report_gaps``: name the records dropped between two neighbours."""
        def report(last_file, last_index, file, index):
            last_file, file = last_file.numpy().decode(), file.numpy().decode()
            last = (last_file, int(last_index)) if int(last_index) >= 0 else None
            following = None if file == dropped.END else (file, int(index))
            failures = self._dropped_between(last, following, heldout)
            if not failures:  # nothing found on a second read (a file that changed while read)
                where = following or last
                failures = [(where[0], where[1], "could not be read (nothing wrong on a second read)")]
            for failed_file, failed_index, reason in failures:
                self._corrupt(failed_file, failed_index, reason)
            return True
        return report

    # -- finding a dropped record ------------------------------------------------------
    def _layout(self, heldout: bool) -> list[tuple[str, int, int | None]]:
        """(file, record index, label or None) of every record in reading order (this worker's)."""
        raise NotImplementedError

    def _read_record(self, file: str, index: int) -> bytes:
        """The encoded bytes of one record (may raise ``OSError``)."""
        raise NotImplementedError

    def _dropped_between(self, last, following, heldout: bool, limit: int | None = None):
        """(file, index, reason) of the unusable records strictly between two records in reading order.

        ``last``/``following`` are (file, index), or None for the start/end of the records.
        """
        layout = self._layout(heldout)
        keys = [(file, index) for file, index, _ in layout]
        begin = keys.index(last) + 1 if last in keys else 0
        end = keys.index(following) if following in keys else len(keys)
        found = []
        for file, index, label in layout[begin:end]:
            try:
                problem = self.record_problem(self._read_record(file, index), label)
            except OSError as error:
                problem = f"cannot be read ({error.strerror or first_line(error)})"
            if problem is not None:
                found.append((file, index, problem))
                if limit is not None and len(found) >= limit:
                    break
        return found

    # -- decoding --------------------------------------------------------------------
    def _decoded(self, records, heldout: bool = False):
        """Decoded (uint8 image, label); a record that fails is named (``dropped``): skipped or stopped on."""
        import tensorflow as tf

        size, num_classes = self.image_size, self.num_classes

        def decode_one(data, label, file, index):
            valid = tf.debugging.Assert(looks_like_image(data), ["not a complete JPEG/PNG image"])
            with tf.control_dependencies([valid]):
                image = tf.io.decode_image(data, channels=3, expand_animations=False)
            image.set_shape([None, None, 3])
            shape = tf.shape(image)
            checks = [tf.debugging.assert_less(label, num_classes, message="label beyond the class count")]
            if self.resize:
                image = tf.cond(
                    tf.logical_and(tf.equal(shape[0], size), tf.equal(shape[1], size)),
                    lambda: image,
                    lambda: tf.cast(tf.clip_by_value(tf.round(tf.image.resize(
                        image, [size, size], method="area")), 0, 255), tf.uint8))
            else:
                checks.append(tf.debugging.assert_equal(shape[:2], [size, size], message="wrong image size"))
            with tf.control_dependencies(checks):
                return tf.ensure_shape(tf.identity(image), [size, size, 3])

        def decode(position, record):
            data, label, file, index = record
            image = tf.cond(dropped.is_sentinel(file), lambda: tf.zeros([size, size, 3], tf.uint8),
                            lambda: decode_one(data, label, file, index))
            return position, image, label, file, index

        dataset = dropped.numbered(records).map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return dropped.report_gaps(dataset.ignore_errors(), self._report_gap(heldout))


def require_path(path, key: str = "data.path", what: str = "data", folder: bool = False) -> str:
    """``path`` as a string; a clear line when it is missing, or is a file where a folder is wanted."""
    import tensorflow as tf

    if path is None or str(path) in ("", "None", "???"):
        raise DataError(f"{key} is not set; pass {key}=/path/to/{what}")
    path = str(path)
    if not tf.io.gfile.exists(path):
        raise DataError(f"{key}={path} does not exist; check the path")
    if folder and not tf.io.gfile.isdir(path):
        raise DataError(f"{key}={path} is a file, not a folder; pass the folder that holds the {what}")
    return path

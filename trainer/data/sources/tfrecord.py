"""TFRecord shards of (encoded image, label) examples, as written by ``python -m trainer.data.convert``."""

from __future__ import annotations

import os

from trainer.data.formats import tfrecord
from trainer.data.errors import DataError
from trainer.data.sources.encoded import EncodedImageSource, require_path
from trainer.errors import first_line
from trainer.registry import DATASETS


@DATASETS.register("tfrecord")
class TFRecordSource(EncodedImageSource):
    """``path/<pattern>`` shards with ``image`` (bytes) and ``label`` (int64) features.

    Counts come from ``dataset_info.json`` (written by the converter); without
    it the shards are scanned once for the number of examples and labels.
    With several workers each reads whole shards (``shard``) when there are at
    least as many shards as workers, else every n-th example.
    """

    def __init__(self, path=None, pattern="train-*.tfrecord", image_size=112, resize=True,
                 on_corrupt="stop", num_classes=None, image_key="image", label_key="label",
                 heldout_pattern=None, families_file=None):
        import tensorflow as tf

        self._setup(image_size, resize, on_corrupt)
        self.path = require_path(path, "data.path", "TFRecord shards", folder=True)
        self.image_key, self.label_key = image_key, label_key
        self.files = sorted(tf.io.gfile.glob(os.path.join(self.path, pattern)))
        if not self.files:
            raise DataError(f"no files match {os.path.join(self.path, pattern)}; check data.path and "
                            "data.pattern (convert with python -m trainer.data.convert)")
        self.heldout_files = sorted(tf.io.gfile.glob(os.path.join(self.path, heldout_pattern))) \
            if heldout_pattern else []
        if heldout_pattern and not self.heldout_files:
            raise DataError(f"no files match data.heldout_pattern={heldout_pattern} in {self.path}")
        self.families_file = families_file
        info = tfrecord.read_info(self.path)
        if info is not None and pattern == "train-*.tfrecord":
            self.num_examples, labelled_classes = int(info["num_examples"]), int(info["num_classes"])
            self._identity_names = info.get("identities")
        else:
            self.num_examples, labelled_classes = self._scan(self.files)
            self._identity_names = None
        self.num_classes = int(num_classes) if num_classes is not None else labelled_classes
        if labelled_classes > self.num_classes:
            raise DataError(f"data.num_classes={self.num_classes} but labels in {self.path} reach "
                            f"{labelled_classes - 1}; fix data.num_classes (or set it to null)")
        self.preflight()

    def _scan(self, files) -> tuple[int, int]:
        import tensorflow as tf

        count, top = 0, -1
        for file in files:  # one at a time: a shard that cannot be read is named
            labels = self._examples([file]).map(lambda data, label, file, index: label)
            try:
                for batch in labels.batch(4096).as_numpy_iterator():
                    count += len(batch)
                    top = max(top, int(batch.max()))
            except tf.errors.OpError as error:
                raise DataError(f"{file} is not a readable TFRecord file of images and labels "
                                f"({first_line(error)}); re-convert it or remove it") from None
        return count, top + 1

    def _dropped_between(self, last, following, heldout: bool, limit: int | None = None):
        """Replays the shards from ``last`` to ``following``: a record that fails is named with its reason.

        A reader error (a damaged shard) loses the rest of that shard: it is named once, as the
        record where reading stopped.
        """
        import tensorflow as tf

        files = self._reading_files(heldout)
        first = files.index(last[0]) if last and last[0] in files else 0
        end = files.index(following[0]) + 1 if following and following[0] in files else len(files)
        found = []
        for file in files[first:end]:
            start = last[1] + 1 if last and file == last[0] else 0
            stop = following[1] if following and file == following[0] else None
            index = start
            iterator = iter(self._examples([file]).skip(start).as_numpy_iterator())
            while stop is None or index < stop:
                try:
                    data, label, _, _ = next(iterator)
                except StopIteration:
                    break
                except tf.errors.OpError as error:
                    found.append((file, index, f"cannot be read ({first_line(error)}); the rest of the file "
                                               "is lost"))
                    break
                problem = self.record_problem(data, label)
                if problem is not None:
                    found.append((file, index, problem))
                index += 1
            if limit is not None and len(found) >= limit:
                return found[:limit]
        return found

    def _reading_files(self, heldout: bool) -> list[str]:
        num_shards, index = self.shard_spec
        if heldout:
            return self.heldout_files
        return self.files[index::num_shards] if 1 < num_shards <= len(self.files) else self.files

    def _examples(self, files):
        import tensorflow as tf

        image_key, label_key = self.image_key, self.label_key

        def one_file(file):
            return tf.data.TFRecordDataset(file).enumerate().map(
                lambda index, serialized: (*tfrecord.parse_example(serialized, image_key, label_key),
                                           file, index))

        return tf.data.Dataset.from_tensor_slices(tf.constant(files, tf.string)).flat_map(one_file)

    def _records(self, heldout: bool = False):
        import tensorflow as tf

        files = self.heldout_files if heldout else self.files
        num_shards, index = self.shard_spec
        if heldout or num_shards == 1:
            return self._examples(files)
        if len(files) >= num_shards:  # whole files per worker: each reads only its own
            return self._examples(files[index::num_shards])
        return self._examples(files).shard(num_shards, index)

    def train(self):
        return self._decoded(self._records(), heldout=False)

    def _has_heldout(self) -> bool:
        return bool(self.heldout_files)

    def heldout_families(self):
        if not self.families_file:
            return None
        info = tfrecord.read_info(self.path) or {}
        names = info.get("heldout_identities") if self.heldout_files else info.get("identities")
        if not names:
            raise DataError(f"data.families_file needs identity names in {self.path}/dataset_info.json; "
                            "convert from a folder to record them")
        from trainer.data.sources.folder import read_families

        return read_families(self.families_file, names)

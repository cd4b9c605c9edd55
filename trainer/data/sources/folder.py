"""Image folders: one sub-folder per identity (``path/<identity>/<image>.jpg``)."""

from __future__ import annotations

import os

import numpy as np

from trainer.data.errors import DataError
from trainer.data.sources.encoded import EncodedImageSource, require_path
from trainer.data.sources.holdout import choose_holdout, weak_estimate_line
from trainer.errors import first_line
from trainer.registry import DATASETS

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


def list_identities(root: str) -> tuple[list[str], list[str], list[int]]:
    """(identity names sorted, image paths, labels) of a folder of identity folders."""
    import tensorflow as tf

    names = sorted(n.rstrip("/") for n in tf.io.gfile.listdir(root)
                   if tf.io.gfile.isdir(os.path.join(root, n.rstrip("/"))))
    files, labels = [], []
    for label, name in enumerate(names):
        folder = os.path.join(root, name)
        for image in sorted(tf.io.gfile.listdir(folder)):
            if image.lower().endswith(IMAGE_EXTENSIONS):
                files.append(os.path.join(folder, image))
                labels.append(label)
    return names, files, labels


def read_families(path: str, identities: list[str]) -> np.ndarray:
    """Family index per identity from lines ``family,identity`` (comma or tab; ``#`` comments)."""
    import tensorflow as tf

    family_of, family_ids = {}, {}
    with tf.io.gfile.GFile(path) as f:
        for number, line in enumerate(f, 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            fields = [x.strip() for x in line.replace("\t", ",").split(",")]
            if len(fields) != 2:
                raise DataError(f"{path} line {number}: expected 'family,identity', got {line!r}")
            family, identity = fields
            family_of[identity] = family_ids.setdefault(family, len(family_ids))
    missing = [name for name in identities if name not in family_of]
    if missing:
        raise DataError(f"{path} gives no family for {len(missing)} identities (e.g. {missing[0]!r}); "
                        "add a 'family,identity' line for each")
    return np.asarray([family_of[name] for name in identities], np.int64)


@DATASETS.register("folder")
class FolderSource(EncodedImageSource):
    """``path/<identity>/*.jpg``; identities sorted by name become labels 0, 1, …

    ``heldout_path`` (same layout, other people) feeds held-out verification and
    albums; ``families_file`` maps its identities to families for albums.
    Without ``heldout_path``, ``holdout`` identities (seeded; ``auto``: see
    ``trainer.data.sources.holdout``) are kept out of training and evaluated
    instead. A held-out set too small for a meaningful accuracy is said in one line.
    """

    def __init__(self, path=None, image_size=112, resize=True, on_corrupt="stop", heldout_path=None,
                 families_file=None, num_classes=None, holdout="auto", holdout_seed=0):
        self._setup(image_size, resize, on_corrupt)
        self.path = require_path(path, "data.path", "identity folders", folder=True)
        self.identities, self.files, self.labels = list_identities(self.path)
        if not self.files:
            raise DataError(f"data.path={self.path} holds no identity folders with images "
                            f"({', '.join(IMAGE_EXTENSIONS)}); expected path/<identity>/<image>")
        self.heldout_path = None
        self.heldout_unavailable = None
        self.held_out_of_training = []
        if heldout_path in (None, ""):
            self.held_out_of_training, self.heldout_unavailable = choose_holdout(
                self.identities, self.labels, holdout, int(holdout_seed))
            if self.held_out_of_training:
                self._hold_out(set(self.held_out_of_training))
        self.num_classes = len(self.identities)
        if num_classes is not None and int(num_classes) != self.num_classes:
            raise DataError(f"data.num_classes={num_classes} but {self.path} has {self.num_classes} "
                            "identity folders; fix one of them (or set data.num_classes=null)")
        self.num_examples = len(self.files)
        if heldout_path not in (None, ""):
            self.heldout_path = require_path(heldout_path, "data.heldout_path", "held-out identity folders",
                                             folder=True)
            self.heldout_identities, self.heldout_files, self.heldout_labels = list_identities(self.heldout_path)
        self.families_file = None if families_file in (None, "") else require_path(
            families_file, "data.families_file", "families.csv")
        self.preflight()
        if self._has_heldout():
            how = (f"data.heldout_path={self.heldout_path}" if self.heldout_path
                   else f"data.holdout={holdout}")
            line = weak_estimate_line(self.heldout_labels, self.num_classes, how)
            if line:
                print(line, flush=True)
        elif holdout in (None, "auto"):
            print(f"note: data.holdout=auto holds out nobody: {self.heldout_unavailable}; the run reports "
                  "no held-out accuracy (data.heldout_path=... adds people to evaluate on)", flush=True)

    def _hold_out(self, held: set[str]) -> None:
        """Move the ``held`` identities' images to the held-out set; relabel the rest 0…C-1."""
        name_of = dict(enumerate(self.identities))
        train = [(f, name_of[label]) for f, label in zip(self.files, self.labels) if name_of[label] not in held]
        kept = [(f, name_of[label]) for f, label in zip(self.files, self.labels) if name_of[label] in held]
        self.identities = [n for n in self.identities if n not in held]
        self.heldout_identities = sorted(held)
        train_label = {n: i for i, n in enumerate(self.identities)}
        heldout_label = {n: i for i, n in enumerate(self.heldout_identities)}
        self.files, self.labels = [f for f, _ in train], [train_label[n] for _, n in train]
        self.heldout_files, self.heldout_labels = [f for f, _ in kept], [heldout_label[n] for _, n in kept]

    def _has_heldout(self) -> bool:
        return self.heldout_path is not None or bool(self.held_out_of_training)

    def _records(self, heldout: bool = False):
        import tensorflow as tf

        files, labels = (self.heldout_files, self.heldout_labels) if heldout else (self.files, self.labels)
        dataset = tf.data.Dataset.from_tensor_slices((
            tf.constant(files, tf.string), tf.constant(labels, tf.int32),
            tf.range(len(files), dtype=tf.int64)))
        return dataset.map(lambda file, label, index: (tf.io.read_file(file), label, file, index),
                           num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    def _layout(self, heldout: bool):
        files, labels = (self.heldout_files, self.heldout_labels) if heldout else (self.files, self.labels)
        num_shards, index = (1, 0) if heldout else self.shard_spec
        return [(files[i], i, labels[i]) for i in range(index, len(files), num_shards)]

    def _read_record(self, file: str, index: int) -> bytes:
        import tensorflow as tf

        try:
            with tf.io.gfile.GFile(file, "rb") as f:
                return f.read()
        except tf.errors.OpError as error:  # e.g. a symbolic link loop, a file removed since listed
            raise OSError(first_line(error).rsplit("; ", 1)[-1]) from None

    def heldout_families(self):
        if self.families_file is None:
            return None
        identities = self.heldout_identities if self._has_heldout() else self.identities
        return read_families(self.families_file, identities)

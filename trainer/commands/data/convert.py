"""Convert image folders or insightface RecordIO to TFRecord shards.

    python -m trainer.data.convert input=/data/faces_emore output=gs://bucket/ms1m shards=64
    python -m trainer.data.convert input=/data/people output=/data/people_tfr format=folder \\
        heldout_input=/data/people_heldout

``format`` is ``recordio`` or ``folder`` (default: ``recordio`` when
``input/train.rec`` exists). Encoded images are copied byte for byte (no
re-encoding); labels are kept. ``dataset_info.json`` records the counts and,
for folders, the identity names (so a families file can refer to them).
Read the result with ``data=tfrecord data.path=<output>``.
"""

from __future__ import annotations

import os
import sys

from trainer.commands import edge
from trainer.data.errors import DataError

COMMAND = "convert"


def convert(input, output, format=None, shards=8, heldout_input=None, on_corrupt="stop") -> dict:
    """Write ``output/train-*.tfrecord`` (+ ``heldout-*.tfrecord``); returns dataset_info."""
    import tensorflow as tf

    from trainer.data.formats import tfrecord
    from trainer.data.sources.folder import FolderSource
    from trainer.data.sources.recordio import RecordIOSource

    if format is None:
        format = "recordio" if tf.io.gfile.exists(os.path.join(str(input), "train.rec")) else "folder"
    if format not in ("folder", "recordio"):
        raise DataError(f"format={format} is not folder or recordio")
    shards = int(shards)
    if shards < 1:
        raise DataError(f"shards={shards}: need at least 1")
    # Sizes are irrelevant here (bytes are copied), so any size is accepted.
    common = dict(path=input, image_size=112, resize=True, on_corrupt=on_corrupt)
    extra = {}
    if format == "recordio":
        source = RecordIOSource(**common)
    else:
        source = FolderSource(**common, heldout_path=heldout_input, holdout=0)  # convert every identity
        extra["identities"] = source.identities
        if heldout_input:
            extra["heldout_identities"] = source.heldout_identities
    if format == "folder" and heldout_input:
        held = tfrecord.write_shards(source.encoded_examples(heldout=True), output, 1, "heldout",
                                     write_info=False)
        extra.update(heldout_files=held["files"], heldout_examples=held["num_examples"])
    return tfrecord.write_shards(source.encoded_examples(), output, shards, "train",
                                 num_classes=source.num_classes, extra_info=extra)


def run(cfg, argv) -> int:
    from trainer.commands.outputs import output_folder
    from trainer.registry import to_plain

    options = to_plain(cfg)
    if not options["input"] or not options["output"]:
        raise DataError("input= and output= are required (python -m trainer.data.convert --help)")
    output_folder(options["output"])
    if "://" not in str(options["output"]):
        edge.log_to(os.path.join(str(options["output"]), f"{COMMAND}.log"))
    info = convert(**options)
    print(f"wrote {info['num_examples']} images of {info['num_classes']} identities in "
          f"{len(info['files'])} shards to {options['output']}")
    return 0


def main(argv=None) -> int:
    return edge.main(COMMAND, __doc__, run, argv)


if __name__ == "__main__":
    sys.exit(main())

"""Folder, RecordIO and TFRecord sources; the converter; the user's data mistakes."""

import os
import struct

import numpy as np
import pytest
import tensorflow as tf

from trainer.data.formats import recordio
from trainer.data.errors import DataError
from trainer.registry import DATASETS

SIZE = 12


def png(image):
    return tf.io.encode_png(image).numpy()


def make_images(classes=3, per_class=3, size=SIZE, seed=0):
    """[(label, uint8 image)] grouped by label."""
    rng = np.random.default_rng(seed)
    return [(label, rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
            for label in range(classes) for _ in range(per_class)]


def write_folder(root, examples, names=None):
    for index, (label, image) in enumerate(examples):
        folder = os.path.join(root, (names or {}).get(label, f"person{label:02d}"))
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, f"{index:04d}.png"), "wb") as f:
            f.write(png(image))
    return str(root)


def write_rec(folder, examples, num_classes=None):
    os.makedirs(folder, exist_ok=True)
    recordio.write_insightface(str(folder), [(label, png(image)) for label, image in examples],
                               num_classes=num_classes, image_size=SIZE)
    return str(folder)


def read_all(dataset):
    images, labels = [], []
    for image, label in dataset.as_numpy_iterator():
        images.append(image)
        labels.append(int(label))
    return np.stack(images), labels


# -- RecordIO layout ------------------------------------------------------------------

def test_record_bytes_follow_the_documented_layout():
    payload = b"abcdefg"  # 7 bytes -> one padding byte
    record = recordio.encode_record(payload)
    assert record == struct.pack("<II", 0xCED7230A, 7) + payload + b"\0"
    assert len(record) % 4 == 0


def test_payload_holding_the_magic_word_is_split_and_rejoined(tmp_path):
    magic = struct.pack("<I", 0xCED7230A)
    payload = b"head" + magic + b"middle!!" + magic + b"tail5"
    record = recordio.encode_record(payload)
    # parts: "head" (flag 1), "middle!!" (flag 2), "tail5" (flag 3), magic words dropped between parts.
    expected = (magic + struct.pack("<I", (1 << 29) | 4) + b"head"
                + magic + struct.pack("<I", (2 << 29) | 8) + b"middle!!"
                + magic + struct.pack("<I", (3 << 29) | 5) + b"tail5" + b"\0\0\0")
    assert record == expected
    rec, idx = tmp_path / "x.rec", tmp_path / "x.idx"
    with recordio.IndexedRecordWriter(str(rec), str(idx)) as writer:
        writer.write(7, b"first")
        writer.write(9, payload)
    assert idx.read_text() == f"7\t0\n9\t{len(recordio.encode_record(b'first'))}\n"
    with recordio.IndexedRecordReader(str(rec), str(idx)) as reader:
        assert reader.read(9) == payload and reader.read(7) == b"first"


def test_header_pack_unpack_scalar_and_array_labels():
    header, image = recordio.unpack(recordio.pack(recordio.IRHeader(0, 5.0, 3, 0), b"JPEGDATA"))
    assert (header.flag, header.label, header.id, image) == (0, 5.0, 3, b"JPEGDATA")
    packed = recordio.pack(recordio.IRHeader(2, np.array([7.0, 1.0], np.float32)), b"x")
    assert struct.unpack_from("<IfQQ", packed) == (2, 0.0, 0, 0)
    assert np.frombuffer(packed[24:32], "<f4").tolist() == [7.0, 1.0]
    header, _ = recordio.unpack(packed)
    assert recordio.image_label(header) == 7


def test_recordio_source_reads_images_and_labels_exactly(tmp_path):
    examples = make_images()
    source = DATASETS.build({"name": "recordio", "path": write_rec(tmp_path / "rec", examples),
                             "image_size": SIZE, "resize": False})
    assert (source.num_classes, source.num_examples) == (3, 9)
    images, labels = read_all(source.train())
    assert labels == [label for label, _ in examples]
    assert np.array_equal(images, np.stack([image for _, image in examples]))


def test_property_class_count_below_labels_is_one_clear_error(tmp_path):
    path = write_rec(tmp_path / "rec", make_images(classes=3), num_classes=2)
    with pytest.raises(DataError, match="says 2 classes but"):
        DATASETS.build({"name": "recordio", "path": path, "image_size": SIZE})


def test_missing_path_and_wrong_size(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        DATASETS.build({"name": "recordio", "path": str(tmp_path / "nowhere")})
    with pytest.raises(DataError, match="data.path is not set"):
        DATASETS.build({"name": "folder"})
    root = write_folder(tmp_path / "faces", make_images(size=20))
    with pytest.raises(DataError, match="is 20x20, not data.image_size=12"):
        DATASETS.build({"name": "folder", "path": root, "image_size": SIZE, "resize": False})
    resized = DATASETS.build({"name": "folder", "path": root, "image_size": SIZE, "resize": True})
    assert read_all(resized.train())[0].shape == (9, SIZE, SIZE, 3)


def corrupt_rec(tmp_path, on_corrupt):
    examples = make_images(classes=2, per_class=4)
    payloads = [(label, png(image)) for label, image in examples]
    payloads[5] = (payloads[5][0], payloads[5][1][:40])  # truncated PNG
    payloads[6] = (payloads[6][0], b"this is not an image at all")  # beyond the preflight sample
    folder = tmp_path / "bad"
    os.makedirs(folder)
    recordio.write_insightface(str(folder), payloads, image_size=SIZE)
    return DATASETS.build({"name": "recordio", "path": str(folder), "image_size": SIZE,
                           "on_corrupt": on_corrupt}), examples


def test_corrupt_records_are_reported_and_skipped_with_a_count(tmp_path, capsys):
    source, examples = corrupt_rec(tmp_path, "skip")
    images, labels = read_all(source.train())
    assert len(labels) == 6
    assert [(os.path.basename(f), key) for f, key, _ in source.corrupt_records] == [
        ("train.rec", 6), ("train.rec", 7)]
    assert "skipped corrupt record 7 of" in capsys.readouterr().out
    kept = np.stack([image for i, (_, image) in enumerate(examples) if i not in (5, 6)])
    assert np.array_equal(images, kept)


def test_corrupt_record_stops_the_job_naming_file_and_record(tmp_path):
    source, _ = corrupt_rec(tmp_path, "stop")
    with pytest.raises(Exception, match=r"corrupt record 6 of .*train\.rec"):
        read_all(source.train())
    # A bad record among the first few is caught before training, in one line.
    payloads = [(0, b"garbage bytes, not an image"), (0, png(make_images(1, 1)[0][1]))]
    os.makedirs(tmp_path / "early")
    recordio.write_insightface(str(tmp_path / "early"), payloads, image_size=SIZE)
    with pytest.raises(DataError, match=r"record 1 of .*train\.rec is not a complete JPEG/PNG image"):
        DATASETS.build({"name": "recordio", "path": str(tmp_path / "early"), "image_size": SIZE})


# -- folders, families, TFRecord, sharding --------------------------------------------

def test_folder_labels_follow_sorted_identity_names_and_families(tmp_path):
    examples = make_images(classes=3, per_class=2)
    root = write_folder(tmp_path / "train", examples, names={0: "zoe", 1: "adam", 2: "mia"})
    held = write_folder(tmp_path / "held", make_images(classes=2, per_class=2, seed=1),
                        names={0: "kid_b", 1: "kid_a"})
    families = tmp_path / "families.csv"
    families.write_text("# family,identity\nsmith,kid_a\njones,kid_b\n")
    source = DATASETS.build({"name": "folder", "path": root, "image_size": SIZE, "heldout_path": held,
                             "families_file": str(families)})
    assert source.identities == ["adam", "mia", "zoe"]
    images, labels = read_all(source.train())
    assert labels == [0, 0, 1, 1, 2, 2]
    assert np.array_equal(images[0], examples[2][1])  # adam's first image
    assert source.heldout_families().tolist() == [0, 1]  # kid_a (smith=0), kid_b (jones=1)
    families.write_text("smith,kid_a\n")
    with pytest.raises(DataError, match="no family for 1 identities"):
        DATASETS.build({"name": "folder", "path": root, "image_size": SIZE, "heldout_path": held,
                        "families_file": str(families)}).heldout_families()


@pytest.mark.parametrize("origin", ["folder", "recordio"])
def test_converter_writes_shards_that_read_back_identically(tmp_path, origin):
    from trainer.commands.data.convert import main

    examples = make_images(classes=3, per_class=3)
    source_path = (write_folder(tmp_path / "in", examples) if origin == "folder"
                   else write_rec(tmp_path / "in", examples))
    assert main([f"input={source_path}", f"output={tmp_path / 'out'}", "shards=2"]) == 0
    assert sorted(os.listdir(tmp_path / "out")) == [
        "dataset_info.json", "train-00000-of-00002.tfrecord", "train-00001-of-00002.tfrecord"]
    source = DATASETS.build({"name": "tfrecord", "path": str(tmp_path / "out"), "image_size": SIZE})
    assert (source.num_classes, source.num_examples) == (3, 9)
    images, labels = read_all(source.train())
    expected = sorted((label, image.tobytes()) for label, image in examples)
    assert sorted(zip(labels, (i.tobytes() for i in images))) == expected


def test_shards_are_disjoint_and_cover_the_data(tmp_path):
    path = write_rec(tmp_path / "rec", make_images(classes=2, per_class=3))
    seen = []
    for index in range(2):
        source = DATASETS.build({"name": "recordio", "path": path, "image_size": SIZE}).shard(2, index)
        seen.append(read_all(source.train())[0])
    everything = read_all(DATASETS.build({"name": "recordio", "path": path, "image_size": SIZE}).train())[0]
    assert len(seen[0]) == 3 and len(seen[1]) == 3
    assert sorted(i.tobytes() for i in np.concatenate(seen)) == sorted(i.tobytes() for i in everything)


def test_unknown_tfds_name_is_one_line():
    with pytest.raises(DataError, match="tfds data set 'no_such_faces_xyz' cannot be loaded"):
        DATASETS.build({"name": "tfds", "dataset": "no_such_faces_xyz"})

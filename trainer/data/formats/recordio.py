"""insightface RecordIO (``train.rec`` / ``train.idx`` / ``property``) without mxnet.

Layout (insightface RecordIO): ``train.idx`` holds text lines
``key<TAB>byte_offset``; ``train.rec`` is a sequence of records, each
``uint32 magic 0xced7230a``, ``uint32 length word`` (low 29 bits: length of
this part, high 3 bits: continuation flag), the part's bytes, then zero padding
to a multiple of 4. A payload that holds the magic word at a 4-byte-aligned
position is stored in parts (flags 1 = first, 2 = middle, 3 = last, 0 = whole)
with that magic word dropped between parts; the reader puts it back.

A payload is a 24-byte header ``IfQQ`` (flag, label, id, id2; little-endian),
then ``flag`` float32 label values when ``flag > 0``, then the encoded image.
In insightface sets record 0 is a header whose label[0] is the first key of the
identity records, so images are keys ``1 … label[0] - 1``.

Files are opened with ``tf.io.gfile`` so ``gs://`` paths work like local ones.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_HEADER = struct.Struct("<IfQQ")
_LENGTH_BITS = 29
_LENGTH_MASK = (1 << _LENGTH_BITS) - 1


class RecordIOError(ValueError):
    """A record that does not follow the layout; the message names the file and the key."""


@dataclass
class IRHeader:
    """The header of one payload: ``label`` is a float or a float32 array (when ``flag > 0``)."""

    flag: int
    label: float | np.ndarray
    id: int = 0
    id2: int = 0


def open_file(path: str, mode: str = "rb"):
    import tensorflow as tf

    return tf.io.gfile.GFile(path, mode)


# -- payloads ------------------------------------------------------------------------

def pack(header: IRHeader, image: bytes = b"") -> bytes:
    """Header (+ label array) + encoded image, as insightface writes it."""
    label = header.label
    if isinstance(label, (int, float, np.floating, np.integer)):
        return _HEADER.pack(0, float(label), header.id, header.id2) + bytes(image)
    values = np.asarray(label, "<f4").ravel()
    return _HEADER.pack(len(values), 0.0, header.id, header.id2) + values.tobytes() + bytes(image)


def unpack(payload: bytes) -> tuple[IRHeader, bytes]:
    """(header, image bytes) of one payload."""
    if len(payload) < _HEADER.size:
        raise RecordIOError(f"payload of {len(payload)} bytes is shorter than its 24-byte header")
    flag, label, id_, id2 = _HEADER.unpack_from(payload)
    offset = _HEADER.size
    if flag > 0:
        end = offset + 4 * flag
        if end > len(payload):
            raise RecordIOError(f"header announces {flag} labels but the payload is too short")
        label = np.frombuffer(payload[offset:end], "<f4").copy()
        offset = end
    return IRHeader(flag, label, id_, id2), payload[offset:]


def image_label(header: IRHeader) -> int:
    """The identity of an image record (the first label value when there are several)."""
    label = header.label
    value = float(label) if np.ndim(label) == 0 else float(label[0])
    return int(value)


# -- records ---------------------------------------------------------------------------

def encode_record(payload: bytes) -> bytes:
    """One payload as stored in ``.rec``: magic, length word, bytes, padding (parts when needed)."""
    payload = bytes(payload)
    out = bytearray()
    start = 0
    words = len(payload) // 4
    for i in range(words):
        if payload[4 * i:4 * i + 4] == _MAGIC_BYTES:  # an aligned magic word splits the record
            flag = 1 if start == 0 else 2
            out += _MAGIC_BYTES + struct.pack("<I", (flag << _LENGTH_BITS) | (4 * i - start))
            out += payload[start:4 * i]
            start = 4 * i + 4
    flag = 3 if start else 0
    out += _MAGIC_BYTES + struct.pack("<I", (flag << _LENGTH_BITS) | (len(payload) - start))
    out += payload[start:]
    out += b"\0" * (-len(payload) % 4)
    return bytes(out)


def read_record(stream, where: str = "") -> bytes:
    """The payload of the record starting at the stream's position (joins continued parts)."""
    parts = []
    while True:
        head = stream.read(8)
        if len(head) < 8:
            raise RecordIOError(f"{where}: file ends inside a record header")
        magic, word = struct.unpack("<II", head)
        if magic != MAGIC:
            raise RecordIOError(f"{where}: bad magic 0x{magic:08x} (expected 0x{MAGIC:08x})")
        flag, length = word >> _LENGTH_BITS, word & _LENGTH_MASK
        data = stream.read(length)
        if len(data) < length:
            raise RecordIOError(f"{where}: file ends inside a record ({len(data)} of {length} bytes)")
        parts.append(data)
        # Parts before the last have lengths that are multiples of 4, so the last
        # part's padding is also the whole payload's.
        stream.read(-length % 4)
        if flag in (0, 3):
            return _MAGIC_BYTES.join(parts)
        if flag not in (1, 2):
            raise RecordIOError(f"{where}: unknown continuation flag {flag}")


def read_index(path: str) -> dict[int, int]:
    """``key -> byte offset`` from a ``.idx`` file, in file order."""
    index = {}
    with open_file(path, "rb") as f:  # bytes: a damaged file is named by its line, not a decode error
        for number, raw in enumerate(f, 1):
            line = raw.decode("ascii", errors="replace").strip()
            if not line:
                continue
            fields = line.split("\t")
            if len(fields) != 2 or not all(field.isdigit() for field in fields):
                raise RecordIOError(f"{path} line {number}: expected 'key<TAB>offset', got {line[:60]!r}")
            index[int(fields[0])] = int(fields[1])
    return index


class IndexedRecordReader:
    """Random access to a ``.rec`` through its ``.idx`` (one open file; not thread-safe)."""

    def __init__(self, rec_path: str, idx_path: str):
        self.rec_path = rec_path
        self.index = read_index(idx_path)
        self._file = open_file(rec_path, "rb")

    def keys(self) -> list[int]:
        return list(self.index)

    def read(self, key: int) -> bytes:
        if key not in self.index:
            raise RecordIOError(f"{self.rec_path}: record {key} is not in the index")
        self._file.seek(self.index[key])
        return read_record(self._file, f"{self.rec_path} record {key}")

    def read_header(self, key: int) -> IRHeader:
        """The header only (reads 32 bytes plus the label array; no image)."""
        self._file.seek(self.index[key])
        where = f"{self.rec_path} record {key}"
        head = self._file.read(8 + _HEADER.size)
        if len(head) < 8 + _HEADER.size:
            raise RecordIOError(f"{where}: file ends inside a record header")
        magic, word = struct.unpack_from("<II", head)
        if magic != MAGIC:
            raise RecordIOError(f"{where}: bad magic 0x{magic:08x} (expected 0x{MAGIC:08x})")
        flag, label, id_, id2 = _HEADER.unpack_from(head, 8)
        if flag > 0:
            label = np.frombuffer(self._file.read(4 * flag), "<f4").copy()
        return IRHeader(flag, label, id_, id2)

    def close(self) -> None:
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class IndexedRecordWriter:
    """Writes ``.rec`` + ``.idx`` exactly as the reference writer lays them out."""

    def __init__(self, rec_path: str, idx_path: str):
        self._rec = open_file(rec_path, "wb")
        self._idx = open_file(idx_path, "w")
        self._offset = 0

    def write(self, key: int, payload: bytes) -> None:
        record = encode_record(payload)
        self._idx.write(f"{key}\t{self._offset}\n")
        self._rec.write(record)
        self._offset += len(record)

    def close(self) -> None:
        self._rec.close()
        self._idx.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def write_insightface(folder: str, images_by_label, num_classes: int | None = None,
                      image_size: int = 112) -> None:
    """Write ``train.rec``/``train.idx``/``property`` in insightface's layout.

    ``images_by_label``: a sequence of (label, encoded image bytes), grouped by
    label. Record 0 is the header, then one record per image, then one record
    per identity holding its key range ``[first, end)``.
    """
    import os

    examples = list(images_by_label)
    labels = [int(label) for label, _ in examples]
    classes = sorted(set(labels))
    first_identity_key = len(examples) + 1
    with IndexedRecordWriter(os.path.join(folder, "train.rec"), os.path.join(folder, "train.idx")) as w:
        w.write(0, pack(IRHeader(2, np.array([first_identity_key, first_identity_key + len(classes)],
                                             np.float32))))
        ranges = {}
        for key, (label, image) in enumerate(examples, 1):
            w.write(key, pack(IRHeader(0, float(label), key, 0), image))
            start, _ = ranges.get(label, (key, key))
            ranges[label] = (start, key + 1)
        for offset, label in enumerate(classes):
            start, end = ranges[label]
            w.write(first_identity_key + offset, pack(IRHeader(2, np.array([start, end], np.float32))))
    with open_file(os.path.join(folder, "property"), "w") as f:
        f.write(f"{num_classes if num_classes is not None else len(classes)},{image_size},{image_size}\n")

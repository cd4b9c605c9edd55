"""Align every photo of a folder: detect, 5 landmarks, warp to the template, record.

Parallel over photos (each worker process loads the detector once), resumable through
``manifest.jsonl``, and an unreadable photo is counted and named, never fatal. The output
mirrors the input's folders, so identity folders stay identity folders (a ``data=folder``
training set); each crop is ``<photo name>_<k>.<format>``, faces numbered best score first.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import Counter
from dataclasses import asdict, dataclass, field

from trainer.faces.manifest import Manifest, photo_stamp, read_records
from trainer.faces.photos import UnreadablePhoto, list_photos, read_photo
from trainer.registry import ConfigError

FACE_CHOICES = ("all", "largest")
FORMATS = ("jpg", "png")


@dataclass(frozen=True)
class AlignSettings:
    image_size: int = 112
    faces: str = "all"             # all | largest (one face per photo: the labelled person)
    detector: str = "hog"          # hog | cnn
    upsample: int = 1
    detect_size: int | None = 1024
    min_score: float = 0.3         # faces the detector is less sure of are left out (and counted)
    min_size: float = 40.0         # faces smaller than this (box side, photo pixels) likewise
    format: str = "jpg"
    quality: int = 95

    @classmethod
    def from_config(cls, cfg) -> "AlignSettings":
        """The settings of an ``align`` config (conf/align.yaml; the album command's too)."""
        return cls(image_size=int(cfg.data.image_size), faces=str(cfg.faces), detector=str(cfg.detector),
                   upsample=int(cfg.upsample), detect_size=None if cfg.detect_size is None else int(cfg.detect_size),
                   min_score=float(cfg.min_score), min_size=float(cfg.min_size), format=str(cfg.format),
                   quality=int(cfg.quality))

    def check(self) -> None:
        if self.faces not in FACE_CHOICES:
            raise ConfigError(f"faces={self.faces!r} is not one of {', '.join(FACE_CHOICES)}")
        from trainer.faces.detector import DETECTORS

        if self.detector not in DETECTORS:
            raise ConfigError(f"detector={self.detector!r} is not one of {', '.join(DETECTORS)}")
        if self.format not in FORMATS:
            raise ConfigError(f"format={self.format!r} is not one of {', '.join(FORMATS)}")
        if int(self.image_size) < 8:
            raise ConfigError(f"data.image_size={self.image_size} is too small for a face crop (at least 8)")


@dataclass
class AlignCounts:
    """What the folder's manifest holds, and what this run did."""

    photos: int = 0
    faces: int = 0
    photos_without_face: int = 0
    below_min_score: int = 0
    below_min_size: int = 0
    not_largest: int = 0
    unreadable: list = field(default_factory=list)   # [(photo, why)]
    aligned_now: int = 0                             # photos done by this run
    skipped_done: int = 0                            # photos a previous run had done

    def lines(self) -> list[str]:
        without = self.photos_without_face
        lines = [f"photos {self.photos}: {self.faces} faces aligned, {without} photo{'' if without == 1 else 's'} "
                 f"without a face, {len(self.unreadable)} unreadable",
                 f"faces left out: {self.below_min_score} below min_score, {self.below_min_size} below "
                 f"min_size" + (f", {self.not_largest} not the largest in their photo" if self.not_largest else ""),
                 f"this run: {self.aligned_now} photos aligned, {self.skipped_done} already done (skipped)"]
        lines += [f"unreadable: {photo} ({why})" for photo, why in self.unreadable]
        return lines


def counts_of(records: list[dict]) -> AlignCounts:
    counts = AlignCounts(photos=len(records))
    for record in records:
        if record["status"] == "unreadable":
            counts.unreadable.append((record["photo"], record["error"]))
            continue
        counts.faces += len(record["faces"])
        counts.photos_without_face += not record["faces"]
        reasons = Counter(face["left_out"] for face in record["left_out"])
        counts.below_min_score += reasons["min_score"]
        counts.below_min_size += reasons["min_size"]
        counts.not_largest += reasons["not_largest"]
    return counts


def crop_names(photos: list[str]) -> dict[str, str]:
    """Photo → crop name stem (without ``_<k>.<format>``); ``a.jpg`` and ``a.png`` in one folder
    keep their extension to stay apart."""
    stems = {photo: os.path.splitext(photo)[0] for photo in photos}
    taken = Counter(stems.values())
    return {photo: stem if taken[stem] == 1 else photo.replace(".", "_")
            for photo, stem in stems.items()}


# -- one photo (in a worker process) ----------------------------------------------------------

_detector = None


def _start_worker(settings: AlignSettings) -> None:
    global _detector
    from trainer.faces.detector import FaceDetector

    _detector = FaceDetector(settings.detector, settings.upsample, settings.detect_size)


def align_photo(task) -> dict:
    """Detect, choose and warp the faces of one photo; write the crops; return its record."""
    from PIL import Image

    from trainer.faces.template import alignment_matrix, template_error
    from trainer.faces.warp import warp

    input_root, output, photo, stem, settings = task
    path = os.path.join(input_root, photo)
    record = {"photo": photo, "stamp": photo_stamp(path), "status": "unreadable", "faces": [], "left_out": []}
    try:
        pixels = read_photo(path)
    except UnreadablePhoto as error:
        return {**record, "error": str(error)}
    chosen = []
    for face in _detector.detect(pixels):
        entry = {"box": [round(v, 1) for v in face.box], "score": round(face.score, 4),
                 "landmarks": face.landmarks.round(2).tolist()}
        reason = ("min_score" if face.score < settings.min_score
                  else "min_size" if face.size < settings.min_size else None)
        if reason:
            record["left_out"].append({**entry, "left_out": reason})
        else:
            chosen.append((face, entry))
    if settings.faces == "largest" and len(chosen) > 1:
        chosen.sort(key=lambda pair: -pair[0].size)
        record["left_out"] += [{**entry, "left_out": "not_largest"} for _, entry in chosen[1:]]
        chosen = chosen[:1]
    photo_image = Image.fromarray(pixels)
    for number, (face, entry) in enumerate(chosen):
        matrix = alignment_matrix(face.landmarks, settings.image_size)
        crop = f"{stem}_{number}.{settings.format}"
        target = os.path.join(output, crop)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        image = warp(photo_image, matrix, settings.image_size)
        image.save(target, **({"quality": settings.quality} if settings.format == "jpg" else {}))
        error = template_error(face.landmarks, matrix, settings.image_size)
        record["faces"].append({"crop": crop, **entry, "template_error_px": round(float(error.max()), 2)})
    return {**record, "status": "faces" if record["faces"] else "no_face"}


# -- a folder --------------------------------------------------------------------------------

def align_folder(input_root: str, output: str, settings: AlignSettings, workers: int | None = None,
                 progress: bool = True) -> AlignCounts:
    """Align the photos of ``input_root`` into ``output`` (see the module docstring)."""
    from trainer.faces.detector import CNN_MODEL, LANDMARK_MODEL, model_file, require_dlib
    from trainer.faces.progress import progress_bar

    settings.check()
    require_dlib()
    if not os.path.isdir(input_root):
        raise ConfigError(f"input={input_root} is not a folder of photos")
    manifest = Manifest(output, asdict(settings))
    photos = list_photos(input_root, skip=output)
    stems = crop_names(photos)
    todo = [photo for photo in photos if not manifest.is_done(photo, photo_stamp(os.path.join(input_root, photo)))]
    tasks = [(input_root, output, photo, stems[photo], settings) for photo in todo]
    workers = max(1, min(workers or os.cpu_count() or 1, len(tasks)))
    bar = progress_bar(len(tasks), "aligning") if progress and tasks else None
    model_file(LANDMARK_MODEL)  # a missing model file is one line here, not one per worker
    if settings.detector == "cnn":
        model_file(CNN_MODEL)
    try:
        for record in _run(tasks, settings, workers):
            manifest.add(record)
            if bar:
                bar.update(1)
    finally:
        if bar:
            bar.close()
    listed = set(photos)
    counts = counts_of([r for r in read_records(output) if r["photo"] in listed])
    counts.aligned_now, counts.skipped_done = len(tasks), len(photos) - len(tasks)
    return counts


def _run(tasks, settings: AlignSettings, workers: int):
    if workers == 1:
        _start_worker(settings)
        yield from map(align_photo, tasks)
        return
    # spawn: workers start clean even when the caller has TensorFlow loaded (fork would copy it).
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, initializer=_start_worker, initargs=(settings,)) as pool:
        yield from pool.imap_unordered(align_photo, tasks, chunksize=1)

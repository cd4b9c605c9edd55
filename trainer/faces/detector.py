"""Face detection and 5 landmarks with dlib, whose model files install from the package
registry (``face-recognition-models``), so nothing is downloaded at run time.

dlib's 68-point predictor gives the 5 points of the ArcFace template: each eye's centre is
the mean of its 6 contour points (36–41, 42–47), the nose tip is point 30, the mouth corners
are points 48 and 54. (dlib's own 5-point model marks eye corners and the base of the nose,
not the template's points, and no mouth.)
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass

import numpy as np

from trainer.registry import ConfigError

DETECTORS = ("hog", "cnn")
INSTALL_HINT = 'face detection needs dlib: pip install "facetrain[align]" (from a checkout: pip install ".[align]")'
LANDMARK_MODEL = "shape_predictor_68_face_landmarks.dat"
CNN_MODEL = "mmod_human_face_detector.dat"
EYE_POINTS = (range(36, 42), range(42, 48))
NOSE_TIP, MOUTH_LEFT, MOUTH_RIGHT = 30, 48, 54


@dataclass(frozen=True)
class DetectedFace:
    box: tuple[float, float, float, float]  # left, top, right, bottom (photo pixels)
    score: float                            # the detector's confidence (HOG: SVM margin; CNN: MMOD)
    landmarks: np.ndarray                   # (5, 2) x, y: eyes, nose tip, mouth corners

    @property
    def size(self) -> float:
        """The shorter side of the box, in photo pixels."""
        return min(self.box[2] - self.box[0], self.box[3] - self.box[1])


def require_dlib():
    """The ``dlib`` module, or a ConfigError naming the extra to install."""
    try:
        import dlib
    except ImportError:
        raise ConfigError(INSTALL_HINT) from None
    return dlib


def model_file(name: str) -> str:
    """A model file of ``face-recognition-models``, found without importing the package
    (its ``__init__`` needs ``pkg_resources``, which new setuptools no longer has)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(INSTALL_HINT.replace("dlib", "face-recognition-models (dlib's model files)", 1))
    path = os.path.join(list(spec.submodule_search_locations)[0], "models", name)
    if not os.path.exists(path):
        raise ConfigError(f"{path} is missing: reinstall face-recognition-models")
    return path


def five_points(shape) -> np.ndarray:
    """The template's 5 points from a dlib 68-point shape."""
    points = np.array([[p.x, p.y] for p in shape.parts()], np.float64)
    eyes = [points[list(indices)].mean(0) for indices in EYE_POINTS]
    return np.stack(eyes + [points[NOSE_TIP], points[MOUTH_LEFT], points[MOUTH_RIGHT]])


class FaceDetector:
    """``detect(photo)`` → faces with box, score and 5 landmarks, best score first.

    ``kind``: ``hog`` (fast on CPUs, frontal faces to about ±30° of roll) or ``cnn`` (MMOD,
    more poses, slower). ``upsample``: times the detector doubles the photo (1: faces down to
    about 40 pixels). ``detect_size``: photos whose longer side exceeds it are shrunk for
    detection only (landmarks are found on the full photo); ``None`` keeps every photo whole.
    """

    def __init__(self, kind: str = "hog", upsample: int = 1, detect_size: int | None = 1024):
        if kind not in DETECTORS:
            raise ConfigError(f"detector={kind!r} is not one of {', '.join(DETECTORS)}")
        dlib = require_dlib()
        self.dlib = dlib
        self.kind = kind
        self.upsample = int(upsample)
        self.detect_size = None if detect_size is None else int(detect_size)
        self.predictor = dlib.shape_predictor(model_file(LANDMARK_MODEL))
        self.cnn = dlib.cnn_face_detection_model_v1(model_file(CNN_MODEL)) if kind == "cnn" else None
        self.hog = dlib.get_frontal_face_detector() if kind == "hog" else None

    def detect(self, photo: np.ndarray) -> list[DetectedFace]:
        """``photo``: uint8 RGB (H, W, 3)."""
        small, factor = self._detection_image(photo)
        faces = []
        for rect, score in self._boxes(small):
            box = tuple(float(v) * factor for v in (rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1))
            full = self.dlib.rectangle(*(int(round(v)) for v in (box[0], box[1], box[2] - 1, box[3] - 1)))
            landmarks = five_points(self.predictor(photo, full))
            faces.append(DetectedFace(box, float(score), landmarks))
        return sorted(faces, key=lambda face: -face.score)

    def _detection_image(self, photo: np.ndarray):
        longer = max(photo.shape[:2])
        if self.detect_size is None or longer <= self.detect_size:
            return photo, 1.0
        from PIL import Image

        factor = longer / self.detect_size
        size = (max(1, round(photo.shape[1] / factor)), max(1, round(photo.shape[0] / factor)))
        small = np.asarray(Image.fromarray(photo).resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0))
        return small, photo.shape[1] / size[0]

    def _boxes(self, image: np.ndarray):
        if self.cnn is not None:
            return [(found.rect, found.confidence) for found in self.cnn(image, self.upsample)]
        # adjust_threshold 0: dlib's own default cut; min_score filters above it.
        rects, scores, _ = self.hog.run(image, self.upsample, 0.0)
        return list(zip(rects, scores))

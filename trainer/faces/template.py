"""The ArcFace 5-point template and the similarity transform that maps landmarks onto it.

NumPy only (no TensorFlow), so the worker processes that align photos stay light.
The template and the warp are the ones insightface uses; ``augment.preprocess``
holds the same template for the IJB pipeline, where the warp runs in ``tf.data``.
"""

from __future__ import annotations

import numpy as np

TEMPLATE_SIZE = 112
# insightface's ArcFace template for 112x112 crops, (x, y) in pixels with pixel centres on
# integers: left eye centre, right eye centre, nose tip, left mouth corner, right mouth corner
# (left / right as seen in the image).
ARCFACE_TEMPLATE = np.array([
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [41.5493, 92.3655],
    [70.7299, 92.2041],
], dtype=np.float64)
LANDMARK_NAMES = ("left_eye", "right_eye", "nose_tip", "mouth_left", "mouth_right")


def template(image_size: int = TEMPLATE_SIZE) -> np.ndarray:
    """The template scaled to ``image_size`` pixels (the face keeps its place in the crop)."""
    return ARCFACE_TEMPLATE * (image_size / TEMPLATE_SIZE)


def similarity_transform(source, destination) -> np.ndarray:
    """Least-squares similarity transform (rotation, one scale, translation) taking the
    ``source`` points (N, 2) onto ``destination`` (Umeyama, TPAMI 1991).

    Returns the (3, 3) matrix ``M`` with ``destination ≈ M @ [x, y, 1]``. A reflection is
    never returned: a mirrored face stays mirrored, so its landmarks still match the
    template up to the pose.
    """
    src = np.asarray(source, np.float64)
    dst = np.asarray(destination, np.float64)
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    src_centred, dst_centred = src - src_mean, dst - dst_mean
    covariance = dst_centred.T @ src_centred / len(src)
    u, singular, vt = np.linalg.svd(covariance)
    signs = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        signs[-1] = -1.0  # the best orthogonal map would mirror: take the best rotation instead
    rotation = u @ np.diag(signs) @ vt
    variance = (src_centred ** 2).sum() / len(src)
    scale = (singular * signs).sum() / variance
    matrix = np.eye(3)
    matrix[:2, :2] = scale * rotation
    matrix[:2, 2] = dst_mean - scale * rotation @ src_mean
    return matrix


def alignment_matrix(landmarks, image_size: int = TEMPLATE_SIZE) -> np.ndarray:
    """Photo pixels → crop pixels: the 5 landmarks (5, 2) onto the template at ``image_size``."""
    return similarity_transform(np.asarray(landmarks, np.float64).reshape(5, 2), template(image_size))


def transform_points(matrix: np.ndarray, points) -> np.ndarray:
    points = np.asarray(points, np.float64).reshape(-1, 2)
    return points @ matrix[:2, :2].T + matrix[:2, 2]


def template_error(landmarks, matrix: np.ndarray, image_size: int = TEMPLATE_SIZE) -> np.ndarray:
    """Per landmark, how far (crop pixels) the warp puts it from its template point."""
    return np.linalg.norm(transform_points(matrix, landmarks) - template(image_size), axis=1)

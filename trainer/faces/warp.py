"""Warp a photo into an aligned crop (Pillow, bilinear, antialiased when shrinking)."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image


def _shift(offset: float) -> np.ndarray:
    matrix = np.eye(3)
    matrix[:2, 2] = offset
    return matrix


def warp(photo: Image.Image, matrix: np.ndarray, size: int) -> Image.Image:
    """The ``size``×``size`` crop whose pixel (x, y) shows the photo at ``matrix⁻¹ @ (x, y, 1)``.

    ``matrix`` maps photo pixels to crop pixels with pixel centres on integers (dlib's
    landmarks, insightface's template, OpenCV's ``warpAffine``). A face much larger than the
    crop is first shrunk by an integer factor with a box filter, so the bilinear warp does not
    alias (OpenCV's warp would); outside the photo is black.
    """
    scale = math.sqrt(abs(np.linalg.det(matrix[:2, :2])))  # crop pixels per photo pixel
    factor = int(1.0 / scale) if scale < 0.5 else 1
    if factor > 1:
        photo, matrix = _shrink_around_crop(photo, matrix, size, factor)
    # Pillow puts pixel centres at +0.5: conjugate by that half-pixel shift.
    continuous = _shift(0.5) @ matrix @ _shift(-0.5)
    inverse = np.linalg.inv(continuous)  # Pillow asks, per crop pixel, where to read the photo
    return photo.transform((size, size), Image.Transform.AFFINE, tuple(inverse[:2].reshape(-1)),
                           resample=Image.Resampling.BILINEAR, fillcolor=(0, 0, 0))


def _shrink_around_crop(photo: Image.Image, matrix: np.ndarray, size: int, factor: int):
    """The part of the photo the crop shows (plus a margin), reduced by ``factor``, and the
    matrix that maps the reduced pixels to the same crop pixels."""
    corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], np.float64)
    seen = (np.linalg.inv(matrix) @ corners.T)[:2].T
    margin = 2 * factor
    left, top = np.floor(seen.min(0)).astype(int) - margin
    right, bottom = np.ceil(seen.max(0)).astype(int) + margin
    left, top = max(left, 0), max(top, 0)
    right, bottom = min(right, photo.width), min(bottom, photo.height)
    if right - left < factor or bottom - top < factor:
        return photo, matrix  # the crop shows (almost) nothing of the photo: nothing to shrink
    region = photo.crop((left, top, right, bottom)).reduce(factor)
    # Reduced pixel (u, v) averages region pixels u*f … u*f+f-1: its centre is at u*f + (f-1)/2.
    to_photo = np.array([[factor, 0, left + (factor - 1) / 2],
                         [0, factor, top + (factor - 1) / 2],
                         [0, 0, 1]], np.float64)
    return region, matrix @ to_photo

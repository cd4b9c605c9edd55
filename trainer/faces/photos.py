"""Finding and reading photos; an unreadable one is named, never fatal."""

from __future__ import annotations

import os

import numpy as np

PHOTO_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


class UnreadablePhoto(Exception):
    """A file with a photo's extension that does not decode (truncated, not an image, ...)."""


def list_photos(root: str, skip: str | None = None) -> list[str]:
    """Photo paths relative to ``root`` (``/``-separated, sorted), hidden entries left out.

    ``skip``: a folder inside ``root`` not to enter (the output, when it sits inside the input).
    """
    skip = os.path.realpath(skip) if skip else None
    found = []
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith(".")
                               and os.path.realpath(os.path.join(folder, d)) != skip)
        for name in files:
            if not name.startswith(".") and name.lower().endswith(PHOTO_EXTENSIONS):
                found.append(os.path.relpath(os.path.join(folder, name), root).replace(os.sep, "/"))
    return sorted(found)


def read_photo(path: str) -> np.ndarray:
    """uint8 RGB (H, W, 3), turned upright by its EXIF orientation (as viewers show it)."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image)
            return np.asarray(image.convert("RGB"))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise UnreadablePhoto(f"{type(error).__name__}: {error}") from None

"""Real face photos that ship inside registry packages, and composites made from them.

For trying the align and album commands without photos of one's own, and for their tests:
scikit-image's ``astronaut.png`` (Eileen Collins) and matplotlib's ``grace_hopper.jpg``.
A composite pastes several people, each flipped, scaled and rotated, onto a plain
background, and returns where each face went (the photo → composite transform).
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass

import numpy as np
from PIL import Image

# The region around each face in its photo that a composite pastes (left, top, right, bottom).
HEADS = {"astronaut": (120, 20, 330, 230), "grace_hopper": (120, 70, 420, 400)}


def sample_photo_paths() -> dict[str, str]:
    """Name → file of the sample photos that are installed (matplotlib's always is)."""
    import matplotlib

    paths = {"grace_hopper": os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg")}
    spec = importlib.util.find_spec("skimage")  # its data folder, without importing scikit-image
    if spec is not None and spec.submodule_search_locations:
        astronaut = os.path.join(list(spec.submodule_search_locations)[0], "data", "astronaut.png")
        if os.path.exists(astronaut):
            paths["astronaut"] = astronaut
    return {name: path for name, path in sorted(paths.items()) if os.path.exists(path)}


@dataclass(frozen=True)
class Placement:
    person: str
    matrix: np.ndarray  # (3, 3) source photo pixels → composite pixels
    flipped: bool
    box: tuple[int, int, int, int]  # where the pasted head lies in the composite


def head_image(person: str) -> Image.Image:
    with Image.open(sample_photo_paths()[person]) as photo:
        return photo.convert("RGB").crop(HEADS[person])


def composite(people: list[tuple[str, float, float, bool]], size=(640, 480), seed: int = 0):
    """A photo of ``people``, each ``(name, angle in degrees, scale, flipped)``, side by side
    on a noisy plain background. Returns (PIL image, [Placement])."""
    rng = np.random.default_rng(seed)
    base = rng.integers(90, 170, 3)
    canvas = np.clip(base + rng.normal(0, 6, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    photo = Image.fromarray(canvas)
    slot = size[0] // max(len(people), 1)
    placements = []
    for index, (person, angle, scale, flipped) in enumerate(people):
        head = head_image(person)
        left, top = HEADS[person][:2]
        # source photo → head crop → (flip) → scale → rotate about the centre → paste position
        matrix = _translation(-left, -top)
        if flipped:
            head = head.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            matrix = np.array([[-1, 0, head.width - 1], [0, 1, 0], [0, 0, 1]], float) @ matrix
        scaled = head.resize((round(head.width * scale), round(head.height * scale)), Image.Resampling.LANCZOS)
        matrix = np.diag([scaled.width / head.width, scaled.height / head.height, 1.0]) @ matrix
        rotated = scaled.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)
        mask = Image.new("L", scaled.size, 255).rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)
        # Pillow rotates counter-clockwise (on screen) about the image centre, then re-centres.
        theta = np.deg2rad(angle)
        rotation = np.array([[np.cos(theta), np.sin(theta), 0], [-np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
        centre_in, centre_out = np.array(scaled.size) / 2, np.array(rotated.size) / 2
        matrix = _translation(*(centre_out - 0.5)) @ rotation @ _translation(*(0.5 - centre_in)) @ matrix
        x = index * slot + max(0, (slot - rotated.width) // 2)
        y = max(0, (size[1] - rotated.height) // 2) + int(rng.integers(-10, 11))
        photo.paste(rotated, (x, y), mask)
        placements.append(Placement(person, _translation(x, y) @ matrix, flipped,
                                    (x, y, x + rotated.width, y + rotated.height)))
    return photo, placements


def _translation(dx: float, dy: float) -> np.ndarray:
    matrix = np.eye(3)
    matrix[:2, 2] = dx, dy
    return matrix


def face_centre(placement: Placement) -> np.ndarray:
    """Where the middle of the pasted head (about the face's centre) lies in the composite."""
    left, top, right, bottom = HEADS[placement.person]
    return (placement.matrix @ [(left + right) / 2, (top + bottom) / 2, 1.0])[:2]


def write_family(folder: str, photos: int, seed: int = 0, people=("astronaut", "grace_hopper")) -> dict:
    """``photos`` composites of ``people`` (one to three faces each, varied pose, size, mirror)
    as ``folder/photo_<n>.jpg``; returns {photo name: [Placement, ...]}."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    who = {}
    for number in range(photos):
        count = int(rng.integers(1, 4))
        chosen = [people[int(rng.integers(len(people)))] for _ in range(count)]
        layout = [(p, float(rng.uniform(-20, 20)), float(rng.uniform(0.6, 1.1) * 200 / (HEADS[p][2] - HEADS[p][0])),
                   bool(rng.integers(2))) for p in chosen]
        image, placements = composite(layout, seed=int(rng.integers(1 << 30)))
        image.save(os.path.join(folder, f"photo_{number:03d}.jpg"), quality=92)
        who[f"photo_{number:03d}.jpg"] = placements
    return who

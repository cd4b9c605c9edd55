"""Look, don't read: a PNG grid of original and augmented samples for an augment preset.

    python -m trainer.tools.show_augment augment=adaface out=/tmp/augment_grid.png
    python -m trainer.tools.show_augment augment=simclr images=path/to/faces/ rows=6 seed=0

Each row is one image: the original first, then ``columns`` independent draws of
the pipeline (for multi-view presets, the views side by side). Images come from
``images=<folder>`` when given, else the built-in synthetic faces (a small
set, generated once into a cache folder), else a generated test pattern.
``augment=<preset>`` and ``augment.<key>=...`` compose the preset as the trainer does.
"""

from __future__ import annotations

import glob
import os
import sys

import numpy as np

from trainer.commands import edge

COMMAND = "show_augment"


def load_images(folder, count, size):
    from PIL import Image

    paths = sorted(p for p in glob.glob(os.path.join(folder, "**", "*"), recursive=True)
                   if p.lower().endswith((".png", ".jpg", ".jpeg", ".bmp")))[:count]
    if not paths:
        from trainer.registry import ConfigError

        raise ConfigError(f"images={folder}: no images found there (.png, .jpg, .jpeg, .bmp)")
    return np.stack([np.asarray(Image.open(p).convert("RGB").resize((size, size)), np.float32)
                     for p in paths])


def synthetic_faces(count, size):
    """A few built-in synthetic faces (one per identity), or None if unavailable."""
    try:
        from trainer.data.synthetic_faces import load_synthetic_faces
    except ImportError:
        return None
    cache = os.path.join(os.path.expanduser("~"), ".cache", "facetrain", "show_augment")
    splits = load_synthetic_faces(cache, image_size=size, train_identities=count,
                                  images_per_identity=1, test_identities=2,
                                  test_images_per_identity=2)
    images = [np.asarray(example["image"], np.float32)
              for example in splits["train"].take(count).as_numpy_iterator()]
    return np.stack(images) if images else None


def test_pattern(count, size):
    """Concentric rings and a face-like layout, so geometry and colour changes show."""
    y, x = np.mgrid[0:size, 0:size] / size
    images = []
    for i in range(count):
        hue = i / max(count, 1)
        base = np.stack([0.5 + 0.5 * np.sin(2 * np.pi * (8 * np.hypot(x - .5, y - .5) + hue + k / 3))
                         for k in range(3)], -1)
        for cx in (0.34, 0.66):  # two "eyes" and a "mouth" at template positions
            base[np.hypot(x - cx, y - 0.46) < 0.06] = 0.05
        base[(np.abs(y - 0.82) < 0.03) & (np.abs(x - 0.5) < 0.15)] = 0.9
        images.append(base * 255.0)
    return np.asarray(images, np.float32)


def make_grid(images, pipeline, columns):
    rows = [images]
    for _ in range(columns):
        augmented = pipeline(images, np.arange(len(images)))[0] if pipeline is not None else images
        augmented = np.asarray(augmented)
        views = len(augmented) // len(images)
        rows.extend(augmented[v * len(images):(v + 1) * len(images)] for v in range(views))
    tiles = np.stack(rows, axis=1)  # (N, 1 + draws, H, W, 3)
    n, m, h, w, _ = tiles.shape
    pad = 2
    canvas = np.full((n * (h + pad) + pad, m * (w + pad) + pad, 3), 255, np.uint8)
    for i in range(n):
        for j in range(m):
            top, left = pad + i * (h + pad), pad + j * (w + pad)
            canvas[top:top + h, left:left + w] = np.clip(tiles[i, j], 0, 255).astype(np.uint8)
    return canvas


def draw(cfg) -> str:
    """Write the grid; returns the line saying what was written."""
    from PIL import Image

    from augment.pipeline import build_augmentation
    from trainer.registry import to_plain

    rows, columns, size = int(cfg.rows), int(cfg.columns), int(cfg.size)
    node = dict(to_plain(cfg.augment) or {})
    node["seed"] = int(cfg.seed) if node.get("seed") is None else node["seed"]
    pipeline = build_augmentation(node)
    if cfg.images:
        images = load_images(str(cfg.images), rows, size)
    else:
        images = synthetic_faces(rows, size)
        if images is None:
            images = test_pattern(rows, size)
    grid = make_grid(images, pipeline, columns)
    out = str(cfg.out)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    Image.fromarray(grid).save(out)
    return f"wrote {out}: {len(images)} images x (original + {columns} draws), pipeline {pipeline!r}"


def run(cfg, argv) -> int:
    print(draw(cfg))
    return 0


def main(argv=None) -> int:
    return edge.main(COMMAND, __doc__, run, argv)


if __name__ == "__main__":
    sys.exit(main())

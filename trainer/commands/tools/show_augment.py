"""Look, don't read: a PNG grid of original and augmented samples for an augment preset.

    python -m trainer.tools.show_augment augment=adaface out=docs/images/augment_grid.png
    python -m trainer.tools.show_augment augment=simclr --images path/to/faces/ rows=6 seed=0

Each row is one image: the original first, then ``columns`` independent draws of
the pipeline (for multi-view presets, the views side by side). Images come from
``--images <folder>`` when given, else the built-in synthetic faces (a small
set, generated once into a cache folder), else a generated test pattern.
Other ``key=value`` arguments are passed to the config composition, like the trainer.
"""

from __future__ import annotations

import glob
import os
import sys

import numpy as np

DEFAULT_OUT = os.path.join("docs", "images", "augment_grid.png")


def parse_argv(argv):
    options = {"out": DEFAULT_OUT, "rows": "6", "columns": "5", "size": "112", "seed": "0",
               "images": None}
    overrides = []
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg == "--images":
            options["images"] = args.pop(0)
        elif arg.startswith("--images="):
            options["images"] = arg.split("=", 1)[1]
        elif arg.split("=", 1)[0] in options:
            key, value = arg.split("=", 1)
            options[key] = value
        else:
            overrides.append(arg)
    return options, overrides


def augment_node(overrides):
    """The composed ``augment`` node, as the trainer composes it (falls back to the YAML file)."""
    try:
        import trainer

        return trainer.compose(overrides).augment
    except Exception as error:  # trainer.compose not available or config incomplete
        preset = next((o.split("=", 1)[1] for o in overrides if o.startswith("augment=")), "arcface")
        path = os.path.join(os.path.dirname(__file__), "..", "..", "conf", "augment", preset + ".yaml")
        if not os.path.isfile(path):
            raise SystemExit(f"show_augment: cannot compose the config ({error}) and there is "
                             f"no conf/augment/{preset}.yaml") from error
        import yaml

        with open(path) as f:
            return yaml.safe_load(f)


def load_images(folder, count, size):
    from PIL import Image

    paths = sorted(p for p in glob.glob(os.path.join(folder, "**", "*"), recursive=True)
                   if p.lower().endswith((".png", ".jpg", ".jpeg", ".bmp")))[:count]
    if not paths:
        raise SystemExit(f"show_augment: no images found under {folder}")
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


def main(argv=None) -> int:
    from trainer.commands.cli import start_command

    argv = sys.argv[1:] if argv is None else argv
    if start_command(argv, __doc__):
        return 0
    options, overrides = parse_argv(argv)
    rows, columns, size = int(options["rows"]), int(options["columns"]), int(options["size"])
    from PIL import Image

    from augment.pipeline import build_augmentation
    from trainer.registry import to_plain

    node = dict(to_plain(augment_node(overrides)) or {})
    node["seed"] = int(options["seed"]) if node.get("seed") is None else node["seed"]
    pipeline = build_augmentation(node)
    if options["images"]:
        images = load_images(options["images"], rows, size)
    else:
        images = synthetic_faces(rows, size)
        if images is None:
            images = test_pattern(rows, size)
    grid = make_grid(images, pipeline, columns)
    os.makedirs(os.path.dirname(os.path.abspath(options["out"])), exist_ok=True)
    Image.fromarray(grid).save(options["out"])
    print(f"wrote {options['out']}: {len(images)} images x (original + {columns} draws), "
          f"pipeline {pipeline!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

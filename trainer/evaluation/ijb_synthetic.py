"""A small IJB-C-layout set of rendered faces, for tests and for trying the IJB evaluator.

    python -m trainer.evaluation.ijb_synthetic root=/tmp/ijb subjects=40 seed=0
    python -m trainer.evaluate model_path=... ijb=/tmp/ijb ijb.subset=IJBC

Faces come from the built-in renderer (``trainer.data.face_renderer``) with
identities far from those the synthetic training data use. Each face's five
landmarks (eye centres, nose tip, mouth corners) are computed from the
renderer's geometry and its pose, exactly where it draws them. Every subject
has one gallery template (in G1 or G2, alternately) and two probe templates;
each template holds one or more media of one to three frames. The 1:1 pairs
are every probe template against every gallery template.
"""

from __future__ import annotations

import os
import sys

import numpy as np

# Far above the identity indices of the built-in training and held-out blocks.
IDENTITY_OFFSET = 1_000_000


def face_landmarks(identity, nuisance, size: int) -> np.ndarray:
    """(5, 2) pixel coordinates (x, y) of the rendered face's eyes, nose tip and mouth corners.

    Mirrors where ``face_renderer.draw_faces`` draws them: eye centres, the
    nose polygon's tip, the ends of the lip stroke; then the pose (scale,
    rotation, shift) maps the face frame to the image, and [-1, 1] maps to
    pixels whose centres sit at integer coordinates.
    """
    g = identity.geometry
    yaw, smile = nuisance.yaw, nuisance.smile
    face_x = yaw * 0.04
    eye_y = g["face_centre_y"] + g["eye_height"]
    eyes = [(face_x + yaw * 0.09 + side * g["eye_spacing"] * (1.0 - 0.15 * abs(yaw)), eye_y)
            for side in (-1.0, 1.0)]
    nose = (face_x + yaw * 0.16, eye_y + 0.02 + g["nose_length"])
    mouth_x = face_x + yaw * 0.1
    half_width = g["mouth_half_width"] * (1.0 - 0.2 * abs(yaw)) * (1.0 + 0.08 * smile)
    curvature = 0.25 * (g["mouth_curvature"] + smile)
    # The lip stroke's centre line at its ends lies (2/3)·curvature·half-width above its centre.
    mouth_y = g["face_centre_y"] + g["mouth_y"] - curvature * half_width * 2.0 / 3.0
    mouth = [(mouth_x - half_width, mouth_y), (mouth_x + half_width, mouth_y)]
    canonical = np.asarray([*eyes, nose, *mouth], np.float64) * nuisance.scale
    c, s = np.cos(nuisance.rotation), np.sin(nuisance.rotation)
    x = nuisance.shift[0] + c * canonical[:, 0] - s * canonical[:, 1]
    y = nuisance.shift[1] + s * canonical[:, 0] + c * canonical[:, 1]
    return np.stack([(x + 1.0) * size / 2.0 - 0.5, (y + 1.0) * size / 2.0 - 0.5], axis=1)


def _template_plan(subjects: int, rng: np.random.Generator):
    """[(template id, subject, role, [frames per media])], role 'G1', 'G2' or 'probe'."""
    plan, template = [], 1
    for subject in range(subjects):
        gallery = "G1" if subject % 2 == 0 else "G2"
        for role in (gallery, "probe", "probe"):
            media = int(rng.integers(1, 3))
            plan.append((template, subject, role, [int(rng.integers(1, 4)) for _ in range(media)]))
            template += 1
    return plan


def write_synthetic_ijb(root: str, subjects: int = 12, seed: int = 0, image_size: int = 64,
                        subset: str = "IJBC") -> dict:
    """Write ``root/meta/*`` and ``root/loose_crop/*.jpg``; returns counts."""
    import tensorflow as tf

    from trainer.data import face_renderer as fr

    prefix = subset.lower()
    galleries = ("G1", "G2") if prefix == "ijbc" else ("S1", "S2")
    meta, crops = os.path.join(root, "meta"), os.path.join(root, "loose_crop")
    os.makedirs(meta, exist_ok=True)
    os.makedirs(crops, exist_ok=True)
    rng = np.random.default_rng([seed, 17])
    identities = fr.split_identities(subjects, seed, IDENTITY_OFFSET)
    plan = _template_plan(subjects, rng)
    faces, landmark_lines, lists = [], [], {"G1": [], "G2": [], "probe": []}
    image, media = 0, 0
    for template, subject, role, frames_per_media in plan:
        for frames in frames_per_media:
            media += 1
            for _ in range(frames):
                image += 1
                name = f"{image}.jpg"
                nuisance = fr.sample_nuisance(np.random.default_rng([seed, 18, image]), identities[subject])
                pixels = fr.draw_face(identities[subject], nuisance, image_size)
                with open(os.path.join(crops, name), "wb") as f:
                    f.write(tf.io.encode_jpeg(pixels, quality=95).numpy())
                points = face_landmarks(identities[subject], nuisance, image_size)
                score = float(rng.uniform(0.6, 1.0))
                landmark_lines.append(" ".join([name, *(f"{v:.3f}" for v in points.reshape(-1)), f"{score:.4f}"]))
                faces.append(f"{name} {template} {media}")
                lists[role].append(f"{template},{subject + 1},{name}")
    pairs = [f"{p[0]} {g[0]} {int(p[1] == g[1])}" for p in plan if p[2] == "probe"
             for g in plan if g[2] != "probe"]
    _write_lines(os.path.join(meta, f"{prefix}_face_tid_mid.txt"), faces)
    _write_lines(os.path.join(meta, f"{prefix}_name_5pts_score.txt"), landmark_lines)
    _write_lines(os.path.join(meta, f"{prefix}_template_pair_label.txt"), pairs)
    header = "TEMPLATE_ID,SUBJECT_ID,FILENAME"
    for role, name in zip(("G1", "G2"), galleries):
        _write_lines(os.path.join(meta, f"{prefix}_1N_gallery_{name}.csv"), [header, *lists[role]])
    _write_lines(os.path.join(meta, f"{prefix}_1N_probe_mixed.csv"), [header, *lists["probe"]])
    return {"root": root, "subjects": subjects, "templates": len(plan), "media": media, "images": image,
            "pairs": len(pairs)}


def _write_lines(path: str, lines) -> None:
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


USAGE = ("usage: python -m trainer.evaluation.ijb_synthetic root=<dir> [subjects=40] [seed=0] "
         "[image_size=64] [subset=IJBC]")


def main(argv=None) -> int:
    from trainer.commands.cli import run_command, split_arguments, start_command

    argv = sys.argv[1:] if argv is None else argv
    if start_command(argv, __doc__):
        return 0

    def body():
        from trainer.registry import ConfigError

        options, _ = split_arguments(argv, ("root", "subjects", "seed", "image_size", "subset"), USAGE)
        if not options.get("root"):
            raise ConfigError(f"root= is required; {USAGE}")
        summary = write_synthetic_ijb(options["root"], int(options.get("subjects", 40)),
                                      int(options.get("seed", 0)), int(options.get("image_size", 64)),
                                      str(options.get("subset", "IJBC")).upper())
        return ", ".join(f"{key} {value}" for key, value in summary.items())

    return run_command(body)


if __name__ == "__main__":
    sys.exit(main())

"""Per-person albums of a family's photos: the faces an aligned folder holds, embedded by a
model and clustered per family with the evaluation's own clustering (``album.agglomerative``).

A family is a first-level sub-folder of the photos (or, for photos lying directly in the
folder, the folder itself). An album is a cluster of at least ``min_album`` faces; smaller
clusters are "unsorted". With a second (old) model, each of the old model's albums is
followed into the new model's clustering with the release gate's rules
(``album.album_outcomes``: mixed, split, disappeared).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

import numpy as np

from trainer.evaluation.album import agglomerative, album_outcomes, breakage_rates
from trainer.faces.manifest import read_records
from trainer.registry import ConfigError


@dataclass(frozen=True)
class Face:
    crop: str       # relative to the aligned folder
    photo: str      # relative to the photos folder
    family: str     # "" for photos directly in the folder
    box: list
    score: float


def family_of(photo: str) -> str:
    folder, _, _ = photo.partition("/")
    return folder if "/" in photo else ""


def faces_in(aligned: str) -> list[Face]:
    """Every aligned face of the folder's manifest, by photo, best detector score first."""
    return [Face(face["crop"], record["photo"], family_of(record["photo"]), face["box"], face["score"])
            for record in read_records(aligned) for face in record["faces"]]


def read_crops(aligned: str, faces: list[Face], size: int) -> np.ndarray:
    """uint8 (N, size, size, 3): the crops, resized to the model's input when it differs."""
    from PIL import Image

    crops = np.zeros((len(faces), size, size, 3), np.uint8)
    for index, face in enumerate(faces):
        with Image.open(os.path.join(aligned, face.crop)) as image:
            image = image.convert("RGB")
            if image.size != (size, size):
                image = image.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
            crops[index] = np.asarray(image)
    return crops


def run_threshold(model_path: str) -> float | None:
    """The model's own operating point, from its run (``runs/<name>/metrics.json`` beside
    ``export/``): the held-out verification threshold as a cosine distance (squared / 2)."""
    run_dir = os.path.dirname(os.path.dirname(os.path.abspath(model_path)))
    try:
        with open(os.path.join(run_dir, "metrics.json"), encoding="utf-8") as f:
            threshold = json.load(f)["final"]["verification"]["threshold"]
    except (OSError, KeyError, TypeError, ValueError):
        return None
    return float(threshold) / 2.0


def resolve_threshold(threshold, model_path: str, key: str = "threshold") -> float:
    if str(threshold).lower() != "auto":
        return float(threshold)
    found = run_threshold(model_path)
    if found is None:
        raise ConfigError(f"{key}=auto reads the model's verification threshold from its run's "
                          f"metrics.json, and {model_path} has none (no held-out verification); give "
                          f"{key}=<cosine distance>, e.g. {key}=0.5")
    return found


def midpoint_threshold(aligned: str, model_path: str, batch_size: int = 64) -> float:
    """A threshold for a model without held-out verification: halfway between the mean cosine
    distance of two faces of one person and that of two different people, over an aligned
    folder of identity folders (each first-level folder one person, e.g. the training set)."""
    from trainer.evaluation.album import cosine_distances

    faces = faces_in(aligned)
    people = np.array([face.family for face in faces])
    if len(set(people)) < 2:
        raise ConfigError(f"{aligned} needs faces of at least two people (one folder each)")
    distances = cosine_distances(embed_faces(model_path, read_crops(aligned, faces, _crop_size(aligned, faces)),
                                             batch_size, "model"))
    same = people[:, None] == people[None, :]
    np.fill_diagonal(same, False)
    different = people[:, None] != people[None, :]
    return float((distances[same].mean() + distances[different].mean()) / 2)


def embed_faces(model_path: str, crops: np.ndarray, batch_size: int, role: str) -> np.ndarray:
    from trainer.evaluation.verification import embed
    from trainer.export.model_files import load_embedding_model

    model = load_embedding_model(model_path, role=role)
    height, width = model.input_shape[1:3]
    if height is not None and (height, width) != crops.shape[1:3]:
        from PIL import Image

        crops = np.stack([np.asarray(Image.fromarray(c).resize((width, height), Image.Resampling.BILINEAR,
                                                               reducing_gap=2.0)) for c in crops])
    return embed(model, crops, batch_size)


def cluster_families(embeddings: np.ndarray, faces: list[Face], threshold: float,
                     linkage: str = "average") -> np.ndarray:
    """Cluster label per face, clustering each family on its own (labels restart per family)."""
    labels = np.zeros(len(faces), np.int64)
    families = np.array([face.family for face in faces])
    for family in sorted(set(families)):
        index = np.flatnonzero(families == family)
        labels[index] = agglomerative(embeddings[index], threshold, linkage)
    return labels


def _face_entry(face: Face) -> dict:
    entry = asdict(face)
    entry.pop("family")
    return entry


def family_albums(faces: list[Face], labels: np.ndarray, min_album: int) -> list[dict]:
    """Per family: its albums (clusters of ``min_album`` faces or more, in first-face order) and
    the unsorted faces."""
    result = []
    for family in sorted({face.family for face in faces}):
        index = [i for i, face in enumerate(faces) if face.family == family]
        albums, unsorted = [], []
        for cluster in range(int(labels[index].max()) + 1 if index else 0):
            members = [faces[i] for i in index if labels[i] == cluster]
            if len(members) >= min_album:
                albums.append({"cluster": cluster, "faces": [_face_entry(f) for f in members],
                               "photos": sorted({f.photo for f in members})})
            else:
                unsorted += [_face_entry(f) for f in members]
        result.append({"family": family, "faces": len(index),
                       "photos": len({faces[i].photo for i in index}), "albums": albums, "unsorted": unsorted})
    return result


def compare_models(faces: list[Face], old_labels: np.ndarray, new_labels: np.ndarray, min_album: int,
                   split_share: float = 0.25) -> dict:
    """Each family's old albums followed into the new clustering (``outcomes``: per family, the
    ``album_outcomes`` of its old albums, by cluster label); breakage rates over all."""
    per_family, totals = [], {"albums": 0, "mixed": 0, "disappeared": 0, "split": 0}
    for family in sorted({face.family for face in faces}):
        index = [i for i, face in enumerate(faces) if face.family == family]
        outcomes = album_outcomes(old_labels[index], new_labels[index], min_album, split_share)
        per_family.append({"family": family, "albums": outcomes})
        totals["albums"] += len(outcomes)
        for key in ("mixed", "disappeared", "split"):
            totals[key] += sum(o[key] for o in outcomes)
    return {"breakage_old_to_new": breakage_rates(totals), "outcomes": per_family}


def album_report(photos: str, aligned: str, model: str, threshold, old_model: str | None = None,
                 old_threshold="auto", linkage: str = "average", min_album: int = 2,
                 batch_size: int = 64) -> dict:
    """Everything ``albums.json`` holds (see the module docstring)."""
    # Photos removed since an earlier run keep their lines in the manifest: leave their faces out.
    faces = [face for face in faces_in(aligned) if os.path.exists(os.path.join(photos, face.photo))]
    if not faces:
        raise ConfigError(f"no faces were found in the photos of {photos}: nothing to sort into albums")
    crops = read_crops(aligned, faces, _crop_size(aligned, faces))
    new_threshold = resolve_threshold(threshold, model)
    new_labels = cluster_families(embed_faces(model, crops, batch_size, "model"), faces, new_threshold, linkage)
    report = {"photos": os.path.abspath(photos), "aligned": os.path.abspath(aligned),
              "model": os.path.abspath(model), "threshold": new_threshold, "linkage": linkage,
              "min_album": min_album, "faces": len(faces),
              "families": family_albums(faces, new_labels, min_album)}
    if old_model:
        old_threshold = resolve_threshold(old_threshold, old_model, "old_threshold")
        old_labels = cluster_families(embed_faces(old_model, crops, batch_size, "old_model"), faces,
                                      old_threshold, linkage)
        report["old"] = {"model": os.path.abspath(old_model), "threshold": old_threshold,
                         "families": family_albums(faces, old_labels, min_album),
                         **compare_models(faces, old_labels, new_labels, min_album)}
    return report


def _crop_size(aligned: str, faces: list[Face]) -> int:
    from PIL import Image

    with Image.open(os.path.join(aligned, faces[0].crop)) as image:
        return image.size[0]

"""IJB-B / IJB-C template verification (1:1) and identification (1:N).

Reads the layout insightface distributes (``<root>/meta``, ``<root>/loose_crop``)::

    meta/ijbc_face_tid_mid.txt          image template media        one row per face of a template
    meta/ijbc_name_5pts_score.txt       image x1 y1 … x5 y5 score   5 landmarks, detector score
    meta/ijbc_template_pair_label.txt   template1 template2 label   1:1 pairs (1 = same subject)
    meta/ijbc_1N_gallery_G1.csv, …_G2.csv, ijbc_1N_probe_mixed.csv  TEMPLATE_ID,SUBJECT_ID,… per face
    loose_crop/<image>

(IJB-B: ``ijbb_…`` names, galleries ``S1``/``S2``.) Each face is aligned to the
ArcFace template with its five landmarks, embedded together with its mirror
(the two features summed), then pooled as the published evaluation does: a
face's feature, optionally kept un-normalised (its norm acts as a quality
weight) and optionally multiplied by its detector score, is averaged within
its media (an image, or the frames of one video), the media features are summed
within the template, and the sum is L2-normalised. A pair's score is the
cosine of its two templates.

1:1 reports TAR at FAR 1e-6 … 1e-1 (the threshold admitting at most that share
of negative pairs; null when the set has too few negatives) and the ROC.
1:N follows the NIST open-set protocol, once per gallery: a probe whose subject
is in the gallery is a mated search, the others are non-mated. Closed-set
rank-k is the share of mated searches whose mate is among the k best-scoring
gallery subjects (a subject scores its best template; a tie with another
subject counts against the mate). Open-set TPIR at FPIR f is the share of mated
searches whose mate is ranked first and scores above the threshold that at
most a share f of the non-mated searches' best scores exceed; the mean over
galleries averages the galleries' numbers.
"""

from __future__ import annotations

import csv
import glob
import os

import numpy as np

from trainer.normalize import l2_normalize_numpy

FARS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
FPIRS = (1e-2, 1e-1)
RANKS = (1, 5, 10)
SUBSETS = ("IJBB", "IJBC")
PROTOCOLS = ("insightface", "exact")
PAIR_BLOCK = 1 << 16        # template pairs scored per block
PROBE_ELEMENTS = 1 << 24    # probe × gallery scores held at once


# -- protocol files ------------------------------------------------------------------

def protocol_files(root: str, subset: str = "IJBC") -> dict:
    """Paths of one subset's files; missing 1:1 files are an error, missing 1:N lists are not."""
    from trainer.data.errors import DataError

    subset = str(subset).upper()
    if subset not in SUBSETS:
        raise DataError(f"ijb.subset={subset!r} is not one of {', '.join(SUBSETS)}")
    prefix = subset.lower()
    meta = os.path.join(str(root), "meta")
    files = {"faces": os.path.join(meta, f"{prefix}_face_tid_mid.txt"),
             "landmarks": os.path.join(meta, f"{prefix}_name_5pts_score.txt"),
             "pairs": os.path.join(meta, f"{prefix}_template_pair_label.txt"),
             "images": os.path.join(str(root), "loose_crop")}
    for key, path in files.items():
        if not os.path.exists(path):
            raise DataError(f"ijb={root}: {path} is missing (expected the insightface IJB layout: "
                            f"meta/{prefix}_face_tid_mid.txt, meta/{prefix}_name_5pts_score.txt, "
                            f"meta/{prefix}_template_pair_label.txt, loose_crop/)")
    # The 1:N lists sit in meta/ in the insightface release; accept them at the root too.
    found = {}
    for kind in ("gallery_*", "probe_mixed"):
        for folder in (meta, str(root)):
            hits = sorted(glob.glob(os.path.join(folder, f"{prefix}_1N_{kind}.csv")))
            if hits:
                found[kind] = hits
                break
    files["galleries"] = found.get("gallery_*", [])
    files["probes"] = found.get("probe_mixed", [None])[0]
    return files


def _rows(path: str):
    """Whitespace-separated fields of each non-empty line."""
    with open(path) as f:
        for line in f:
            fields = line.split()
            if fields:
                yield fields


def read_landmarks(path: str):
    """(image names, landmarks float (N, 5, 2) as x, y, detector scores (N,))."""
    from trainer.data.errors import DataError

    names, points, scores = [], [], []
    for number, fields in enumerate(_rows(path), 1):
        if len(fields) < 12:
            raise DataError(f"{path} line {number}: expected 'image x1 y1 … x5 y5 score', got {len(fields)} fields")
        names.append(fields[0])
        points.append([float(x) for x in fields[1:11]])
        scores.append(float(fields[11]))
    return names, np.asarray(points, np.float64).reshape(-1, 5, 2), np.asarray(scores, np.float64)


def read_faces(path: str):
    """(image names, template ids, media ids) of ``*_face_tid_mid.txt``."""
    rows = list(_rows(path))
    names = [r[0] for r in rows]
    templates = np.asarray([int(r[1]) for r in rows], np.int64)
    medias = np.asarray([int(r[2]) for r in rows], np.int64)
    return names, templates, medias


def read_pairs(path: str):
    """(template1, template2, label bool) of ``*_template_pair_label.txt``."""
    table = np.asarray([[int(x) for x in r[:3]] for r in _rows(path)], np.int64).reshape(-1, 3)
    return table[:, 0], table[:, 1], table[:, 2].astype(bool)


def read_template_subjects(path: str):
    """(template ids, subject ids), one row per template, of a 1:N list (one row per face).

    Columns are found by the header names TEMPLATE_ID and SUBJECT_ID; a file
    without that header is read as template, subject in its first two columns.
    """
    with open(path, newline="") as f:
        rows = [r for r in csv.reader(f) if r]
    header = [h.strip().upper() for h in rows[0]] if rows else []
    if "TEMPLATE_ID" in header and "SUBJECT_ID" in header:
        t_col, s_col, rows = header.index("TEMPLATE_ID"), header.index("SUBJECT_ID"), rows[1:]
    else:
        t_col, s_col = 0, 1
    subject_of = {}
    for row in rows:
        subject_of.setdefault(int(row[t_col]), int(row[s_col]))
    templates = np.asarray(sorted(subject_of), np.int64)
    return templates, np.asarray([subject_of[t] for t in templates.tolist()], np.int64)


# -- faces to features -----------------------------------------------------------------

def alignment_transforms(landmarks: np.ndarray, image_size: int) -> np.ndarray:
    """(N, 8) float32 output→input projective transforms aligning each face's landmarks."""
    from augment.preprocess import alignment_matrix

    transforms = np.empty((len(landmarks), 8), np.float32)
    for i, points in enumerate(landmarks):
        transforms[i] = np.linalg.inv(alignment_matrix(points, image_size)).reshape(-1)[:8]
    return transforms


def aligned_images(paths, transforms: np.ndarray, image_size: int, batch_size: int):
    """``tf.data`` batches of aligned faces, float32 (B, S, S, 3) in 0..255, in file order.

    The same warp as ``augment.preprocess.align_face`` (bilinear, zeros outside),
    with the transforms computed beforehand so that decoding and warping run in
    parallel inside ``tf.data`` (hundreds of thousands of IJB-C faces).
    """
    import tensorflow as tf

    def load(path, transform):
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        warped = tf.raw_ops.ImageProjectiveTransformV3(
            images=tf.cast(image, tf.float32)[None], transforms=transform[None],
            output_shape=tf.constant([image_size, image_size]), fill_value=0.0,
            interpolation="BILINEAR", fill_mode="CONSTANT")
        return tf.ensure_shape(warped[0], [image_size, image_size, 3])

    dataset = tf.data.Dataset.from_tensor_slices((tf.constant(list(paths), tf.string),
                                                  tf.constant(transforms, tf.float32)))
    return (dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .batch(batch_size).prefetch(tf.data.AUTOTUNE))


def face_features(model, batches, flip: bool = True) -> np.ndarray:
    """(N, D) float32 features: the model's output for each face, plus its mirror's with ``flip``."""
    outputs = []
    for batch in batches:
        batch = np.asarray(batch, np.float32)
        features = np.asarray(model(batch, training=False), np.float32)
        if flip:
            features = features + np.asarray(model(batch[:, :, ::-1], training=False), np.float32)
        outputs.append(features)
    return np.concatenate(outputs) if outputs else np.zeros((0, 0), np.float32)


def face_weights(features: np.ndarray, scores: np.ndarray | None, norm_score: bool) -> np.ndarray:
    """Each face's feature as it enters pooling: unit length unless ``norm_score``, times its score."""
    # Float32 in, float32 out: IJB-C holds 469k faces, and pooling sums in float64 anyway.
    features = np.asarray(features)
    if not norm_score:
        features = l2_normalize_numpy(features, axis=1)
    if scores is not None:
        features = features * np.asarray(scores, features.dtype)[:, None]
    return features


def pool_templates(features: np.ndarray, templates: np.ndarray, medias: np.ndarray):
    """(template ids ascending, L2-normalised template features): mean per media, sum per template."""
    templates, medias = np.asarray(templates, np.int64), np.asarray(medias, np.int64)
    order = np.lexsort((medias, templates))
    t_sorted, m_sorted = templates[order], medias[order]
    media_start = np.flatnonzero(np.r_[True, (np.diff(t_sorted) != 0) | (np.diff(m_sorted) != 0)])
    counts = np.diff(np.r_[media_start, len(order)])
    media_means = np.add.reduceat(np.asarray(features)[order], media_start, axis=0,
                                  dtype=np.float64) / counts[:, None]
    media_template = t_sorted[media_start]
    template_start = np.flatnonzero(np.r_[True, np.diff(media_template) != 0])
    pooled = np.add.reduceat(media_means, template_start, axis=0)
    return media_template[template_start], l2_normalize_numpy(pooled, axis=1)


def template_rows(template_ids: np.ndarray, wanted) -> np.ndarray:
    """Row of each ``wanted`` template in ``template_ids`` (ascending); an unknown one is an error."""
    from trainer.data.errors import DataError

    wanted = np.asarray(wanted, np.int64)
    rows = np.minimum(np.searchsorted(template_ids, wanted), max(len(template_ids) - 1, 0))
    missing = template_ids[rows] != wanted if len(template_ids) else np.ones(len(wanted), bool)
    if np.any(missing):
        raise DataError(f"template {int(wanted[np.argmax(missing)])} has no faces in the face list "
                        f"({int(missing.sum())} templates missing)")
    return rows


def pair_scores(template_features: np.ndarray, rows1: np.ndarray, rows2: np.ndarray,
                block: int = PAIR_BLOCK) -> np.ndarray:
    """Cosine of each template pair, in blocks so that memory stays at ``block`` pairs."""
    scores = np.empty(len(rows1), np.float64)
    for start in range(0, len(rows1), block):
        a = template_features[rows1[start:start + block]]
        b = template_features[rows2[start:start + block]]
        scores[start:start + block] = np.einsum("ij,ij->i", a, b)
    return scores


# -- 1:1 -----------------------------------------------------------------------------

def verification_report(scores: np.ndarray, labels: np.ndarray, fars=FARS, protocol: str = "insightface") -> dict:
    """TAR at each FAR, ROC AUC and counts for scored template pairs (higher score = more alike)."""
    from trainer.evaluation import ijb_insightface
    from trainer.evaluation import verification as v

    labels = np.asarray(labels, bool)
    # Negated scores are distances in the verification module's sense, exactly (no rounding).
    distances = -np.asarray(scores, np.float64)
    report = {"protocol": check_protocol(protocol)}
    if protocol == "exact":
        report["tar_at_far"] = v.tar_at_far(distances, labels, fars)
    else:
        report.update(ijb_insightface.tar_at_far(scores, labels, fars))
    # The area is the same under both protocols: dropped ROC points are collinear.
    report.update({"roc_auc": v.roc_auc(distances, labels), "pairs": int(len(labels)),
                   "positives": int(labels.sum()), "negatives": int((~labels).sum())})
    return report


def check_protocol(protocol: str) -> str:
    from trainer.registry import ConfigError

    if protocol not in PROTOCOLS:
        raise ConfigError(f"ijb.protocol={protocol!r} is not one of {', '.join(PROTOCOLS)} "
                          "(insightface: as published tables compute it; exact: textbook definitions)")
    return protocol


def roc_points(scores: np.ndarray, labels: np.ndarray, points: int = 400):
    """(FAR, TAR) of the ROC thinned to about ``points`` log-spaced FARs (for plots)."""
    from trainer.evaluation import verification as v

    far, tar = v.roc_curve(-np.asarray(scores, np.float64), np.asarray(labels, bool))
    positive = far[far > 0]
    if len(positive) <= points:
        return far, tar
    grid = np.geomspace(positive[0], 1.0, points)
    # Per grid FAR: the last ROC point at or below it (the best TAR reachable there).
    keep = np.unique(np.r_[0, np.searchsorted(far, grid, side="right") - 1, len(far) - 1])
    return far[keep], tar[keep]


def plot_rocs(curves: dict, path: str, min_far: float = 1e-6) -> str:
    """``{name: (far, tar)}`` as a PNG with a log FAR axis from 1e-6 (IJB reports FAR down to it)."""
    from trainer.evaluation.verification import plot_roc

    return plot_roc(curves, path, min_far=min_far)


# -- 1:N -----------------------------------------------------------------------------

def subject_scores(similarities: np.ndarray, gallery_subjects: np.ndarray):
    """(subject ids ascending, (P, S) best score of each subject's gallery templates)."""
    gallery_subjects = np.asarray(gallery_subjects, np.int64)
    order = np.argsort(gallery_subjects, kind="stable")
    sorted_subjects = gallery_subjects[order]
    start = np.flatnonzero(np.r_[True, np.diff(sorted_subjects) != 0])
    return sorted_subjects[start], np.maximum.reduceat(similarities[:, order], start, axis=1)


def search_outcomes(probe_features, probe_subjects, gallery_features, gallery_subjects,
                    max_elements: int = PROBE_ELEMENTS):
    """Per probe: (mated bool, mate rank (0 when non-mated), mate score, best non-mate score).

    Rank is 1 + the number of other gallery subjects scoring at least the mate's
    score, so a tie never favours the mate.
    """
    probe_subjects = np.asarray(probe_subjects, np.int64)
    count = len(probe_subjects)
    mated = np.zeros(count, bool)
    rank = np.zeros(count, np.int64)
    mate_score = np.full(count, -np.inf)
    best_other = np.full(count, -np.inf)
    rows = max(1, int(max_elements) // max(1, len(gallery_subjects)))
    for start in range(0, count, rows):
        stop = min(start + rows, count)
        subjects, scores = subject_scores(probe_features[start:stop] @ gallery_features.T, gallery_subjects)
        is_mate = subjects[None, :] == probe_subjects[start:stop, None]
        mated[start:stop] = is_mate.any(axis=1)
        mates = np.where(is_mate, scores, -np.inf).max(axis=1)
        others = np.where(is_mate, -np.inf, scores)
        mate_score[start:stop] = mates
        best_other[start:stop] = others.max(axis=1, initial=-np.inf)
        rank[start:stop] = np.where(mated[start:stop], 1 + np.sum(others >= mates[:, None], axis=1), 0)
    return mated, rank, mate_score, best_other


def identification_report(mated, rank, mate_score, best_other, ranks=RANKS, fpirs=FPIRS) -> dict:
    """Closed-set rank-k (mated searches) and open-set TPIR at FPIR (rank 1)."""
    mated = np.asarray(mated, bool)
    mates, non_mated_best = rank[mated], np.sort(best_other[~mated])[::-1]
    report = {"mated": int(mated.sum()), "non_mated": int((~mated).sum()),
              "rank": {str(k): float(np.mean(mates <= k)) if len(mates) else None for k in ranks},
              "tpir_at_fpir": {}}
    for fpir in fpirs:
        allowed = int(np.floor(fpir * len(non_mated_best) + 1e-9))
        if allowed < 1 or not len(mates):
            report["tpir_at_fpir"][f"{fpir:.0e}"] = None
            continue
        # Alarming on scores above the (allowed+1)-th best non-mated score raises at most `allowed`.
        threshold = non_mated_best[allowed] if allowed < len(non_mated_best) else -np.inf
        hit = (rank[mated] == 1) & (mate_score[mated] > threshold)
        report["tpir_at_fpir"][f"{fpir:.0e}"] = float(np.mean(hit))
    return report


def gallery_name(path: str) -> str:
    """``ijbc_1N_gallery_G1.csv`` → ``G1``."""
    return os.path.splitext(os.path.basename(path))[0].rsplit("_", 1)[-1]


def identification(template_ids, template_features, galleries: dict, probes, ranks=RANKS,
                   fpirs=FPIRS, protocol: str = "insightface") -> dict:
    """1:N per gallery (``{name: (templates, subjects)}``) and the mean over galleries.

    With ``protocol="insightface"`` also the search over all galleries joined
    (``G1+G2``, ijb_1n.py's variant).
    """
    from trainer.evaluation import ijb_insightface

    check_protocol(protocol)
    probe_templates, probe_subjects = probes
    probe_features = template_features[template_rows(template_ids, probe_templates)]
    results = {}
    for name, (templates, subjects) in galleries.items():
        gallery_features = template_features[template_rows(template_ids, templates)]
        if protocol == "exact":
            outcomes = search_outcomes(probe_features, probe_subjects, gallery_features, subjects)
            results[name] = identification_report(*outcomes, ranks=ranks, fpirs=fpirs)
        else:
            results[name] = ijb_insightface.gallery_search(probe_features, probe_subjects, gallery_features,
                                                           subjects, ranks, fpirs)
    if len(results) > 1:
        reports = list(results.values())
        results["mean"] = (_mean_report(reports) if protocol == "exact"
                           else ijb_insightface.mean_over_galleries(reports, len(probe_templates)))
        if protocol == "insightface":
            templates, subjects = joined_galleries(galleries.values())
            results["+".join(galleries)] = ijb_insightface.union_search(
                probe_features, probe_subjects, template_features[template_rows(template_ids, templates)],
                subjects, ranks)
    return results


def joined_galleries(galleries):
    """(template ids ascending, subjects) of several galleries' lists; a shared template counts once."""
    subject_of = {}
    for templates, subjects in galleries:
        for template, subject in zip(np.asarray(templates).tolist(), np.asarray(subjects).tolist()):
            subject_of.setdefault(template, subject)
    templates = np.asarray(sorted(subject_of), np.int64)
    return templates, np.asarray([subject_of[t] for t in templates.tolist()], np.int64)


def _mean_report(reports: list) -> dict:
    def mean(values):
        values = [x for x in values if x is not None]
        return float(np.mean(values)) if values else None

    return {"rank": {k: mean([r["rank"][k] for r in reports]) for k in reports[0]["rank"]},
            "tpir_at_fpir": {k: mean([r["tpir_at_fpir"][k] for r in reports])
                             for k in reports[0]["tpir_at_fpir"]}}


# -- the whole protocol ------------------------------------------------------------------

def evaluate_ijb(model, root: str, subset: str = "IJBC", batch_size: int = 256, flip: bool = True,
                 detector_score: bool = True, norm_score: bool = True, with_curve: bool = False,
                 protocol: str = "insightface"):
    """Run 1:1 and (when the lists exist) 1:N on ``root``; returns the report (and the ROC)."""
    from trainer.data.errors import DataError
    from trainer.evaluation.verification import unnormalised

    check_protocol(protocol)
    files = protocol_files(root, subset)
    names, landmarks, scores = read_landmarks(files["landmarks"])
    face_names, templates, medias = read_faces(files["faces"])
    row_of = {name: i for i, name in enumerate(names)}
    unknown = [n for n in face_names if n not in row_of]
    if unknown:
        raise DataError(f"{files['faces']}: {len(unknown)} faces have no landmarks in "
                        f"{files['landmarks']} (e.g. {unknown[0]})")
    paths = [os.path.join(files["images"], name) for name in names]
    if paths and not os.path.exists(paths[0]):
        raise DataError(f"ijb={root}: image {paths[0]} is missing (loose_crop/ should hold every "
                        f"image named in {os.path.basename(files['landmarks'])})")
    size = int(model.input_shape[1])
    # With norm_score the norm before the model's final normalisation is the face's weight.
    network = unnormalised(model) if norm_score else model
    features = face_features(network, aligned_images(paths, alignment_transforms(landmarks, size), size,
                                                     batch_size), flip)
    face_rows = np.asarray([row_of[n] for n in face_names], np.int64)
    weighted = face_weights(features[face_rows], scores[face_rows] if detector_score else None, norm_score)
    template_ids, template_features = pool_templates(weighted, templates, medias)
    return template_report(template_ids, template_features, files, protocol, with_curve, root=str(root),
                           subset=str(subset).upper(), images=len(names), faces=len(face_names), flip=bool(flip),
                           detector_score=bool(detector_score), norm_score=bool(norm_score))


def template_report(template_ids, template_features, files: dict, protocol: str, with_curve: bool, **header):
    """1:1 and 1:N numbers of pooled template features; ``header`` goes first into the report."""
    t1, t2, labels = read_pairs(files["pairs"])
    pair_score = pair_scores(template_features, template_rows(template_ids, t1), template_rows(template_ids, t2))
    report = {**header, "templates": int(len(template_ids)), "protocol": protocol,
              "verification": verification_report(pair_score, labels, protocol=protocol)}
    if files["galleries"] and files["probes"]:
        galleries = {gallery_name(p): read_template_subjects(p) for p in files["galleries"]}
        report["identification"] = identification(template_ids, template_features, galleries,
                                                  read_template_subjects(files["probes"]), protocol=protocol)
    return (report, roc_points(pair_score, labels)) if with_curve else report

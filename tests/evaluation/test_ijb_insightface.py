"""IJB numbers by insightface's definitions (the default) against a reference written here.

The reference follows what ``ijb_11.py``, ``ijb_evals.py`` and ``ijb_1n.py``
compute, step by step in plain Python loops and float64 (no code shared with
``trainer.evaluation.ijb_insightface``): scikit-learn's ``roc_curve`` with its
defaults and the nearest-FPR lookup; the per-gallery search and FPIR threshold;
the union search. Fixtures have tied scores, few negatives and detector scores
below 1.
"""

import math
import os

import keras
import numpy as np
import pytest

from trainer.evaluation import ijb, ijb_insightface
from trainer.evaluation.ijb_synthetic import write_synthetic_ijb

TOLERANCE = 1e-6
SIZE = 16


# -- the reference ----------------------------------------------------------------------------

def reference_roc(scores, labels):
    """scikit-learn roc_curve(labels, scores) with drop_intermediate=True, as (fpr list, tpr list)."""
    points = []
    for threshold in sorted(set(scores), reverse=True):
        points.append((sum(1 for s, y in zip(scores, labels) if not y and s >= threshold),
                       sum(1 for s, y in zip(scores, labels) if y and s >= threshold)))
    if len(points) > 2:
        kept = [points[0]]
        for before, point, after in zip(points, points[1:], points[2:]):
            if after[0] - 2 * point[0] + before[0] != 0 or after[1] - 2 * point[1] + before[1] != 0:
                kept.append(point)
        points = kept + [points[-1]]
    points = [(0, 0)] + points
    negatives, positives = points[-1]
    return [f / negatives for f, _ in points], [t / positives for _, t in points]


def reference_tar(scores, labels, far):
    """ijb_11.py: flip the curve, take the first point of least |fpr - far|."""
    fpr, tpr = reference_roc(list(scores), list(labels))
    fpr, tpr = fpr[::-1], tpr[::-1]
    best = min(range(len(fpr)), key=lambda i: (abs(fpr[i] - far), i))
    return tpr[best]


def insightface_fpir_values():
    """ijb_evals.py's FPIR list; its table shows indices 50 (1e-2) and 75 (1e-1)."""
    grid = [10 ** x for x in np.arange(-4, 0, 4 / 100)] + [1]
    return {"1e-02": grid[50], "1e-01": grid[75]}


def reference_gallery(similarity, probe_subjects, gallery_subjects):
    """ijb_evals.py evaluation_1N on one gallery: (hits per k, mated count, {fpir: tpir})."""
    hits, positives, mate_beats_others, non_mated = {1: 0, 5: 0, 10: 0}, [], [], []
    for row, subject in zip(similarity, probe_subjects):
        if subject in gallery_subjects:
            mate = gallery_subjects.index(subject)
            # argsort(row)[::-1] with a stable sort: by (score, index), then reversed.
            order = sorted(range(len(row)), key=lambda j: (row[j], j), reverse=True)
            for k in hits:
                hits[k] += mate in order[:k]
            others = [row[j] for j in range(len(row)) if gallery_subjects[j] != subject]
            positives.append(row[mate])
            mate_beats_others.append(row[mate] > max(others))
        else:
            non_mated.append(max(row))
    non_mated.sort(reverse=True)
    tpirs = {}
    for key, fpir in insightface_fpir_values().items():
        threshold = non_mated[max(int(len(non_mated) * fpir) - 1, 0)]
        tpirs[key] = sum(b and p > threshold for b, p in zip(mate_beats_others, positives)) / len(positives)
    return hits, len(positives), tpirs


def reference_union(similarity, probe_subjects, gallery_subjects):
    """ijb_1n.py evaluation: ({k: top-k share}, {far: pr})."""
    query_num = len(probe_subjects)
    mask = [gallery_subjects.index(s) for s in probe_subjects]
    tops = {}
    for k in (1, 5, 10):
        # argsort(-row) with a stable sort: by (-score, index).
        tops[str(k)] = sum(mask[i] in sorted(range(len(row)), key=lambda j: (-row[j], j))[:k]
                           for i, row in enumerate(similarity)) / query_num
    negatives = sorted((row[j] for i, row in enumerate(similarity) for j in range(len(row)) if j != mask[i]),
                       reverse=True)
    prs = {}
    for far in (0.01, 0.1):
        threshold = negatives[math.ceil(query_num * far) - 1]
        prs[f"{far:.0e}"] = sum(similarity[i][mask[i]] > threshold for i in range(query_num)) / query_num
    return tops, prs


def reference_templates(features, templates, medias):
    """image2template_feature: per template, media means summed, then L2-normalised."""
    pooled = {}
    for template in sorted(set(templates)):
        rows = [i for i, t in enumerate(templates) if t == template]
        total = np.zeros(features.shape[1])
        for media in sorted({medias[i] for i in rows}):
            members = [features[i] for i in rows if medias[i] == media]
            total += np.mean(members, axis=0)
        pooled[template] = total / math.sqrt(float(np.sum(total * total)))
    return pooled


def assert_close(got, expected):
    assert got is not None and abs(got - expected) <= TOLERANCE, (got, expected)


# -- 1:1 --------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed,negatives", [(0, 40), (1, 300), (2, 7)])
def test_tar_at_far_is_ijb_11_on_tied_scores_and_few_negatives(seed, negatives):
    rng = np.random.default_rng(seed)
    labels = np.r_[np.ones(25, bool), np.zeros(negatives, bool)]
    scores = rng.integers(0, 12, len(labels)) + 4.0 * labels  # integer scores: many ties
    report = ijb.verification_report(scores, labels)
    assert report["protocol"] == "insightface"
    for far in ijb.FARS:
        assert_close(report["tar_at_far"][f"{far:.0e}"], reference_tar(scores.tolist(), labels.tolist(), far))
    # Every FAR below 1/negatives is reported and said to be so.
    below = [far for far in ijb.FARS if far * negatives < 1]
    assert len(report["notes"]) == len(below) and all("insightface" in n for n in report["notes"])
    assert report["far_of_point"]["1e-06"] == 0.0


def test_nearest_point_prefers_the_larger_far_on_equal_distance():
    fpr = np.array([0.0, 0.05, 0.05, 0.25, 1.0])
    assert ijb_insightface.nearest_point(fpr, 0.05) == 2  # equal FPRs: the later (higher TPR) point
    assert ijb_insightface.nearest_point(np.array([0.0, 0.5, 1.0]), 0.25) == 1  # 0.25 from 0 and 0.5


def test_reduced_roc_is_the_corners_of_the_curve():
    scores = np.array([5, 4, 3, 2, 1], float)
    labels = np.array([1, 1, 0, 0, 1], bool)
    fpr, tpr = ijb_insightface.reduced_roc(scores, labels)
    # (0, 0) is prepended after the reduction, so the first score's point stays although collinear.
    assert fpr.tolist() == [0.0, 0.0, 0.0, 1.0, 1.0] and tpr.tolist() == [0.0, 1 / 3, 2 / 3, 2 / 3, 1.0]
    assert reference_roc(scores.tolist(), labels.tolist()) == (fpr.tolist(), tpr.tolist())


# -- 1:N --------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1])
def test_gallery_search_and_mean_are_ijb_evals(seed):
    rng = np.random.default_rng(seed)
    # Gallery 1: subjects 0..11, some with two templates; gallery 2: subjects 12..23.
    subjects = {"G1": np.r_[np.arange(12), [3, 7]], "G2": np.arange(12, 24)}
    features = {name: np.round(rng.normal(size=(len(s), 3)) * 2) / 2 for name, s in subjects.items()}
    probe_subjects = rng.integers(0, 24, 60)
    all_gallery = np.concatenate([features["G1"], features["G2"]])
    probes = np.round((all_gallery[probe_subjects] + rng.normal(size=(60, 3))) * 2) / 2  # ties on a lattice
    reports, hits_total = [], {1: 0, 5: 0, 10: 0}
    for name in ("G1", "G2"):
        got = ijb_insightface.gallery_search(probes, probe_subjects, features[name], subjects[name],
                                             ijb.RANKS, ijb.FPIRS)
        similarity = (probes @ features[name].T).tolist()
        hits, mated, tpirs = reference_gallery(similarity, probe_subjects.tolist(), subjects[name].tolist())
        assert got["mated"] == mated and got["non_mated"] == 60 - mated
        for k in hits:
            assert_close(got["rank"][str(k)], hits[k] / mated)
            hits_total[k] += hits[k]
        for key, value in tpirs.items():
            assert_close(got["tpir_at_fpir"][key], value)
        reports.append(got)
    mean = ijb_insightface.mean_over_galleries(reports, 60)
    for k in hits_total:
        assert_close(mean["rank"][str(k)], hits_total[k] / 60)
    for key in ("1e-02", "1e-01"):
        per_gallery = [r["tpir_at_fpir"][key] for r in reports]
        assert_close(mean["tpir_at_fpir"][key], (per_gallery[0] + per_gallery[1]) / 2)


def test_union_search_is_ijb_1n():
    rng = np.random.default_rng(3)
    gallery_subjects = rng.permutation(30)
    gallery = np.round(rng.normal(size=(30, 3)) * 2) / 2
    probe_subjects = rng.integers(0, 30, 120)
    position = {s: i for i, s in enumerate(gallery_subjects.tolist())}
    probes = np.round((gallery[[position[s] for s in probe_subjects.tolist()]]
                       + rng.normal(size=(120, 3))) * 2) / 2
    got = ijb_insightface.union_search(probes, probe_subjects, gallery, gallery_subjects, ijb.RANKS)
    tops, prs = reference_union((probes @ gallery.T).tolist(), probe_subjects.tolist(), gallery_subjects.tolist())
    for k, value in tops.items():
        assert_close(got["rank"][k], value)
    for key, value in prs.items():
        assert_close(got["tpr_at_far"][key], value)
    missing = ijb_insightface.union_search(probes, probe_subjects + 100, gallery, gallery_subjects, ijb.RANKS)
    assert "skipped" in missing


# -- the whole command on a rendered IJB-C layout ------------------------------------------------

def read_table(path, sep=None):
    with open(path) as f:
        return [line.strip().split(sep) for line in f if line.strip()]


def test_every_number_of_the_report_is_insightfaces(tmp_path):
    root = str(tmp_path / "ijb")
    write_synthetic_ijb(root, subjects=14, seed=2, image_size=40)
    images = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Dense(8, kernel_initializer=keras.initializers.RandomNormal(seed=5))(
        keras.layers.Flatten()(keras.layers.Rescaling(1 / 255.0)(images)))
    model = keras.Model(images, keras.layers.UnitNormalization(axis=-1, name="l2_normalize")(x))
    report = ijb.evaluate_ijb(model, root, "IJBC", batch_size=16)
    assert report["protocol"] == "insightface"

    # Face features as insightface's scripts take them: flip-summed, un-normalised, times faceness.
    meta = os.path.join(root, "meta")
    landmark_rows = read_table(os.path.join(meta, "ijbc_name_5pts_score.txt"))
    faceness = np.array([float(r[11]) for r in landmark_rows])
    assert faceness.max() < 1.0
    landmarks = np.array([[float(v) for v in r[1:11]] for r in landmark_rows]).reshape(-1, 5, 2)
    paths = [os.path.join(root, "loose_crop", r[0]) for r in landmark_rows]
    batches = ijb.aligned_images(paths, ijb.alignment_transforms(landmarks, SIZE), SIZE, 16)
    raw = keras.Model(model.inputs, model.layers[-2].output)
    features = ijb.face_features(raw, batches).astype(np.float64) * faceness[:, None]
    faces = read_table(os.path.join(meta, "ijbc_face_tid_mid.txt"))
    assert [f[0] for f in faces] == [r[0] for r in landmark_rows]
    templates = reference_templates(features, [int(f[1]) for f in faces], [int(f[2]) for f in faces])

    pairs = read_table(os.path.join(meta, "ijbc_template_pair_label.txt"))
    scores = [float(np.dot(templates[int(a)], templates[int(b)])) for a, b, _ in pairs]
    labels = [int(label) == 1 for *_, label in pairs]
    for far in ijb.FARS:
        assert_close(report["verification"]["tar_at_far"][f"{far:.0e}"], reference_tar(scores, labels, far))

    def read_list(name):
        subject_of = {}
        for template, subject, _ in read_table(os.path.join(meta, name), ",")[1:]:
            subject_of.setdefault(int(template), int(subject))
        return sorted(subject_of), [subject_of[t] for t in sorted(subject_of)]

    probe_templates, probe_subjects = read_list("ijbc_1N_probe_mixed.csv")
    probes = np.array([templates[t] for t in probe_templates])
    hits_total, union_templates, union_subjects = {1: 0, 5: 0, 10: 0}, [], []
    for gallery in ("G1", "G2"):
        gallery_templates, gallery_subjects = read_list(f"ijbc_1N_gallery_{gallery}.csv")
        union_templates += gallery_templates
        union_subjects += gallery_subjects
        similarity = (probes @ np.array([templates[t] for t in gallery_templates]).T).tolist()
        hits, mated, tpirs = reference_gallery(similarity, probe_subjects, gallery_subjects)
        got = report["identification"][gallery]
        for k in hits:
            assert_close(got["rank"][str(k)], hits[k] / mated)
            hits_total[k] += hits[k]
        for key, value in tpirs.items():
            assert_close(got["tpir_at_fpir"][key], value)
    for k in hits_total:
        assert_close(report["identification"]["mean"]["rank"][str(k)], hits_total[k] / len(probe_templates))
    order = np.argsort(union_templates)
    union = np.array([templates[union_templates[i]] for i in order])
    tops, prs = reference_union((probes @ union.T).tolist(), probe_subjects, [union_subjects[i] for i in order])
    got = report["identification"]["G1+G2"]
    for k, value in tops.items():
        assert_close(got["rank"][k], value)
    for key, value in prs.items():
        assert_close(got["tpr_at_far"][key], value)

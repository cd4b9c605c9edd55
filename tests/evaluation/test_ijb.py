"""IJB-B/C protocol, ``ijb.protocol=exact``: every number against a brute-force computation written here.

The default (insightface's definitions) is checked in test_ijb_insightface.py.
"""

import math
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from augment.preprocess import ARCFACE_TEMPLATE, align_face
from trainer.data import face_renderer as fr
from trainer.evaluation import ijb
from trainer.evaluation.ijb_synthetic import face_landmarks, write_synthetic_ijb

SIZE = 16


# -- brute-force references ---------------------------------------------------------------

def brute_tar_at_far(scores, labels, far):
    """Best TAR over every threshold ('accept score > t') whose FAR is at most ``far``."""
    negatives, positives = scores[~labels], scores[labels]
    if math.floor(far * len(negatives) + 1e-9) < 1:
        return None
    best = 0.0
    for t in [-np.inf, *sorted(set(scores.tolist()))]:
        if sum(n > t for n in negatives) <= far * len(negatives) + 1e-9:
            best = max(best, sum(p > t for p in positives) / len(positives))
    return best


def brute_searches(probe_features, probe_subjects, gallery_features, gallery_subjects):
    """(mated, rank, mate score, best non-mate score) by looping over probes and gallery subjects."""
    outcomes = []
    for feature, subject in zip(probe_features, probe_subjects):
        best = {}
        for g_feature, g_subject in zip(gallery_features, gallery_subjects):
            score = float(np.dot(feature, g_feature))
            best[g_subject] = max(best.get(g_subject, -np.inf), score)
        others = [s for g, s in best.items() if g != subject]
        if subject in best:
            mate = best[subject]
            outcomes.append((True, 1 + sum(s >= mate for s in others), mate, max(others, default=-np.inf)))
        else:
            outcomes.append((False, 0, -np.inf, max(others)))
    return outcomes


def brute_identification(outcomes, ranks, fpirs):
    mated = [o for o in outcomes if o[0]]
    non_mated_best = [o[3] for o in outcomes if not o[0]]
    result = {"rank": {str(k): sum(o[1] <= k for o in mated) / len(mated) for k in ranks}, "tpir_at_fpir": {}}
    for fpir in fpirs:
        key = f"{fpir:.0e}"
        if math.floor(fpir * len(non_mated_best) + 1e-9) < 1:
            result["tpir_at_fpir"][key] = None
            continue
        best = 0.0
        for t in [-np.inf, *sorted(set(non_mated_best + [o[2] for o in mated]))]:
            if sum(s > t for s in non_mated_best) <= fpir * len(non_mated_best) + 1e-9:
                best = max(best, sum(o[1] == 1 and o[2] > t for o in mated) / len(mated))
        result["tpir_at_fpir"][key] = best
    return result


def brute_pool(features, templates, medias):
    """{template: unit feature}: mean per media, sum of media means, normalised (plain loops)."""
    pooled = {}
    for template in sorted(set(templates.tolist())):
        total = 0.0
        in_template = [i for i in range(len(templates)) if templates[i] == template]
        for media in sorted({medias[i] for i in in_template}):
            members = [features[i] for i in in_template if medias[i] == media]
            total = total + sum(members) / len(members)
        pooled[template] = total / np.linalg.norm(total)
    return pooled


# -- pieces ---------------------------------------------------------------------------------

def test_pooling_matches_loops_in_any_row_order():
    rng = np.random.default_rng(0)
    templates = rng.integers(10, 16, 80)
    medias = rng.integers(0, 5, 80) + 100 * templates * (rng.random(80) < 0.5)  # media shared or not
    features = rng.normal(size=(80, 5))
    ids, pooled = ijb.pool_templates(features, templates, medias)
    expected = brute_pool(features, templates, medias)
    assert ids.tolist() == sorted(expected)
    for row, template in enumerate(ids):
        assert np.allclose(pooled[row], expected[template], atol=1e-12)


def test_face_weights_detector_score_and_norm_score():
    features = np.array([[3.0, 4.0], [0.0, 2.0]])
    scores = np.array([0.5, 1.0])
    assert np.allclose(ijb.face_weights(features, None, norm_score=True), features)
    assert np.allclose(ijb.face_weights(features, None, norm_score=False), [[0.6, 0.8], [0.0, 1.0]])
    assert np.allclose(ijb.face_weights(features, scores, norm_score=False), [[0.3, 0.4], [0.0, 1.0]])
    assert np.allclose(ijb.face_weights(features, scores, norm_score=True), [[1.5, 2.0], [0.0, 2.0]])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tar_at_far_matches_every_threshold(seed):
    rng = np.random.default_rng(seed)
    labels = rng.random(2500) < 0.2
    # Integer-valued scores tie often, across positives and negatives.
    scores = rng.integers(0, 40, 2500) + 8.0 * labels
    report = ijb.verification_report(scores, labels, protocol="exact")
    for far in ijb.FARS:
        assert report["tar_at_far"][f"{far:.0e}"] == brute_tar_at_far(scores, labels, far), far
    assert report["positives"] == labels.sum() and report["negatives"] == (~labels).sum()


@pytest.mark.parametrize("seed", [0, 1])
def test_identification_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    gallery_subjects = np.r_[np.arange(30), rng.integers(0, 30, 10)]  # some subjects hold two templates
    probe_subjects = rng.integers(0, 45, 320)  # subjects 30…44 are not in the gallery
    # Features on a coarse lattice so that scores tie, also between a mate and others.
    gallery = np.round(rng.normal(size=(40, 3)) * 2) / 2
    probes = np.round((gallery[np.minimum(probe_subjects, 29)] + rng.normal(size=(320, 3))) * 2) / 2
    outcomes = ijb.search_outcomes(probes, probe_subjects, gallery, gallery_subjects, max_elements=100)
    report = ijb.identification_report(*outcomes)
    brute = brute_searches(probes, probe_subjects, gallery, gallery_subjects)
    assert outcomes[0].tolist() == [o[0] for o in brute] and outcomes[1].tolist() == [o[1] for o in brute]
    expected = brute_identification(brute, ijb.RANKS, ijb.FPIRS)
    assert report["rank"] == pytest.approx(expected["rank"])
    assert report["tpir_at_fpir"] == pytest.approx(expected["tpir_at_fpir"])
    assert report["tpir_at_fpir"]["1e-02"] is not None and report["mated"] + report["non_mated"] == 320


def test_landmarks_sit_on_the_rendered_features():
    identity = fr.split_identities(1, seed=3)[0]
    plain = fr.sample_nuisance(np.random.default_rng(0), identity, fr.NO_NUISANCE)
    images, points = [], []
    for rotation, scale, shift in ((0.0, 1.0, (0.0, 0.0)), (0.25, 0.9, (0.06, -0.05)), (-0.2, 1.05, (-0.05, 0.04))):
        posed = plain.__class__(**{**plain.__dict__, "rotation": rotation, "scale": scale, "shift": shift,
                                   "glasses": False, "sunglasses": False})
        images.append(fr.draw_face(identity, posed, 128))
        points.append(face_landmarks(identity, posed, 128))
    for image, landmarks in zip(images, points):
        for x, y in landmarks[:2]:  # the pupils are drawn black at the eye centres
            assert image[int(round(y)), int(round(x))].max() < 60
    # Aligned by their landmarks, three poses of one face become the same picture.
    aligned = [align_face(image, landmarks, 64).numpy() for image, landmarks in zip(images, points)]
    unaligned_gap = np.abs(images[0].astype(float) - images[1]).mean()
    for other in aligned[1:]:
        assert np.abs(aligned[0][8:56, 8:56] - other[8:56, 8:56]).mean() < 0.25 * unaligned_gap


def test_aligned_batches_are_align_face(tmp_path):
    rng = np.random.default_rng(0)
    paths, landmarks, expected = [], [], []
    for i, shape in enumerate([(40, 36), (50, 50)]):
        image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
        path = str(tmp_path / f"{i}.png")
        tf.io.write_file(path, tf.io.encode_png(image))
        points = ARCFACE_TEMPLATE * 0.3 + rng.uniform(0, 5, (5, 2))
        paths.append(path)
        landmarks.append(points)
        expected.append(align_face(image, points, SIZE).numpy())
    batches = ijb.aligned_images(paths, ijb.alignment_transforms(np.asarray(landmarks), SIZE), SIZE, 8)
    assert np.allclose(np.concatenate([b.numpy() for b in batches]), np.stack(expected), atol=1e-4)


def test_reading_the_1n_list_by_header_or_by_position(tmp_path):
    path = tmp_path / "l.csv"
    path.write_text("SUBJECT_ID,TEMPLATE_ID,FILENAME\n5,2,a.jpg\n5,2,b.jpg\n7,1,c.jpg\n")
    templates, subjects = ijb.read_template_subjects(str(path))
    assert templates.tolist() == [1, 2] and subjects.tolist() == [7, 5]
    path.write_text("2,5,a.jpg\n1,7,c.jpg\n")
    assert [x.tolist() for x in ijb.read_template_subjects(str(path))] == [[1, 2], [7, 5]]


def test_missing_files_and_unknown_subset_are_one_line_errors(tmp_path):
    from trainer.data.errors import DataError

    with pytest.raises(DataError, match="ijbc_face_tid_mid.txt is missing"):
        ijb.protocol_files(str(tmp_path), "IJBC")
    with pytest.raises(DataError, match="not one of IJBB, IJBC"):
        ijb.protocol_files(str(tmp_path), "IJBX")


# -- the whole protocol on a rendered set in the official layout ------------------------------

def tiny_model(normalised=True):
    images = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Dense(8, kernel_initializer=keras.initializers.RandomNormal(seed=2))(
        keras.layers.Flatten()(keras.layers.Rescaling(1 / 255.0)(images)))
    if normalised:
        x = keras.layers.UnitNormalization(axis=-1, name="l2_normalize")(x)
    return keras.Model(images, x)


@pytest.fixture(scope="module")
def ijb_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("ijb"))
    write_synthetic_ijb(root, subjects=12, seed=0, image_size=40)
    return root


def read_table(path):
    with open(path) as f:
        return [line.split() for line in f if line.strip()]


def brute_features(model, root, detector_score, norm_score):
    """{template: unit feature}, one image at a time: align_face, model on image and mirror, loops."""
    raw = tiny_model(normalised=False)
    raw.set_weights(model.get_weights())
    network = raw if norm_score else model
    feature_of, score_of = {}, {}
    for row in read_table(os.path.join(root, "meta", "ijbc_name_5pts_score.txt")):
        image = tf.io.decode_image(tf.io.read_file(os.path.join(root, "loose_crop", row[0])), channels=3).numpy()
        aligned = align_face(image, np.array(row[1:11], float).reshape(5, 2), SIZE).numpy()[None]
        feature = np.asarray(network(aligned))[0] + np.asarray(network(aligned[:, :, ::-1]))[0]
        if not norm_score:
            feature = feature / np.linalg.norm(feature)
        feature_of[row[0]] = feature * (float(row[11]) if detector_score else 1.0)
    faces = read_table(os.path.join(root, "meta", "ijbc_face_tid_mid.txt"))
    return brute_pool(np.array([feature_of[f[0]] for f in faces], float),
                      np.array([int(f[1]) for f in faces]), np.array([int(f[2]) for f in faces]))


@pytest.mark.parametrize("detector_score,norm_score", [(True, True), (False, False)])
def test_ijb_report_equals_brute_force_on_rendered_faces(ijb_root, detector_score, norm_score):
    model = tiny_model()
    report, (far, tar) = ijb.evaluate_ijb(model, ijb_root, "IJBC", batch_size=7, detector_score=detector_score,
                                          norm_score=norm_score, with_curve=True, protocol="exact")
    templates = brute_features(model, ijb_root, detector_score, norm_score)

    pairs = np.array(read_table(os.path.join(ijb_root, "meta", "ijbc_template_pair_label.txt")), int)
    scores = np.array([float(np.dot(templates[a], templates[b])) for a, b, _ in pairs])
    labels = pairs[:, 2] == 1
    tars = report["verification"]["tar_at_far"]
    assert list(tars) == ["1e-06", "1e-05", "1e-04", "1e-03", "1e-02", "1e-01"]
    for key, value in tars.items():
        assert value == brute_tar_at_far(scores, labels, float(key)), key
    assert tars["1e-01"] is not None and tars["1e-02"] is not None and tars["1e-03"] is None
    assert report["verification"]["pairs"] == len(pairs) and report["templates"] == len(templates)
    # The ROC and its area depend on the order of every score, so they check the pooling closely.
    positives, negatives = scores[labels], scores[~labels]
    auc = np.mean([(p > n) + 0.5 * (p == n) for p in positives for n in negatives])
    assert report["verification"]["roc_auc"] == pytest.approx(auc, abs=1e-12)
    thresholds = sorted(set(scores.tolist()), reverse=True)
    expected_far = [0.0] + [np.mean(negatives >= t) for t in thresholds]
    expected_tar = [0.0] + [np.mean(positives >= t) for t in thresholds]
    assert np.allclose(far, expected_far) and np.allclose(tar, expected_tar)

    def read_list(name):
        rows = [line.split(",") for line in open(os.path.join(ijb_root, "meta", name)).read().split()[1:]]
        subject_of = {int(t): int(s) for t, s, _ in rows}
        return sorted(subject_of), [subject_of[t] for t in sorted(subject_of)]

    probe_templates, probe_subjects = read_list("ijbc_1N_probe_mixed.csv")
    for gallery in ("G1", "G2"):
        gallery_templates, gallery_subjects = read_list(f"ijbc_1N_gallery_{gallery}.csv")
        brute = brute_searches([templates[t] for t in probe_templates], probe_subjects,
                               [templates[t] for t in gallery_templates], gallery_subjects)
        expected = brute_identification(brute, ijb.RANKS, ijb.FPIRS)
        got = report["identification"][gallery]
        assert got["rank"] == pytest.approx(expected["rank"]), gallery
        assert got["tpir_at_fpir"] == pytest.approx(expected["tpir_at_fpir"]), gallery
        assert got["mated"] == 12 and got["non_mated"] == 12
    assert got["tpir_at_fpir"]["1e-01"] is not None
    mean = report["identification"]["mean"]["rank"]["1"]
    assert mean == pytest.approx((report["identification"]["G1"]["rank"]["1"]
                                  + report["identification"]["G2"]["rank"]["1"]) / 2)

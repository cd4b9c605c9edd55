"""Verification metrics against straightforward independent computations; .bin reading/writing."""

import pickle

import keras
import numpy as np
import pytest
import scipy.stats

from trainer.evaluation import verification as v


def scored_pairs(seed=0, count=400):
    rng = np.random.default_rng(seed)
    issame = rng.random(count) < 0.5
    distances = np.round(np.where(issame, rng.normal(1.0, 0.4, count), rng.normal(1.7, 0.4, count)), 2)
    return np.clip(distances, 0, 3.99), issame


def brute_tar_at_far(distances, issame, far):
    """Best TAR over every threshold whose false accept rate is at most ``far``."""
    negatives = distances[~issame]
    best = None
    for threshold in np.r_[np.unique(distances), np.inf]:
        if np.mean(negatives < threshold) <= far:
            tar = np.mean(distances[issame] < threshold)
            best = tar if best is None else max(best, tar)
    return best


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tar_at_far_matches_a_threshold_sweep(seed):
    distances, issame = scored_pairs(seed)
    result = v.tar_at_far(distances, issame, fars=(1e-1, 2e-2, 1e-2))
    for far, key in ((1e-1, "1e-01"), (2e-2, "2e-02"), (1e-2, "1e-02")):
        assert result[key] == pytest.approx(brute_tar_at_far(distances, issame, far))
    # Below one false accept among ~200 negatives the FAR is not measurable.
    assert v.tar_at_far(distances, issame, fars=(1e-4,))["1e-04"] is None


@pytest.mark.parametrize("seed", [0, 3])
def test_roc_auc_matches_mann_whitney_and_pair_counting(seed):
    distances, issame = scored_pairs(seed)
    positives, negatives = distances[issame], distances[~issame]
    u = scipy.stats.mannwhitneyu(-positives, -negatives).statistic
    assert v.roc_auc(distances, issame) == pytest.approx(u / (len(positives) * len(negatives)))
    wins = (positives[:, None] < negatives[None, :]) + 0.5 * (positives[:, None] == negatives[None, :])
    assert v.roc_auc(distances, issame) == pytest.approx(wins.mean())


def test_roc_curve_ends_and_is_monotone():
    distances, issame = scored_pairs(4)
    far, tar = v.roc_curve(distances, issame)
    assert (far[0], tar[0], far[-1], tar[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.all(np.diff(far) >= 0) and np.all(np.diff(tar) >= 0)
    # Trapezoid area under the curve equals the rank AUC (ties are diagonal segments).
    assert np.trapezoid(tar, far) == pytest.approx(v.roc_auc(distances, issame))


def test_ten_fold_accuracy_matches_a_plain_loop():
    distances, issame = scored_pairs(5, count=300)
    mean, std, _ = v.ten_fold_accuracy(distances, issame)
    folds, accuracies = np.array_split(np.arange(300), 10), []
    for test in folds:
        train = np.setdiff1d(np.arange(300), test)
        best_threshold, best_accuracy = None, -1
        for threshold in np.arange(0, 4, 0.01):
            accuracy = np.mean((distances[train] < threshold) == issame[train])
            if accuracy > best_accuracy:
                best_threshold, best_accuracy = threshold, accuracy
        accuracies.append(np.mean((distances[test] < best_threshold) == issame[test]))
    assert (mean, std) == pytest.approx((np.mean(accuracies), np.std(accuracies)))


def tiny_model(size=8, dim=4, normalised=False):
    images = keras.Input((size, size, 3))
    x = keras.layers.Dense(dim, kernel_initializer=keras.initializers.RandomNormal(seed=1))(
        keras.layers.Flatten()(images))
    if normalised:
        x = keras.layers.UnitNormalization(axis=-1)(x)  # how exported models end
    return keras.Model(images, x)


def test_xnorm_is_the_mean_norm_of_raw_image_and_mirror_embeddings():
    model = tiny_model()
    images = np.random.default_rng(0).integers(0, 256, (6, 8, 8, 3)).astype(np.uint8)
    embeddings, xnorm = v.embed_with_norm(model, images)
    raw = np.asarray(model(images.astype(np.float32)))
    mirrored = np.asarray(model(images[:, :, ::-1].astype(np.float32)))
    assert xnorm == pytest.approx(np.mean(np.r_[np.linalg.norm(raw, axis=1), np.linalg.norm(mirrored, axis=1)]),
                                  rel=1e-5)
    summed = raw + mirrored
    assert np.allclose(embeddings, summed / np.linalg.norm(summed, axis=1, keepdims=True), atol=1e-5)
    # An exported model ends in L2Normalize; evaluation looks behind it for XNorm.
    exported = tiny_model(normalised=True)
    exported.set_weights(model.get_weights())
    assert v.embed_with_norm(v.unnormalised(exported), images)[1] == pytest.approx(xnorm, rel=1e-5)


@pytest.mark.parametrize("kind", ["bytes", "bytearray", "uint8"])
def test_bin_entries_as_bytes_bytearray_or_uint8_arrays(tmp_path, kind):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (4, 8, 8, 3)).astype(np.uint8)
    encoded = [v.encode_image(image) for image in images]
    convert = {"bytes": bytes, "bytearray": bytearray,
               "uint8": lambda b: np.frombuffer(b, np.uint8)}[kind]
    path = tmp_path / "set.bin"
    with open(path, "wb") as f:
        pickle.dump(([convert(e) for e in encoded], [True, False]), f)
    decoded, issame = v.read_bin(str(path))
    assert np.array_equal(decoded, images) and issame.tolist() == [True, False]
    assert v.read_bin(str(path), image_size=4)[0].shape == (4, 4, 4, 3)


def test_write_bin_then_evaluate_bin_reports_every_metric(tmp_path):
    rng = np.random.default_rng(2)
    a, b = (rng.integers(0, 256, (20, 8, 8, 3)).astype(np.uint8) for _ in range(2))
    issame = np.tile([True, False], 10)
    b[issame] = a[issame]  # positives are the same picture
    path = v.write_bin(str(tmp_path / "x.bin"), a, b, issame)
    metrics = v.evaluate_bin(tiny_model(), path, folds=5)
    assert metrics["accuracy"] == 1.0 and metrics["roc_auc"] == 1.0 and metrics["pairs"] == 20
    assert set(metrics["tar_at_far"]) == {"1e-01", "1e-02", "1e-03", "1e-04"} and metrics["xnorm"] > 0
    from trainer.data.errors import DataError

    with pytest.raises(DataError, match="does not exist"):
        v.read_bin(str(tmp_path / "missing.bin"))

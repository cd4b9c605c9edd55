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


def one_line_pairs_error(call):
    with pytest.raises(v.PairsError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message
    # ConfigError (a ValueError) is what every command turns into one "error:" line.
    from trainer.registry import ConfigError

    assert isinstance(caught.value, ConfigError) and isinstance(caught.value, ValueError)
    return message


@pytest.mark.parametrize("count", [0, 1, 5, 9, 19])
def test_fewer_pairs_than_two_per_fold_is_one_clear_line(count):
    """array_split used to give empty folds here and a NaN accuracy, silently."""
    issame = np.tile([True, False], count)[:count]
    message = one_line_pairs_error(lambda: v.ten_fold_accuracy(np.ones(count), issame))
    assert f"{count} pairs for 10 folds" in message and "at least 20" in message


@pytest.mark.parametrize("kind", ["positive", "negative"])
def test_a_fold_with_one_kind_of_pair_is_one_clear_line(kind):
    # 40 pairs, 10 folds of 4: sorted by kind, fold 1 (or 10) holds one kind only.
    issame = np.r_[np.ones(20, bool), np.zeros(20, bool)]
    if kind == "negative":
        issame = issame[::-1]
    message = one_line_pairs_error(lambda: v.verification_metrics(np.ones(40), issame))
    assert f"fold 1 of 10 (pairs 0-3) holds only {kind} pairs" in message
    # Interleaved, the same pairs are fine.
    interleaved = np.tile([True, False], 20)
    assert np.isfinite(v.ten_fold_accuracy(np.where(interleaved, 0.5, 1.5), interleaved)[0])


def test_fewer_than_two_folds_is_one_clear_line():
    assert "at least 2 folds" in one_line_pairs_error(
        lambda: v.ten_fold_accuracy(np.ones(8), np.tile([True, False], 4), folds=1))


def test_the_smallest_valid_split_gives_a_number():
    """Two pairs per fold, one of each kind: the boundary the check allows."""
    issame = np.tile([True, False], 10)
    distances = np.where(issame, 0.5, 1.5)
    assert v.ten_fold_accuracy(distances, issame) == (1.0, 0.0, pytest.approx([0.51] * 10))


def test_evaluator_with_fewer_pairs_than_folds_fails_before_training():
    message = one_line_pairs_error(lambda: v.VerificationEvaluator(pairs=8, folds=10))
    assert message.startswith("eval.pairs=8 gives 16 pairs for eval.folds=10") and "at least 10" in message
    assert v.VerificationEvaluator(pairs=10, folds=10).pairs == 10


def test_a_bin_with_too_few_pairs_names_the_file(tmp_path):
    rng = np.random.default_rng(3)
    a, b = (rng.integers(0, 256, (3, 8, 8, 3)).astype(np.uint8) for _ in range(2))
    path = v.write_bin(str(tmp_path / "small.bin"), a, b, [True, False, True])
    message = one_line_pairs_error(lambda: v.evaluate_bin(tiny_model(), path, folds=10))
    assert message.startswith(f"{path}: verification got 3 pairs for 10 folds")


def test_evaluate_command_prints_one_error_line_for_a_small_bin(tmp_path, capsys):
    from trainer.commands import evaluate

    rng = np.random.default_rng(4)
    a, b = (rng.integers(0, 256, (4, 8, 8, 3)).astype(np.uint8) for _ in range(2))
    path = v.write_bin(str(tmp_path / "four.bin"), a, b, [True, False, True, False])
    model_path = str(tmp_path / "embedding.keras")
    tiny_model(normalised=True).save(model_path)
    code = evaluate.main([f"model={model_path}", f"bin_files=[{path}]", f"output={tmp_path / 'out'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0] == (f"error: {path}: verification got 4 pairs for 10 folds; each fold needs a positive and "
                      "a negative pair, so use at least 20 pairs or fewer folds")

"""The small helpers every layer shares: error lines, seed mixing, L2 normalisation, BatchNorm."""

import keras
import numpy as np
import pytest

from models.layers import batch_norm, synchronized_batch_norm
from trainer.errors import first_line
from trainer.normalize import l2_normalize, l2_normalize_numpy
from trainer.seeding import SEED_MODULUS, mix_seed


def test_first_line_is_the_first_line_that_says_something():
    assert first_line(ValueError("\n  bad value  \n more detail")) == "bad value"
    try:
        try:
            raise OSError("disk full\nerrno 28")
        except OSError as cause:
            raise RuntimeError() from cause
    except RuntimeError as error:
        assert first_line(error) == "disk full"  # an empty message: the cause's line
    assert first_line(KeyError()) == "KeyError"


def test_mix_seed_folds_parts_with_the_pipelines_rule():
    # The data pipeline's per-epoch shuffle seed, written out.
    assert mix_seed(7, 3) == (7 * 1_000_003 + 3) % (2**31 - 1)
    assert mix_seed(7, 3, 5) == mix_seed(mix_seed(7, 3), 5)
    assert mix_seed(2**40) == 2**40  # one part: the seed itself
    seeds = {mix_seed(seed, epoch) for seed in range(20) for epoch in range(50)}
    assert len(seeds) == 1000 and all(0 <= s < SEED_MODULUS for s in seeds)
    assert mix_seed(np.int64(4), 1) == mix_seed(4, 1)
    with pytest.raises(TypeError):
        mix_seed(1.5, 2)


def test_mix_seed_gives_the_same_value_on_an_int64_tensor():
    import tensorflow as tf

    base = mix_seed(123, 9)
    assert int(mix_seed(base, tf.constant(2**20 + 7, tf.int64))) == mix_seed(base, 2**20 + 7)


def test_both_l2_normalisations_agree_and_leave_zero_rows_zero():
    x = np.array([[3.0, 4.0], [0.0, 0.0], [1e-3, 0.0]])
    expected = np.array([[0.6, 0.8], [0.0, 0.0], [1.0, 0.0]])
    np.testing.assert_allclose(l2_normalize_numpy(x), expected)
    np.testing.assert_allclose(l2_normalize_numpy(x.T, axis=0), expected.T)
    ops_result = keras.ops.convert_to_numpy(l2_normalize(keras.ops.convert_to_tensor(x, "float32")))
    np.testing.assert_allclose(ops_result, expected, atol=1e-6)
    # The squared-norm floor: below sqrt(epsilon) a row is scaled, not normalised.
    tiny = keras.ops.convert_to_numpy(l2_normalize(keras.ops.convert_to_tensor([[1e-7, 0.0]], "float32")))
    np.testing.assert_allclose(tiny, [[1e-7 / 1e-6, 0.0]], rtol=1e-5)


def test_the_batch_norms_carry_their_settings():
    layer = batch_norm("bn")
    assert (layer.epsilon, layer.momentum, layer.name) == (1e-5, 0.9, "bn")
    assert synchronized_batch_norm(name="s").synchronized == (keras.backend.backend() == "tensorflow")

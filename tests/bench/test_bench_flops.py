"""The FLOP counter against hand-counted MACs of a tiny model (TensorFlow graph walk)."""

import keras

from trainer.commands.bench.flops import flops_summary, forward_macs_per_image


def test_conv_dense_macs_match_hand_count():
    images = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(images)            # 8*8*4 * 3*3*3 = 6912
    x = keras.layers.DepthwiseConv2D(3, strides=2, padding="same")(x)  # 4*4*4 * 3*3 = 576
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(10)(x)                               # 64 * 10 = 640
    model = keras.Model(images, outputs)
    assert forward_macs_per_image(model, (8, 8, 3)) == 6912 + 576 + 640
    summary = flops_summary(model, (8, 8, 3))
    assert summary["train_flops_per_image"] == 6 * (6912 + 576 + 640)


def test_einsum_counts_every_index_once():
    from trainer.commands.bench.flops import _einsum_macs

    assert _einsum_macs("btd,de->bte", [[2, 5, 4], [4, 3]]) == 2 * 5 * 4 * 3


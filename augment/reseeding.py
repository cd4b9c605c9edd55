"""Reseeding augmentation from a batch position, so a resumed run draws what an uninterrupted one would.

Every op draws from Keras ``SeedGenerator``s, whose state normally advances batch after
batch. Before a batch is drawn, the data pipeline calls ``augment.reseed(position,
seed)``: each generator the augmentation draws from gets the state ``[key, i · 2**16]``
(``key`` mixed from the run's seed, the augmentation's seed and the batch's global
position; ``i`` the generator's place, so no two share a stream). A batch's draws then
depend on where it is in the run only.

Everything that augments declares it: ``AugmentPipeline``, ``MultiView``, every
augmentation layer (ours, ``KerasOp`` around Keras's) is a :class:`Reseedable` and
lists its generators in a fixed order (:meth:`Reseedable.seed_generators`). An op
whose generators cannot be listed is refused when it is built (:func:`check_reseedable`).

Inside ``tf.data`` a Keras data layer computes with TensorFlow whatever the Keras
backend, from a TensorFlow generator of its own; those are made up front
(``seed_generators("tensorflow")``), because ``tf.data`` cannot create variables while
it traces.
"""

from __future__ import annotations

import abc
import numbers

import keras
import numpy as np

from trainer.keras_private import DataLayer, own_seed_generators, seed_generator, sublayers, using_backend
from trainer.registry import ConfigError
from trainer.seeding import mix_seed

GENERATOR_STRIDE = 2**16  # a generator's draws within one batch stay below the next one's

# Layers that also draw from somewhere no generator state reaches, and where.
UNRESEEDABLE = {keras.layers.AugMix: "it picks each chain's ops with Python's random module "
                                     "(inside tf.data: once, when the pipeline is traced)"}


class Reseedable(abc.ABC):
    """Something that augments, with the seed generators it draws from declared."""

    seed: int | None = None  # mixed into every key: two augmentations seeded apart draw apart

    @abc.abstractmethod
    def seed_generators(self, backend: str) -> list:
        """The generators it draws from when computing with ``backend``, in a fixed order, each once."""

    def reseed(self, position, seed: int = 0, backend: str | None = None) -> None:
        """Set every generator from (``seed``, its own seed, ``position``): the next draw depends on
        nothing else. ``position``: an int, or an int64 tensor inside ``tf.data`` (``backend="tensorflow"``)."""
        key = mix_seed(int(seed), int(self.seed or 0), position)
        set_states(self.seed_generators(backend or keras.backend.backend()), key)


def set_states(generators: list, key) -> None:
    """Generator ``i`` gets the state ``[key, i · GENERATOR_STRIDE]``."""
    for index, generator in enumerate(generators):
        offset = index * GENERATOR_STRIDE
        if isinstance(key, numbers.Integral):
            generator.state.assign(np.asarray([key, offset], generator.state.dtype))
        else:  # a tensor inside tf.data: the generators are TensorFlow's there
            import tensorflow as tf

            state = tf.stack([key, tf.constant(offset, tf.int64)])
            generator.state.assign(tf.cast(state, generator.state.dtype))


def layer_generators(layer, backend: str) -> list:
    """The generators ``layer`` and the layers inside it draw from, computing with ``backend``.

    A Keras data layer keeps one generator per backend (its ``seed`` and ``generator``,
    Keras's documented contract for random data layers); any other layer draws from the
    generators it tracks.
    """
    generators = []
    for inner in sublayers(layer):
        why = UNRESEEDABLE.get(type(inner))
        if why:
            raise ValueError(f"{type(inner).__name__}: {why}")
        if isinstance(inner, DataLayer) and hasattr(inner, "generator"):
            if backend == keras.backend.backend():
                generators.append(seed_generator(inner, backend))
            else:  # made for that backend (TensorFlow inside tf.data under JAX)
                with using_backend(inner, backend):
                    generators.append(seed_generator(inner, backend))
        else:
            generators.extend(own_seed_generators(inner))
    return unique(generators)


def unique(generators: list) -> list:
    """Each generator once, first place kept."""
    return list({id(g): g for g in generators}.values())


def check_reseedable(op: Reseedable, name: str) -> None:
    """One line when ``op``'s generators cannot be listed (then no batch position could key its draws)."""
    try:
        op.seed_generators(keras.backend.backend())
    except (AttributeError, TypeError, ValueError) as error:
        raise ConfigError(f"augment op '{name}' cannot be reseeded from the batch position (exact resume "
                          f"needs it): {str(error).splitlines()[0] if str(error) else type(error).__name__}; "
                          "build random ops on keras.random.SeedGenerator (augment._base.AugmentLayer)") from None

"""Adversarial step with two models and two optimizers in one ``fit`` step (non-saturating
GAN, Goodfellow et al., NeurIPS 2014; conditional discriminator as in AC-GAN, Odena et
al., ICML 2017).

The discriminator is the face embedding model plus a real/fake logit and, on
real images, the usual identity head and margin loss, so the embedding being
evaluated and exported is the discriminator's. A small generator draws face
crops from noise (its batch norms are synchronised across replicas). Each step: (1) update the discriminator on real and
generated images with the compiled optimizer; (2) update the generator,
through the *updated* discriminator, with its own optimizer.

Two optimizers do not fit ``compute_loss``, so this loop writes ``train_step``
per backend (TensorFlow: tapes; JAX: stateless calls). The generator's
optimizer state is tracked by the model (``generator_optimizer_state``), so
checkpoints and JAX's functional state carry it like any other variable.
"""

from __future__ import annotations

import keras
from keras import ops

from loops.base import FaceLoop
# Global-batch statistics across tf.distribute replicas (models.layers explains JAX).
from models.layers import synchronized_batch_norm
from trainer.registry import LOOPS, OPTIMIZERS, ConfigError, to_plain


@keras.saving.register_keras_serializable(package="facetrain")
class FaceGenerator(keras.layers.Layer):
    """Noise (drawn inside, one vector per row of ``reference``) → images 0..255 (DCGAN-style)."""

    def __init__(self, image_size=32, latent_dim=64, width=64, seed=None, **kwargs):
        super().__init__(**kwargs)
        if int(image_size) % 4:
            raise ConfigError(f"loop=gan needs data.image_size divisible by 4, got {image_size}")
        self.image_size, self.latent_dim, self.width, self.seed = (int(image_size), int(latent_dim),
                                                                   int(width), seed)
        self.seed_generator = keras.random.SeedGenerator(seed)
        base = self.image_size // 4
        self.stack = [
            keras.layers.Dense(base * base * 2 * self.width, name="project"),
            keras.layers.Reshape((base, base, 2 * self.width)),
            synchronized_batch_norm(name="bn0"), keras.layers.ReLU(),
            keras.layers.Conv2DTranspose(self.width, 4, strides=2, padding="same", name="up1"),
            synchronized_batch_norm(name="bn1"), keras.layers.ReLU(),
            keras.layers.Conv2DTranspose(self.width // 2, 4, strides=2, padding="same", name="up2"),
            synchronized_batch_norm(name="bn2"), keras.layers.ReLU(),
            keras.layers.Conv2D(3, 3, padding="same", activation="tanh", dtype="float32",
                                name="rgb"),
        ]

    def build(self, input_shape):
        shape = (None, self.latent_dim)
        for layer in self.stack:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)

    def noise(self, reference):
        """One latent vector per row of ``reference`` (a hook: tests make it deterministic)."""
        return keras.random.normal((ops.shape(reference)[0], self.latent_dim),
                                   seed=self.seed_generator)

    def call(self, reference, training=False):
        x = self.noise(reference)
        for layer in self.stack:
            x = layer(x, training=training) if isinstance(layer, keras.layers.BatchNormalization) \
                else layer(x)
        return (ops.cast(x, "float32") + 1.0) * 127.5

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.image_size, self.image_size, 3)

    def get_config(self):
        return {**super().get_config(), "image_size": self.image_size,
                "latent_dim": self.latent_dim, "width": self.width, "seed": self.seed}


@keras.saving.register_keras_serializable(package="facetrain")
class Discriminator(keras.layers.Layer):
    """Images → (real/fake logit (B,), identity head output or None)."""

    def __init__(self, embedding_model, head=None, **kwargs):
        super().__init__(**kwargs)
        self.embedding_model = embedding_model
        self.head = head
        self.realness = keras.layers.Dense(1, dtype="float32", name="real_fake")

    def build(self, input_shape):
        # Built here, not lazily: the optimizers are built on these variables before fit.
        self.realness.build(self.embedding_model.output_shape)
        if self.head is not None and not self.head.built:
            self.head.build(self.embedding_model.output_shape)

    def call(self, images, training=False):
        embedding = self.embedding_model(images, training=training)
        logit = ops.squeeze(self.realness(embedding), -1)
        return logit, (self.head(embedding) if self.head is not None else None)


class OptimizerState(keras.layers.Layer):
    """Tracks another optimizer's variables so they live in the model's state and checkpoints."""

    def track(self, variables):
        for variable in variables:
            self._track_variable(variable)


@LOOPS.register("gan")
@keras.saving.register_keras_serializable(package="facetrain")
class GANLoop(FaceLoop):
    """Discriminator (embedding model + real/fake + identity head) vs a small generator."""

    keras_parts = ("embedding_model", "head", "loss")

    def __init__(self, embedding_model, head=None, loss=None, latent_dim=64, generator_width=64,
                 identity_weight=1.0, generator_optimizer=None, seed=0, **kwargs):
        identity_weight = float(identity_weight) if head is not None and loss is not None else 0.0
        # Without the identity term the head and loss take no part in the step.
        super().__init__(embedding_model, head if identity_weight else None,
                         loss if identity_weight else None, **kwargs)
        self.identity_weight = identity_weight
        self.discriminator = Discriminator(embedding_model, self.head, name="discriminator")
        self.generator = FaceGenerator(embedding_model.input_shape[1], latent_dim, generator_width,
                                       seed=seed, name="generator")
        self.latent_dim, self.generator_width, self.seed = int(latent_dim), int(generator_width), seed
        self.generator_optimizer_config = to_plain(generator_optimizer) or {
            "name": "adamw", "lr": 2e-4, "beta_1": 0.5, "weight_decay": 0.0}
        self.generator_optimizer_state = OptimizerState(name="generator_optimizer_state")
        self.trackers = {key: keras.metrics.Mean(name=key)
                         for key in ("loss", "d_loss", "g_loss", "identity_loss")}

    def loop_config(self):
        return {"latent_dim": self.latent_dim, "generator_width": self.generator_width,
                "identity_weight": self.identity_weight,
                "generator_optimizer": self.generator_optimizer_config, "seed": self.seed}

    @property
    def metrics(self):
        return list(self.trackers.values())

    def call(self, images, training=False):
        return self.discriminator(images, training=training)

    def build(self, input_shape=None):
        shape = self.embedding_model.input_shape
        self.discriminator.build(shape)
        self.generator.build(shape)
        super().build(input_shape)

    def compile(self, optimizer="rmsprop", **kwargs):
        """The compiled optimizer trains the discriminator; the generator gets its own."""
        super().compile(optimizer=optimizer, **kwargs)
        if not self.built:
            self.build(self.embedding_model.input_shape)
        self.generator_optimizer = OPTIMIZERS.build(self.generator_optimizer_config)
        if self.dtype_policy.name == "mixed_float16":
            self.generator_optimizer = keras.optimizers.LossScaleOptimizer(self.generator_optimizer)
        self.optimizer.build(self.discriminator.trainable_variables)
        self.generator_optimizer.build(self.generator.trainable_variables)
        self.generator_optimizer_state.track(self.generator_optimizer.variables)

    # -- the two losses (backend-agnostic) ---------------------------------------------
    def discriminator_loss(self, real_logit, fake_logit, identity, labels):
        """Non-saturating GAN loss on real and fake, plus the identity loss on real images."""
        adversarial = ops.mean(ops.softplus(-real_logit)) + ops.mean(ops.softplus(fake_logit))
        identity_loss = ops.zeros(())
        if self.identity_weight:
            identity_loss = self.face_loss(labels, identity)
            # face_loss is already scaled per replica by Keras; unscale for a like-for-like sum
            identity_loss = _unscaled(identity_loss)
        return adversarial + self.identity_weight * identity_loss, identity_loss

    @staticmethod
    def generator_loss(fake_logit):
        return ops.mean(ops.softplus(-fake_logit))

    def _log(self, d_loss, g_loss, identity_loss):
        for key, value in (("d_loss", d_loss), ("g_loss", g_loss),
                           ("identity_loss", identity_loss), ("loss", d_loss + g_loss)):
            self.trackers[key].update_state(value)
        return {key: tracker.result() for key, tracker in self.trackers.items()}

    def train_step(self, *args):
        """TensorFlow's trainer calls ``train_step(data)``, JAX's ``train_step(state, data)``."""
        backend = keras.backend.backend()
        if backend == "tensorflow":
            return self._train_step_tensorflow(*args)
        if backend == "jax":
            return self._train_step_jax(*args)
        raise RuntimeError(f"loop=gan has train steps for TensorFlow and JAX, not {backend}")

    # -- TensorFlow ---------------------------------------------------------------------
    def _train_step_tensorflow(self, data):
        import tensorflow as tf
        from trainer.keras_private import scale_loss_for_distribution as per_replica

        images, labels = data[0], data[1]
        d_vars = self.discriminator.trainable_variables
        g_vars = self.generator.trainable_variables
        with tf.GradientTape() as tape:
            fake = tf.stop_gradient(self.generator(images, training=True))
            real_logit, identity = self.discriminator(images, training=True)
            fake_logit, _ = self.discriminator(fake, training=True)
            d_loss, identity_loss = self.discriminator_loss(real_logit, fake_logit, identity, labels)
            scaled = self.optimizer.scale_loss(per_replica(d_loss) + self.regularization_loss())
        self.optimizer.apply_gradients(zip(tape.gradient(scaled, d_vars), d_vars))
        with tf.GradientTape() as tape:
            fake_logit, _ = self.discriminator(self.generator(images, training=True), training=True)
            g_loss = self.generator_loss(fake_logit)
            scaled = self.generator_optimizer.scale_loss(per_replica(g_loss))
        self.generator_optimizer.apply_gradients(zip(tape.gradient(scaled, g_vars), g_vars))
        return self._log(d_loss, g_loss, identity_loss)

    # -- JAX ---------------------------------------------------------------------------
    def _train_step_jax(self, state, data):
        """JAX: the same two updates, stateless (values in, new values out)."""
        import jax

        trainable, non_trainable, optimizer_values, metric_values = state
        images, labels = data[0], data[1]
        d_train = _positions(self.trainable_variables, self.discriminator.trainable_variables)
        g_train = _positions(self.trainable_variables, self.generator.trainable_variables)
        d_state = _positions(self.non_trainable_variables, self.discriminator.non_trainable_variables)
        g_state = _positions(self.non_trainable_variables, self.generator.non_trainable_variables)
        g_opt = _positions(self.non_trainable_variables, self.generator_optimizer.variables)
        pick = lambda values, positions: [values[i] for i in positions]  # noqa: E731
        non_trainable = list(non_trainable)

        def scaled(optimizer, optimizer_state, loss):
            with keras.StatelessScope(state_mapping=list(zip(optimizer.variables, optimizer_state))):
                return optimizer.scale_loss(loss)

        # (1) the discriminator, against fakes of the current generator
        fake, g_values = self.generator.stateless_call(pick(trainable, g_train), pick(non_trainable, g_state),
                                                       images, training=True)
        fake = jax.lax.stop_gradient(fake)

        def d_objective(d_values, d_states):
            (real_logit, identity), d_states = self.discriminator.stateless_call(
                d_values, d_states, images, training=True)
            (fake_logit, _), d_states = self.discriminator.stateless_call(
                d_values, d_states, fake, training=True)
            d_loss, identity_loss = self.discriminator_loss(real_logit, fake_logit, identity, labels)
            return scaled(self.optimizer, optimizer_values, d_loss), (d_loss, identity_loss, d_states)

        (_, (d_loss, identity_loss, d_states)), d_grads = jax.value_and_grad(d_objective, has_aux=True)(
            pick(trainable, d_train), pick(non_trainable, d_state))
        d_values, optimizer_values = self.optimizer.stateless_apply(optimizer_values, d_grads,
                                                                    pick(trainable, d_train))

        # (2) the generator, through the updated discriminator
        g_optimizer_values = pick(non_trainable, g_opt)

        def g_objective(g_trainable):
            fake, g_states = self.generator.stateless_call(g_trainable, g_values, images, training=True)
            (fake_logit, _), new_d_states = self.discriminator.stateless_call(
                d_values, d_states, fake, training=True)
            g_loss = self.generator_loss(fake_logit)
            return (scaled(self.generator_optimizer, g_optimizer_values, g_loss),
                    (g_loss, g_states, new_d_states))

        (_, (g_loss, g_states, d_states)), g_grads = jax.value_and_grad(g_objective, has_aux=True)(
            pick(trainable, g_train))
        g_trainable, g_optimizer_values = self.generator_optimizer.stateless_apply(
            g_optimizer_values, g_grads, pick(trainable, g_train))

        trainable = list(trainable)
        for positions, values, target in ((d_train, d_values, trainable), (g_train, g_trainable, trainable),
                                          (d_state, d_states, non_trainable),
                                          (g_state, g_states, non_trainable),
                                          (g_opt, g_optimizer_values, non_trainable)):
            for position, value in zip(positions, values):
                target[position] = value

        with keras.StatelessScope(state_mapping=list(zip(self.metrics_variables, metric_values))) as scope:
            logs = self._log(d_loss, g_loss, identity_loss)
        metric_values = [scope.get_current_value(v) for v in self.metrics_variables]
        return logs, (trainable, non_trainable, optimizer_values, metric_values)


def _unscaled(value):
    from trainer.keras_private import unscale_loss_for_distribution

    return unscale_loss_for_distribution(value)


def _positions(variables, subset):
    index = {id(v): i for i, v in enumerate(variables)}
    return [index[id(v)] for v in subset]

"""The overhead yardstick: a hand-written training step on the same model, loss and optimizer.

It is what an engineer would write without a framework: under TensorFlow one
``tf.function`` (XLA when the runtime asks for it) holding a ``GradientTape``
step; under JAX one stateless ``jax.jit`` step with donated buffers (as in the
reference's "minimal Keras 3 + JAX step"). No callbacks, no metrics, no
``fit`` loop, batches already in memory (on the device under JAX). The loop's
own ``compute_loss`` gives the loss, so loops that only define a loss are
measured on exactly the framework's arithmetic.
"""

from __future__ import annotations

import contextlib
import itertools
import time

import keras


class MinimalStep:
    """``warmup(n)`` then ``window(n) -> seconds`` for n steps, synchronised at the end."""

    def __init__(self, loop: keras.Model, optimizer, batches, jit_compile: bool = True):
        self.loop = loop
        self.optimizer = optimizer
        if (keras.mixed_precision.global_policy().name == "mixed_float16"
                and keras.backend.backend() == "tensorflow"):
            # what compile() does for float16: the same loss scaling, so the same work
            self.optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        self.jit_compile = bool(jit_compile)
        first_images = batches[0][0]
        loop(first_images[:1])  # build every variable before tracing
        self.optimizer.build(loop.trainable_variables)
        backend = keras.backend.backend()
        if backend == "tensorflow":
            self._run = _TensorFlowStep(self)
        elif backend == "jax":
            self._run = _JaxStep(self)
        else:
            raise RuntimeError(f"no minimal step for the {backend} backend")
        self._batches = itertools.cycle(self._run.place(batches))

    def warmup(self, steps: int) -> None:
        self.window(max(int(steps), 2))  # JAX: the second call, on donated outputs, may compile again

    def window(self, steps: int) -> float:
        start = time.perf_counter()
        loss = None
        for _ in range(int(steps)):
            loss = self._run.step(*next(self._batches))
        self._run.sync(loss)
        return time.perf_counter() - start

    def compiled_flops(self):
        """XLA's FLOP count of one step (JAX only; None elsewhere)."""
        return getattr(self._run, "compiled_flops", lambda: None)()


class MinimalRunner:
    """The minimal step on its own copy of the job's model and optimizer, as the interleaver runs it."""

    name = "minimal"

    def __init__(self, cfg, runtime, num_classes, image_size, steps_per_epoch, epochs, batches):
        from trainer.builders import build_loop, build_optimizer

        with runtime.scope():
            loop = build_loop(cfg, num_classes, image_size)
            optimizer = build_optimizer(cfg, steps_per_epoch, steps_per_epoch * epochs)
        self.step = MinimalStep(loop, optimizer, batches, jit_compile=runtime.jit_compile)

    def warmup(self, steps):
        self.step.warmup(steps)

    def window(self, steps):
        return self.step.window(steps)


class _TensorFlowStep:
    def __init__(self, owner: MinimalStep):
        import tensorflow as tf

        loop, optimizer = owner.loop, owner.optimizer
        scales_loss = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)

        # A head that updates its own sampled rows (partial_fc) gets that update here too.
        head = loop.head if getattr(loop, "head_owns_update", False) else None

        @tf.function(jit_compile=owner.jit_compile, reduce_retracing=True)
        def step(images, labels):
            with tf.GradientTape() as tape:
                predictions = loop(images, training=True)
                with head.recording(tape) if head is not None else contextlib.nullcontext() as sampled:
                    loss = loop.compute_loss(images, labels, predictions, training=True)
                scaled = optimizer.scale_loss(loss) if scales_loss else loss
            if head is not None:
                loop.apply_gradients_with_rows(tape, scaled, sampled, optimizer)
            else:
                variables = loop.trainable_variables
                optimizer.apply(tape.gradient(scaled, variables), variables)
            return loss

        self.step = step

    @staticmethod
    def place(batches):
        import tensorflow as tf

        return [tuple(tf.convert_to_tensor(part) for part in batch) for batch in batches]

    @staticmethod
    def sync(loss):
        if loss is not None:
            loss.numpy()


class _JaxStep:
    def __init__(self, owner: MinimalStep):
        import jax

        loop, optimizer = owner.loop, owner.optimizer
        self.loop, self.optimizer = loop, optimizer

        def loss_and_state(trainable, non_trainable, images, labels):
            predictions, non_trainable = loop.stateless_call(trainable, non_trainable, images,
                                                             training=True)
            loss, (_, non_trainable, _) = loop.stateless_compute_loss(
                trainable, non_trainable, [], x=images, y=labels, y_pred=predictions, training=True)
            return loss, non_trainable

        gradient = jax.value_and_grad(loss_and_state, has_aux=True)

        def step(state, images, labels):
            trainable, non_trainable, optimizer_state = state
            (loss, non_trainable), grads = gradient(trainable, non_trainable, images, labels)
            trainable, optimizer_state = optimizer.stateless_apply(optimizer_state, grads, trainable)
            return (trainable, non_trainable, optimizer_state), loss

        self._jitted = jax.jit(step, donate_argnums=0) if owner.jit_compile else step
        self.state = ([v.value for v in loop.trainable_variables],
                      [v.value for v in loop.non_trainable_variables],
                      [v.value for v in optimizer.variables])
        self._example = None

    def place(self, batches):
        import jax

        placed = [tuple(jax.device_put(part) for part in batch) for batch in batches]
        self._example = placed[0]
        return placed

    def step(self, images, labels):
        self.state, loss = self._jitted(self.state, images, labels)
        return loss

    @staticmethod
    def sync(loss):
        if loss is not None:
            loss.block_until_ready()

    def compiled_flops(self):
        from trainer.commands.bench.flops import xla_step_flops

        if self._example is None or not hasattr(self._jitted, "lower"):
            return None
        try:  # the lowered module's analysis: no second compilation
            return xla_step_flops(self._jitted.lower(self.state, *self._example))
        except Exception:  # cost analysis is best effort
            return None

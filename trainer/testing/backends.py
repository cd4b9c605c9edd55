"""Value-and-gradient of a scalar function of one array, in each execution mode of a backend.

TensorFlow: ``eager``, ``graph`` (tf.function) and ``xla`` (jit_compile=True).
JAX: ``eager`` and ``jit``; state a loss writes is discarded (StatelessScope),
as JAX training does between steps. Results come back as numpy float64.
"""

from __future__ import annotations

import numpy as np

import keras


def backend_name() -> str:
    return keras.backend.backend()


def execution_modes() -> tuple[str, ...]:
    return {"tensorflow": ("eager", "graph", "xla"), "jax": ("eager", "jit")}.get(
        backend_name(), ("eager",))


def value_and_grad(fn, x, mode: str = "eager"):
    """(fn(x), d fn / dx) for a float32 numpy ``x``."""
    backend = backend_name()
    if backend == "tensorflow":
        import tensorflow as tf

        def step(inputs):
            with tf.GradientTape() as tape:
                tape.watch(inputs)
                value = fn(inputs)
            return value, tape.gradient(value, inputs)

        if mode == "graph":
            step = tf.function(step)
        elif mode == "xla":
            step = tf.function(step, jit_compile=True)
        value, grad = step(tf.convert_to_tensor(x))
    elif backend == "jax":
        import jax

        def pure(inputs):
            with keras.StatelessScope():
                return fn(inputs)

        step = jax.value_and_grad(pure)
        if mode == "jit":
            step = jax.jit(step)
        value, grad = step(jax.numpy.asarray(x))
    else:
        raise RuntimeError(f"the loss harness supports tensorflow and jax, not {backend}")
    grad = np.zeros_like(x) if grad is None else keras.ops.convert_to_numpy(grad)
    return float(keras.ops.convert_to_numpy(value)), np.asarray(grad, dtype=np.float64)

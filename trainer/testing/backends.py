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


def compiled_mode() -> str:
    """The mode a training step runs in: XLA under TensorFlow, ``jax.jit`` under JAX."""
    return {"tensorflow": "xla", "jax": "jit"}.get(backend_name(), "eager")


def compiled_value_and_grad(fn, x, labels):
    """(fn(x, labels), d fn / dx) compiled, with ``labels`` a traced input like ``x``.

    ``value_and_grad`` closes over its labels, so they are constants a loss could
    read while tracing; here, as in a real training step, their values are only
    known when the compiled program runs.
    """
    backend = backend_name()
    if backend == "tensorflow":
        import tensorflow as tf

        @tf.function(jit_compile=True)
        def step(inputs, targets):
            with tf.GradientTape() as tape:
                tape.watch(inputs)
                value = fn(inputs, targets)
            return value, tape.gradient(value, inputs)

        value, grad = step(tf.convert_to_tensor(x), tf.convert_to_tensor(labels))
    elif backend == "jax":
        import jax

        def pure(inputs, targets):
            with keras.StatelessScope():
                return fn(inputs, targets)

        value, grad = jax.jit(jax.value_and_grad(pure))(jax.numpy.asarray(x), jax.numpy.asarray(labels))
    else:
        raise RuntimeError(f"the loss harness supports tensorflow and jax, not {backend}")
    grad = np.zeros_like(x) if grad is None else keras.ops.convert_to_numpy(grad)
    return float(keras.ops.convert_to_numpy(value)), np.asarray(grad, dtype=np.float64)

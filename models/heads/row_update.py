"""The optimizer step of a class-sharded head, on the rows it sampled only (TensorFlow).

Under ``tf.distribute`` a Keras optimizer updates *mirrored* variables: it sums every
replica's gradient and applies the same update on each copy. A class-sharded
centre matrix is the opposite: each replica owns different rows, and its gradient
for them is already the whole batch's (the head's collectives route it), so the
head applies the update itself, with the rule of the optimizer the job configured:

* SGD (momentum, Nesterov) and Adam/AdamW, the same formulas as Keras's
  ``update_step`` and decoupled weight decay (``w -= w · wd · lr`` first), the
  learning rate and step read from the Keras optimizer, so its schedule drives both;
* only the rows sampled this step are read and written, weights and slots alike
  ("lazy" state, as in the first Partial FC of arcface_torch): a step costs the
  sampled share, not the class count. With ``sample_rate: 1.0`` every row is
  sampled every step and the update equals the Keras optimizer's (tested).
* under a ``LossScaleOptimizer`` (``mixed_float16``) the gradient is unscaled, and
  the step is skipped when it is not finite, as Keras skips its own.

Global-norm clipping (``optimizer.clipnorm``) acts on the Keras optimizer's
variables, the backbone's, and leaves the centres alone, as arcface_torch clips
the backbone only.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras

from trainer.registry import ConfigError


@dataclass(frozen=True)
class RowRule:
    """One optimizer's row-sparse update: its slot names and hyper-parameters."""

    kind: str                   # "sgd" or "adam"
    slots: tuple[str, ...]      # per-row state kept beside the weights
    weight_decay: float
    momentum: float = 0.0
    nesterov: bool = False
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-7


def row_rule(optimizer) -> RowRule:
    """The update rule of ``optimizer`` (a Keras optimizer, possibly loss-scaled), or one line why not."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    decay = float(inner.weight_decay or 0.0)
    if type(inner) is keras.optimizers.SGD:
        momentum = float(inner.momentum)
        return RowRule("sgd", ("momentum",) if momentum else (), decay, momentum=momentum,
                       nesterov=bool(inner.nesterov))
    if type(inner) in (keras.optimizers.Adam, keras.optimizers.AdamW):
        if inner.amsgrad:
            raise ConfigError("head=partial_fc: amsgrad is not supported for the class centres; "
                              "set amsgrad=False")
        return RowRule("adam", ("m", "v"), decay, beta_1=float(inner.beta_1), beta_2=float(inner.beta_2),
                       epsilon=float(inner.epsilon))
    raise ConfigError(f"head=partial_fc under TensorFlow updates its sampled rows itself and knows "
                      f"optimizer=sgd and optimizer=adamw (Keras SGD, Adam, AdamW), not "
                      f"{type(inner).__name__}; use one of those, or KERAS_BACKEND=jax")


def apply_rows(rule: RowRule, optimizer, weights, slots: dict, rows, gradient) -> None:
    """Update ``rows`` (local row ids, distinct) of ``weights`` and ``slots`` with ``gradient``.

    ``weights`` and each slot are this replica's tf.Variable (its own shard); call
    before ``optimizer.apply_gradients``, which advances the step this reads.
    """
    import tensorflow as tf

    inner = getattr(optimizer, "inner_optimizer", optimizer)
    lr = tf.cast(inner.learning_rate, tf.float32)
    gradient = tf.cast(gradient, tf.float32)
    keep = None  # a loss-scaled step: unscale; when not finite, move nothing (weights nor slots)
    if inner is not optimizer:
        gradient = gradient / tf.cast(optimizer.dynamic_scale, tf.float32)
        finite = tf.reduce_all(tf.math.is_finite(gradient))
        gradient = tf.where(finite, gradient, 0.0)
        keep = tf.cast(finite, tf.float32)

    def kept(old, new):
        return new if keep is None else old + keep * (new - old)

    current = read_rows(weights, rows)
    delta = -current * (rule.weight_decay * lr) if rule.weight_decay else tf.zeros_like(current)
    if rule.kind == "sgd":
        if rule.momentum:
            old = read_rows(slots["momentum"], rows)
            new = old * rule.momentum - gradient * lr
            _scatter(slots["momentum"], rows, kept(old, new))
            step = new * rule.momentum - gradient * lr if rule.nesterov else new
        else:
            step = -gradient * lr
    else:
        t = tf.cast(inner.iterations + 1, tf.float32)
        alpha = lr * tf.sqrt(1.0 - rule.beta_2 ** t) / (1.0 - rule.beta_1 ** t)
        m_old, v_old = read_rows(slots["m"], rows), read_rows(slots["v"], rows)
        m = m_old + (gradient - m_old) * (1.0 - rule.beta_1)
        v = v_old + (tf.square(gradient) - v_old) * (1.0 - rule.beta_2)
        _scatter(slots["m"], rows, kept(m_old, m))
        _scatter(slots["v"], rows, kept(v_old, v))
        step = -(m * alpha) / (tf.sqrt(v) + rule.epsilon)
    # The decay first, then the step on the decayed row: Keras's order (neither reads the weight).
    update = delta + step if keep is None else keep * (delta + step)
    tf.raw_ops.ResourceScatterAdd(resource=_handle(weights), indices=rows, updates=update)


def read_rows(variable, rows):
    """``rows`` of this replica's copy, read from the resource (a sparse read). Converting the
    variable to a tensor first would read every row, and the scatter that follows would then
    copy the whole shard, every step."""
    import tensorflow as tf

    return tf.raw_ops.ResourceGather(resource=_handle(variable), indices=rows, dtype=tf.float32)


def _scatter(variable, rows, values) -> None:
    import tensorflow as tf

    tf.raw_ops.ResourceScatterUpdate(resource=_handle(variable), indices=rows, updates=values)


def _handle(variable):
    """The resource of this replica's copy: a sync-on-read variable has no scatter of its own."""
    return getattr(variable, "value", variable).handle

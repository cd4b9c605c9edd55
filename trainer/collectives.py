"""Every cross-replica operation of the code base: replica count, gather, sum and max.

Under ``tf.distribute`` each replica runs its own copy of the step, and the values
of the others are reached by collectives (``all_gather``, ``all_reduce``), whose
gradients route each replica's share back to it. Under JAX, ``keras.distribution``
compiles one SPMD program over the global batch, so there is nothing to gather: a
reduction over the sharded axis is local to the program and XLA makes it
cross-device. The loops (global batch for pair and contrastive losses) and the
class-sharded head (``head=partial_fc``) use the functions here, so the rules are
written once.

Imports nothing of the framework (components may use it).
"""

from __future__ import annotations

import keras
from keras import ops


def num_replicas() -> int:
    """Replicas of the current ``tf.distribute`` strategy (1 outside one and under JAX)."""
    if keras.backend.backend() != "tensorflow":
        return 1
    import tensorflow as tf

    return tf.distribute.get_strategy().num_replicas_in_sync


def gather_global(*tensors):
    """Every replica's rows, concatenated in replica order (identity on one device / JAX).

    Differentiable: the gradient that reaches a replica's rows is the sum of every
    replica's gradient with respect to them (TensorFlow's ``all_gather`` gradient: an
    all-reduce sum, then this replica's slice), so the summed gradients equal one
    device's on the whole batch.
    """
    if num_replicas() == 1:
        return tensors if len(tensors) > 1 else tensors[0]
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None:  # cross-replica context: values are already whole
        return tensors if len(tensors) > 1 else tensors[0]
    gathered = tuple(ReplicaShard(context, tf).gather(t, differentiable=t.dtype.is_floating)
                     for t in map(tf.convert_to_tensor, tensors))
    return gathered if len(gathered) > 1 else gathered[0]


def shard_group(jax_shards: int = 1, jax_layout=None):
    """The shards of a class-sharded weight this program computes, and how to reach the others.

    One ``tf.distribute`` replica computes its own shard (``ReplicaShard``); one
    device, or JAX's SPMD program, computes all of them (``AllShards``, with
    ``jax_shards`` shards laid out by ``jax_layout``).
    """
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        if tf.distribute.has_strategy() and not tf.distribute.in_cross_replica_context():
            context = tf.distribute.get_replica_context()
            if context.num_replicas_in_sync > 1:
                return ReplicaShard(context, tf)
        return AllShards(1)
    return AllShards(jax_shards, jax_layout)


class AllShards:
    """Every shard in this program (one device, or JAX's SPMD program): reductions are local."""

    def __init__(self, count, layout=None):
        self.count = count
        self.local_ids = ops.arange(count, dtype="int32")
        self.layout = layout

    def gather(self, x, differentiable=True):
        return x

    def all_sum(self, x):
        return x

    def all_max(self, x):
        return x

    def local_rows(self, values):
        return values

    def constrain(self, x, rank, axis=0):
        """Keep ``x`` split along its shard axis across the devices (JAX), so XLA does not gather it."""
        if self.layout is None:
            return x
        spec = [None] * rank
        spec[axis] = self.layout.axes[0]
        return keras.distribution.distribute_tensor(
            x, keras.distribution.TensorLayout(spec, self.layout.device_mesh))


class ReplicaShard:
    """One shard per tf.distribute replica; the others are reached by collectives."""

    def __init__(self, context, tf):
        self.context, self.tf = context, tf
        self.count = context.num_replicas_in_sync
        self.replica = tf.cast(context.replica_id_in_sync_group, tf.int32)
        self.local_ids = tf.reshape(self.replica, (1,))

    def gather(self, x, differentiable=True):
        """Every replica's rows in replica order, with the static shape ``all_gather`` loses."""
        tf = self.tf
        x = tf.convert_to_tensor(x)
        if not differentiable:  # labels: no gradient to route
            x = tf.stop_gradient(x)
        gathered = self.context.all_gather(x, axis=0)  # its gradient: all-reduce, then this slice
        rows = None if x.shape[0] is None else x.shape[0] * self.count
        return tf.ensure_shape(gathered, [rows, *x.shape[1:]])

    def all_sum(self, x):
        return self.context.all_reduce("sum", x)  # differentiable: the gradient is an all-reduce too

    def all_max(self, x):
        return self.tf.reduce_max(self.context.all_gather(x[None], axis=0), axis=0)

    def local_rows(self, values):
        return self.tf.reshape(values, (self.count, -1))[self.replica]

    def constrain(self, x, rank, axis=0):
        return x

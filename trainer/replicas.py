"""Each replica's own copy of a variable whose replicas hold different values.

A ``tf.distribute`` sync-on-read variable (``synchronization="on_read"``) keeps one
copy per replica, each with its own values: metrics use it for per-replica sums,
``head=partial_fc`` for its class shards. Reading it in cross-replica context gives
one aggregate, so code that must see every value (checkpoints, NaN checks) reads
the copies. Imports nothing of the framework (components may use it).
"""

from __future__ import annotations

import keras


def replica_copies(variable) -> list:
    """The per-replica ``tf.Variable`` copies of a sync-on-read variable, in replica order;
    ``[variable.value]`` for any other (a mirrored variable's copies are all equal)."""
    value = getattr(variable, "value", variable)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        if (isinstance(value, tf.distribute.DistributedValues)
                and value.synchronization == tf.VariableSynchronization.ON_READ):
            return list(value.values)
    return [value]

"""Partial FC (An et al., ICCV 2021 workshops; insightface's arcface_torch): a class-sharded
cosine classifier with sampled negatives, for millions of identities.

The centre matrix (one row per class) is split by class into ``N`` shards, one per
replica/device. Each step the embeddings and labels of the whole global batch are
gathered; each shard keeps every *positive* class of that batch that it owns plus a
seeded uniform sample of its other classes (``sample_rate`` of them; 1.0 keeps
all, which is exact), computes the cosines of the global batch against those rows
only, and the softmax cross-entropy is assembled across shards: the row max and the
sum of exponentials are reduced over the replicas, so no device ever holds the
(batch, classes) logits. The margin loss changes the target logit only, so its own
hooks (``target_logit``, ``non_target_logits``, ``extra_loss``) run unchanged on the
sampled columns; the target cosine is the one column of one shard, summed across.
Gradients reach only the sampled rows (a gather's gradient).

Two execution models, one piece of maths (:meth:`PartialFCHead.per_sample_loss`):

* ``tf.distribute`` (Mirrored, MultiWorker, TPU) and plain TensorFlow: each replica
  runs the step on its own shard; the collectives are ``all_gather`` and
  ``all_reduce`` (both differentiable), and the replica returns the loss of its own
  rows, so Keras's per-replica scaling and gradient summing give the one-device
  gradient for the backbone. The centres are a *sync-on-read* variable: each
  replica stores only its ``rows / N`` rows (and their optimizer slots), and the
  head updates the rows it sampled itself (``models.heads.row_update``: the Keras
  optimizer would sum the replicas' gradients, which here belong to different rows).
* JAX (``keras.distribution``): one SPMD program over the global batch; the centres
  are created with a layout along the mesh's batch axis, so each device stores only
  its rows and their optimizer slots, and XLA turns the reductions over the shard
  axis into cross-device ones.

The head sees the labels, so it declares ``uses_labels = True``; the supervised loop
then calls :meth:`per_sample_loss` from ``compute_loss`` instead of calling the
head in the forward pass (docs/architecture.md, "Loss and head").

The number of rows is ``num_classes`` rounded up to a multiple of ``shard_multiple``
(padding rows are never a positive and are masked out of the softmax), so the
variable's shape does not depend on the device count: a checkpoint written on 8
devices restores on 2 or 1, and each then takes its own slice.
"""

from __future__ import annotations

import math
import random
import threading

import keras
import numpy as np
from keras import ops

from losses.margin import MarginBatch, MarginLoss
from models.heads.base import FaceHead
from models.heads.row_update import apply_rows, read_rows, row_rule
from trainer.keras_private import in_stateless_scope
from trainer.registry import HEADS, ConfigError
from trainer.collectives import num_replicas, shard_group
from trainer.replicas import replica_copies


def margin_loss_problem(loss) -> str | None:
    """Why ``loss`` cannot train with a sampled, sharded classifier (None: it can).

    The head evaluates a margin loss from its hooks on the sampled columns, so the
    loss may change the target logit (and, elementwise, the others) but not look at
    every class at once: AdaCos's scale is a sum over all classes, a loss that
    rewrites ``call`` or ``prepare`` does something the head cannot reproduce.
    """
    if not isinstance(loss, MarginLoss):
        return (f"{loss.name if hasattr(loss, 'name') else type(loss).__name__} is not a margin loss on "
                "class cosines")
    for hook in ("call", "prepare", "logits", "logit_scale", "split_prediction"):
        if getattr(type(loss), hook) is not getattr(MarginLoss, hook):
            return f"loss '{loss.name}' overrides MarginLoss.{hook}, which needs every class's logit"
    return None


@HEADS.register("partial_fc")
@keras.saving.register_keras_serializable(package="facetrain")
class PartialFCHead(FaceHead):
    """Class-sharded normalised centres; the loss with sampled negatives and a cross-shard softmax."""

    uses_labels = True  # the loop hands it the labels (SupervisedLoop.compute_loss)
    # owns_update: set per instance, True under TensorFlow (see __init__)

    def __init__(self, num_classes, sample_rate=1.0, sub_centers=1, shard_multiple=256, seed=0,
                 kernel_initializer="glorot_normal", epsilon=1e-6, global_batch_size=None, **kwargs):
        kwargs["dtype"] = kwargs.get("dtype") or "float32"
        super().__init__(**kwargs)
        if int(num_classes) < 1 or int(sub_centers) < 1 or int(shard_multiple) < 1:
            raise ValueError(f"partial_fc head needs num_classes, sub_centers and shard_multiple >= 1, "
                             f"got {num_classes}, {sub_centers}, {shard_multiple}")
        if not 0.0 < float(sample_rate) <= 1.0:
            raise ValueError(f"head.sample_rate must be in (0, 1], got {sample_rate}")
        self.num_classes = int(num_classes)
        self.sample_rate = float(sample_rate)
        self.sub_centers = int(sub_centers)
        self.shard_multiple = int(shard_multiple)
        self.seed = int(seed)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.epsilon = float(epsilon)
        # The job's trainer.batch_size (given by the builder): bounds the positives per step when
        # the batches' static size is unknown (Keras feeds NumPy batches with a None batch axis).
        self.global_batch_size = None if global_batch_size is None else int(global_batch_size)
        self.rows = -(-self.num_classes // self.shard_multiple) * self.shard_multiple
        self.jax_layout, self.jax_shards = None, 1
        # TensorFlow: each replica stores its own rows and the head updates them
        # (models.heads.row_update); JAX: sharded by layout, the Keras optimizer updates them.
        self.owns_update = keras.backend.backend() == "tensorflow"
        self.replicas = 1            # TensorFlow: shards stored, one per replica (fixed at build)
        self.rule = None             # the row update of the job's optimizer (use_optimizer)
        self.row_state = _RowState()  # its per-row slots; saved by save_own_variables
        # The loop's train step records the sampled rows here; per thread, because
        # MirroredStrategy runs its replicas' steps in concurrent threads.
        self.recorders = threading.local()

    # -- variables ------------------------------------------------------------------
    def build(self, input_shape):
        dim = int(input_shape[-1])
        initializer = self.scaled_initializer(dim)
        with keras.name_scope(self.name, caller=self):
            if self.owns_update:
                self.replicas = num_replicas()
                if self.rows % self.replicas:
                    raise ValueError(f"partial_fc: {self.rows} centre rows do not split over {self.replicas} "
                                     f"replicas; set head.shard_multiple to a multiple of {self.replicas}")
                shard = self.rows // self.replicas
                self.centers = _replica_variable(
                    (shard, self.sub_centers, dim), "class_centers",
                    lambda shape, dtype=None: self.initial_rows(initializer, 0, shard, shape[1:]))
                if len(replica_copies(self.centers)) != self.replicas:
                    # Multi-client (MultiWorkerMirrored): this worker sees only its own shards,
                    # and only the chief writes checkpoints, so no process could save them all.
                    raise ConfigError(
                        "head=partial_fc under TensorFlow needs one process that sees every replica "
                        "(runtime=mirrored, gpu, tpu or cpu with runtime.logical_devices); for "
                        "several hosts train with KERAS_BACKEND=jax runtime=jax")
                self.fill_other_replicas(initializer)
            else:
                shape = (self.rows, self.sub_centers, dim)
                self.jax_layout, self.jax_shards = _jax_class_layout(self.rows, len(shape))
                self.centers = keras.Variable(initializer, shape=shape, dtype="float32", trainable=True,
                                              name="class_centers", layout=self.jax_layout)
            # Steps taken so far: with the seed it fixes the sampled classes, and it is in
            # the checkpoint, so a resumed run samples what the uninterrupted one would.
            self.sample_step = keras.Variable("zeros", shape=(), dtype="int32", trainable=False,
                                              name="sample_step", aggregation="only_first_replica")
            if self.rule is not None:
                self.row_state.create(self.rule.slots, tuple(self.centers.shape), self.name)
        self.built = True

    def scaled_initializer(self, dim):
        """Glorot on the (D, C*K) matrix the cosine head draws, so both heads start alike."""
        initializer = self.kernel_initializer
        if isinstance(initializer, keras.initializers.VarianceScaling):
            fan_in, fan_out = dim, self.rows * self.sub_centers
            scale = initializer.scale / max(1.0, {"fan_in": fan_in, "fan_out": fan_out,
                                                  "fan_avg": (fan_in + fan_out) / 2}[initializer.mode])
            seed = initializer.seed
            if seed is None and self.owns_update:  # every replica's rows come from one seed
                seed = random.randrange(2 ** 31)     # Python's generator: set_random_seed seeds it
            initializer = _Scaled(initializer.distribution, scale, seed)
        return initializer

    def initial_rows(self, initializer, start, stop, row_shape):
        """Rows ``[start, stop)`` of the initial matrix. Glorot-style draws come per block of
        ``shard_multiple`` rows from (seed, block), so 1 replica and 8 start alike."""
        if isinstance(initializer, _Scaled):
            return initializer.rows(start, stop, self.shard_multiple, tuple(row_shape))
        return initializer((stop - start, *row_shape), dtype="float32")  # another initializer: its own draw

    def fill_other_replicas(self, initializer):
        """Give replicas 1..N-1 their own rows (a strategy creates them as copies of replica 0's)."""
        parts = replica_copies(self.centers)
        if len(parts) > 1 and in_stateless_scope():
            raise ValueError("partial_fc: build the head before tracing the model (SupervisedLoop.compile "
                             "does): each replica's rows must be drawn eagerly")
        shard = self.rows // self.replicas
        for replica, part in enumerate(parts[1:], start=1):
            part.assign(self.initial_rows(initializer, replica * shard, (replica + 1) * shard, part.shape[1:]))

    def use_optimizer(self, optimizer) -> None:
        """Train the centres with ``optimizer``'s rule (TensorFlow; JAX leaves them to Keras).
        Called by the loop's ``compile``; one line when the optimizer is not supported."""
        if not self.owns_update:
            return
        self.rule = row_rule(optimizer)
        if self.built:
            self.row_state.create(self.rule.slots, tuple(self.centers.shape), self.name)

    def apply_own_gradient(self, recorded, gradient, optimizer) -> None:
        """The optimizer step on the rows ``recorded`` (a ``recording``) saw this step (TensorFlow);
        ``gradient``: the loss's gradient with respect to ``recorded.weights``."""
        if self.rule is None:
            self.use_optimizer(optimizer)
        apply_rows(self.rule, optimizer, self.centers, self.row_state.slots, recorded.rows,
                   gradient[0])

    def recording(self, tape):
        """Context for a TensorFlow train step: ``tape`` watches the sampled rows, and the
        returned recorder holds them (``.weights``, ``.rows``) for ``apply_own_gradient``."""
        return _Recording(self, tape)

    def whole_centers(self):
        """The (rows, K, D) centre matrix as one NumPy array, however it is stored."""
        if self.owns_update:
            return gather_replicas(self.centers)
        return keras.ops.convert_to_numpy(self.centers)

    def assign_whole_centers(self, centers) -> None:
        """Set every row from one (rows, K, D) array (each replica takes its own)."""
        if self.owns_update:
            scatter_replicas(self.centers, centers)
        else:
            self.centers.assign(centers)

    def memory_per_device(self, optimizer=None) -> dict:
        """One device's share of the head as stored (weights and optimizer slots), for the bench:
        read from the variables themselves, not from the formula in docs/partial_fc.md."""
        if self.owns_update:
            rows, devices, slots = int(self.centers.shape[0]), self.replicas, len(self.row_state.slots)
        else:  # JAX: a device's addressable shard; the Keras optimizer's slots have the same layout
            shards = getattr(self.centers.value, "addressable_shards", None)
            rows, devices = (int(shards[0].data.shape[0]) if shards else self.rows), self.jax_shards
            slots = sum(tuple(v.shape) == tuple(self.centers.shape) for v in optimizer.variables) \
                if optimizer is not None else 0
        row_bytes = self.sub_centers * int(self.centers.shape[-1]) * 4
        return {"devices": devices, "rows_per_device": rows, "optimizer_slots": slots,
                "bytes_per_device": rows * row_bytes * (1 + slots)}

    # -- checkpoints: the whole matrix, whatever the replica count ---------------------------
    def save_own_variables(self, store):
        if not self.owns_update:
            return super().save_own_variables(store)
        store["0"] = gather_replicas(self.centers)
        store["1"] = keras.ops.convert_to_numpy(self.sample_step)
        for name, slot in self.row_state.slots.items():
            store[f"slot_{name}"] = gather_replicas(slot)

    def load_own_variables(self, store):
        if not self.owns_update:
            return super().load_own_variables(store)
        centers = np.asarray(store["0"])
        shard = tuple(self.centers.shape)
        if centers.shape != (shard[0] * self.replicas, *shard[1:]):
            raise ValueError(f"partial_fc: the checkpoint's centres are {centers.shape}, this head's "
                             f"{(shard[0] * self.replicas, *shard[1:])}")
        scatter_replicas(self.centers, centers)
        self.sample_step.assign(np.asarray(store["1"]))
        keys = set(store.keys())
        for name, slot in self.row_state.slots.items():  # absent (a JAX checkpoint): zeros
            scatter_replicas(slot, np.asarray(store[f"slot_{name}"]) if f"slot_{name}" in keys
                             else np.zeros(centers.shape, "float32"))

    # -- the sampled, sharded forward pass ------------------------------------------------
    def call(self, embeddings, labels=None, training=False):
        """Sampled cosines of the global batch against this program's shards.

        Returns ``cos`` (B_global, n*K), ``target_mask`` (same shape, True at each
        row's label), ``real`` (n*K,) False on padding rows, ``labels`` and ``norm``
        of the global batch; ``n`` is the number of shards this program computes
        (1 per tf.distribute replica, all N under JAX's SPMD program).
        """
        if labels is None:
            raise ValueError("the partial_fc head needs the labels: call it as head(embeddings, labels=y)")
        return self.sampled(embeddings, labels, training, self.shards())

    def sampled(self, embeddings, labels, training, shards):
        """:meth:`call` with the shard context given (the loss needs the same one)."""
        embeddings = ops.cast(embeddings, "float32")
        labels = ops.reshape(ops.convert_to_tensor(labels), (-1,))
        x, y = shards.gather(embeddings), shards.gather(labels, differentiable=False)
        y = ops.cast(y, "int32")
        norm = ops.sqrt(ops.maximum(ops.sum(ops.square(x), axis=-1, keepdims=True), self.epsilon ** 2))
        per_shard = self.rows // shards.count
        batch = x.shape[0] if x.shape[0] is not None else self.global_batch_size
        if batch is None and self.sample_rate < 1.0:  # the sample size must be static: say so
            raise ValueError("partial_fc with head.sample_rate < 1 needs batches of a static size (e.g. "
                             "dataset.batch(size, drop_remainder=True)) or the head's global_batch_size: "
                             "the sample must hold every positive of the global batch")
        step = ops.convert_to_tensor(self.sample_step)
        rows = sample_rows(y, shards.local_ids, per_shard, self.num_sampled(per_shard, batch),
                           self.num_classes, self.seed, step)            # (n, K) global row ids
        if training:
            self.sample_step.assign(step + 1)
        n, k = rows.shape[0], rows.shape[1]
        if self.owns_update:  # this replica's own rows; the train step watches them
            if shards.count != self.replicas:
                raise ValueError(f"partial_fc: built for {self.replicas} replicas, running on {shards.count}")
            local = rows[0] - shards.local_ids[0] * per_shard
            w = read_rows(self.centers, local)[None]
            recorder = getattr(self.recorders, "active", None)
            if recorder is not None:
                w = recorder.watch(w, local)
        elif n == 1:  # one shard: a plain gather
            w = ops.take(self.centers, rows[0], axis=0)[None]
        else:       # every shard in one program: a batched gather, local to each device
            w = ops.reshape(self.centers, (n, per_shard, self.sub_centers, -1))
            w = ops.take_along_axis(w, ops.reshape(rows - shards.local_ids[:, None] * per_shard,
                                                   (n, k, 1, 1)), axis=1)
            w = shards.constrain(w, 4)
        w_norm = ops.sqrt(ops.maximum(ops.sum(ops.square(w), axis=-1, keepdims=True), self.epsilon ** 2))
        cos = ops.einsum("bd,nksd->bnks", x / norm, w / w_norm)
        cos = ops.max(cos, axis=-1) if self.sub_centers > 1 else cos[..., 0]
        cos = ops.reshape(shards.constrain(cos, 3, axis=1), (-1, n * k))
        flat_rows = ops.reshape(rows, (-1,))
        return {"cos": cos, "target_mask": ops.equal(y[:, None], flat_rows[None, :]),
                "real": ops.less(flat_rows, self.num_classes), "labels": y, "norm": norm}

    def num_sampled(self, per_shard: int, global_batch: int | None) -> int:
        """Rows kept per shard: the sampled share, and never fewer than the batch could need
        (a shard may own every positive of the global batch)."""
        if self.sample_rate >= 1.0 or global_batch is None:
            return per_shard
        return min(per_shard, max(int(math.ceil(self.sample_rate * per_shard)), int(global_batch)))

    # -- the loss --------------------------------------------------------------------------
    def per_sample_loss(self, loss, embeddings, labels, training=False):
        """The margin loss of this program's rows, (B_local,), softmax across every shard.

        The same value per sample as ``loss(labels, cosine_head(embeddings))`` with
        the full classifier when ``sample_rate`` is 1.
        """
        if not self.built:
            self.build(tuple(embeddings.shape))
        shards = self.shards()
        out = self.sampled(embeddings, labels, training, shards)
        cos = ops.clip(out["cos"], -1.0, 1.0)
        labels, valid = loss.class_labels(out["labels"], self.num_classes)
        mask = out["target_mask"]
        # Each label lives in exactly one shard: its cosine is a sum over shards.
        target_cos = shards.all_sum(ops.sum(ops.where(mask, cos, 0.0), axis=1))
        batch = MarginBatch(cos=cos, target_mask=mask, target_cos=target_cos, labels=labels,
                            norm=out["norm"], valid=valid)
        logits, target = loss.logits(batch)
        logits = ops.where(out["real"][None, :], logits, float("-inf"))  # padding rows: no class
        # log-sum-exp across shards: the max only stabilises (no gradient needed through it).
        top = ops.stop_gradient(shards.all_max(ops.max(logits, axis=1)))
        total = shards.all_sum(ops.sum(ops.exp(logits - top[:, None]), axis=1))
        return shards.local_rows(loss.sample_losses(batch, ops.log(total) + top - target))

    # -- where the shards are ----------------------------------------------------------------
    def shards(self):
        """This program's shards and the collectives that reach the others."""
        return shard_group(self.jax_shards, self.jax_layout)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "sample_rate": self.sample_rate,
                "sub_centers": self.sub_centers, "shard_multiple": self.shard_multiple, "seed": self.seed,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "epsilon": self.epsilon, "global_batch_size": self.global_batch_size}


def sample_rows(labels, shard_ids, per_shard: int, num_sampled: int, num_classes: int, seed: int, step):
    """(n, num_sampled) global row ids: every positive of ``labels`` in each shard, then random rows.

    Shard ``i`` owns rows ``[i * per_shard, (i + 1) * per_shard)``. A row's score is a
    uniform draw from (seed, step, shard) (a pure function, so a resumed run draws the
    same), 2 for a positive and -1 for a padding row; the top ``num_sampled`` scores are
    kept, so positives always are (there is room: ``num_sampled`` >= batch size or all rows).
    """
    n = shard_ids.shape[0]
    labels = ops.cast(labels, "int32")
    shard_ids = ops.cast(shard_ids, "int32")
    if num_sampled >= per_shard:
        return shard_ids[:, None] * per_shard + ops.arange(per_shard, dtype="int32")[None, :]
    owner = labels // per_shard
    slot = ops.argmax(ops.cast(ops.equal(owner[:, None], shard_ids[None, :]), "int32"), axis=1)
    here = ops.any(ops.equal(owner[:, None], shard_ids[None, :]), axis=1)
    # Labels owned by no local shard land in a spare column that is then dropped.
    index = ops.stack([ops.cast(slot, "int32"), ops.where(here, labels % per_shard, per_shard)], axis=1)
    hits = ops.scatter(index, ops.ones_like(labels, dtype="float32"), (n, per_shard + 1))[:, :per_shard]
    local = ops.arange(per_shard, dtype="int32")[None, :]
    global_rows = shard_ids[:, None] * per_shard + local
    scores = uniform_scores(seed, step, shard_ids, per_shard)
    scores = ops.where(hits > 0.0, 2.0, scores)
    scores = ops.where(global_rows < num_classes, scores, -1.0)
    _, picked = ops.top_k(scores, num_sampled)
    return shard_ids[:, None] * per_shard + ops.cast(picked, "int32")


def uniform_scores(seed: int, step, shard_ids, per_shard: int):
    """(n, per_shard) uniform [0, 1) draws, a pure function of (seed, step, shard id)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        base = tf.stack([tf.constant(seed, tf.int64), tf.cast(step, tf.int64)])
        return tf.map_fn(
            lambda shard: tf.random.stateless_uniform(
                (per_shard,), seed=tf.random.experimental.stateless_fold_in(base, tf.cast(shard, tf.int64))),
            shard_ids, fn_output_signature=tf.float32)
    if backend == "jax":
        import jax

        key = jax.random.fold_in(jax.random.key(seed), step)
        return jax.vmap(lambda shard: jax.random.uniform(jax.random.fold_in(key, shard), (per_shard,)))(
            shard_ids)
    # Other backends: keras.random with an integer seed mixed from the three (not traceable).
    mixed = (seed * 1_000_003 + int(ops.convert_to_numpy(step))) % (2 ** 31)
    return ops.stack([keras.random.uniform((per_shard,), seed=mixed * 7919 + int(s))
                      for s in ops.convert_to_numpy(shard_ids)])


def _jax_class_layout(rows: int, rank: int):
    """Under JAX with a device mesh: the centres split by class along the mesh's batch axis.

    Returns (layout or None, shard count). Data parallelism already spreads the
    batch over that axis; the same devices then each own a slice of the classes.
    """
    if keras.backend.backend() != "jax":
        return None, 1
    distribution = keras.distribution.distribution()
    mesh = getattr(distribution, "device_mesh", None)
    axis = getattr(distribution, "batch_dim_name", None)
    if mesh is None or axis not in mesh.axis_names:
        return None, 1
    count = int(mesh.shape[list(mesh.axis_names).index(axis)])
    if count <= 1 or rows % count:
        return None, 1
    return keras.distribution.TensorLayout([axis] + [None] * (rank - 1), mesh), count


class _Scaled(keras.initializers.Initializer):
    """Glorot's draw for a (D, C*K) matrix, applied to the (C, K, D) centres."""

    def __init__(self, distribution, scale, seed=None):
        self.distribution, self.scale, self.seed = distribution, scale, seed

    def spread(self):
        """("uniform", limit) or ("normal" | "truncated", standard deviation) of the draw."""
        if self.distribution == "uniform":
            return "uniform", math.sqrt(3.0 * self.scale)
        if "truncated" in self.distribution:  # the truncated normal's own std is 0.8796 of its parameter
            return "truncated", math.sqrt(self.scale) / 0.87962566103423978
        return "normal", math.sqrt(self.scale)

    def __call__(self, shape, dtype=None):
        kind, spread = self.spread()
        if kind == "uniform":
            return keras.random.uniform(shape, -spread, spread, dtype=dtype, seed=self.seed)
        draw = keras.random.truncated_normal if kind == "truncated" else keras.random.normal
        return draw(shape, stddev=spread, dtype=dtype, seed=self.seed)

    def get_config(self):
        return {"distribution": self.distribution, "scale": self.scale, "seed": self.seed}

    def rows(self, start, stop, block, row_shape):
        """Rows ``[start, stop)`` of the whole matrix, each block of ``block`` rows a stateless
        draw from (seed, block index): independent of how the rows are split into shards."""
        import tensorflow as tf

        seed, (kind, spread) = self.seed, self.spread()

        def draw(index):
            key = tf.stack([tf.constant(seed, tf.int64), tf.cast(index, tf.int64)])
            shape = (block, *row_shape)
            if kind == "uniform":
                return tf.random.stateless_uniform(shape, key, -spread, spread)
            normal = tf.random.stateless_truncated_normal if kind == "truncated" else tf.random.stateless_normal
            return normal(shape, key, stddev=spread)

        first, last = start // block, -(-stop // block)
        blocks = tf.map_fn(draw, tf.range(first, last, dtype=tf.int64), fn_output_signature=tf.float32)
        offset = start - first * block
        return tf.reshape(blocks, (-1, *row_shape))[offset:offset + stop - start]


# -- TensorFlow storage: one shard of rows per replica ------------------------------------

class _RowState:
    """The centres' optimizer slots (TensorFlow), created once the optimizer is known.

    A plain object so that Keras does not track them after the layer is built; the
    head saves and restores them itself (``save_own_variables``)."""

    def __init__(self):
        self.slots = {}

    def create(self, names, shape, prefix):
        for name in names:
            if name not in self.slots:
                self.slots[name] = _replica_variable(shape, f"{prefix}_{name}")


class _Recording:
    """``PartialFCHead.recording``: the head hands the sampled rows to the step's tape."""

    def __init__(self, head, tape):
        self.head, self.tape = head, tape
        self.weights = self.rows = None

    def watch(self, weights, rows):
        self.tape.watch(weights)
        self.weights, self.rows = weights, rows
        return weights

    def __enter__(self):
        self.head.recorders.active = self
        return self

    def __exit__(self, *exc):
        self.head.recorders.active = None
        return False


def _replica_variable(shape, name, initializer="zeros"):
    """A (shard) variable on every replica, each replica's copy its own (sync-on-read)."""
    return keras.Variable(initializer, shape=shape, dtype="float32", trainable=False, name=name,
                          synchronization="on_read", aggregation="only_first_replica")


def gather_replicas(variable):
    """The whole matrix: every replica's rows, in replica order (NumPy)."""
    return np.concatenate([part.numpy() for part in replica_copies(variable)], axis=0)


def scatter_replicas(variable, full) -> None:
    """Split ``full`` by rows over the replicas' copies of ``variable``."""
    parts = replica_copies(variable)
    for part, rows in zip(parts, np.split(np.asarray(full, "float32"), len(parts), axis=0)):
        part.assign(rows)

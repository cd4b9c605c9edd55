"""A job assembled once from its config, for every entry point (``trainer.run``, ``trainer.bench``).

``build_job`` makes, in this order: the runtime (collective strategies must
exist before any TensorFlow op), the data source, the evaluator, the callbacks
(guards first), then, inside the runtime's scope, the loop and the optimizer
(wrapped by the callbacks that ask to), compiled. ``Job`` then answers what the
runner needs: the batches the loop declared (``batches``), the loop's view of
the data (``data``), and the reason a callback stopped the run (``stop_reason``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import keras
import numpy as np

from trainer.callbacks.base import TrainerCallback, first_error, guards_first
from trainer.registry import CALLBACKS, DATASETS, EVALUATORS, ConfigError


@dataclass
class Job:
    """Everything built for one run, before training starts."""

    runtime: object
    source: object
    loop: keras.Model
    callbacks: list
    evaluator: object | None
    augment: object | None
    batch_size: int
    steps_per_epoch: int
    epochs: int
    seed: int
    data: "LoopData" = field(init=False)

    def __post_init__(self):
        self.data = LoopData(self.source, self.runtime)

    @property
    def checkpoint(self):
        from trainer.callbacks.checkpoint import Checkpoint

        return next((c for c in self.callbacks if isinstance(c, Checkpoint)), None)

    def batches(self, start_epoch: int, end_epoch: int, skip_batches: int = 0):
        """The training batches the loop declared, epochs ``start_epoch … end_epoch-1``."""
        from trainer.data.batches import batches_for

        needs = self.loop.batch_needs(self.augment)
        return batches_for(needs, self.source, self.batch_size, self.seed, self.steps_per_epoch,
                           end_epoch, augment=self.augment, start_epoch=start_epoch,
                           skip_batches=skip_batches)

    def set_position(self, batch_offset: int, steps_per_epoch: int | None = None) -> None:
        """Tell the callbacks where the next ``fit`` starts (``TrainerCallback.set_position``)."""
        for callback in self.callbacks:
            if isinstance(callback, TrainerCallback):
                callback.set_position(steps_per_epoch or self.steps_per_epoch, batch_offset)

    def stop_reason(self) -> str | None:
        return first_error(self.callbacks)


class LoopData:
    """What a loop's hooks (``prepare``, ``epoch_callbacks``, ``final_metrics``) may read of the data.

    Loops stay components: they see NumPy arrays and a cross-model verification,
    never the data pipeline or the evaluation package themselves.
    """

    def __init__(self, source, runtime=None):
        self.source = source
        self.num_classes = int(source.num_classes) if source is not None else 0
        self._heldout = None

    def train_batches(self, batch_size: int = 256):
        """The whole training set once, in order, as NumPy (uint8 images, int32 labels) batches."""
        if self.source.in_memory:
            images, labels = self.source.train_arrays()
            for start in range(0, len(labels), batch_size):
                yield np.asarray(images[start:start + batch_size]), np.asarray(labels[start:start + batch_size])
            return
        yield from self.source.train().batch(batch_size).as_numpy_iterator()

    def heldout(self):
        """(images, labels) NumPy arrays of the held-out identities, or None."""
        if self._heldout is None:
            from trainer.data.pipeline import materialise

            heldout = self.source.heldout() if self.source is not None else None
            self._heldout = () if heldout is None else materialise(heldout)
        return self._heldout or None

    def cross_model_verification(self, old_model, new_model, pairs: int) -> dict:
        """Held-out verification old-vs-old, new-vs-new and old-vs-new on the same pairs."""
        from trainer.evaluation.cross_model import cross_model_verification

        images, labels = self.heldout()
        return cross_model_verification(old_model, new_model, images, labels, pairs)


def augmentation(cfg):
    """The configured augmentation (pipeline or multi-view), or None."""
    node = cfg.get("augment")
    if node is None or not node.get("ops"):
        return None
    from augment.pipeline import build_augmentation

    return build_augmentation(node)


def build_callbacks(cfg, run_dir: str) -> list:
    """The ``callbacks`` group's callbacks, guards first."""
    built = [CALLBACKS.build(node, run_dir=run_dir, config=cfg)
             for node in (cfg.get("callbacks") or {}).values() if node is not None]
    return guards_first(built)


def build_job(cfg, run_dir: str, *, source=None, num_classes: int | None = None,
              image_size: int | None = None, steps_per_epoch: int | None = None,
              with_callbacks: bool = True, with_source: bool = True) -> Job:
    """The runtime, data source, evaluator, callbacks and the compiled loop of ``cfg``.

    ``trainer.bench`` passes ``num_classes``/``image_size`` to measure without a data set
    (``with_source=False``) and may leave the callbacks out.
    """
    from trainer.builders import build_loop, build_optimizer
    from trainer.console import quiet_startup
    from trainer.runtime import setup_runtime

    seed = int(cfg.trainer.seed)
    quiet_startup()
    runtime = setup_runtime(cfg.runtime)  # first: collective strategies must exist before any TF op
    keras.utils.set_random_seed(seed)
    if source is None and with_source:
        source = DATASETS.build(cfg.data)
    batch_size = int(cfg.trainer.batch_size)
    if batch_size % runtime.num_replicas:
        raise ConfigError(f"trainer.batch_size={batch_size} does not split across "
                          f"{runtime.num_replicas} replicas; use a multiple of {runtime.num_replicas}")
    if source is not None:
        check_source_fits(cfg, source, batch_size)
        if with_callbacks and runtime.is_chief:  # a run, not a benchmark: name the people it trains on
            from trainer.evaluation.training_identities import record

            record(source, run_dir)
    num_classes = int(num_classes if num_classes is not None else source.num_classes)
    image_size = int(image_size if image_size is not None else source.image_size)
    steps_per_epoch = int(steps_per_epoch or cfg.trainer.steps_per_epoch
                          or (source.num_examples // batch_size if source is not None else 1000))
    epochs = int(cfg.trainer.epochs)
    # Only the chief evaluates (workers hold the same weights).
    evaluator = EVALUATORS.build(cfg.eval) if cfg.get("eval") is not None and runtime.is_chief else None
    callbacks = build_callbacks(cfg, run_dir) if with_callbacks else []
    # Seeded again here: preparing a data set the first time may draw from the global
    # generators, and the initial weights must not depend on whether the data was cached.
    keras.utils.set_random_seed(seed)
    with runtime.scope():
        loop = build_loop(cfg, num_classes, image_size)
        optimizer = build_optimizer(cfg, steps_per_epoch, steps_per_epoch * epochs)
        for callback in callbacks:
            if isinstance(callback, TrainerCallback):
                optimizer = callback.prepare_optimizer(optimizer)
        loop.compile(optimizer=optimizer, jit_compile=runtime.jit_compile,
                     steps_per_execution=runtime.steps_per_execution)
    job = Job(runtime=runtime, source=source, loop=loop, callbacks=callbacks, evaluator=evaluator,
              augment=augmentation(cfg), batch_size=batch_size, steps_per_epoch=steps_per_epoch,
              epochs=epochs, seed=seed)
    job.loop.batch_needs(job.augment)  # a loop that cannot use this augmentation says so now
    return job


def check_source_fits(cfg, source, batch_size: int) -> None:
    """Data mistakes that would otherwise surface mid-training, as one line each."""
    if source.num_examples < batch_size:  # whatever steps_per_epoch (debug=smoke) says
        raise ConfigError(f"the data set has {source.num_examples} images, fewer than one batch of "
                          f"{batch_size}; lower trainer.batch_size")
    if cfg.get("loss") is not None and cfg.get("head") is not None and source.num_classes < 2:
        raise ConfigError(f"the data set has {source.num_classes} identity; an identity loss needs two "
                          "or more (check data.path)")

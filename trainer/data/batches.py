"""The batches a training loop declared it needs (``FaceLoop.batch_needs``), for every loop alike.

Uniform batches come from ``trainer.data.pipeline``, P×K batches from
``trainer.data.samplers``; both key every batch on its position, on ``tf.data``
and on NumPy, and views of a multi-view augmentation get an axis of their own.
"""

from __future__ import annotations

from augment.multiview import ViewAxis
from trainer.data.pipeline import training_batches
from trainer.data.process_share import this_process_share
from trainer.data.samplers import class_balanced_batches


def batches_for(needs, source, batch_size: int, seed: int, steps_per_epoch: int,
                epochs: int, augment=None, start_epoch: int = 0, skip_batches: int = 0):
    """The batches ``needs`` (a loop's ``BatchNeeds``) asks for, epochs ``start_epoch … epochs-1``.

    Every batch is a function of its position (epoch, batch) on both paths
    (``tf.data`` and NumPy): each epoch has its own shuffle seed, and the
    augmentation's random state is set from the batch's global index. A run
    resumed at batch ``skip_batches`` therefore trains on exactly the batches
    an uninterrupted run would; skipped batches are never augmented. In a
    multi-process job each process gets its own rows of every batch
    (``trainer.data.process_share``).
    """
    return this_process_share(_global_batches(needs, source, batch_size, seed, steps_per_epoch, epochs,
                                              augment, start_epoch, skip_batches), batch_size)


def _global_batches(needs, source, batch_size, seed, steps_per_epoch, epochs, augment, start_epoch,
                    skip_batches):
    transform = augment
    if needs.views > 1:
        transform = ViewAxis(augment)
    if needs.sampling == "identities":
        return class_balanced_batches(source, batch_size, needs.images_per_identity, seed,
                                      steps_per_epoch, epochs, augment=transform,
                                      start_epoch=start_epoch, skip_batches=skip_batches)
    if needs.sampling != "uniform":
        raise ValueError(f"unknown batch sampling {needs.sampling!r} (uniform or identities)")
    return training_batches(source, batch_size, seed, steps_per_epoch, epochs, augment=transform,
                            start_epoch=start_epoch, skip_batches=skip_batches)

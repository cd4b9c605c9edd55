"""Optimizers and learning-rate schedules (registered; schedules run on global steps)."""

from __future__ import annotations

import math

import keras
from keras import ops

from trainer.registry import OPTIMIZERS, SCHEDULES

# Weights that weight decay should not shrink: normalisation scales/offsets, PReLU slopes, biases.
NO_DECAY_NAMES = ["gamma", "beta", "bias", "alpha", "prelu"]


@OPTIMIZERS.register("sgd")
def sgd(lr=0.1, momentum=0.9, nesterov=False, weight_decay=5e-4, clipnorm=None, learning_rate=None):
    """SGD with momentum; ``learning_rate`` (a schedule) is filled in by the trainer."""
    optimizer = keras.optimizers.SGD(
        learning_rate=lr if learning_rate is None else learning_rate,
        momentum=momentum, nesterov=nesterov, weight_decay=weight_decay or None,
        global_clipnorm=clipnorm)
    if weight_decay:
        optimizer.exclude_from_weight_decay(var_names=NO_DECAY_NAMES)
    return optimizer


@OPTIMIZERS.register("adamw")
def adamw(lr=1e-3, weight_decay=0.05, beta_1=0.9, beta_2=0.999, epsilon=1e-8, clipnorm=None,
          learning_rate=None):
    """AdamW (decoupled weight decay)."""
    optimizer = keras.optimizers.AdamW(
        learning_rate=lr if learning_rate is None else learning_rate, weight_decay=weight_decay,
        beta_1=beta_1, beta_2=beta_2, epsilon=epsilon, global_clipnorm=clipnorm)
    optimizer.exclude_from_weight_decay(var_names=NO_DECAY_NAMES)
    return optimizer


class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 over ``warmup_epochs``, then ``decayed(step)``."""

    def __init__(self, base_lr, steps_per_epoch, total_steps, warmup_epochs=0.0):
        self.base_lr = float(base_lr)
        self.steps_per_epoch = int(steps_per_epoch)
        self.total_steps = max(int(total_steps), 1)
        self.warmup_epochs = float(warmup_epochs)
        self.warmup_steps = int(round(self.warmup_epochs * self.steps_per_epoch))

    def decayed(self, step):
        return ops.convert_to_tensor(self.base_lr, "float32")

    def __call__(self, step):
        step = ops.cast(step, "float32")
        decayed = self.decayed(step)
        if self.warmup_steps <= 0:
            return decayed
        warm = self.base_lr * (step + 1.0) / float(self.warmup_steps)
        return ops.where(step < self.warmup_steps, warm, decayed)

    def get_config(self):
        return {"base_lr": self.base_lr, "steps_per_epoch": self.steps_per_epoch,
                "total_steps": self.total_steps, "warmup_epochs": self.warmup_epochs}


@SCHEDULES.register("constant")
@keras.saving.register_keras_serializable(package="facetrain")
class ConstantSchedule(WarmupSchedule):
    """The base learning rate throughout (after the warm-up)."""


@SCHEDULES.register("cosine")
@keras.saving.register_keras_serializable(package="facetrain")
class CosineSchedule(WarmupSchedule):
    """Cosine decay from the base rate to ``final_lr_ratio`` × base over the run."""

    def __init__(self, base_lr, steps_per_epoch, total_steps, warmup_epochs=0.5, final_lr_ratio=0.0):
        super().__init__(base_lr, steps_per_epoch, total_steps, warmup_epochs)
        self.final_lr_ratio = float(final_lr_ratio)

    def decayed(self, step):
        span = max(self.total_steps - self.warmup_steps, 1)
        progress = ops.clip((step - self.warmup_steps) / span, 0.0, 1.0)
        cosine = 0.5 * (1.0 + ops.cos(math.pi * progress))
        floor = self.final_lr_ratio
        return self.base_lr * (floor + (1.0 - floor) * cosine)

    def get_config(self):
        return {**super().get_config(), "final_lr_ratio": self.final_lr_ratio}


@SCHEDULES.register("step")
@keras.saving.register_keras_serializable(package="facetrain")
class StepSchedule(WarmupSchedule):
    """Multiply the rate by ``gamma`` at each epoch in ``milestones``."""

    def __init__(self, base_lr, steps_per_epoch, total_steps, milestones=(10, 18, 22), gamma=0.1,
                 warmup_epochs=0.0):
        super().__init__(base_lr, steps_per_epoch, total_steps, warmup_epochs)
        self.milestones = [float(m) for m in milestones]
        self.gamma = float(gamma)

    def decayed(self, step):
        epoch = step / float(self.steps_per_epoch)
        passed = sum(ops.cast(epoch >= m, "float32") for m in self.milestones) if self.milestones else 0.0
        return self.base_lr * ops.power(self.gamma, passed)

    def get_config(self):
        return {**super().get_config(), "milestones": self.milestones, "gamma": self.gamma}


@SCHEDULES.register("poly")
@keras.saving.register_keras_serializable(package="facetrain")
class PolySchedule(WarmupSchedule):
    """Polynomial decay to 0 at the end of the run: base × (1 − progress)^power.

    arcface_torch's ``PolyScheduler`` (power 2), after the linear warm-up.
    """

    def __init__(self, base_lr, steps_per_epoch, total_steps, warmup_epochs=0.0, power=2.0):
        super().__init__(base_lr, steps_per_epoch, total_steps, warmup_epochs)
        self.power = float(power)

    def decayed(self, step):
        span = max(self.total_steps - self.warmup_steps, 1)
        progress = ops.clip((step - self.warmup_steps) / span, 0.0, 1.0)
        return self.base_lr * ops.power(1.0 - progress, self.power)

    def get_config(self):
        return {**super().get_config(), "power": self.power}

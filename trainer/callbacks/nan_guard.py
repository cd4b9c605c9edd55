"""Non-finite loss guard: stop at the first NaN/Inf loss, or skip such steps up to a limit.

``on_nan: stop`` ends the run at the first non-finite loss with one line
naming the step, the loss and the last good checkpoint (nothing is saved
after it, so that checkpoint is clean).

``on_nan: skip`` drops the update of a step whose gradients are not finite and
trains on. The skipping happens inside the compiled step: the optimizer is
wrapped in Keras's ``LossScaleOptimizer`` (at scale 1 and without growth
under float32/bfloat16, an exact power-of-two scaling), which applies an update
only when every gradient is finite and halves its scale otherwise. The guard
watches that scale: each drop below 1 is one skipped step, reported with its
step number; after ``max_skips`` of them the run stops as in ``stop`` mode.
(Under ``mixed_float16`` the scaler already exists and its ordinary overflow
adjustments above scale 1 are not counted.) Keras's epoch loss is a running
mean, so the epoch in which a step was skipped logs a non-finite mean loss.
"""

from __future__ import annotations

import keras

from trainer.callbacks.base import StepGuard
from trainer.callbacks.checkpoint import is_finite, last_good_checkpoint
from trainer.registry import CALLBACKS, ConfigError

ON_NAN = ("stop", "skip")


@CALLBACKS.register("nan_guard")
class NanGuard(StepGuard):
    """A guard (``StepGuard``): the checkpoint waits for its verdict, so a bad step is never saved."""

    def __init__(self, run_dir, on_nan: str = "stop", max_skips: int = 10, config=None):
        super().__init__()
        if on_nan not in ON_NAN:
            raise ConfigError(f"callbacks.nan_guard.on_nan '{on_nan}' is not one of {', '.join(ON_NAN)}")
        self.run_dir = str(run_dir)
        self.on_nan = on_nan
        self.max_skips = int(max_skips)
        # Stop mode only reads the loss, so Keras may run it off the training thread (no
        # per-step host sync under JAX); skip mode reads the optimizer and must stay in step.
        self.async_safe = on_nan == "stop"
        self.loss_name = str(config.loss.name) if config is not None and config.get("loss") else "loss"
        self.skipped: list[int] = []
        self._scale = None

    def prepare_optimizer(self, optimizer):
        """In skip mode, the optimizer that drops non-finite updates (called before compile)."""
        if self.on_nan != "skip" or isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            return optimizer
        return keras.optimizers.LossScaleOptimizer(optimizer, initial_scale=1.0,
                                                   dynamic_growth_steps=2**31 - 1)

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self._scale = self._current_scale()

    def on_train_batch_end(self, batch, logs=None):
        try:
            if self.on_nan == "skip":
                self._count_skips(batch)
                return
            value = (logs or {}).get("loss")
            if value is not None and not is_finite(value) and not self.error:
                self._stop(f"the {self.loss_name} loss became {float(value)} at step {self.global_step(batch)}")
        finally:
            self.checked()

    def _count_skips(self, batch) -> None:
        scale = self._current_scale()
        if scale is None:
            return
        if scale < self._scale and scale < 1.0:
            step = self.global_step(batch)
            self.skipped.append(step)
            print(f"nan_guard: the {self.loss_name} loss or its gradients were not finite at step {step}; "
                  f"update skipped ({len(self.skipped)} of at most {self.max_skips}); "
                  f"{last_good_checkpoint(self.run_dir)}", flush=True)
            if len(self.skipped) > self.max_skips:
                self._stop(f"the {self.loss_name} loss was not finite at {len(self.skipped)} steps "
                           f"(last: step {step}), more than callbacks.nan_guard.max_skips={self.max_skips}")
        self._scale = scale

    def _current_scale(self):
        optimizer = getattr(self.model, "optimizer", None)
        if not isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            return None
        scale = getattr(optimizer, "dynamic_scale", None)  # created when the optimizer builds
        return float(keras.ops.convert_to_numpy(scale)) if scale is not None else float(optimizer.initial_scale)

    def _stop(self, what: str) -> None:
        self.error = (f"{what}; {last_good_checkpoint(self.run_dir)}; lower optimizer.lr, "
                      "use runtime.precision=float32, or callbacks.nan_guard.on_nan=skip; a class-label "
                      "loss is also NaN for a label outside [0, num_classes)")
        self.host_model.stop_training = True  # (stop mode runs on a worker thread: no write-back)

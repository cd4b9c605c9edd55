"""Report held-out verification accuracy to the running Optuna trial after each epoch; stop
the job when the pruner says the trial will not win (``sweep=optuna`` adds this callback).

Outside an Optuna sweep (no active trial) it does nothing and builds nothing.
"""

from __future__ import annotations

import keras

from trainer.registry import CALLBACKS, DATASETS, EVALUATORS, ConfigError


def is_pruned(error: BaseException) -> bool:
    """Whether ``error`` is Optuna's "this trial was pruned" (False when Optuna is not installed)."""
    try:
        import optuna
    except ImportError:
        return False
    return isinstance(error, optuna.TrialPruned)


@CALLBACKS.register("optuna_pruning")
class OptunaPruningCallback(keras.callbacks.Callback):
    """After every ``every_epochs`` epochs: ``trial.report(accuracy, epoch)``, then prune or go on.

    The accuracy is the job's own final measure (``eval``, held-out identities), so the
    value of a trial's last epoch is the value the sweep maximises.
    """

    def __init__(self, run_dir, config=None, every_epochs: int = 1):
        super().__init__()
        if int(every_epochs) < 1:
            raise ConfigError(f"callbacks.pruning.every_epochs={every_epochs} must be >= 1")
        self.every_epochs = int(every_epochs)
        self.config = config
        self.trial = None
        self._evaluator = self._source = None
        self.reported: dict[int, float] = {}

    def on_train_begin(self, logs=None):
        from trainer.sweep import active_trial

        self.trial = active_trial()
        if self.trial is None or self._evaluator is not None:
            return
        if self.config is None or self.config.get("eval") is None:
            raise ConfigError("callbacks.pruning needs eval= (held-out verification) to report accuracy")
        # The job's evaluator on its own copy of the data source (held-out identities only).
        self._evaluator = EVALUATORS.build(self.config.eval)
        self._source = DATASETS.build(self.config.data)

    def on_epoch_end(self, epoch, logs=None):
        if self.trial is None or (epoch + 1) % self.every_epochs:
            return
        import optuna

        results = self._evaluator.evaluate(self.model.embedding_model, self._source)
        if "heldout" not in results:
            raise ConfigError("callbacks.pruning: the data source has no held-out identities to report")
        accuracy = float(results["heldout"]["accuracy"])
        self.reported[epoch + 1] = accuracy
        self.trial.report(accuracy, step=epoch + 1)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"trial {self.trial.number} pruned after epoch {epoch + 1}: "
                                     f"held-out accuracy {accuracy:.4f}")

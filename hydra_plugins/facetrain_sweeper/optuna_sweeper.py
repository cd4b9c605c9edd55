"""``hydra/sweeper: facetrain_optuna``: the Optuna sweeper of ``trainer.sweep`` as a Hydra plugin.

Hydra only instantiates plugin classes defined in the ``hydra_plugins`` namespace,
so this module holds the class Hydra names and registers its config.
"""

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper

from trainer.sweep import OptunaSweeperBase, OptunaSweeperConf


class OptunaSweeper(OptunaSweeperBase, Sweeper):
    """Optuna >= 4 trials with pruning and a resumable study (see ``trainer.sweep``)."""


ConfigStore.instance().store(group="hydra/sweeper", name="facetrain_optuna", node=OptunaSweeperConf,
                             provider="facetrain")

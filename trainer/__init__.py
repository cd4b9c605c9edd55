"""facetrain: a Keras 3 training framework for face-recognition embedding models.

The public API (the command line is built on it)::

    import trainer
    loss = trainer.build("loss", {"name": "cosface", "margin": 0.35, "scale": 64})
    cfg = trainer.compose(["loss=cosface", "debug=smoke"])
    metrics = trainer.train(cfg)
"""

import os as _os

from trainer.registry import ConfigError, build, registry

# The commands live in trainer/commands/ (the core never imports them), yet users type
# ``python -m trainer.evaluate``: searching that folder too maps ``trainer.<command>`` to
# ``trainer/commands/<command>.py``. Code imports a command as ``trainer.commands.<command>``.
__path__.append(_os.path.join(_os.path.dirname(__file__), "commands"))

__all__ = ["ConfigError", "build", "compose", "registry", "train"]


def compose(overrides=(), config_name="config"):
    """The resolved config for ``overrides``, exactly as ``python -m trainer`` builds it."""
    from trainer.config import compose as _compose

    return _compose(list(overrides), config_name=config_name)


def train(cfg):
    """Run one job in-process and return its final metrics (a dict)."""
    from trainer.run import train as _train

    return _train(cfg)

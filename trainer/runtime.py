"""Devices, distribution strategy and numeric precision for a job (``runtime`` group)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import keras

from trainer.registry import ConfigError

PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


@dataclass
class Runtime:
    name: str
    strategy: object | None          # a tf.distribute strategy, or None for the default
    jit_compile: bool
    steps_per_execution: int

    @property
    def num_replicas(self) -> int:
        return getattr(self.strategy, "num_replicas_in_sync", 1)

    def scope(self):
        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()


def setup_runtime(node) -> Runtime:
    """Apply the precision policy and create the strategy named by ``node.name``."""
    precision = node.get("precision", "float32")
    if precision not in PRECISIONS:
        raise ConfigError(f"runtime.precision '{precision}' is not one of {', '.join(PRECISIONS)}")
    keras.mixed_precision.set_global_policy(precision)
    name = node.get("name", "cpu")
    if name not in STRATEGIES:
        raise ConfigError(f"unknown runtime '{name}': choose one of {', '.join(sorted(STRATEGIES))}")
    return Runtime(name=name, strategy=STRATEGIES[name](node),
                   jit_compile=bool(node.get("jit_compile", True)),
                   steps_per_execution=int(node.get("steps_per_execution", 1)))


def _default_strategy(node):
    return None


STRATEGIES = {"cpu": _default_strategy}

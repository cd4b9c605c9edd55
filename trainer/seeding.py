"""One way to turn a seed and a position into a new seed.

Shuffling (per epoch), augmentation (per batch position) and the ops of an
augmentation pipeline (per op and view) each need a seed that is reproducible
from the run's seed and distinct from its neighbours'. They all mix the same
way, here, so the rule is written and reasoned about once.

Imports nothing of the framework: components and the data pipeline both use it.
"""

from __future__ import annotations

import numbers

__all__ = ["SEED_MODULUS", "mix_seed"]

# Results stay in [0, 2**31 - 1): a positive int32, which every backend's and
# tf.random's seed arguments accept. 2**31 - 1 is prime, so the fold below
# spreads values over the whole range.
SEED_MODULUS = 2**31 - 1
# A prime above any position mixed in (epoch, batch, op index), so that
# (seed, part) pairs with small parts cannot collide before the modulus.
_MULTIPLIER = 1_000_003


def mix_seed(*parts):
    """Fold ``parts`` into one seed: ``value = (value * 1_000_003 + part) % (2**31 - 1)``.

    ``mix_seed(seed, epoch)`` is the data pipeline's per-epoch shuffle seed;
    ``mix_seed(seed, a, b)`` equals ``mix_seed(mix_seed(seed, a), b)``, so a base
    computed once can be mixed with a position later. Integers (Python, NumPy)
    give a Python ``int``; an int64 tensor part (a batch position inside
    ``tf.data``) gives an int64 tensor, with the same value.
    """
    if not parts:
        raise TypeError("mix_seed needs at least one part (the seed)")
    value = _integer(parts[0])
    for part in parts[1:]:
        value = (value * _MULTIPLIER + _integer(part)) % SEED_MODULUS
    return value


def _integer(part):
    if isinstance(part, numbers.Integral):
        return int(part)
    if hasattr(part, "dtype"):  # a tensor or array: the arithmetic above works on it as is
        return part
    raise TypeError(f"a seed part must be an integer, got {part!r}")

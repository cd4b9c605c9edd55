"""``python -m trainer.bench``: training throughput, framework overhead and input-pipeline headroom.

The trainer's config (``conf/bench.yaml`` = ``conf/config.yaml`` + a ``bench:``
section), so any model, loss, loop or augmentation is benchmarked with the same
overrides as a training run. See ``docs/performance.md``.
"""

from trainer.bench.measure import run_bench

__all__ = ["run_bench"]

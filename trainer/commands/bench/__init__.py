"""``python -m trainer.bench``: training throughput, framework overhead and input-pipeline headroom.

The trainer's config (``conf/bench.yaml`` = ``conf/config.yaml`` + a ``bench:``
section), so any model, loss, loop or augmentation is benchmarked with the same
overrides as a training run. See ``docs/performance.md``.
"""

__all__ = ["run_bench"]


def __getattr__(name):
    # Lazy: ``python -m trainer.bench --help`` answers without importing TensorFlow.
    if name == "run_bench":
        from trainer.commands.bench.measure import run_bench

        return run_bench
    raise AttributeError(f"module 'trainer.bench' has no attribute {name!r}")

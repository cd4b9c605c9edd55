"""The loss contract harness: point it at a loss, get a verdict per check.

    from trainer.testing import check_loss
    report = check_loss("arcface")                 # a registered name, a config node,
    report = check_loss({"name": "cosface", "margin": 0.4})   # a class or an instance
    print(report); assert report.ok, report

or from a shell: ``python -m trainer.testing loss=my_loss`` (exit status 1 on a FAIL).

Checks (each PASS, FAIL or SKIP with a one-line reason): config round-trip;
per-sample output shape and dtype; finite, non-zero gradients; batch-permutation
and label-relabelling invariance; scale invariance (only where the loss declares
``scale_invariant``); a few SGD steps on free embeddings lower the loss; all
execution modes agree (TF eager / tf.function / XLA, JAX eager / jit); float16
and bfloat16 inputs agree with float32; 2-replica MirroredStrategy equals one
device (TF only, run in a subprocess); a batch-size mismatch raises a clear error;
labels outside [0, C) raise a one-line error naming them in eager mode and give a
NaN loss in a compiled step; float16 / bfloat16 losses keep labels above 2,048
exact; gradients stay finite and within the loss's stated bound for target
cosines from -1 to 1.
"""

__all__ = ["CHECKS", "Report", "Verdict", "check_loss", "check_replicas"]


def __getattr__(name):
    # Lazy: ``python -m trainer.testing --help`` answers without importing TensorFlow.
    if name in __all__:
        from trainer.testing import harness

        return getattr(harness, name)
    raise AttributeError(f"module 'trainer.testing' has no attribute {name!r}")

"""Cross-model verification: can the embeddings of two models be compared with each other?

Held-out verification accuracy for old-vs-old, new-vs-new and old-vs-new (the
first image of a pair embedded by the old model, the second by the new one) on
the same pairs. BCT reports these numbers per epoch; ``python -m
trainer.tools.cross_model`` measures any two exports.
"""

from __future__ import annotations

from trainer.evaluation.verification import embed, sample_pairs, squared_distances, verification_metrics
from trainer.registry import ConfigError


def cross_model_verification(old_model, new_model, images, labels, pairs: int = 1000,
                             seed: int = 0, folds: int = 10) -> dict:
    """``{"old", "new", "cross"}`` k-fold accuracies on the same ``pairs`` positive and negative pairs."""
    old = embed(old_model, images)
    new = embed(new_model, images)
    index_a, index_b, issame = sample_pairs(labels, pairs, seed)

    def accuracy(embeddings_a, embeddings_b) -> float:
        distances = squared_distances(embeddings_a[index_a], embeddings_b[index_b])
        return verification_metrics(distances, issame, folds)["accuracy"]

    if old.shape[1] != new.shape[1]:  # a distance between the two needs one space
        raise ConfigError(f"the old model's embeddings have {old.shape[1]} dimensions and the new "
                         f"model's {new.shape[1]}: cross-model verification needs equal sizes")
    return {"old": accuracy(old, old), "new": accuracy(new, new), "cross": accuracy(old, new)}

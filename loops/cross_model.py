"""Cross-model verification: can embeddings of two models be compared with each other?

``python -m loops.cross_model --old A.keras --new B.keras [data overrides]`` prints held-out
verification accuracy for old-vs-old, new-vs-new and old-vs-new (gallery image embedded by
the old model, query by the new one) on the same pairs. BCT (``loops.bct``) reports the same
numbers per epoch; this measures any two exports, e.g. a model trained without BCT.
"""

from __future__ import annotations

import numpy as np

from loops.base import load_frozen_embedding_model


def cross_model_verification(old_model, new_model, images, labels, pairs: int = 1000,
                             seed: int = 0) -> dict:
    """Held-out verification for old-vs-old, new-vs-new and old-vs-new on the same pairs."""
    from trainer.evaluation.verification import embed, sample_pairs, verify_pairs

    old = embed(old_model, images)
    new = embed(new_model, images)
    index_a, index_b, issame = sample_pairs(labels, pairs, seed)
    both = np.concatenate([old, new])
    offset = len(old)
    return {"old": verify_pairs(old, index_a, index_b, issame)["accuracy"],
            "new": verify_pairs(new, index_a, index_b, issame)["accuracy"],
            # gallery image a embedded by the old model, query b by the new one
            "cross": verify_pairs(both, index_a, index_b + offset, issame)["accuracy"]}


def main(argv=None) -> int:
    """``python -m loops.cross_model --old A.keras --new B.keras [data overrides]``: cross-model accuracy."""
    import argparse
    import json

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--old", required=True, help="old exported embedding model (.keras)")
    parser.add_argument("--new", required=True, help="new exported embedding model (.keras)")
    parser.add_argument("--pairs", type=int, default=3000)
    parser.add_argument("overrides", nargs="*", help="config overrides for the data, e.g. data.image_size=32")
    args = parser.parse_args(argv)
    from trainer.config import compose
    from trainer.data.pipeline import materialise
    from trainer.registry import DATASETS

    old = load_frozen_embedding_model(args.old, "--old")
    overrides = list(args.overrides)
    if not any(o.startswith("data.image_size=") for o in overrides):  # the models' input size
        overrides.append(f"data.image_size={old.input_shape[1]}")
    cfg = compose(overrides)
    source = DATASETS.build(cfg.data)
    new = load_frozen_embedding_model(args.new, "--new", source.image_size)
    images, labels = materialise(source.heldout())
    print(json.dumps(cross_model_verification(old, new, images, labels, args.pairs)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

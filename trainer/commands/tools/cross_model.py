"""Cross-model verification of two exported embedding models.

    python -m trainer.tools.cross_model old_model=A.keras new_model=B.keras [pairs=3000] [data overrides]

Prints, as one JSON line, held-out verification accuracy for old-vs-old,
new-vs-new and old-vs-new (the first image of each pair embedded by the old
model, the second by the new one) on the same pairs: can a gallery embedded by
the old model be searched with the new one? BCT (``loop=bct``) reports the same
numbers per epoch; this measures any two exports, e.g. a model trained without
BCT. The data are the held-out identities of ``data=...`` (as for ``python -m trainer``),
at the old model's input size unless ``data.image_size`` is given.
"""

from __future__ import annotations


from trainer.commands import command_config, edge

COMMAND = "cross_model"


def body(cfg, data_overrides) -> str:
    import json

    from trainer.config import compose
    from trainer.data.pipeline import materialise
    from trainer.evaluation.cross_model import cross_model_verification
    from trainer.export.model_files import load_embedding_model
    from trainer.registry import DATASETS, ConfigError

    for role in ("old_model", "new_model"):
        if not cfg[role]:
            raise ConfigError(f"{role}= is required (an exported embedding.keras)")
    old = load_embedding_model(str(cfg.old_model), "old_model")
    overrides = list(data_overrides)
    if not any(o.startswith("data.image_size=") for o in overrides):  # the models' input size
        overrides.append(f"data.image_size={old.input_shape[1]}")
    source = DATASETS.build(compose(overrides).data)
    new = load_embedding_model(str(cfg.new_model), "new_model", source.image_size)
    heldout = source.heldout()
    if heldout is None:
        why = source.heldout_unavailable or "the data set has no held-out identities"
        raise ConfigError(f"{why}; cross-model verification compares the models on held-out "
                          "identities (data.heldout_path=... adds them)")
    images, labels = materialise(heldout)
    return json.dumps(cross_model_verification(old, new, images, labels, int(cfg.pairs)))


def run(cfg, argv) -> int:
    print(body(cfg, command_config.data_overrides(argv)))
    return 0


def main(argv=None) -> int:
    return edge.main(COMMAND, __doc__, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())

"""Cross-model verification of two exported embedding models.

    python -m trainer.tools.cross_model --old A.keras --new B.keras [--pairs 3000] [data overrides]

Prints, as one JSON line, held-out verification accuracy for old-vs-old,
new-vs-new and old-vs-new (the first image of each pair embedded by the old
model, the second by the new one) on the same pairs: can a gallery embedded by
the old model be searched with the new one? BCT (``loop=bct``) reports the same
numbers per epoch; this measures any two exports, e.g. a model trained without
BCT. The data are the config's held-out identities (``data=...`` overrides as
for ``python -m trainer``), at the old model's input size unless
``data.image_size`` is given.
"""

from __future__ import annotations

import sys


def main(argv=None) -> int:
    import argparse

    from trainer.commands.cli import run_command, start_command

    argv = sys.argv[1:] if argv is None else list(argv)
    if start_command(argv, __doc__):
        return 0
    parser = argparse.ArgumentParser(prog="python -m trainer.tools.cross_model", add_help=False)
    parser.add_argument("--old", required=True, help="old exported embedding model (.keras)")
    parser.add_argument("--new", required=True, help="new exported embedding model (.keras)")
    parser.add_argument("--pairs", type=int, default=3000)
    parser.add_argument("overrides", nargs="*", help="config overrides for the data, e.g. data.image_size=32")
    args = parser.parse_args(argv)

    def body() -> str:
        import json

        from trainer.config import compose
        from trainer.data.pipeline import materialise
        from trainer.evaluation.cross_model import cross_model_verification
        from trainer.export.model_files import load_embedding_model
        from trainer.registry import DATASETS, ConfigError

        old = load_embedding_model(args.old, "--old")
        overrides = list(args.overrides)
        if not any(o.startswith("data.image_size=") for o in overrides):  # the models' input size
            overrides.append(f"data.image_size={old.input_shape[1]}")
        source = DATASETS.build(compose(overrides).data)
        new = load_embedding_model(args.new, "--new", source.image_size)
        heldout = source.heldout()
        if heldout is None:
            why = source.heldout_unavailable or "the data set has no held-out identities"
            raise ConfigError(f"{why}; cross-model verification compares the models on held-out "
                              "identities (data.heldout_path=... adds them)")
        images, labels = materialise(heldout)
        return json.dumps(cross_model_verification(old, new, images, labels, args.pairs))

    return run_command(body)


if __name__ == "__main__":
    raise SystemExit(main())

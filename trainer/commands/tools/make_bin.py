"""Write a verification ``.bin`` from the held-out identities of a data source.

    python -m trainer.tools.make_bin output=heldout.bin                      # built-in synthetic faces
    python -m trainer.tools.make_bin output=people.bin data=folder data.path=/x data.heldout_path=/y
    python -m trainer.tools.make_bin output=h.bin pairs=3000 seed=0 format=png

Pairs are drawn exactly as the ``verification`` evaluator draws them
(``sample_pairs`` with ``pairs``/``seed``, defaults ``eval.pairs``/``eval.seed``), so
with the same settings the ``.bin`` accuracy equals the run's held-out accuracy.
PNG keeps pixels exact; ``format=jpeg`` gives files like the public sets.
"""

from __future__ import annotations

import sys

USAGE = ("usage: python -m trainer.tools.make_bin output=<file.bin> [pairs=N] [seed=S] "
         "[format=png|jpeg] [data=<source> data.<key>=<value> ...]")


def make_bin(source, output: str, pairs: int = 3000, seed: int = 0, image_format: str = "png") -> dict:
    """Write ``output`` from ``source.heldout()``; returns a small summary."""
    from trainer.data.errors import DataError
    from trainer.data.pipeline import materialise
    from trainer.evaluation.verification import sample_pairs, write_bin

    heldout = source.heldout()
    if heldout is None:
        raise DataError(f"{type(source).__name__} has no held-out identities (e.g. data.heldout_path "
                        "for folders); a .bin needs people not trained on")
    images, labels = materialise(heldout)
    index_a, index_b, issame = sample_pairs(labels, int(pairs), int(seed))
    write_bin(output, images[index_a], images[index_b], issame, image_format)
    return {"output": output, "pairs": int(len(issame)), "identities": int(len(set(labels.tolist()))),
            "image_size": int(images.shape[1])}


def main(argv=None) -> int:
    from trainer.commands.cli import run_command, split_arguments, start_command

    argv = sys.argv[1:] if argv is None else argv
    if start_command(argv, f"{__doc__.strip()}\n\n{USAGE}"):
        return 0
    from trainer.config import compose
    from trainer.registry import DATASETS, ConfigError

    def body():
        # Our options; everything else is a trainer override choosing the data (data=..., data.x=...).
        options, overrides = split_arguments(argv,
                                             ("output", "pairs", "seed", "format"), USAGE,
                                             pass_through=lambda key: True)
        if not options.get("output"):
            raise ConfigError(f"output= is required; {USAGE}")
        cfg = compose(overrides)
        source = DATASETS.build(cfg.data)
        summary = make_bin(source, options["output"],
                           pairs=int(options.get("pairs") or cfg.eval.get("pairs", 3000)),
                           seed=int(options.get("seed") or cfg.eval.get("seed", 0)),
                           image_format=options.get("format") or "png")
        return (f"wrote {summary['output']}: {summary['pairs']} pairs of {summary['image_size']} px "
                f"images from {summary['identities']} held-out identities")

    return run_command(body)


if __name__ == "__main__":
    sys.exit(main())

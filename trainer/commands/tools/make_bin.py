"""Write a verification ``.bin`` from the held-out identities of a data source.

    python -m trainer.tools.make_bin output=heldout.bin                      # built-in synthetic faces
    python -m trainer.tools.make_bin output=people.bin data=folder data.path=/x data.heldout_path=/y
    python -m trainer.tools.make_bin output=h.bin pairs=3000 seed=0 format=png

Pairs are drawn exactly as the ``verification`` evaluator draws them
(``sample_pairs`` with ``pairs``/``seed``, defaults from ``conf/eval/verification.yaml``), so
with the same settings the ``.bin`` accuracy equals the run's held-out accuracy.
PNG keeps pixels exact; ``format=jpeg`` gives files like the public sets.
"""

from __future__ import annotations

import sys

from trainer.commands import command_config, edge

COMMAND = "make_bin"


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


def run(cfg, argv) -> int:
    from trainer.commands.outputs import output_file
    from trainer.config import compose
    from trainer.registry import DATASETS, ConfigError

    if not cfg.output:
        raise ConfigError("output= is required (the .bin to write)")
    output_file(cfg.output)
    source = DATASETS.build(compose(command_config.data_overrides(argv)).data)
    summary = make_bin(source, str(cfg.output), pairs=int(cfg.pairs), seed=int(cfg.seed),
                       image_format=str(cfg.format))
    print(f"wrote {summary['output']}: {summary['pairs']} pairs of {summary['image_size']} px "
          f"images from {summary['identities']} held-out identities")
    return 0


def main(argv=None) -> int:
    return edge.main(COMMAND, __doc__, run, argv)


if __name__ == "__main__":
    sys.exit(main())

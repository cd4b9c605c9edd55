"""``python -m trainer.data.align input=<folder of photos> output=<folder> [key=value ...]``

Finds every face (dlib, ``pip install "facetrain[align]"``), estimates its 5 landmarks and
warps it onto insightface's ArcFace template at ``data.image_size`` (default 112). The
output mirrors the input's folders (identity folders stay a ``data=folder`` training set;
``faces=largest`` keeps one face per photo) with one crop per face, ``<photo>_<k>.jpg``,
and ``manifest.jsonl`` (source photo, box, landmarks, detector score per face). Parallel
over photos (``workers=``); a rerun skips photos already done; unreadable photos are
counted and named. Needs dlib: pip install "facetrain[align]". docs/albums.md walks through it.
"""

from __future__ import annotations

import os
import sys

from trainer.commands import edge

COMMAND = "align"


def run(cfg, argv) -> int:
    # Aligning needs neither Keras nor TensorFlow: nothing here imports them, so the worker
    # processes start in a second, not ten.
    from trainer.faces.align_folder import AlignSettings, align_folder
    from trainer.registry import ConfigError

    if not cfg.input or not cfg.output:
        raise ConfigError("give both input=<folder of photos> and output=<folder for the crops>")
    edge.log_to(os.path.join(str(cfg.output), f"{COMMAND}.log"))
    counts = align_folder(str(cfg.input), str(cfg.output), AlignSettings.from_config(cfg),
                          workers=cfg.workers, progress=bool(cfg.progress))
    print("\n".join(counts.lines() + [f"crops and manifest.jsonl: {cfg.output}"]))
    return 0


def main(argv=None) -> int:
    return edge.main(COMMAND, __doc__, run, argv)


if __name__ == "__main__":
    sys.exit(main())

"""``python -m trainer.data.align input=<folder of photos> output=<folder> [key=value ...]``

Finds every face (dlib, ``pip install "facetrain[align]"``), estimates its 5 landmarks and
warps it onto insightface's ArcFace template at ``data.image_size`` (default 112). The
output mirrors the input's folders (identity folders stay a ``data=folder`` training set;
``faces=largest`` keeps one face per photo) with one crop per face, ``<photo>_<k>.jpg``,
and ``manifest.jsonl`` (source photo, box, landmarks, detector score per face). Parallel
over photos (``workers=``); a rerun skips photos already done; unreadable photos are
counted and named. Keys: conf/align.yaml. A mistake in the command is one line, exit 2.
"""

from __future__ import annotations

import sys


def settings_from(cfg):
    """The alignment settings of an ``align`` config (also the album command's)."""
    from trainer.faces.align_folder import AlignSettings

    return AlignSettings(image_size=int(cfg.data.image_size), faces=str(cfg.faces), detector=str(cfg.detector),
                         upsample=int(cfg.upsample),
                         detect_size=None if cfg.detect_size is None else int(cfg.detect_size),
                         min_score=float(cfg.min_score), min_size=float(cfg.min_size),
                         format=str(cfg.format), quality=int(cfg.quality))


def main(argv=None) -> int:
    from trainer.commands.cli import HELP_FLAGS, run_command

    argv = sys.argv[1:] if argv is None else argv
    if any(argument in HELP_FLAGS for argument in argv):
        print(__doc__.strip())
        return 0
    # No start_command: it loads Keras for a quiet console, and aligning needs neither Keras
    # nor TensorFlow (the worker processes start several seconds sooner without them).

    def body():
        from trainer.config import compose
        from trainer.faces.align_folder import align_folder
        from trainer.registry import ConfigError

        cfg = compose(list(argv), config_name="align")
        if not cfg.input or not cfg.output:
            raise ConfigError("give both input=<folder of photos> and output=<folder for the crops>")
        counts = align_folder(str(cfg.input), str(cfg.output), settings_from(cfg),
                              workers=cfg.workers, progress=bool(cfg.progress))
        return "\n".join(counts.lines() + [f"crops and manifest.jsonl: {cfg.output}"])

    return run_command(body)


if __name__ == "__main__":
    sys.exit(main())

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


def main(argv=None) -> int:
    from trainer.commands import command_config, edge

    process = argv is None
    argv = sys.argv[1:] if argv is None else list(argv)
    if command_config.answered(argv, "align", __doc__):
        return 0
    # Aligning needs neither Keras nor TensorFlow (the worker processes start several seconds
    # sooner without them), and nothing here imports them.

    def body() -> int:
        from trainer.faces.align_folder import AlignSettings, align_folder
        from trainer.registry import ConfigError

        cfg = command_config.parse("align", argv)
        if not cfg.input or not cfg.output:
            raise ConfigError("give both input=<folder of photos> and output=<folder for the crops>")
        edge.log_to(f"{cfg.output}/align.log")
        counts = align_folder(str(cfg.input), str(cfg.output), AlignSettings.from_config(cfg),
                              workers=cfg.workers, progress=bool(cfg.progress))
        print("\n".join(counts.lines() + [f"crops and manifest.jsonl: {cfg.output}"]))
        return 0

    return edge.run("align", body, process)


if __name__ == "__main__":
    sys.exit(main())

"""``python -m trainer.album photos=<folder> model=<embedding.keras> [old_model=<embedding.keras>] [key=value ...]``

Sorts a family's photos into per-person albums, as the product does: finds and aligns every
face (as ``python -m trainer.data.align``, into ``<output>/albums/faces/``, resumed on a
rerun), embeds the faces with ``model``, and clusters each family (a sub-folder of
``photos``, or the whole folder) with the evaluation's clustering. Writes ``albums.json``
(each person's photos and faces) and ``albums/index.html`` (one row of faces per person,
linked to the photos). With ``old_model=``, the old model's albums stand beside the new
one's, with the release gate's breakage (mixed, split, disappeared) highlighted.
Also takes the detection keys of python -m trainer.data.align (conf/align.yaml: faces=,
detector=, upsample=, detect_size=, min_score=, min_size=, workers=, progress=,
data.image_size=). docs/albums.md walks through it.
"""

from __future__ import annotations

import os
import sys

from trainer.commands import edge

COMMAND = "album"

PAGE = os.path.join("albums", "index.html")
FACES = os.path.join("albums", "faces")


def summary_lines(report: dict) -> list[str]:
    lines = []
    for family in report["families"]:
        sizes = ", ".join(str(len(album["faces"])) for album in family["albums"])
        lines.append(f"{family['family'] or 'all photos'}: {len(family['albums'])} albums "
                     f"({sizes or 'none'} faces), {len(family['unsorted'])} faces unsorted")
    if "old" in report:
        rates = report["old"]["breakage_old_to_new"]
        lines.append(f"old model's {rates['albums']} albums: {rates['mixed']} mixed, {rates['split']} split, "
                     f"{rates['disappeared']} disappeared")
    return lines


def run(cfg, argv) -> int:
    """The album run: align, embed, cluster each family, write albums.json and the page."""
    from trainer.faces.align_folder import AlignSettings, align_folder
    from trainer.io import write_json
    from trainer.registry import ConfigError

    if not cfg.photos or not cfg.model:
        raise ConfigError("give photos=<folder of photos> and model=<embedding.keras>")
    for key in ("model", "old_model"):
        if cfg[key] and not os.path.exists(str(cfg[key])):
            raise ConfigError(f"{key}={cfg[key]} does not exist: point it at an exported model, "
                              "e.g. runs/<name>/export/embedding.keras")
    output = str(cfg.output)
    edge.log_to(os.path.join(output, f"{COMMAND}.log"))
    aligned = os.path.join(output, FACES)
    # Align before Keras is loaded: the worker processes start without TensorFlow.
    counts = align_folder(str(cfg.photos), aligned, AlignSettings.from_config(cfg), workers=cfg.workers,
                          progress=bool(cfg.progress))
    print("\n".join(counts.lines()))
    from trainer.evaluation.album_page import write_album_page
    from trainer.evaluation.photo_albums import album_report

    report = album_report(str(cfg.photos), aligned, str(cfg.model), cfg.threshold,
                          old_model=str(cfg.old_model) if cfg.old_model else None,
                          old_threshold=cfg.old_threshold, linkage=str(cfg.linkage),
                          min_album=int(cfg.min_album), batch_size=int(cfg.batch_size))
    write_json(os.path.join(output, "albums.json"), report)
    page = write_album_page(report, os.path.join(output, PAGE))
    print("\n".join(summary_lines(report) + [f"albums: {os.path.join(output, 'albums.json')}",
                                             f"page: {page}"]))
    return 0


def main(argv=None) -> int:
    return edge.main(COMMAND, __doc__, run, argv)


if __name__ == "__main__":
    sys.exit(main())

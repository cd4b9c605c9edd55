"""Evaluate a saved embedding model: ``.bin`` sets, an image folder, albums, a model update.

    python -m trainer.evaluate model_path=runs/x/export/embedding.keras bin_files=[lfw.bin,agedb_30.bin]
    python -m trainer.evaluate model_path=... folder=/data/people pairs=3000 seed=0
    python -m trainer.evaluate model_path=... album=true                     # built-in held-out families
    python -m trainer.evaluate model_path=... album=true data=folder data.path=/p data.families_file=f.csv
    python -m trainer.evaluate model_path=new.keras old_model_path=old.keras album=true

Writes ``report.json``, ``roc.png`` and ``summary.html`` to ``output`` (default:
``evaluation/`` beside the model's folder). ``data=...``/``data.<key>=...`` pick
the data set for albums as in training; its image size follows the model.
"""

from __future__ import annotations

import html
import json
import os
import sys

USAGE = ("usage: python -m trainer.evaluate model_path=<model.keras> [bin_files=[a.bin,...]] "
         "[folder=<identity folders>] [pairs=3000] [seed=0] [album=true] [old_model_path=<model.keras>] "
         "[threshold=auto|0.5] [linkage=average] [output=<dir>] [data=<source> data.<key>=...]")
DEFAULTS = {"model_path": None, "bin_files": [], "folder": None, "pairs": 3000, "seed": 0, "folds": 10,
            "album": False, "old_model_path": None, "threshold": "auto", "linkage": "average",
            "period_fraction": 0.5, "min_album": 2, "batch_size": 256, "output": None}


def load_model(path: str):
    """An exported embedding model; any failure is one line (a ``ConfigError``)."""
    from trainer.export import load_embedding_model  # the one loader of exported models

    return load_embedding_model(path, "model_path")


def evaluate(options: dict, data_overrides=()) -> dict:
    """Run every evaluation the options ask for; returns the report (also written to disk)."""
    from trainer.data.errors import DataError
    from trainer.evaluation import verification as v

    o = {**DEFAULTS, **options}
    if not o["model_path"]:
        raise DataError("model_path= is required (an exported embedding.keras)")
    model = load_model(str(o["model_path"]))
    size = int(model.input_shape[1])
    output = o["output"] or os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(
        str(o["model_path"])))), "evaluation")
    report = {"model_path": str(o["model_path"]), "image_size": size, "verification": {}}
    curves = {}
    for path in o["bin_files"] or []:
        metrics, curves[v.bin_name(path)] = v.evaluate_bin(model, str(path), int(o["folds"]),
                                                           int(o["batch_size"]), with_curve=True)
        report["verification"][v.bin_name(path)] = metrics
    if o["folder"]:
        name = os.path.basename(os.path.normpath(str(o["folder"])))
        metrics, curves[name] = folder_verification(model, str(o["folder"]), int(o["pairs"]), int(o["seed"]),
                                                    int(o["folds"]), int(o["batch_size"]))
        report["verification"][name] = metrics
    if _truthy(o["album"]) or o["old_model_path"]:
        report.update(album_evaluation(model, o, size, data_overrides))
    os.makedirs(output, exist_ok=True)
    if curves:
        report["roc_png"] = v.plot_roc(curves, os.path.join(output, "roc.png"))
    from trainer.atomic import write_json, write_text

    write_json(os.path.join(output, "report.json"), report)
    write_text(os.path.join(output, "summary.html"), summary_html(report))
    report["output"] = output
    return report


def folder_verification(model, folder: str, pairs: int, seed: int, folds: int, batch_size: int):
    """Seeded positive/negative pairs from ``folder/<identity>/*`` → (metrics, ROC curve)."""
    from trainer.data.pipeline import materialise
    from trainer.data.sources.folder import FolderSource
    from trainer.evaluation import verification as v

    source = FolderSource(path=folder, image_size=int(model.input_shape[1]), resize=True, on_corrupt="skip")
    images, labels = materialise(source.train())
    index_a, index_b, issame = v.sample_pairs(labels, pairs, seed)
    embeddings, xnorm = v.embed_with_norm(v.unnormalised(model), images, batch_size)
    distances = v.squared_distances(embeddings[index_a], embeddings[index_b])
    return v.verification_metrics(distances, issame, folds, xnorm), v.roc_curve(distances, issame)


def album_evaluation(model, o: dict, size: int, data_overrides) -> dict:
    from trainer.config import compose
    from trainer.evaluation import album
    from trainer.evaluation.verification import embed
    from trainer.registry import DATASETS

    overrides = list(data_overrides)
    if not any(x.startswith("data.image_size=") for x in overrides):
        overrides.append(f"data.image_size={size}")
    cfg = compose(overrides)
    images, labels, families = album.album_examples(DATASETS.build(cfg.data))
    embeddings = embed(model, images, int(o["batch_size"]))
    threshold = album.resolve_threshold(o["threshold"], embeddings, labels, int(o["seed"]))
    result = {"album": album.album_report(embeddings, labels, families, threshold, o["linkage"],
                                          float(o["period_fraction"]), int(o["min_album"]))}
    if o["old_model_path"]:
        old = load_model(str(o["old_model_path"]))
        if int(old.input_shape[1]) != size:
            from trainer.data.errors import DataError

            raise DataError(f"old model takes {old.input_shape[1]} px images, the new one {size} px; "
                            "the model-update check needs the same input size")
        old_embeddings = embed(old, images, int(o["batch_size"]))
        result["model_update"] = album.model_update_report(
            old_embeddings, embeddings, labels, families, threshold, o["linkage"],
            int(o["min_album"]), int(o["pairs"]), int(o["seed"]), int(o["folds"]))
        result["model_update"]["old_model_path"] = str(o["old_model_path"])
    return result


def summary_html(report: dict) -> str:
    """A one-page summary: verification table, album scores, ROC image."""
    rows = []
    for name, m in report.get("verification", {}).items():
        tars = ", ".join(f"{k}: {'-' if t is None else f'{t:.4f}'}" for k, t in m["tar_at_far"].items())
        rows.append(f"<tr><td>{html.escape(name)}</td><td>{m['accuracy']:.4f} ± {m['accuracy_std']:.4f}</td>"
                    f"<td>{m['roc_auc']:.4f}</td><td>{tars}</td><td>{m.get('xnorm', float('nan')):.2f}</td>"
                    f"<td>{m['pairs']}</td></tr>")
    parts = [f"<html><head><meta charset='utf-8'><title>evaluation</title></head><body>",
             f"<h1>{html.escape(report['model_path'])}</h1>"]
    if rows:
        parts.append("<h2>Verification</h2><table border=1 cellpadding=4><tr><th>set</th><th>accuracy</th>"
                     "<th>ROC AUC</th><th>TAR at FAR</th><th>XNorm</th><th>pairs</th></tr>"
                     + "".join(rows) + "</table>")
    if report.get("roc_png"):
        parts.append("<p><img src='roc.png' alt='ROC curves'></p>")
    if "album" in report:
        a = report["album"]
        parts.append(f"<h2>Albums</h2><p>{a['families']} families, {a['images']} photos, "
                     f"{a['linkage']} linkage at cosine distance {a['threshold']}</p>"
                     "<table border=1 cellpadding=4><tr><th>period</th><th>pairwise F1</th><th>BCubed F</th>"
                     "<th>clusters / identities</th><th>mixed</th><th>disappeared</th><th>split</th></tr>")
        for period in ("period1", "period2_incremental", "period2_full"):
            p = a[period]
            b = p.get("breakage", {})
            rates = "".join(f"<td>{b[k]:.3f}</td>" if k in b else "<td>-</td>"
                            for k in ("mixed_rate", "disappeared_rate", "split_rate"))
            parts.append(f"<tr><td>{period}</td><td>{p['pairwise_f1']:.4f}</td><td>{p['bcubed_f']:.4f}</td>"
                         f"<td>{p['clusters']} / {p['identities']}</td>{rates}</tr>")
        parts.append("</table>")
    if "model_update" in report:
        parts.append("<h2>Model update</h2><pre>" + html.escape(json.dumps(report["model_update"], indent=2))
                     + "</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _truthy(value) -> bool:
    return str(value).lower() in ("1", "true", "yes", "on")


def parse(argv) -> tuple[dict, list[str]]:
    from omegaconf import OmegaConf

    from trainer.registry import ConfigError, did_you_mean, to_plain

    ours, data = [], []
    for arg in argv:
        key, sep, _ = arg.partition("=")
        if not sep:
            raise ConfigError(f"unexpected argument {arg!r}; {USAGE}")
        if key == "data" or key.startswith("data."):
            data.append(arg)
        elif key in DEFAULTS:
            ours.append(arg)
        else:
            raise ConfigError(f"unknown option '{key}': {did_you_mean(key, DEFAULTS)}")
    return to_plain(OmegaConf.from_dotlist(ours)), data


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    from trainer.registry import ConfigError

    try:
        options, data = parse(argv)
        report = evaluate(options, data)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for name, m in report["verification"].items():
        tar = m["tar_at_far"].get("1e-03")
        print(f"{name}: accuracy {m['accuracy']:.4f} ± {m['accuracy_std']:.4f}, AUC {m['roc_auc']:.4f}, "
              f"TAR@FAR=1e-3 {'-' if tar is None else f'{tar:.4f}'}, XNorm {m['xnorm']:.2f} ({m['pairs']} pairs)")
    if "album" in report:
        for period in ("period1", "period2_incremental", "period2_full"):
            p = report["album"][period]
            b = p.get("breakage")
            extra = (f", mixed {b['mixed_rate']:.3f} disappeared {b['disappeared_rate']:.3f} "
                     f"split {b['split_rate']:.3f}") if b else ""
            print(f"album {period}: pairwise F1 {p['pairwise_f1']:.4f}, BCubed F {p['bcubed_f']:.4f}, "
                  f"{p['clusters']} clusters for {p['identities']} identities{extra}")
    if "model_update" in report:
        u = report["model_update"]
        print(f"model update: verification old/old {u['verification_old_old']}, new/new {u['verification_new_new']}, "
              f"old/new {u['verification_old_new']}; breakage {u['breakage_old_to_new']}")
    print(f"report: {os.path.join(report['output'], 'report.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

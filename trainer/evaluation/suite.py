"""Evaluate one embedding model on everything a command asks for: ``.bin`` sets, an image folder,
albums, a model update, IJB and retrieval; writes ``report.json``, ``roc.png``, ``scores.png`` (the
positive and negative score histograms) and ``summary.html``, which shows them by relative path.

``python -m trainer.evaluate`` (``trainer/commands/evaluate.py``) is its command line; the
retrieval callback reuses ``identity_folder``.
"""

from __future__ import annotations

import html
import json
import os

import numpy as np

def _command_defaults() -> dict:
    """The evaluate command's keys and defaults, read from the YAML that declares them.

    ``conf/evaluate.yaml`` over ``conf/eval/verification.yaml`` (pairs, folds, seed, batch_size,
    bin_files as the run measures them): written once, there. ``model``/``old_model`` are
    ``model_path``/``old_model_path`` here.
    """
    import importlib.resources

    from omegaconf import OmegaConf

    conf = importlib.resources.files("conf")
    values = OmegaConf.to_container(OmegaConf.merge(
        *(OmegaConf.create(conf.joinpath(name).read_text(encoding="utf-8"))
          for name in ("eval/verification.yaml", "evaluate.yaml"))))
    for key in ("defaults", "name", "heldout"):
        values.pop(key, None)
    return library_options(values)


def library_options(values: dict) -> dict:
    """The command's ``model``/``old_model`` as this module's ``model_path``/``old_model_path``."""
    values = dict(values)
    for key in ("model", "old_model"):
        if key in values:
            values[f"{key}_path"] = values.pop(key)
    return values


DEFAULTS = _command_defaults()
# ``ijb=<root>`` is ``ijb.root``; the other keys tune the protocol (published setting by default:
# mirror-summed features, un-normalised face features weighted by detector score, and the numbers
# computed as insightface's scripts compute them; ``protocol: exact`` for textbook definitions).
IJB_DEFAULTS = {"root": None, "subset": "IJBC", "flip": True, "detector_score": True, "norm_score": True,
                "protocol": "insightface"}


def load_model(path: str, role: str = "model"):
    """An exported embedding model; any failure is one line (a ``ConfigError``)."""
    from trainer.export.model_files import load_embedding_model  # the one loader of exported models

    return load_embedding_model(path, role)


def evaluate(options: dict, data_overrides=()) -> dict:
    """Run every evaluation the options ask for; returns the report (also written to disk)."""
    from trainer.data.errors import DataError
    from trainer.evaluation import verification as v

    o = {**DEFAULTS, **options}
    if not o["model_path"]:
        raise DataError("model= is required (an exported embedding.keras)")
    model = load_model(str(o["model_path"]))
    size = int(model.input_shape[1])
    output = o["output"] or os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(
        str(o["model_path"])))), "evaluation")
    report = {"model_path": str(o["model_path"]), "image_size": size, "verification": {}}
    scored = {}  # name -> ScoredPairs: the ROC and the score histograms are drawn from them
    for path in o["bin_files"] or []:
        metrics, scored[v.bin_name(path)] = v.evaluate_bin(model, str(path), int(o["folds"]),
                                                           int(o["batch_size"]), with_scores=True)
        report["verification"][v.bin_name(path)] = metrics
    if o["folder"]:
        name = os.path.basename(os.path.normpath(str(o["folder"])))
        metrics, scored[name] = folder_verification(model, str(o["folder"]), int(o["pairs"]), int(o["seed"]),
                                                    int(o["folds"]), int(o["batch_size"]), str(o["model_path"]))
        report["verification"][name] = metrics
    if _truthy(o["album"]) or o["old_model_path"]:
        report.update(album_evaluation(model, o, size, data_overrides))
    if _truthy(o["retrieval"]):
        report["retrieval"] = retrieval_evaluation(model, o, size, data_overrides)
    ijb_options = ijb_settings(o["ijb"])
    ijb_curve = None
    if ijb_options["root"]:
        report["ijb"], ijb_curve = ijb_evaluation(model, ijb_options, int(o["batch_size"]))
    os.makedirs(output, exist_ok=True)
    if scored:
        from trainer.evaluation.score_plots import plot_score_histograms

        report["roc_png"] = v.plot_roc({name: pairs.roc() for name, pairs in scored.items()},
                                       os.path.join(output, "roc.png"))
        report["scores_png"] = plot_score_histograms(
            scored, os.path.join(output, "scores.png"),
            {name: m["threshold"] for name, m in report["verification"].items()})
    if ijb_curve is not None:
        from trainer.evaluation.ijb import plot_rocs

        report["ijb"]["roc_png"] = plot_rocs({f"{report['ijb']['subset']} 1:1": ijb_curve},
                                             os.path.join(output, "ijb_roc.png"))
    from trainer.io import write_json, write_text

    write_json(os.path.join(output, "report.json"), report)
    write_text(os.path.join(output, "summary.html"), summary_html(report))
    report["output"] = output
    return report


def folder_verification(model, folder: str, pairs: int, seed: int, folds: int, batch_size: int,
                        model_path: str | None = None):
    """Seeded distinct positive/negative pairs from ``folder/<identity>/*`` → (metrics, ScoredPairs).

    Warns (and notes in the metrics) when the folder holds identities the model was trained on.
    """
    from trainer.data.pipeline import materialise
    from trainer.data.sources.folder import FolderSource
    from trainer.evaluation import training_identities
    from trainer.evaluation import verification as v

    source = FolderSource(path=folder, image_size=int(model.input_shape[1]), resize=True, on_corrupt="skip",
                          holdout=0)
    warning = training_identities.overlap_warning(model_path, folder, source.identities) if model_path else None
    if warning:
        print(warning, flush=True)
    images, labels = materialise(source.train())
    try:
        metrics, scored = v.heldout_verification(model, images, labels, pairs, seed, folds, batch_size,
                                                 with_scores=True)
    except v.PairsError as error:  # the folder is the user's to fix: say which one
        raise v.PairsError(f"folder={folder}: {error}") from None
    if warning:
        metrics["warning"] = warning
    return metrics, scored


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
        old = load_model(str(o["old_model_path"]), "old_model")
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


def ijb_settings(value) -> dict:
    """``ijb=<root>`` (a string) or ``{"root": ..., "subset": ...}`` → every IJB setting."""
    from trainer.registry import ConfigError, did_you_mean

    value = {} if value in (None, "") else ({"root": value} if isinstance(value, str) else dict(value))
    for key in value:
        if key not in IJB_DEFAULTS:
            raise ConfigError(f"unknown option 'ijb.{key}': {did_you_mean(key, IJB_DEFAULTS)}")
    settings = {**IJB_DEFAULTS, **value}
    # The command passes every key (its defaults included): only a changed one needs the root.
    if any(key != "root" and value[key] != IJB_DEFAULTS[key] for key in value) and not settings["root"]:
        raise ConfigError("ijb.* options need the set's folder: ijb=<root of loose_crop/ and meta/>")
    return settings


def ijb_evaluation(model, settings: dict, batch_size: int):
    """IJB 1:1 and 1:N report, and the 1:1 ROC (FAR, TAR) for the plot."""
    from trainer.evaluation.ijb import evaluate_ijb

    return evaluate_ijb(model, str(settings["root"]), str(settings["subset"]), batch_size,
                        flip=_truthy(settings["flip"]), detector_score=_truthy(settings["detector_score"]),
                        norm_score=_truthy(settings["norm_score"]), with_curve=True,
                        protocol=str(settings["protocol"]))


def retrieval_evaluation(model, o: dict, size: int, data_overrides) -> dict:
    """Retrieval metrics of ``folder`` (or the data set's held-out identities) as its own reference,
    or against ``retrieval_gallery`` (identities matched by folder name)."""
    from trainer.data.errors import DataError
    from trainer.evaluation.retrieval import retrieval_metrics
    from trainer.evaluation.verification import embed

    batch_size, ks = int(o["batch_size"]), [int(k) for k in (o["retrieval_k"] or [1])]
    if o["folder"]:
        names, images, labels = identity_folder(str(o["folder"]), size)
        queries = f"folder {o['folder']}"
    else:
        if o["retrieval_gallery"]:
            raise DataError("retrieval_gallery= needs folder= for the queries (identities are matched by name)")
        images, labels = heldout_examples(size, data_overrides)
        queries = "held-out identities of the data set"
    embeddings = embed(model, images, batch_size)
    if not o["retrieval_gallery"]:
        result = retrieval_metrics(embeddings, labels, ks=ks)
    else:
        gallery_names, gallery_images, gallery_labels = identity_folder(str(o["retrieval_gallery"]), size)
        # The same person may hold different label numbers in the two folders: relabel by name.
        index = {name: i for i, name in enumerate(names)}
        relabel = [index.setdefault(name, len(index)) for name in gallery_names]
        result = retrieval_metrics(embeddings, labels, embed(model, gallery_images, batch_size),
                                   np.asarray(relabel)[gallery_labels], ks=ks)
        result["gallery"] = str(o["retrieval_gallery"])
    result["query_set"] = queries
    return result


def identity_folder(folder: str, size: int):
    """(identity names, images resized to ``size``, labels) of ``folder/<identity>/*``."""
    from trainer.data.pipeline import materialise
    from trainer.data.sources.folder import FolderSource

    # Every identity of an evaluation folder is evaluated: none is held out of "training".
    source = FolderSource(path=folder, image_size=size, resize=True, on_corrupt="skip", holdout=0)
    images, labels = materialise(source.train())
    return source.identities, images, labels


def heldout_examples(size: int, data_overrides):
    """(images, labels) of the held-out identities of ``data=...`` (as in training) at ``size``."""
    from trainer.config import compose
    from trainer.data.errors import DataError
    from trainer.data.pipeline import materialise
    from trainer.registry import DATASETS

    overrides = list(data_overrides)
    if not any(x.startswith("data.image_size=") for x in overrides):
        overrides.append(f"data.image_size={size}")
    heldout = DATASETS.build(compose(overrides).data).heldout()
    if heldout is None:
        raise DataError("this data set has no held-out identities; give folder=<identity folders>")
    return materialise(heldout)


# Marks an image that did not load (and counts those that did, for a reader and for tests).
IMAGE_CHECK = """window.addEventListener('load', function () {
  var loaded = 0;
  document.querySelectorAll('img').forEach(function (img) {
    if (img.complete && img.naturalWidth > 0) { loaded++; }
    else { img.insertAdjacentText('afterend', '(missing: ' + img.getAttribute('src') + ')'); }
  });
  document.body.setAttribute('data-images-loaded', loaded);
});"""


def _image(report_path: str | None, alt: str) -> str:
    """An ``<img>`` of a picture written beside the page, by relative path (the folder can move)."""
    if not report_path:
        return ""
    return f"<p><img src='{html.escape(os.path.basename(report_path))}' alt='{alt}'></p>"


def summary_html(report: dict) -> str:
    """A one-page summary: verification table, ROC and score histograms, albums, IJB, retrieval."""
    rows = []
    for name, m in report.get("verification", {}).items():
        tars = ", ".join(f"{k}: {'-' if t is None else f'{t:.4f}'}" for k, t in m["tar_at_far"].items())
        rows.append(f"<tr><td>{html.escape(name)}</td><td>{m['accuracy']:.4f} ± {m['accuracy_std']:.4f}</td>"
                    f"<td>{m['roc_auc']:.4f}</td><td>{tars}</td><td>{m.get('xnorm', float('nan')):.2f}</td>"
                    f"<td>{m['pairs']}</td></tr>")
    parts = [f"<html><head><meta charset='utf-8'><title>evaluation</title><script>{IMAGE_CHECK}</script>"
             "</head><body>",
             f"<h1>{html.escape(report['model_path'])}</h1>"]
    if rows:
        parts.append("<h2>Verification</h2><table border=1 cellpadding=4><tr><th>set</th><th>accuracy</th>"
                     "<th>ROC AUC</th><th>TAR at FAR</th><th>XNorm</th><th>pairs</th></tr>"
                     + "".join(rows) + "</table>")
    parts.append(_image(report.get("roc_png"), "ROC curves"))
    parts.append(_image(report.get("scores_png"), "score histograms: same person vs different people"))
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
    if "ijb" in report:
        parts.append(_ijb_html(report["ijb"]))
    if "retrieval" in report:
        parts.append(_retrieval_html(report["retrieval"]))
    parts.append("</body></html>")
    return "\n".join(parts)


def _number(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def _ijb_html(ijb: dict) -> str:
    one = ijb["verification"]
    heads = "".join(f"<th>{far}</th>" for far in one["tar_at_far"])
    cells = "".join(f"<td>{_number(t)}</td>" for t in one["tar_at_far"].values())
    parts = [f"<h2>{html.escape(ijb['subset'])} (IJB)</h2><p>{ijb['templates']} templates, {ijb['faces']} faces, "
             f"{one['positives']} positive and {one['negatives']} negative template pairs</p>",
             f"<h3>1:1 TAR at FAR</h3><table border=1 cellpadding=4><tr>{heads}<th>ROC AUC</th></tr>"
             f"<tr>{cells}<td>{_number(one['roc_auc'])}</td></tr></table>"]
    parts.append(_image(ijb.get("roc_png"), "IJB ROC"))
    if one.get("notes"):
        parts.append("<p>" + "<br>".join(html.escape(note) for note in one["notes"]) + "</p>")
    if "identification" in ijb:
        rows = "".join(f"<tr><td>{html.escape(name)}</td><td>{html.escape(text)}</td></tr>"
                       for name, text in _identification_texts(ijb["identification"]))
        parts.append(f"<h3>1:N</h3><table border=1 cellpadding=4><tr><th>gallery</th><th>numbers</th></tr>"
                     f"{rows}</table>")
    return "".join(parts)


def _identification_texts(identification: dict):
    """(gallery, its numbers in words) for each 1:N entry: a gallery, the mean, or the joined galleries."""
    for name, r in identification.items():
        if "skipped" in r:
            yield name, f"skipped: {r['skipped']}"
            continue
        ranks = ", ".join(f"rank-{k} {_number(x)}" for k, x in r["rank"].items())
        rates = ", ".join([*(f"TPIR@FPIR={f} {_number(x)}" for f, x in r.get("tpir_at_fpir", {}).items()),
                           *(f"TPR@FAR={f} {_number(x)}" for f, x in r.get("tpr_at_far", {}).items())])
        yield name, f"{ranks}, {rates}"


def _retrieval_html(r: dict) -> str:
    recalls = "".join(f"<th>recall@{k}</th>" for k in r["recall_at_k"])
    values = "".join(f"<td>{_number(x)}</td>" for x in r["recall_at_k"].values())
    against = f"gallery {r['gallery']}" if r.get("gallery") else "itself (self-matches excluded)"
    return (f"<h2>Retrieval</h2><p>{r['queries']} queries from {html.escape(r['query_set'])} against "
            f"{html.escape(against)}, {r['references']} references; {r['skipped']} queries had nothing to find</p>"
            f"<table border=1 cellpadding=4><tr><th>precision@1</th><th>R-precision</th><th>MAP@R</th>{recalls}</tr>"
            f"<tr><td>{_number(r['precision_at_1'])}</td><td>{_number(r['r_precision'])}</td>"
            f"<td>{_number(r['map_at_r'])}</td>{values}</tr></table>")


def _truthy(value) -> bool:
    return str(value).lower() in ("1", "true", "yes", "on")


def result_lines(report: dict) -> list[str]:
    """The console lines of the IJB and retrieval results."""
    lines = []
    if "ijb" in report:
        ijb = report["ijb"]
        tars = ", ".join(f"{far} {_number(t)}" for far, t in ijb["verification"]["tar_at_far"].items())
        lines.append(f"{ijb['subset']} 1:1 TAR at FAR: {tars} ({ijb['verification']['pairs']} pairs, "
                     f"protocol {ijb.get('protocol', 'exact')})")
        lines.extend(f"  note: {note}" for note in ijb["verification"].get("notes", []))
        for name, text in _identification_texts(ijb.get("identification", {})):
            lines.append(f"{ijb['subset']} 1:N {name}: {text}")
    if "retrieval" in report:
        r = report["retrieval"]
        recalls = ", ".join(f"recall@{k} {_number(x)}" for k, x in r["recall_at_k"].items())
        lines.append(f"retrieval: precision@1 {_number(r['precision_at_1'])}, R-precision "
                     f"{_number(r['r_precision'])}, MAP@R {_number(r['map_at_r'])}, {recalls} "
                     f"({r['queries']} queries)")
    return lines

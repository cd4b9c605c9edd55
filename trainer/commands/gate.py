"""The release decision for a model update: is the new model safe to put in production?

    python -m trainer.gate new_model=runs/new/export/embedding.keras old_model=prod/embedding.keras
    python -m trainer.gate new_model=... old_model=... data=folder data.path=/p data.families_file=f.csv
    python -m trainer.gate new_model=... old_model=... gate.max_split_rate=0.2 output=reports/gate

Both models embed the same held-out photos (``data=...``/``data.<key>=...`` as in
training; default: the built-in synthetic families) and every check of the gate
config (``conf/gate/<gate>.yaml``; ``gate.<key>=value`` changes one limit, ``null``
turns a check off) is held against its limit:

- held-out verification: new accuracy >= old accuracy - ``verification_tolerance``;
- albums (pairwise F1, BCubed F of ``album_period``): new >= old - ``album_tolerance``;
- breakage of the albums users already have (the old model's clusters re-made by the
  new model): mixed / split / disappeared rates at most ``max_*_rate``;
- feature compatibility: old-vs-new verification (one photo of each pair embedded
  by each model) >= old accuracy - ``cross_model_tolerance``.

Writes ``gate.json`` and ``gate.html`` (the numbers of both models side by side) to
``output`` (default: ``gate/`` beside the new model's folder), with ``gate.log``. Exit status:
0 release, 1 hold, 2 a mistake in the command (one ``error:`` line).
"""

from __future__ import annotations

import html
import os
import sys

from trainer.commands import command_config, edge

COMMAND = "gate"
PERIODS = ("period1", "period2_incremental", "period2_full")
RATES = ("mixed_rate", "split_rate", "disappeared_rate")


# -- configuration -------------------------------------------------------------------

def gate_config(node) -> dict:
    """The composed ``gate`` node as a dict; a value no check can read is one line."""
    from trainer.registry import ConfigError, to_plain

    config = to_plain(node)
    if config["album_period"] not in PERIODS:
        raise ConfigError(f"gate.album_period={config['album_period']!r} is not one of {', '.join(PERIODS)}")
    return config


def check_models(cfg) -> None:
    """Both models named and present, before TensorFlow is imported."""
    from trainer.registry import ConfigError

    for role in ("new_model", "old_model"):
        if not cfg[role]:
            raise ConfigError(f"{role}= is required (an exported embedding.keras)")
        if not os.path.exists(os.path.expanduser(str(cfg[role]))):
            raise ConfigError(f"{role}={cfg[role]} does not exist: point it at an exported model, "
                              "e.g. runs/<name>/export/embedding.keras")


# -- measuring -----------------------------------------------------------------------

def measure(new_model, old_model, config: dict, data_overrides=()) -> dict:
    """Both models on the same held-out photos: verification, albums, breakage, cross-model."""
    from trainer.config import compose
    from trainer.data.errors import DataError
    from trainer.evaluation import album
    from trainer.evaluation.verification import embed
    from trainer.registry import DATASETS

    size = int(new_model.input_shape[1])
    if int(old_model.input_shape[1]) != size:
        raise DataError(f"old_model takes {old_model.input_shape[1]} px images, new_model {size} px; "
                        "the gate compares both on the same photos")
    overrides = list(data_overrides)
    if not any(o.startswith("data.image_size=") for o in overrides):
        overrides.append(f"data.image_size={size}")
    images, labels, families = album.album_examples(DATASETS.build(compose(overrides).data))
    batch, seed = int(config["batch_size"]), int(config["seed"])
    embeddings = {"old": embed(old_model, images, batch), "new": embed(new_model, images, batch)}
    thresholds = {role: album.resolve_threshold(config["threshold"], e, labels, seed)
                  for role, e in embeddings.items()}
    albums = {role: album.album_report(embeddings[role], labels, families, thresholds[role],
                                       config["linkage"], float(config["period_fraction"]),
                                       int(config["min_album"]), float(config["split_share"]))
              for role in ("old", "new")}
    update = album.model_update_report(
        embeddings["old"], embeddings["new"], labels, families, thresholds["new"], config["linkage"],
        int(config["min_album"]), int(config["pairs"]), seed, int(config["folds"]),
        old_threshold=thresholds["old"], split_share=float(config["split_share"]))
    return {"images": int(len(labels)), "families": int(len(set(families.tolist()))),
            "thresholds": thresholds, "albums": albums, "model_update": update}


def checks(measured: dict, config: dict) -> list[dict]:
    """Every check of the gate: name, old and new values, the limit, the rule and whether it passed."""
    update = measured["model_update"]
    old_accuracy, new_accuracy = update["verification_old_old"], update["verification_new_new"]
    result = []

    def add(name, old, new, limit, rule, passed):
        result.append({"check": name, "old": old, "new": new, "limit": limit, "rule": rule,
                       "passed": bool(passed), "skipped": False})

    def skip(name, old, new, rule):
        result.append({"check": name, "old": old, "new": new, "limit": None, "rule": rule,
                       "passed": True, "skipped": True})

    tolerance = config["verification_tolerance"]
    if tolerance is None:
        skip("verification", old_accuracy, new_accuracy, "off")
    else:
        limit = old_accuracy - float(tolerance)
        add("verification", old_accuracy, new_accuracy, limit, f"new >= old - {tolerance}", new_accuracy >= limit)
    period = config["album_period"]
    for key in ("pairwise_f1", "bcubed_f"):
        old, new = measured["albums"]["old"][period][key], measured["albums"]["new"][period][key]
        if config["album_tolerance"] is None:
            skip(f"album {key} ({period})", old, new, "off")
            continue
        limit = old - float(config["album_tolerance"])
        add(f"album {key} ({period})", old, new, limit, f"new >= old - {config['album_tolerance']}", new >= limit)
    broken = update["breakage_old_to_new"]
    for rate in RATES:
        limit = config[f"max_{rate}"]
        if limit is None:
            skip(f"breakage {rate} (old albums, new model)", None, broken[rate], "off")
        else:
            add(f"breakage {rate} (old albums, new model)", None, broken[rate], float(limit),
                f"new <= {limit}", broken[rate] <= float(limit))
    cross, tolerance = update["verification_old_new"], config["cross_model_tolerance"]
    if tolerance is None:
        skip("cross-model verification (old vs new)", old_accuracy, cross, "off")
    else:
        limit = old_accuracy - float(tolerance)
        # None: different embedding sizes, so stored embeddings cannot be compared at all.
        add("cross-model verification (old vs new)", old_accuracy, cross, limit,
            f"old/new >= old - {tolerance}", cross is not None and cross >= limit)
    return result


def default_output(new_path: str) -> str:
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(new_path))), "gate")


def decide(new_path: str, old_path: str, config: dict, data_overrides=(), output: str | None = None) -> dict:
    """Measure, check, write ``gate.json`` and ``gate.html``; returns the report."""
    output = output or default_output(new_path)
    from trainer.io import write_json, write_text
    from trainer.export.model_files import load_embedding_model

    new_model = load_embedding_model(new_path, "new_model")
    old_model = load_embedding_model(old_path, "old_model")
    measured = measure(new_model, old_model, config, data_overrides)
    results = checks(measured, config)
    failed = [c["check"] for c in results if not c["passed"]]
    report = {"decision": "hold" if failed else "release", "release": not failed, "failed": failed,
              "new_model": str(new_path), "old_model": str(old_path), "checks": results,
              "gate": config, **measured}
    os.makedirs(output, exist_ok=True)
    write_json(os.path.join(output, "gate.json"), report)
    write_text(os.path.join(output, "gate.html"), report_html(report))
    report["output"] = output
    return report


# -- reporting -----------------------------------------------------------------------

def _number(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return html.escape(str(value))


def report_html(report: dict) -> str:
    """One page: the decision, each check with both models' numbers, then the album details."""
    colour = "#1a7f37" if report["release"] else "#cf222e"
    parts = ["<html><head><meta charset='utf-8'><title>release gate</title></head><body>",
             f"<h1 style='color:{colour}'>{report['decision'].upper()}</h1>",
             f"<p>new: {html.escape(report['new_model'])}<br>old (production): {html.escape(report['old_model'])}"
             f"<br>{report['images']} held-out photos in {report['families']} families</p>",
             "<h2>Checks</h2><table border=1 cellpadding=4><tr><th>check</th><th>old</th><th>new</th>"
             "<th>limit</th><th>rule</th><th>result</th></tr>"]
    for c in report["checks"]:
        verdict = "skipped" if c["skipped"] else ("pass" if c["passed"] else "<b>HOLD</b>")
        parts.append(f"<tr><td>{html.escape(c['check'])}</td><td>{_number(c['old'])}</td>"
                     f"<td>{_number(c['new'])}</td><td>{_number(c['limit'])}</td>"
                     f"<td>{html.escape(c['rule'])}</td><td>{verdict}</td></tr>")
    parts.append("</table><h2>Albums, side by side</h2><table border=1 cellpadding=4><tr><th>clustering</th>"
                 "<th>metric</th><th>old</th><th>new</th></tr>")
    old, new = report["albums"]["old"], report["albums"]["new"]
    parts.append(f"<tr><td>all</td><td>threshold (cosine distance)</td><td>{_number(report['thresholds']['old'])}"
                 f"</td><td>{_number(report['thresholds']['new'])}</td></tr>")
    for period in PERIODS:
        rows = [(k, old[period][k], new[period][k]) for k in
                ("pairwise_f1", "bcubed_f", "clusters", "identities")]
        if "breakage" in old[period]:
            rows += [(f"breakage from period 1: {k}", old[period]["breakage"][k], new[period]["breakage"][k])
                     for k in RATES]
        parts += [f"<tr><td>{period}</td><td>{html.escape(k)}</td><td>{_number(a)}</td><td>{_number(b)}</td></tr>"
                  for k, a, b in rows]
    update = report["model_update"]
    parts.append("</table><h2>Model update</h2><table border=1 cellpadding=4><tr><th>verification</th>"
                 "<th>accuracy</th></tr>")
    for key, label in (("verification_old_old", "old / old"), ("verification_new_new", "new / new"),
                       ("verification_old_new", "old / new (compatibility)")):
        parts.append(f"<tr><td>{label}</td><td>{_number(update[key])}</td></tr>")
    broken = update["breakage_old_to_new"]
    parts.append(f"</table><p>old albums re-clustered by the new model: {broken['albums']} albums, "
                 + ", ".join(f"{k} {_number(broken[k])}" for k in RATES) + "</p></body></html>")
    return "\n".join(parts)


def summary(report: dict) -> str:
    lines = []
    for c in report["checks"]:
        verdict = "skipped" if c["skipped"] else ("pass" if c["passed"] else "HOLD")
        lines.append(f"{c['check']}: old {_number(c['old'])}, new {_number(c['new'])}, "
                     f"limit {_number(c['limit'])} ({c['rule']}): {verdict}")
    failed = f" (failed: {', '.join(report['failed'])})" if report["failed"] else ""
    lines.append(f"gate: {report['decision'].upper()}{failed}")
    lines.append(f"report: {os.path.join(report['output'], 'gate.json')}")
    return "\n".join(lines)


def run(cfg, argv) -> int:
    check_models(cfg)
    output = str(cfg.output or default_output(str(cfg.new_model)))
    edge.log_to(os.path.join(output, f"{COMMAND}.log"))
    report = decide(str(cfg.new_model), str(cfg.old_model), gate_config(cfg.gate),
                    command_config.data_overrides(argv), output)
    print(summary(report))
    return 0 if report["release"] else 1


def main(argv=None) -> int:
    """Exit status 0: release, 1: hold, 2: a mistake in the command."""
    return edge.main(COMMAND, __doc__, run, argv)


if __name__ == "__main__":
    sys.exit(main())

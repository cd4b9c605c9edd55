"""What each pipeline step does, in plain Python (no kfp import).

The kfp components (``trainer.commands.kubeflow.components``) are thin shims that call these
functions inside the image; each function runs one of this package's commands in a
subprocess (a fresh TensorFlow per step, exactly as a person would run it) and then
turns the command's JSON files into the step's artifacts. An artifact here is anything
with ``path`` and ``metadata`` (and ``log_metric`` for metrics), so the functions are
tested without kfp.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable

# Sources generated on the machine itself: the prepare step caches them inside its data
# artifact so that every later step reads the very same files.
GENERATED_SOURCES = ("synthetic_faces",)
# Keys the pipeline sets itself: each step's outputs live in its own artifact.
RESERVED_KEYS = ("run.dir", "hydra.run.dir", "hydra.sweep.dir")
MODEL_FILE = "embedding.keras"
DEFAULT_EVALUATE_OPTIONS = ("album=true",)  # albums: what users see of a model
NO_PRODUCTION_MODEL = ("no production model: nothing in production to compare with, so no album users "
                       "have can break and no stored feature can become incompatible; released "
                       "as a first model (training already refuses degenerate models)")


class StepFailed(RuntimeError):
    """A command of a step ended with an unexpected exit status."""


# -- arguments -----------------------------------------------------------------------

def quote(value) -> str:
    """A value for a Hydra override: plain when Hydra reads it back unchanged, else quoted."""
    text = str(value)
    if re.fullmatch(r"[A-Za-z0-9_./@+:-]+", text):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def override_key(override: str) -> str:
    """``+data.x=1`` → ``data.x``; ``~data.x`` → ``data.x``."""
    return override.partition("=")[0].lstrip("+~")


def data_overrides(overrides: Iterable[str]) -> list[str]:
    """The overrides that pick or shape the data source (what evaluate and the gate accept)."""
    return [o for o in overrides if "=" in o and not o.startswith(("+", "~"))
            and (override_key(o) == "data" or override_key(o).startswith("data."))]


def check_training_overrides(overrides: Iterable[str]) -> list[str]:
    """The training overrides, refused in one line when the pipeline cannot honour them."""
    from trainer.registry import ConfigError

    overrides = list(overrides)
    for override in overrides:
        if override.startswith("-"):
            raise ConfigError(f"{override}: flags are not training overrides; the pipeline runs one "
                              "training job (sweep with python -m trainer --multirun)")
        key, _, value = override.partition("=")
        if override_key(override) in RESERVED_KEYS:
            raise ConfigError(f"{key}: the pipeline keeps each run in its own artifact; "
                              "drop this override (the run folder is the train step's 'run_dir' output)")
        if override_key(override) == "run.export" and value.strip().lower() in ("false", "no", "0", "off"):
            raise ConfigError("run.export=false: the pipeline evaluates, gates and releases the exported "
                              "model; drop this override")
    return overrides


def command(module: str, *arguments: str) -> list[str]:
    return [sys.executable, "-m", module, *arguments]


def run(arguments: list[str], allowed=(0,)) -> int:
    """Run a command with its output going to this step's log; its exit status if allowed."""
    print("+ " + " ".join(arguments), flush=True)
    status = subprocess.run(arguments, check=False).returncode
    if status not in allowed:
        name = " ".join(arguments[2:3]) or arguments[0]
        raise StepFailed(f"{name} ended with exit status {status} (see the lines above)")
    return status


def read_json(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def numbers(value, prefix: str = "") -> dict:
    """Every finite number in a nested report, keyed by its dotted path (for kfp Metrics)."""
    found = {}
    if isinstance(value, dict):
        for key, item in value.items():
            found.update(numbers(item, f"{prefix}{key}."))
    elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        found[prefix.rstrip(".")] = float(value)
    return found


def log_metrics(metrics, values: dict) -> None:
    """Numbers into a kfp Metrics artifact: its metadata (what the UI shows) and its file.

    The file matters too: kfp's local cache treats an output whose file is missing as a miss.
    """
    for key, value in values.items():
        metrics.log_metric(key, value)
    os.makedirs(os.path.dirname(os.path.abspath(metrics.path)), exist_ok=True)
    with open(metrics.path, "w", encoding="utf-8") as f:
        json.dump(dict(metrics.metadata), f, indent=2)


def model_file(path: str) -> str:
    """``path`` itself when it is a ``.keras`` file, else the model inside the folder ``path``."""
    path = str(path)
    return path if path.endswith(".keras") else os.path.join(path, MODEL_FILE)


# -- prepare -------------------------------------------------------------------------

def prepare(overrides: Iterable[str], output: str) -> dict:
    """Build the training data set once (generate it, or read and count it) → ``output/data.json``.

    ``data.json`` holds the overrides the later steps add so they read the same data:
    a generated source is cached in ``output`` unless ``data.data_dir`` was given.
    """
    from trainer.io import write_json
    from trainer.config import compose
    from trainer.registry import DATASETS

    overrides = check_training_overrides(overrides)
    cfg = compose(overrides)
    extra = []
    if cfg.data.get("name") in GENERATED_SOURCES and not any(
            override_key(o) == "data.data_dir" for o in overrides):
        extra.append(f"data.data_dir={quote(os.path.abspath(output))}")
        cfg = compose([*overrides, *extra])
    source = DATASETS.build(cfg.data)
    heldout = source.heldout() is not None
    info = {"source": str(cfg.data.get("name") or "?"), "image_size": int(source.image_size),
            "num_classes": int(source.num_classes), "train_images": int(source.num_examples),
            "heldout": heldout, "heldout_unavailable": None if heldout else source.heldout_unavailable,
            "extra_overrides": extra, "data_overrides": [*data_overrides(overrides), *extra]}
    os.makedirs(output, exist_ok=True)
    write_json(os.path.join(output, "data.json"), info)
    return info


def prepare_step(overrides: list[str], dataset) -> dict:
    run(command("trainer.kubeflow", "prepare", f"output={dataset.path}", *overrides))
    info = read_json(os.path.join(dataset.path, "data.json"))
    dataset.metadata.update({k: info[k] for k in ("source", "image_size", "num_classes", "train_images")})
    return info


# -- train ---------------------------------------------------------------------------

def train_step(overrides: list[str], dataset, model, run_dir, metrics) -> dict:
    """``python -m trainer`` into ``run_dir``; the exported model is copied into ``model``."""
    info = read_json(os.path.join(dataset.path, "data.json"))
    run(command("trainer", *check_training_overrides(overrides), *info["extra_overrides"],
                f"hydra.run.dir={quote(run_dir.path)}"))
    result = read_json(os.path.join(run_dir.path, "metrics.json"))
    if result.get("status") != "finished" or not result.get("export"):
        raise StepFailed(f"the training run ended with status {result.get('status')!r} and no export")
    os.makedirs(model.path, exist_ok=True)
    shutil.copyfile(os.path.join(run_dir.path, result["export"]), os.path.join(model.path, MODEL_FILE))
    values = numbers({"untrained": result.get("untrained", {}), "final": result.get("final", {})})
    values.update({k: float(result[k]) for k in ("wall_seconds", "images_per_second", "steps")
                   if isinstance(result.get(k), (int, float))})
    log_metrics(metrics, values)
    model.metadata.update({"file": MODEL_FILE, "overrides": list(overrides),
                           "image_size": info["image_size"], "framework": "keras"})
    return result


# -- evaluate ------------------------------------------------------------------------

def evaluate_step(options: list[str], dataset, model, evaluation, metrics, summary) -> dict:
    """``python -m trainer.evaluate`` on the trained model; report.json's numbers as metrics."""
    info = read_json(os.path.join(dataset.path, "data.json"))
    run(command("trainer.evaluate", f"model={model_file(model.path)}", f"output={evaluation.path}",
                *options, *info["data_overrides"]))
    report = read_json(os.path.join(evaluation.path, "report.json"))
    reported = {"verification": report.get("verification", {}), "retrieval": report.get("retrieval", {})}
    if "album" in report:
        reported["album"] = {period: {k: v for k, v in report["album"][period].items() if k != "breakage"}
                             for period in ("period1", "period2_incremental", "period2_full")
                             if period in report["album"]}
    log_metrics(metrics, numbers(reported))
    shutil.copyfile(os.path.join(evaluation.path, "summary.html"), summary.path)
    return report


# -- gate ----------------------------------------------------------------------------

def gate_step(production_model: str, gate_overrides: list[str], dataset, model, report, metrics, summary) -> str:
    """The release decision ("release" or "hold"), recorded in ``report``, ``metrics`` and ``summary``.

    With a production model, ``python -m trainer.gate`` decides (exit 0 release, 1 hold).
    Without one, the gate is skipped and records why: a first model has no albums to
    break and no stored features to stay compatible with.
    """
    from trainer.io import write_json

    info = read_json(os.path.join(dataset.path, "data.json"))
    os.makedirs(report.path, exist_ok=True)
    path = os.path.join(report.path, "gate.json")
    if production_model:
        status = run(command("trainer.gate", f"new_model={model_file(model.path)}",
                             f"old_model={model_file(production_model)}", f"output={report.path}",
                             *gate_overrides, *info["data_overrides"]), allowed=(0, 1))
        decided = read_json(path)
        if decided["release"] != (status == 0):
            raise StepFailed(f"the gate exited with {status} but gate.json says {decided['decision']}")
        reason = ("all checks passed" if decided["release"]
                  else "failed: " + ", ".join(decided["failed"]))
        decided["reason"] = reason
    else:
        decided = {"decision": "release", "release": True, "reason": NO_PRODUCTION_MODEL, "failed": [],
                   "checks": [], "new_model": model_file(model.path), "old_model": None}
    decided["gate_ran"] = bool(production_model)
    write_json(path, decided)
    page = os.path.join(report.path, "gate.html")
    if not production_model:  # with one, the gate wrote its own page (both models side by side)
        import html

        with open(page, "w", encoding="utf-8") as f:
            f.write(f"<html><body><h1>{decided['decision'].upper()}</h1>"
                    f"<p>{html.escape(decided['reason'])}</p></body></html>\n")
    shutil.copyfile(page, summary.path)
    # Strings in the metadata: what a person reads in the UI next to the numbers.
    for artifact in (report, metrics):
        artifact.metadata.update({"decision": decided["decision"], "reason": decided["reason"],
                                  "production_model": production_model or "none"})
    values = {"release": 1.0 if decided["release"] else 0.0, "failed_checks": float(len(decided["failed"]))}
    values.update({f"{c['check']}: new": float(c["new"]) for c in decided["checks"]
                   if isinstance(c.get("new"), (int, float))})
    log_metrics(metrics, values)
    return decided["decision"]


# -- export --------------------------------------------------------------------------

def publish(model_path: str, gate_json: str, destination: str) -> dict:
    """Copy a released model with its gate report into ``destination`` (a folder or ``gs://``).

    ``release.json`` is written last: a folder with it holds a whole release, and a later
    pipeline takes the folder as its ``production_model``.
    """
    from trainer import io

    decided = read_json(gate_json)
    if decided.get("decision") != "release":
        raise StepFailed(f"{gate_json} says {decided.get('decision')!r}: only a released model is exported")
    io.makedirs(destination)
    for source, name in ((model_path, MODEL_FILE), (gate_json, "gate.json")):
        io.save_file(io.join(destination, name), lambda local, source=source: shutil.copyfile(source, local))
    record = {"model": MODEL_FILE, "decision": decided["decision"], "reason": decided.get("reason"),
              "gate_ran": decided.get("gate_ran", True), "source_model": str(model_path),
              "production_model": decided.get("old_model")}
    io.write_text(io.join(destination, "release.json"), json.dumps(record, indent=2) + "\n")
    return record


def export_step(release_dir: str, model, report, released) -> dict:
    gate_json = os.path.join(report.path, "gate.json")
    record = publish(model_file(model.path), gate_json, released.path)
    if release_dir:
        publish(model_file(model.path), gate_json, release_dir)
    released.metadata.update({"file": MODEL_FILE, "decision": record["decision"], "reason": record["reason"],
                              "release_dir": release_dir or "none"})
    return record

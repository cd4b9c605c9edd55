"""The exported embedding model: make it, write it, load it back.

``runs/<name>/export/embedding.keras`` takes images (B, S, S, 3), float32 RGB
pixels 0..255, and returns L2-normalised float32 embeddings. The built-in
components are made of Keras's own layers only, so the file loads in any
interpreter that has Keras, without this framework and without custom objects::

    import keras
    model = keras.saving.load_model("runs/<name>/export/embedding.keras")
    embeddings = model.predict(images)   # (N, 512), unit norm

Inside the framework use ``trainer.model_files.load_embedding_model``: it first imports every
registered component (so plugin layers load too), freezes the model and turns
any failure into a one-line ``ConfigError``.

Deployment formats, each checked against the Keras model in its own runtime
(``parity.json``; docs/export.md)::

    python -m trainer.export model=runs/<name>/export/embedding.keras formats=[savedmodel,tflite,onnx]

The held-out images that check parity are the run's (``config.yaml`` beside ``export/``) unless
``data=<source> data.<key>=...`` says otherwise; with no run config, the built-in synthetic faces.
Writes ``export.log`` beside ``parity.json``.
"""

from __future__ import annotations

import os
import sys


from trainer.commands import command_config, edge
from trainer.registry import ConfigError

COMMAND = "export"


def _run_config(model_path: str):
    """The config of the run that wrote ``model_path`` (``<run>/config.yaml`` beside ``export/``)."""
    from omegaconf import OmegaConf

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(model_path))), "config.yaml")
    return OmegaConf.load(path) if os.path.exists(path) else None


def _source_for(model_path: str, image_size: int, data_overrides):
    """(data source, eval node, where it came from): the run's data set unless data=... says otherwise."""
    from omegaconf import OmegaConf

    from trainer.config import compose
    from trainer.registry import DATASETS, to_plain

    run_config = _run_config(model_path)
    if data_overrides or run_config is None or run_config.get("data") is None:
        overrides = list(data_overrides)
        if not any(x.startswith("data.image_size=") for x in overrides):
            overrides.append(f"data.image_size={image_size}")
        cfg = compose(overrides)
        origin = "data=" + str(cfg.data.name) if data_overrides else \
            f"the built-in data={cfg.data.name} (no run config.yaml beside export/)"
        eval_node = to_plain(run_config.eval) if run_config is not None and run_config.get("eval") else None
        return DATASETS.build(cfg.data), eval_node, origin
    node = to_plain(run_config.data)
    node["image_size"] = image_size
    eval_node = to_plain(run_config.eval) if run_config.get("eval") is not None else None
    return DATASETS.build(OmegaConf.create(node)), eval_node, f"the run's data={node.get('name')}"


def command(cfg, data_overrides) -> tuple[str, int]:
    """The command's body: (the table and where the report is, exit status)."""
    from trainer.export import check_available, resolve_formats
    from trainer.export.deploy import export_formats
    from trainer.registry import to_plain

    if not cfg.model:
        raise ConfigError("model= is required (an exported embedding.keras, e.g. "
                          "runs/<name>/export/embedding.keras)")
    names = resolve_formats(to_plain(cfg.formats))
    if not names:
        raise ConfigError("formats= names no format: give any of savedmodel, tflite, onnx, all")
    check_available(names)  # a missing optional package fails before the model is read
    model_path = str(cfg.model)
    output = str(cfg.output or os.path.dirname(os.path.abspath(model_path)))
    edge.log_to(os.path.join(output, f"{COMMAND}.log"))
    from trainer.export.model_files import load_embedding_model

    model = load_embedding_model(model_path, "model")
    size = int(model.input_shape[1])
    source, eval_node, origin = _source_for(model_path, size, data_overrides)
    options = {key: int(cfg[key]) for key in ("pairs", "seed", "folds", "calibration") if cfg[key] is not None}
    options["with_latency"] = bool(cfg.latency)
    print(f"exporting {model_path} as {', '.join(names)}; parity on the held-out images of {origin}",
          flush=True)
    report = export_formats(model, output, names, source, eval_node, source_path=model_path, **options)
    failed = [name for name, row in report["formats"].items() if not row.get("passed")]
    summary = f"parity report: {os.path.join(output, 'parity.json')}"
    if failed:
        summary += f"; outside tolerance or failed: {', '.join(failed)}"
    return summary, 1 if (failed and cfg.strict) else 0


def run(cfg, argv) -> int:
    message, status = command(cfg, command_config.data_overrides(argv))
    print(message)
    return status


def main(argv=None) -> int:
    return edge.main(COMMAND, __doc__, run, argv)


if __name__ == "__main__":
    sys.exit(main())

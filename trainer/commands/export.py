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

    python -m trainer.export model_path=runs/<name>/export/embedding.keras formats=[savedmodel,tflite,onnx]

Options (``key=value``):
  model_path=<embedding.keras>   the exported model (required)
  formats=[savedmodel,tflite,onnx]  any of savedmodel, tflite (= tflite_float32, tflite_float16,
                                 tflite_int8), tflite_float32, tflite_float16, tflite_int8, onnx, all
  output=<folder>                where the files and parity.json go (default: the model's folder)
  strict=false                   true: exit 1 when a format misses its tolerance
  pairs=3000 seed=0 folds=10     held-out verification pairs (default: the run's eval config)
  calibration=256                held-out images that calibrate the int8 model
  latency=true                   false: skip the CPU latency measurement
  data=<source> data.<key>=...   the data set whose held-out images are used (default: the run's,
                                 from config.yaml beside export/; else the built-in synthetic faces)
"""

from __future__ import annotations

import os
import sys


from trainer.registry import ConfigError

# -- deployment formats: ``python -m trainer.export`` -------------------------------------

USAGE = ("usage: python -m trainer.export model_path=<embedding.keras> [formats=[savedmodel,tflite,onnx]] "
         "[output=<folder>] [strict=false] [pairs=3000] [seed=0] [folds=10] [calibration=256] "
         "[latency=true] [data=<source> data.<key>=...]")
OPTIONS = ("model_path", "formats", "output", "strict", "pairs", "seed", "folds", "calibration", "latency")
DEFAULT_FORMATS = ("savedmodel", "tflite", "onnx")


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


def _truthy(value, key: str) -> bool:
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", "none", ""):
        return False
    raise ConfigError(f"{key}={value!r} is not true or false")


def _integer(value, key: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}={value!r} is not a whole number") from None


def command(argv) -> tuple[str, int]:
    """The command's body: (the table and where the report is, exit status)."""
    from trainer.commands.cli import split_arguments
    from trainer.export import check_available, resolve_formats
    from trainer.export.deploy import export_formats

    own, data_overrides = split_arguments(
        argv, OPTIONS, USAGE, pass_through=lambda key: key == "data" or key.startswith("data."))
    names = resolve_formats(own.get("formats") or list(DEFAULT_FORMATS))
    if not names:
        raise ConfigError(f"formats= names no format; {USAGE}")
    check_available(names)  # a missing optional package fails before the model is read
    model_path = own.get("model_path")
    from trainer.export.model_files import load_embedding_model

    model = load_embedding_model(model_path, "model_path")
    size = int(model.input_shape[1])
    source, eval_node, origin = _source_for(str(model_path), size, data_overrides)
    options = {key: _integer(own[key], key) for key in ("pairs", "seed", "folds", "calibration") if own.get(key)}
    options["with_latency"] = _truthy(own.get("latency", "true"), "latency")
    output = own.get("output") or os.path.dirname(os.path.abspath(str(model_path)))
    print(f"exporting {model_path} as {', '.join(names)}; parity on the held-out images of {origin}",
          flush=True)
    report = export_formats(model, output, names, source, eval_node, source_path=str(model_path),
                            **options)
    strict = _truthy(own.get("strict", "false"), "strict")
    failed = [name for name, row in report["formats"].items() if not row.get("passed")]
    summary = f"parity report: {os.path.join(output, 'parity.json')}"
    if failed:
        summary += f"; outside tolerance or failed: {', '.join(failed)}"
    return summary, 1 if (failed and strict) else 0


def main(argv=None) -> int:
    from trainer.commands.cli import run_command, start_command

    argv = sys.argv[1:] if argv is None else list(argv)
    if start_command(argv, f"{__doc__.strip()}\n\n{USAGE}"):
        return 0
    status = {"code": 0}

    def body():
        message, status["code"] = command(argv)
        return message

    code = run_command(body)
    return code or status["code"]


if __name__ == "__main__":
    sys.exit(main())

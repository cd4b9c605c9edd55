"""``python -m trainer.kubeflow compile|run --local|vertex-job|prepare ...`` (see trainer/commands/kubeflow/__init__.py)."""

from __future__ import annotations

import json
import os
import re
import sys

import trainer.commands.kubeflow as package

USAGE = ("usage: python -m trainer.kubeflow compile [output=pipeline.yaml] [options] [overrides...] | "
         "run --local [pipeline_root=local_outputs] [options] [overrides...] | "
         "vertex-job output=job.json image=... run_dir=gs://... [replicas=1] [overrides...] | "
         "prepare output=<dir> [overrides...]  (--help for all options)")
PIPELINE_OPTIONS = ("image", "production_model", "release_dir")
COMMANDS = ("compile", "run", "vertex-job", "prepare")
VERTEX_OPTIONS = ("output", "image", "run_dir", "machine_type", "tpu_topology", "strategy", "timeout_hours",
                  "replicas",
                  "boot_disk_gb", "display_name")
EXIT_RELEASE, EXIT_HOLD, EXIT_MISTAKE, EXIT_FAILED = 0, 1, 2, 3


def _is_training_override(key: str) -> bool:
    return key not in ("output", "pipeline_root", "cache", *PIPELINE_OPTIONS) and not key.startswith(
        ("gate.", "evaluate.")) and key != "gate"


def own_options(argv, options, pass_through):
    """(this command's own ``key=value`` options, the rest): the pipeline's options sit beside the
    training job's overrides on one command line, so they are taken out before the job's
    config is composed (which then checks the rest, one line per mistake)."""
    from trainer.registry import ConfigError, did_you_mean

    own, rest = {}, []
    for argument in argv:
        key, sep, value = argument.partition("=")
        if not sep:
            raise ConfigError(f"unexpected argument {argument!r}; {USAGE}")
        if key in options:
            own[key] = None if value in ("", "null", "None") else value
        elif pass_through(key):
            rest.append(argument)
        else:
            raise ConfigError(f"unknown option '{key}': {did_you_mean(key, options)}; {USAGE}")
    return own, rest


def pipeline_arguments(argv, extra_options=()) -> tuple[dict, dict]:
    """(the command's own options, the pipeline's arguments), every part checked before any work."""
    from trainer.config import compose
    from trainer.commands import command_config
    from trainer.commands.evaluate import shorthand
    from trainer.commands.kubeflow.steps import DEFAULT_EVALUATE_OPTIONS, check_training_overrides
    from trainer.registry import ConfigError

    options = (*extra_options, *PIPELINE_OPTIONS)
    own, rest = own_options(argv, options,
                                lambda key: key == "gate" or key.startswith(("gate.", "evaluate."))
                                or _is_training_override(key.lstrip("+~")))
    gate = [r for r in rest if r.partition("=")[0] == "gate" or r.startswith("gate.")]
    evaluate = [r[len("evaluate."):] for r in rest if r.startswith("evaluate.")]
    overrides = check_training_overrides([r for r in rest if r not in gate and not r.startswith("evaluate.")])
    compose(overrides)  # names, keys and values of the training job, in one line, before anything runs
    command_config.parse("gate", gate)  # the gate's name and keys, as python -m trainer.gate reads them
    if not any(o.partition("=")[0] == "album" for o in evaluate):
        evaluate = [*DEFAULT_EVALUATE_OPTIONS, *evaluate]
    try:
        command_config.parse("evaluate", shorthand(evaluate))  # evaluate's own keys
    except ConfigError as error:
        raise ConfigError(f"evaluate options: {error}") from None
    arguments = {"overrides": overrides, "gate_overrides": gate, "evaluate_options": evaluate,
                 "production_model": own.pop("production_model", None) or "",
                 "release_dir": own.pop("release_dir", None) or ""}
    if own.get("image"):
        arguments["image"] = own.pop("image")
    own.pop("image", None)
    return own, arguments


def require_kfp() -> None:
    """After the arguments are checked (they need no kfp), before the pipeline is built."""
    from trainer.registry import ConfigError

    try:
        import kfp  # noqa: F401
    except ImportError:
        raise ConfigError("the pipeline needs kfp (Kubeflow Pipelines SDK 2.x): "
                          "pip install 'facetrain[pipeline]'") from None


def compile_command(argv) -> str:
    own, arguments = pipeline_arguments(argv, ("output",))
    require_kfp()
    from trainer.commands.kubeflow.definition import compile_pipeline

    output = compile_pipeline(own.get("output") or "pipeline.yaml", **arguments)
    return f"pipeline written: {output} (image {arguments.get('image') or 'facetrain:0.1.0'})"


def run_command_local(argv, result: dict) -> str:
    from trainer.registry import ConfigError

    if "--local" not in argv:
        raise ConfigError("only run --local runs here (kfp's local runner); submit the compiled pipeline "
                          "(python -m trainer.kubeflow compile) to Kubeflow Pipelines or Vertex AI Pipelines")
    own, arguments = pipeline_arguments([a for a in argv if a != "--local"], ("pipeline_root", "cache"))
    production = arguments["production_model"]
    if production and "://" not in production:
        from trainer.commands.kubeflow.steps import model_file

        if not os.path.exists(model_file(production)):
            raise ConfigError(f"production_model={production}: {model_file(production)} does not exist; "
                              "give an exported embedding.keras or a release folder holding one")
        arguments["production_model"] = os.path.abspath(production)
    cache = str(own.get("cache") or "false").lower()
    if cache not in ("true", "false"):
        raise ConfigError(f"cache={own.get('cache')}: true or false")
    require_kfp()
    from trainer.commands.kubeflow.definition import run_local

    try:
        result.update(run_local(pipeline_root=own.get("pipeline_root") or "local_outputs",
                                cache=cache == "true", **arguments))
    except RuntimeError as error:  # kfp: "Pipeline ... finished with status FAILURE. Inner task failed: ..."
        result["failed"] = re.sub(r"\x1b\[[0-9;]*m", "", str(error))  # without the log's colours
        return ""
    lines = [f"gate: {result['decision'].upper()}"
             + (f" ({result['gate_metrics'].get('reason')})" if result["gate_metrics"].get("reason") else ""),
             f"gate report: {result['gate_report']}", f"trained model: {result['model']}"]
    lines.append(f"released model: {result['released']}" if result["released"]
                 else "released model: none (the gate held the model)")
    return "\n".join(lines)


def vertex_command(argv) -> str:
    from trainer.io import write_json
    from trainer.config import compose
    from trainer.commands.kubeflow import vertex

    own, overrides = own_options(argv, VERTEX_OPTIONS, lambda key: True)
    replicas = int(own.get("replicas") or 1)
    compose([f"runtime={'jax' if replicas > 1 else 'tpu'}", *overrides])
    spec = vertex.job_spec(own.get("image") or "", own.get("run_dir") or "", overrides,
                           machine_type=own.get("machine_type") or vertex.DEFAULT_MACHINE,
                           tpu_topology=own.get("tpu_topology"), strategy=own.get("strategy") or "SPOT",
                           timeout_hours=float(own.get("timeout_hours") or 72),
                           boot_disk_gb=int(own.get("boot_disk_gb") or 100), replicas=replicas)
    if own.get("display_name"):
        spec = vertex.custom_job(own["display_name"], spec)
    output = own.get("output") or "job.json"
    write_json(output, spec)
    return f"Vertex AI CustomJob spec written: {output}"


def prepare_command(argv) -> str:
    from trainer.commands.kubeflow.steps import prepare
    from trainer.registry import ConfigError

    own, overrides = own_options(argv, ("output",), lambda key: True)
    if not own.get("output"):
        raise ConfigError(f"output= is required (the folder for data.json and generated data); {USAGE}")
    info = prepare(overrides, own["output"])
    return (f"data: {info['source']}, {info['train_images']} training images of {info['num_classes']} "
            f"identities at {info['image_size']} px; held-out: {'yes' if info['heldout'] else 'no'}\n"
            f"later steps add: {json.dumps(info['extra_overrides'])}")


def main(argv=None) -> int:
    from trainer.commands import edge
    from trainer.commands.command_config import answered
    from trainer.registry import ConfigError, did_you_mean

    process = argv is None
    argv = sys.argv[1:] if argv is None else list(argv)
    if answered([a for a in argv if a in ("--version", "-V")], "kubeflow", None):
        return 0
    if any(a in ("-h", "--help") for a in argv):
        print(f"{package.__doc__.strip()}\n\n{USAGE}")
        return 0
    result: dict = {}

    def body() -> int:
        if not argv:
            raise ConfigError(f"a command is required; {USAGE}")
        name, rest = argv[0], argv[1:]
        if name not in COMMANDS:
            raise ConfigError(f"unknown command '{name}': {did_you_mean(name, COMMANDS)}; {USAGE}")
        commands = {"compile": compile_command, "vertex-job": vertex_command, "prepare": prepare_command,
                    "run": lambda rest: run_command_local(rest, result)}
        message = commands[name](rest)
        if message:
            print(message)
        if name != "run":
            return 0
        if "failed" in result:
            print(f"error: {result['failed']}", file=sys.stderr)
            return EXIT_FAILED
        return EXIT_RELEASE if result["decision"] == "release" else EXIT_HOLD

    return edge.run("kubeflow", body, process)


if __name__ == "__main__":
    sys.exit(main())

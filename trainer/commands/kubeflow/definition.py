"""The pipeline itself: its graph, compiling it to YAML, and running it with kfp's local runner."""

# No "from __future__ import annotations": kfp reads the pipeline's annotations as types.
import inspect
import os
import warnings
from collections.abc import Sequence
from typing import List, NamedTuple

from kfp import compiler, dsl

from trainer.commands.kubeflow.components import DEFAULT_IMAGE, build
from trainer.commands.kubeflow.steps import DEFAULT_EVALUATE_OPTIONS

NAME = "facetrain"


def build_pipeline(image: str = DEFAULT_IMAGE, overrides: Sequence[str] = (), production_model: str = "",
                   gate_overrides: Sequence[str] = (), evaluate_options: Sequence[str] = DEFAULT_EVALUATE_OPTIONS,
                   release_dir: str = ""):
    """The pipeline function; the arguments become its parameters' defaults (changeable per run)."""
    c = build(image)
    Outputs = NamedTuple("Outputs", [("decision", str), ("gate_metrics", dsl.Metrics),
                                     ("gate_report", dsl.Artifact), ("model", dsl.Model)])

    @dsl.pipeline(name=NAME, description="facetrain model update: prepare data, train, evaluate, "
                                         "gate against the production model, export if released")
    def facetrain(overrides: List[str] = list(overrides), production_model: str = production_model,
                  gate_overrides: List[str] = list(gate_overrides),
                  evaluate_options: List[str] = list(evaluate_options),
                  release_dir: str = release_dir) -> Outputs:
        data = c.prepare_data(overrides=overrides).set_display_name("prepare data")
        trained = c.train(overrides=overrides, dataset=data.outputs["dataset"]).set_display_name("train")
        model = trained.outputs["model"]
        c.evaluate(options=evaluate_options, dataset=data.outputs["dataset"], model=model
                   ).set_display_name("evaluate")
        decision = c.gate(production_model=production_model, gate_overrides=gate_overrides,
                          dataset=data.outputs["dataset"], model=model).set_display_name("release gate")
        # The production model can change behind the same path: never reuse a decision or an export.
        decision.set_caching_options(False)
        with dsl.If(decision.outputs["Output"] == "release", name="released"):
            c.export(release_dir=release_dir, model=model, report=decision.outputs["report"]
                     ).set_display_name("export").set_caching_options(False)
        return Outputs(decision=decision.outputs["Output"], gate_metrics=decision.outputs["metrics"],
                       gate_report=decision.outputs["report"], model=model)

    return facetrain


def compile_pipeline(output: str, **arguments) -> str:
    """Write the pipeline (IR YAML, for Kubeflow Pipelines or Vertex AI Pipelines) to ``output``."""
    folder = os.path.dirname(os.path.abspath(output))
    os.makedirs(folder, exist_ok=True)
    compiler.Compiler().compile(build_pipeline(**arguments), package_path=output)
    return output


def run_local(pipeline_root: str = "local_outputs", cache: bool = False, **arguments) -> dict:
    """Run every step here with kfp's SubprocessRunner in this Python environment.

    Returns the decision and where its report, the model and (when released) the export are.
    """
    from kfp import local

    from trainer.registry import ConfigError

    try:  # kfp's local runner learned dsl.If (its "enhanced" orchestrator) in 2.1x
        from kfp.local.orchestrator import enhanced_dag_orchestrator  # noqa: F401
    except ImportError:
        import kfp

        raise ConfigError(f"kfp {kfp.__version__} cannot run conditions locally; "
                          "install the pipeline extra: pip install 'facetrain[pipeline]'") from None
    options = {"runner": local.SubprocessRunner(use_venv=False), "pipeline_root": pipeline_root}
    if "enable_caching" in inspect.signature(local.init).parameters:
        options["enable_caching"] = bool(cache)
    local.init(**options)
    pipeline = build_pipeline(**arguments)
    with warnings.catch_warnings():
        # The runner warns that the image may not be a Python one; locally it is this environment.
        warnings.filterwarnings("ignore", message=".*base image.*", category=RuntimeWarning)
        # Display names (for the Kubeflow UI) mean nothing to the local runner.
        warnings.filterwarnings("ignore", message=".*have no effect in the current local runner.*")
        task = pipeline()
    outputs = task.outputs
    report = outputs["gate_report"].path
    # The export task's folder sits beside the gate's in this run's folder.
    released = os.path.join(os.path.dirname(os.path.dirname(report)), "export", "released")
    return {"decision": outputs["decision"], "gate_report": os.path.join(report, "gate.json"),
            "gate_metrics": dict(outputs["gate_metrics"].metadata), "model": outputs["model"].path,
            "released": released if os.path.isdir(released) else None,
            "run_folder": os.path.dirname(os.path.dirname(report))}

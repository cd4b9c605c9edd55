"""The pipeline's kfp components: lightweight Python components that run in this package's image.

Each function body is copied into the compiled pipeline and runs in the image named by
``image`` (see the Dockerfile), where this package is installed; so the bodies only hand
their artifacts to ``trainer.commands.kubeflow.steps``, which runs the package's commands.
Lightweight rather than container components because kfp's local SubprocessRunner runs
only lightweight ones; ``install_kfp_package=False`` because the image already has kfp
(the ``pipeline`` extra), so no step installs anything at run time.
"""

# No "from __future__ import annotations": kfp reads these annotations as types.
from types import SimpleNamespace
from typing import List

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output

DEFAULT_IMAGE = "facetrain:0.1.0"


def prepare_data(overrides: List[str], dataset: Output[Dataset]):
    """Generate (synthetic) or read and count the training data; later steps read the same data."""
    from trainer.commands.kubeflow import steps

    steps.prepare_step(overrides, dataset)


def train(overrides: List[str], dataset: Input[Dataset], model: Output[Model], run_dir: Output[Artifact],
          metrics: Output[Metrics]):
    """python -m trainer with the overrides; the run folder, the exported model and its metrics."""
    from trainer.commands.kubeflow import steps

    steps.train_step(overrides, dataset, model, run_dir, metrics)


def evaluate(options: List[str], dataset: Input[Dataset], model: Input[Model], evaluation: Output[Artifact],
             metrics: Output[Metrics], summary: Output[HTML]):
    """python -m trainer.evaluate on the trained model (albums by default)."""
    from trainer.commands.kubeflow import steps

    steps.evaluate_step(options, dataset, model, evaluation, metrics, summary)


# The decision is the component's single return value on purpose: kfp's local runner
# resolves a dsl.If condition on a task's "Output" but not on a named output.
def gate(production_model: str, gate_overrides: List[str], dataset: Input[Dataset], model: Input[Model],
         report: Output[Artifact], metrics: Output[Metrics], summary: Output[HTML]) -> str:
    """python -m trainer.gate against the production model: "release" or "hold"."""
    from trainer.commands.kubeflow import steps

    return steps.gate_step(production_model, gate_overrides, dataset, model, report, metrics, summary)


def export(release_dir: str, model: Input[Model], report: Input[Artifact], released: Output[Model]):
    """Publish the released model with its gate report (and into release_dir when given)."""
    from trainer.commands.kubeflow import steps

    steps.export_step(release_dir, model, report, released)


def build(image: str = DEFAULT_IMAGE) -> SimpleNamespace:
    """The components with ``image`` as their base image."""
    component = dsl.component(base_image=image, install_kfp_package=False)
    return SimpleNamespace(prepare_data=component(prepare_data), train=component(train),
                           evaluate=component(evaluate), gate=component(gate), export=component(export))

"""Kubeflow Pipelines (kfp v2) for the model-update loop: prepare data → train → evaluate →
release gate against the production model → export if the gate says release.

    python -m trainer.kubeflow compile [output=pipeline.yaml] [image=facetrain:0.1.0] [overrides...]
    python -m trainer.kubeflow run --local [pipeline_root=local_outputs] [cache=true] [overrides...]
    python -m trainer.kubeflow run --local debug=smoke logger=none callbacks=none   # a quick end-to-end try
    python -m trainer.kubeflow vertex-job output=job.json image=<registry>/facetrain-tpu:0.1.0 \\
        run_dir=gs://bucket/runs/r50 [machine_type=ct5lp-hightpu-4t] [overrides...]
    python -m trainer.kubeflow prepare output=<dir> [overrides...]      # the pipeline's first step

Options of compile and run (everything else is a training override, as for ``python -m trainer``):
  production_model=<embedding.keras or a folder holding one>   the model the gate compares with;
                    none: the gate is skipped and records "no production model" (a first release)
  release_dir=<dir or gs://...>   where the export step puts a released model (embedding.keras,
                    gate.json, release.json); next time, pass it as production_model
  gate=<name> gate.<key>=value    the gate's limits (conf/gate/), as for python -m trainer.gate
  evaluate.<option>=value         options of python -m trainer.evaluate (default evaluate.album=true)
  image=<name>                    the container image every step runs in (see Dockerfile)
run --local only:
  pipeline_root=<dir>             where kfp's local runner writes every step's outputs
  cache=true                      reuse steps whose inputs did not change (kfp.local caching)

The components are lightweight kfp components whose code calls this package's own commands
(python -m trainer, python -m trainer.evaluate, python -m trainer.gate) inside the image, so
``run --local`` runs them with kfp's SubprocessRunner in the current Python environment.
Exit status of run --local: 0 the gate released (and the model was exported), 1 hold,
2 a mistake in the command (one error: line), 3 a pipeline step failed. docs/pipeline.md is the guide.
"""
